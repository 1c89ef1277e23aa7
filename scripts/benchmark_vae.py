"""Benchmark: chunked causal VAE decode, JAX (wow_jax) vs PyTorch (diffusers AutoencoderKLWan).

Decodes clips of 5, 21 and 41 latent frames (17, 81, 161 video frames) at a small resolution with
the same random weights in both frameworks and reports, per framework and clip length, the time
per output frame (second call; the first call's time, which includes JAX compilation, is reported
separately) and resident memory. Each measurement runs in its own subprocess so RSS values do not
mix. `decode_peak_rss_mib` is the peak RSS during the timed (second) decode, after the process's
high-water mark was reset (Linux clear_refs) - the steady-state cost of decoding with weights and
runtime loaded; `lifetime_peak_rss_mib` also counts imports and JAX compilation. Outputs of the
two frameworks are compared (max abs difference).

    python -m scripts.benchmark_vae --out runs/benchmarks/vae.json
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

from scripts import torch_cpu

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # workers run from here


def rss_mib() -> float:
    """Current resident set size of this process in MiB (Linux /proc)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mib() -> float:
    """Lifetime peak RSS in MiB (compilation included)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB.


def reset_high_water_mark() -> None:
    """Resets /proc/self/status VmHWM to the current RSS (Linux clear_refs 5)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def high_water_mark_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def model_kwargs(args) -> dict:
    return dict(
        base_dim=args.base_dim,
        z_dim=16,
        dim_mult=[int(m) for m in args.dim_mult.split(",")],
        num_res_blocks=args.num_res_blocks,
        attn_scales=[],
        temperal_downsample=[False, True, True],
    )


def make_weights(args, workdir: str) -> None:
    """Random (re-drawn) diffusers weights saved as safetensors, plus the latents per length."""
    import torch
    from diffusers import AutoencoderKLWan

    torch.manual_seed(0)
    model = AutoencoderKLWan(**model_kwargs(args))
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            scale = 0.1 if name.endswith("gamma") else 0.05
            p.copy_((1.0 if name.endswith("gamma") else 0.0) + scale * noise)
    model.save_pretrained(workdir)
    rng = np.random.default_rng(0)
    latent = args.size // 8
    for frames in args.frames:
        z = rng.normal(size=(1, frames, latent, latent, 16)).astype(np.float32)
        np.save(os.path.join(workdir, f"latents_{frames}.npy"), z)


def measure_decode(decode_once):
    """Times a first (compiling / warming) call, then a steady call whose peak RSS is measured
    from a reset high-water mark. Returns (stats, output of the steady call)."""
    start = time.perf_counter()
    decode_once()
    first = time.perf_counter() - start
    baseline = rss_mib()
    reset_high_water_mark()
    start = time.perf_counter()
    out = decode_once()
    seconds = time.perf_counter() - start
    stats = dict(
        first_call_s=first, seconds=seconds, baseline=baseline, steady_peak=high_water_mark_mib()
    )
    return stats, out


def worker_jax(args, workdir: str, frames: int) -> dict:
    import jax
    import jax.numpy as jnp
    from flax import linen as nn
    from safetensors import safe_open

    from configs import base
    from wow_jax import configuration
    from wow_jax.interop import mapping, vae_table
    from wow_jax.models import vae

    config = base.get_config()
    configuration.resolve_kernels(config, jax.default_backend())  # As main does.
    cfg = config.model.vae
    kw = model_kwargs(args)
    cfg.base_dim, cfg.dim_mult, cfg.num_res_blocks = (
        kw["base_dim"],
        kw["dim_mult"],
        kw["num_res_blocks"],
    )
    rules = vae_table.rules(cfg, "diffusers")
    shapes = mapping.flax_shapes_of(nn.meta.unbox(vae.abstract_params(cfg)))
    with safe_open(os.path.join(workdir, "diffusion_pytorch_model.safetensors"), "np") as f:
        params = jax.tree.map(jnp.asarray, mapping.torch_to_flax(f.get_tensor, rules, shapes))
    z = jnp.asarray(np.load(os.path.join(workdir, f"latents_{frames}.npy")))
    decode = jax.jit(lambda p, latents: vae.decode(p, latents, cfg))
    stats, out = measure_decode(lambda: decode(params, z).block_until_ready())
    out = np.asarray(out)
    np.save(os.path.join(workdir, f"jax_{frames}.npy"), out)
    return dict(stats, frames_out=out.shape[1])


