"""Seconds per denoising step: wow_jax (jitted UniPC loop + DiT + CFG) vs diffusers
(WanTransformer3DModel + UniPCMultistepScheduler, as WanImageToVideoPipeline steps), same weights.

    python -m scripts.benchmark_sample [--steps=6] [--out=runs/benchmarks/sample.json]

A small Wan I2V DiT (width 256, 4 blocks) with random weights is built in diffusers and mapped into
the Flax tree through the DiT name table. Both sides denoise the same noise with the same I2V
conditioning, text and image tokens and guidance; a step is one CFG model evaluation (JAX: one
call on the doubled batch; diffusers: a conditional and an unconditional call, as its pipeline
does) plus the UniPC update. Each side runs the loop once untimed (JAX: compile + run), then
`--repeats` times; the median per-step time is kept. The JSON holds seconds per step
on each side, their ratio (torch / jax > 1: JAX faster), the compile time and the max relative
difference of the final latents (a parity check of the whole sampler with the DiT).
"""

import json
import os
import time

import jax
import numpy as np
from absl import app, flags

from configs import tiny
from scripts import torch_cpu
from wow_jax import compiler, configuration
from wow_jax.interop import dit_reference
from wow_jax.models import dit
from wow_jax.sampling import guidance, unipc
from wow_jax.sampling.schedulers import unipc_schedule

_STEPS = flags.DEFINE_integer("steps", 6, "Denoising steps timed per side.")
_SHIFT = flags.DEFINE_float("shift", 3.0, "Flow shift.")
_GUIDANCE = flags.DEFINE_float("guidance", 5.0, "CFG scale.")
_LATENT = flags.DEFINE_list("latent", ["3", "16", "16"], "Latent frames, height, width.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed runs per side; the median is reported.")
_THREADS = flags.DEFINE_integer("torch_threads", 0, "torch.set_num_threads (0 = torch default).")
_OUT = flags.DEFINE_string("out", "runs/benchmarks/sample.json", "JSON output path.")

TEXT_TOKENS = 512  # diffusers' i2v cross-attention splits image/text tokens assuming 512 text.
IMAGE_TOKENS = 257  # CLIP ViT-H/14 at 224 px.


def small_dit_config():
    config = tiny.get_config()
    configuration.resolve_kernels(config, jax.default_backend())  # As main does.
    cfg = config.model.dit
    cfg.variant, cfg.in_channels = "i2v", 36
    cfg.dim, cfg.ffn_dim, cfg.num_heads, cfg.num_layers = 256, 1024, 4, 4
    cfg.freq_dim, cfg.text_dim, cfg.image_dim = 256, 256, 256
    cfg.text_len = TEXT_TOKENS
    return cfg


def inputs(cfg, latent):
    rng = np.random.default_rng(0)
    t, h, w = latent
    return {
        "noise": rng.standard_normal((1, t, h, w, 16), np.float32),
        "cond": rng.standard_normal((1, t, h, w, 20), np.float32),
        "text": rng.standard_normal((1, TEXT_TOKENS, cfg.text_dim), np.float32),
        "negative": rng.standard_normal((1, TEXT_TOKENS, cfg.text_dim), np.float32),
        "image": rng.standard_normal((1, IMAGE_TOKENS, cfg.image_dim), np.float32),
    }


def run_jax(cfg, params, x, steps, shift, scale):
    module = dit.create(cfg)
    schedule = unipc_schedule(steps, shift)

    @jax.jit
    def sample(params, noise, cond, text, negative, image):
        def model_fn(z, t, states):
            reps = z.shape[0] // noise.shape[0]
            inp = jax.numpy.concatenate([z, jax.numpy.tile(cond, (reps, 1, 1, 1, 1))], -1)
            ts = jax.numpy.full((z.shape[0],), t)
            tokens = jax.numpy.tile(image, (reps, 1, 1))
            return module.apply({"params": params}, inp, ts, states, tokens)

        velocity = guidance.guided_velocity(model_fn, text, negative, scale)
        return unipc.unipc_sample(velocity, noise, schedule)

    args = (params, x["noise"], x["cond"], x["text"], x["negative"], x["image"])
    start = time.perf_counter()
    compiled = sample.lower(*args).compile(compiler.program_options())  # As the generator.
    compile_s = time.perf_counter() - start
    compiled(*args).block_until_ready()  # Warm-up run.
    times = []
    for _ in range(_REPEATS.value):
        start = time.perf_counter()
        out = compiled(*args).block_until_ready()
        times.append((time.perf_counter() - start) / steps)
    return np.asarray(out), float(np.median(times)), compile_s


