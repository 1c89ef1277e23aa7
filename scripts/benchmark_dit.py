"""Forward and forward+backward time of the same small Wan DiT in JAX (jit) and in diffusers
(PyTorch eager), on this machine's CPU, in one run; JSON with the ratios.

    python -m scripts.benchmark_dit [--out=runs/benchmarks/dit.json] [--repeats=5]

On one core for both (fairest on a shared or loaded host, where OpenMP threads spin):

    taskset -c 0 python -m scripts.benchmark_dit --torch_threads=1 \
        --out=runs/benchmarks/dit_1core.json

Both frameworks get the same weights (diffusers' model with every weight redrawn, mapped through
the DiT table) and the same inputs; the outputs are compared as a sanity check. JAX runs the blocks
two ways, as separate programs: unrolled without rematerialisation (`scan_layers=False,
remat_policy='none'`, the fastest choice for a small model on CPU) and the config default (one
`nn.scan` over the blocks, for compile time at 40 layers, with `remat_policy='dots_no_batch'`),
each compiled with `wow_jax.compiler.program_options()` like the train loop. Timings are medians
over `repeats` calls after warm-up (JAX: compile + 2 calls), all calls interleaved so that load
from other processes hits every variant alike; the fastest calls are reported too (min_*).
ratio = torch seconds / jax seconds (> 1: JAX faster).
"""

import functools
import json
import os
import statistics
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import app, flags, logging

from configs import base
from scripts import torch_cpu
from wow_jax import compiler, configuration
from wow_jax.interop import dit_reference
from wow_jax.models import dit

_OUT = flags.DEFINE_string("out", "runs/benchmarks/dit.json", "Where the JSON report goes.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed calls per measurement (median reported).")
_VARIANT = flags.DEFINE_enum("variant", "t2v", ["t2v", "i2v"], "DiT variant.")
_DIM = flags.DEFINE_integer("dim", 256, "Transformer width.")
_LAYERS = flags.DEFINE_integer("layers", 4, "Transformer blocks.")
_GRID = flags.DEFINE_list("latent_shape", ["5", "16", "16"], "Latent frames, height, width.")
_TEXT_LEN = flags.DEFINE_integer("text_len", 64, "Text tokens (i2v: diffusers needs 512).")
_BATCH = flags.DEFINE_integer("batch", 1, "Batch size.")
_TORCH_THREADS = flags.DEFINE_integer(
    "torch_threads", 0, "torch.set_num_threads (0 = torch's default, one per core)."
)