def worker_torch(args, workdir: str, frames: int) -> dict:
    from diffusers import AutoencoderKLWan

    torch = torch_cpu.configure()
    model = AutoencoderKLWan.from_pretrained(workdir).eval()
    z = torch.from_numpy(
        np.moveaxis(np.load(os.path.join(workdir, f"latents_{frames}.npy")), -1, 1)
    )
    with torch.inference_mode():
        stats, out = measure_decode(lambda: model.decode(z.contiguous()).sample)
    out = np.moveaxis(out.numpy(), 1, -1)
    np.save(os.path.join(workdir, f"torch_{frames}.npy"), out)
    return dict(stats, frames_out=out.shape[1])


def run_worker(args) -> None:
    fn = worker_jax if args.worker == "jax" else worker_torch
    result = fn(args, args.workdir, args.worker_frames)
    result["peak_rss_mib"] = peak_rss_mib()
    print("RESULT " + json.dumps(result))


def measure(args, workdir: str, framework: str, frames: int) -> dict:
    cmd = [
        sys.executable,
        "-m",
        "scripts.benchmark_vae",
        f"--worker={framework}",
        f"--workdir={workdir}",
        f"--worker_frames={frames}",
        f"--size={args.size}",
        f"--base_dim={args.base_dim}",
        f"--dim_mult={args.dim_mult}",
        f"--num_res_blocks={args.num_res_blocks}",
    ]
    env = dict(os.environ, JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", "cpu"))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, check=False)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise RuntimeError(f"{framework} worker failed:\n{proc.stderr[-4000:]}")
    r = json.loads(lines[-1][len("RESULT ") :])
    return {
        "latent_frames": frames,
        "video_frames": r["frames_out"],
        "seconds": round(r["seconds"], 4),
        "ms_per_frame": round(1000 * r["seconds"] / r["frames_out"], 3),
        "first_call_s": round(r["first_call_s"], 3),
        "lifetime_peak_rss_mib": round(r["peak_rss_mib"], 1),
        "rss_before_decode_mib": round(r["baseline"], 1),
        "decode_peak_rss_mib": round(r["steady_peak"], 1),
        "decode_added_rss_mib": round(r["steady_peak"] - r["baseline"], 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/benchmarks/vae.json", help="JSON output path")
    parser.add_argument("--frames", default="5,21,41", help="latent frame counts")
    parser.add_argument("--size", type=int, default=64, help="frame height = width in pixels")
    parser.add_argument("--base_dim", type=int, default=16, help="VAE base channels")
    parser.add_argument("--dim_mult", default="1,2,4,4", help="channel multipliers")
    parser.add_argument("--num_res_blocks", type=int, default=2, help="res blocks per stage")
    parser.add_argument("--worker", default="", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", default="", help=argparse.SUPPRESS)
    parser.add_argument("--worker_frames", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        run_worker(args)
        return
    args.frames = [int(f) for f in args.frames.split(",")]
    results = {
        "config": {
            k: getattr(args, k)
            for k in ("size", "base_dim", "dim_mult", "num_res_blocks", "frames")
        }
    }
    results["cpu_count"] = os.cpu_count()
    results["load_average"] = os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        make_weights(args, workdir)
        for frames in args.frames:
            row = {"latent_frames": frames}
            for framework in ("torch", "jax"):
                row[framework] = measure(args, workdir, framework, frames)
                print(f"{framework:>5} {frames:>3} latent frames: {row[framework]}", flush=True)
            a = np.load(os.path.join(workdir, f"jax_{frames}.npy"))
            b = np.load(os.path.join(workdir, f"torch_{frames}.npy"))
            row["max_abs_diff"] = float(np.abs(a - b).max())
            row["time_ratio_jax_over_torch"] = round(
                row["jax"]["seconds"] / row["torch"]["seconds"], 3
            )
            row["decode_peak_rss_ratio_jax_over_torch"] = round(
                row["jax"]["decode_peak_rss_mib"] / row["torch"]["decode_peak_rss_mib"], 3
            )
            row["lifetime_peak_rss_ratio_jax_over_torch"] = round(
                row["jax"]["lifetime_peak_rss_mib"] / row["torch"]["lifetime_peak_rss_mib"], 3
            )
            rows.append(row)
    results["runs"] = rows
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(results, f, indent=2)
    print(json.dumps(rows, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