def run_torch(model, x, steps, shift, scale):
    """Median seconds per step over the repeats (after a warm-up model call)."""
    times = []
    for _ in range(_REPEATS.value + 1):
        out, step_s = torch_loop(model, x, steps, shift, scale)
        times.append(step_s)
    return out, float(np.median(times[1:]))


def torch_loop(model, x, steps, shift, scale):
    import torch
    from diffusers import UniPCMultistepScheduler

    scheduler = UniPCMultistepScheduler(
        prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=shift,
        solver_order=2, solver_type="bh2", num_train_timesteps=1000,
    )  # fmt: skip
    scheduler.set_timesteps(steps)
    cf = lambda a: torch.from_numpy(np.moveaxis(a, -1, 1).copy())  # noqa: E731
    latents, cond = cf(x["noise"]), cf(x["cond"])
    text, negative = torch.from_numpy(x["text"]), torch.from_numpy(x["negative"])
    image = torch.from_numpy(x["image"])
    start = time.perf_counter()
    with torch.no_grad():
        for t in scheduler.timesteps:
            inp = torch.cat([latents, cond], dim=1)
            ts = t.expand(latents.shape[0])
            pos = model(inp, ts, text, encoder_hidden_states_image=image, return_dict=False)[0]
            neg = model(inp, ts, negative, encoder_hidden_states_image=image, return_dict=False)[0]
            latents = scheduler.step(neg + scale * (pos - neg), t, latents, return_dict=False)[0]
    step_s = (time.perf_counter() - start) / steps
    return latents.permute(0, 2, 3, 4, 1).numpy(), step_s


def main(argv):
    del argv
    torch = torch_cpu.configure(_THREADS.value)
    cfg = small_dit_config()
    model = dit_reference.random_diffusers_dit(cfg, vector_std=0.1)
    params = dit_reference.flax_params(cfg, dit_reference.state_dict_numpy(model))
    latent = tuple(int(v) for v in _LATENT.value)
    x = inputs(cfg, latent)
    steps, shift, scale = _STEPS.value, _SHIFT.value, _GUIDANCE.value
    jax_out, jax_s, compile_s = run_jax(cfg, params, x, steps, shift, scale)
    torch_out, torch_s = run_torch(model, x, steps, shift, scale)
    rel = float(np.abs(jax_out - torch_out).max() / np.abs(torch_out).max())
    result = {
        "what": "seconds per denoising step (CFG DiT evaluation + UniPC update), batch 1",
        "device": jax.devices()[0].device_kind,
        "torch_threads": torch.get_num_threads(),
        "dit": {k: cfg[k] for k in ("dim", "ffn_dim", "num_heads", "num_layers", "variant")},
        "latent_thw": latent,
        "video_tokens": latent[0] * latent[1] * latent[2] // 4,
        "steps": steps,
        "repeats": _REPEATS.value,
        "guidance": scale,
        "shift": shift,
        "jax_step_s": jax_s,
        "torch_step_s": torch_s,
        "ratio_torch_over_jax": torch_s / jax_s,
        "jax_compile_s": compile_s,
        "final_latents_max_rel_diff": rel,
    }
    print(json.dumps(result, indent=2))
    os.makedirs(os.path.dirname(os.path.abspath(_OUT.value)), exist_ok=True)
    with open(_OUT.value, "w") as f:
        json.dump(result, f, indent=2)


if __name__ == "__main__":
    app.run(main)
