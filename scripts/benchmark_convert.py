"""Benchmark: stream a Wan2.1-1.3B DiT checkpoint PyTorch -> Orbax -> PyTorch; wall time + peak RSS.

    python -m scripts.benchmark_convert [--out runs/benchmarks/convert.json] [--workdir /tmp/x]

1. writes a randomly initialised 1.3B DiT in the Wan-native layout (one bf16 safetensors file,
   ~2.8 GB, as the Wan2.1-T2V-1.3B release ships it), tensor by tensor;
2. imports it into an Orbax checkpoint (params in the config's float32, on `--devices` simulated
   CPU devices along fsdp);
3. exports that to a diffusers folder (bf16, 5 GB shards);
4. as the PyTorch reference, the usual whole-state-dict conversion: `safetensors.torch.load_file`,
   rename to diffusers names, `save_file`.
Each step runs in its own process and reports its peak RSS (`ru_maxrss`). The goal is
peak RSS < 1.5x the largest shard file. Big files are deleted at the end (`--keep` keeps them).
"""

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]  # stages run as `python -m scripts.benchmark_convert`
SOURCE_FILE = "diffusion_pytorch_model.safetensors"


def _dit_cfg():
    from configs import wan1_3b  # noqa: PLC0415

    return wan1_3b.get_config().model.dit


def stage_write(work: Path) -> dict:
    """Random bf16 tensors, generated and written one by one (Wan-native names and shapes)."""
    import ml_dtypes  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415
    from flax import linen as nn  # noqa: PLC0415

    from wow_jax.interop import formats, mapping, registry  # noqa: PLC0415

    cfg, component = _dit_cfg(), registry.get("dit")
    rules = registry.rules_by_naming(component, cfg)["wan"]
    shapes = mapping.flax_shapes_of(nn.meta.unbox(registry.abstract_params(component, cfg)))
    entries = []
    for rule in rules:
        shape = mapping.target_shape(rule, shapes)
        torch_shape = mapping.torch_layout_shape(shape, rule.transform)
        entries.append((rule.torch_name, torch_shape, np.dtype(ml_dtypes.bfloat16)))
    rng = np.random.default_rng(0)

    def arrays():
        for _, shape, dtype in entries:
            yield (rng.standard_normal(shape, np.float32) * 0.02).astype(dtype)

    (work / "wan").mkdir(parents=True, exist_ok=True)
    formats.write_safetensors(work / "wan" / SOURCE_FILE, entries, arrays())
    (work / "wan/config.json").write_text(json.dumps(component.wan_config(cfg)))
    return {"tensors": len(entries), "bytes": (work / "wan" / SOURCE_FILE).stat().st_size}


def stage_import(work: Path) -> dict:
    from configs import wan1_3b  # noqa: PLC0415
    from wow_jax import sharding  # noqa: PLC0415
    from wow_jax.interop import importer  # noqa: PLC0415

    config = wan1_3b.get_config()
    mesh = sharding.make_mesh(config.mesh)
    return importer.import_checkpoint(
        "dit", work / "wan", work / "orbax", config.model.dit, mesh, progress=False
    )


def stage_export(work: Path) -> dict:
    from wow_jax.interop import exporter  # noqa: PLC0415

    return exporter.export_checkpoint(
        "dit", work / "orbax", work / "diffusers", _dit_cfg(), naming="diffusers", progress=False
    )


def stage_torch(work: Path) -> dict:
    """The whole-state-dict conversion most PyTorch scripts do (the reference)."""
    from safetensors.torch import load_file, save_file  # noqa: PLC0415

    from wow_jax.interop import registry  # noqa: PLC0415

    start = time.time()
    tables = registry.rules_by_naming(registry.get("dit"), _dit_cfg())
    slot = {(r.flax_path, r.layer): r.torch_name for r in tables["diffusers"]}
    rename = {r.torch_name: slot[(r.flax_path, r.layer)] for r in tables["wan"]}
    state = load_file(work / "wan" / SOURCE_FILE)
    state = {rename[k]: v for k, v in state.items()}
    (work / "torch").mkdir(exist_ok=True)
    save_file(state, work / "torch" / SOURCE_FILE)
    return {"seconds": time.time() - start}


STAGES = {
    "write": stage_write,
    "import": stage_import,
    "export": stage_export,
    "torch": stage_torch,
}


def run_stage(name: str, work: Path, devices: int) -> dict:
    """Runs one stage in a fresh process; returns its report with wall time and peak RSS."""
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    start = time.time()
    run = subprocess.run(
        [sys.executable, "-m", "scripts.benchmark_convert", "--stage", name,
         "--workdir", str(work.resolve())],
        cwd=ROOT, env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    if run.returncode:
        raise RuntimeError(f"stage {name} failed:\n{run.stderr[-3000:]}")
    report = json.loads(run.stdout.strip().splitlines()[-1])
    report["wall_seconds"] = round(time.time() - start, 2)
    print(f"{name}: {report['wall_seconds']}s, peak RSS {report['peak_rss_bytes'] / 2**30:.2f} GiB")
    return report


def largest_file(folder: Path) -> int:
    return max(p.stat().st_size for p in folder.rglob("*.safetensors"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/benchmarks/convert.json")
    parser.add_argument("--workdir", default="runs/benchmarks/convert_tmp")
    parser.add_argument("--devices", type=int, default=8, help="Simulated CPU devices (fsdp).")
    parser.add_argument("--keep", action="store_true", help="Keep the multi-GB files.")
    parser.add_argument("--stage", choices=list(STAGES), help=argparse.SUPPRESS)
    args = parser.parse_args()
    work = Path(args.workdir)
    if args.stage:
        report = STAGES[args.stage](work)
        report["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        print(json.dumps(report, default=str))
        return

    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    try:
        reports = {name: run_stage(name, work, args.devices) for name in STAGES}
        source_shard = largest_file(work / "wan")
        export_shard = largest_file(work / "diffusers")
        result = {
            "model": "Wan2.1-T2V-1.3B DiT, random; Wan-native bf16 -> Orbax fp32 -> diffusers bf16",
            "devices": args.devices,
            "source_largest_shard_bytes": source_shard,
            "export_largest_shard_bytes": export_shard,
            "stages": reports,
            "import_rss_over_largest_shard": reports["import"]["peak_rss_bytes"] / source_shard,
            "export_rss_over_largest_shard": reports["export"]["peak_rss_bytes"] / export_shard,
            "torch_rss_over_largest_shard": reports["torch"]["peak_rss_bytes"] / source_shard,
            "import_seconds_over_torch": reports["import"]["wall_seconds"]
            / reports["torch"]["wall_seconds"],
            "export_seconds_over_torch": reports["export"]["wall_seconds"]
            / reports["torch"]["wall_seconds"],
        }
        result["goal_rss_under_1.5x_shard"] = bool(
            max(result["import_rss_over_largest_shard"], result["export_rss_over_largest_shard"])
            < 1.5
        )
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2, default=str) + "\n")
        print(json.dumps({k: v for k, v in result.items() if k != "stages"}, indent=2))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