def small_config() -> ml_collections.ConfigDict:
    config = base.get_config()
    configuration.resolve_kernels(config, jax.default_backend())  # As main does.
    cfg = ml_collections.ConfigDict(config.model.dit.to_dict())
    cfg.variant = _VARIANT.value
    cfg.in_channels = 16 if cfg.variant == "t2v" else 36
    cfg.dim, cfg.num_heads, cfg.num_layers = _DIM.value, max(1, _DIM.value // 64), _LAYERS.value
    cfg.ffn_dim, cfg.text_dim, cfg.image_dim = 4 * _DIM.value, _DIM.value, _DIM.value
    return cfg


def jax_programs(cfg: ml_collections.ConfigDict, params, inputs) -> dict:
    """{'forward': fn, 'forward_backward': fn}: compiled like the train loop's programs."""
    module = dit.create(cfg)

    def forward(p, x):
        return module.apply({"params": p}, **x)

    def loss(p, x):
        return jnp.mean(jnp.square(forward(p, x)))

    options = compiler.program_options()
    compiled = {
        "forward": jax.jit(forward).lower(params, inputs).compile(options),
        "forward_backward": jax.jit(jax.value_and_grad(loss))
        .lower(params, inputs)
        .compile(options),
    }
    return {name: functools.partial(fn, params, inputs) for name, fn in compiled.items()}


def _seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main(argv):
    del argv
    torch = torch_cpu.configure(_TORCH_THREADS.value)
    cfg = small_config()
    model = dit_reference.random_diffusers_dit(cfg)  # No dropout in Wan: eval mode trains alike.
    state = dit_reference.state_dict_numpy(model)

    rng = np.random.default_rng(0)
    b, (f, h, w) = _BATCH.value, (int(s) for s in _GRID.value)
    text_len = 512 if cfg.variant == "i2v" else _TEXT_LEN.value
    cfg.text_len = text_len  # The JAX DiT zero-pads to text_len; diffusers takes them as given.
    x = {
        "latents": rng.standard_normal((b, f, h, w, cfg.in_channels), np.float32),
        "timesteps": rng.uniform(0, 1000, (b,)).astype(np.float32),
        "text_states": rng.standard_normal((b, text_len, cfg.text_dim), np.float32),
    }
    if cfg.variant == "i2v":
        x["image_tokens"] = rng.standard_normal((b, 257, cfg.image_dim), np.float32)
    tx = {
        "hidden_states": torch.from_numpy(np.moveaxis(x["latents"], -1, 1).copy()),
        "timestep": torch.from_numpy(x["timesteps"]),
        "encoder_hidden_states": torch.from_numpy(x["text_states"]),
        "encoder_hidden_states_image": (
            torch.from_numpy(x["image_tokens"]) if "image_tokens" in x else None
        ),
        "return_dict": False,
    }
    jx = jax.device_put(x)
    calls, compile_seconds = {}, {}
    layouts = {}
    for layout, scan, remat in (("unrolled", False, "none"), ("scan", True, cfg.remat_policy)):
        cfg.scan_layers, cfg.remat_policy = scan, remat
        layouts[layout] = {"scan_layers": scan, "remat_policy": remat}
        # Scanned blocks stack their weights: map them per layout.
        params = jax.device_put(dit_reference.flax_params(cfg, state))
        start = time.perf_counter()
        for name, fn in jax_programs(cfg, params, jx).items():
            calls[f"jax_{layout}", name] = lambda fn=fn: jax.block_until_ready(fn())
        compile_seconds[layout] = time.perf_counter() - start

    def torch_forward():
        with torch.no_grad():
            return model(**tx)[0]

    def torch_train():
        model.zero_grad(set_to_none=True)
        torch.mean(torch.square(model(**tx)[0])).backward()

    calls["torch", "forward"], calls["torch", "forward_backward"] = torch_forward, torch_train
    want = torch_forward().permute(0, 2, 3, 4, 1).numpy()
    rel_err = {}
    for layout in ("unrolled", "scan"):
        got = np.asarray(calls[f"jax_{layout}", "forward"]())
        rel_err[layout] = float(np.max(np.abs(got - want)) / np.max(np.abs(want)))
    for fn in calls.values():
        fn(), fn()

    timings = {key: [] for key in calls}
    for i in range(_REPEATS.value):
        for key, fn in calls.items():
            timings[key].append(_seconds(fn))
        logging.info("round %d/%d done", i + 1, _REPEATS.value)

    def table(reduce):
        out = {}
        for (who, name), values in timings.items():
            out.setdefault(who, {})[name] = reduce(values)
        return out

    med, best = table(statistics.median), table(min)

    def ratios(seconds):
        return {
            layout: {
                name: seconds["torch"][name] / seconds[f"jax_{layout}"][name]
                for name in seconds["torch"]
            }
            for layout in ("unrolled", "scan")
        }

    result = {
        "device": jax.devices()[0].device_kind,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "jax_compile_options": compiler.program_options(),
        "load_average_1min": os.getloadavg()[0],
        "config": {
            "variant": cfg.variant,
            "dim": cfg.dim,
            "num_heads": cfg.num_heads,
            "num_layers": cfg.num_layers,
            "ffn_dim": cfg.ffn_dim,
            "jax_layouts": layouts,
            "latents": list(x["latents"].shape),
            "tokens": f * h * w // 4,
            "text_len": text_len,
        },
        "repeats": _REPEATS.value,
        "output_rel_err": rel_err,
        "jax_compile_seconds": compile_seconds,
        "seconds": med,
        "ratio_torch_over_jax": ratios(med),
        # Fastest call of each: less sensitive to other processes on a shared host.
        "min_seconds": best,
        "min_ratio_torch_over_jax": ratios(best),
    }
    os.makedirs(os.path.dirname(_OUT.value) or ".", exist_ok=True)
    with open(_OUT.value, "w") as f:
        json.dump(result, f, indent=2)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    app.run(main)
