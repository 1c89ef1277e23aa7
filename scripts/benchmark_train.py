"""Train-step time of a small Wan DiT in JAX vs the same model + optimizer in PyTorch, on CPU.

JAX: wow_jax's jitted flow-matching train step (AdamW, clipping, NaN guard, donated state).
PyTorch: diffusers WanTransformer3DModel with the same sizes, the same loss, torch.optim.AdamW
and clip_grad_norm_. One run, same process; writes JSON with both times and their ratio.

    python -m scripts.benchmark_train [--out runs/benchmarks/train.json] [--steps 10]
"""

import argparse
import json
import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

from configs import base
from scripts import torch_cpu
from wow_jax import compiler, configuration
from wow_jax.interop import dit_table
from wow_jax.train import loop
from wow_jax.train import optimizer as opt_lib
from wow_jax.train import state as state_lib
from wow_jax.train.tasks.world_model import WorldModelTask

SIZES = dict(dim=256, ffn_dim=1024, num_heads=4, num_layers=4, text_dim=64, freq_dim=256)
BATCH, LATENT, TEXT_LEN = 2, (3, 16, 16, 16), 32  # latent [t, h, w, z]; 3*8*8 = 192 tokens


def make_config():
    cfg = base.get_config()
    configuration.resolve_kernels(cfg, jax.default_backend())  # As main does.
    dit = cfg.model.dit
    for key, value in SIZES.items():
        dit[key] = value
    cfg.model.text.dim = SIZES["text_dim"]
    dit.text_len = cfg.model.text.text_len = TEXT_LEN  # The torch reference is fed TEXT_LEN tokens.
    cfg.train.freeze, cfg.train.warmup_steps, cfg.train.schedule = "", 0, "constant"
    cfg.train.timestep_sampling, cfg.train.text_dropout = "uniform", 0.0
    return cfg


def time_steps(step, state, batch, steps):
    state, metrics = step(state, batch)  # Warm-up (JAX: compiled already).
    jax.block_until_ready(metrics["loss"])
    start = time.perf_counter()
    for _ in range(steps):
        state, metrics = step(state, batch)
    jax.block_until_ready(metrics["loss"])
    return (time.perf_counter() - start) / steps, float(metrics["loss"])


def bench_jax(cfg, batch_np, steps):
    task = WorldModelTask(cfg, components=("dit",))
    params = loop.nn.unbox(jax.jit(task.init_params)(jax.random.PRNGKey(0)))
    tx = opt_lib.make_optimizer(cfg.train, params)
    mask = opt_lib.trainable_mask(params, "")
    trainable = jax.tree.map(lambda _: True, params)
    state = state_lib.create(params, tx, jax.random.PRNGKey(1), 0.0, trainable)
    batch = {k: jnp.asarray(v) for k, v in batch_np.items()}
    step = (
        jax.jit(loop.build_train_step(task, tx, cfg.train, mask), donate_argnums=0)
        .lower(state, batch)
        .compile(compiler.program_options())  # As the train loop compiles it.
    )
    count = sum(x.size for x in jax.tree.leaves(params))
    seconds, loss = time_steps(step, state, batch, steps)
    return {"step_s": seconds, "last_loss": loss, "params": int(count)}


def bench_torch(cfg, batch_np, steps):
    from diffusers import WanTransformer3DModel

    torch = torch_cpu.configure()
    torch.manual_seed(0)
    model = WanTransformer3DModel(**dit_table.diffusers_kwargs(cfg.model.dit)).float()
    train = cfg.train
    opt = torch.optim.AdamW(
        model.parameters(),
        lr=train.learning_rate,
        betas=(train.adam_b1, train.adam_b2),
        eps=train.adam_eps,
        weight_decay=train.weight_decay,
    )
    # channels-last [B, t, h, w, z] -> diffusers [B, z, t, h, w]
    x0 = torch.from_numpy(batch_np["latents"]).permute(0, 4, 1, 2, 3).contiguous()
    text = torch.from_numpy(batch_np["text_states"])
    gen = torch.Generator().manual_seed(0)

    def step():
        sigma = torch.rand(BATCH, generator=gen)
        shift = train.shift
        sigma = shift * sigma / (1 + (shift - 1) * sigma)
        noise = torch.randn(x0.shape, generator=gen)
        s = sigma.view(-1, 1, 1, 1, 1)
        x_t = (1 - s) * x0 + s * noise
        pred = model(x_t, sigma * 1000, text, return_dict=False)[0]
        loss = torch.mean((pred - (noise - x0)) ** 2)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), train.clip_norm)
        opt.step()
        return loss

    step()
    start = time.perf_counter()
    for _ in range(steps):
        loss = step()
    seconds = (time.perf_counter() - start) / steps
    count = sum(p.numel() for p in model.parameters())
    return {
        "step_s": seconds,
        "last_loss": float(loss.detach()),
        "params": int(count),
        "threads": torch.get_num_threads(),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="runs/benchmarks/train.json")
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    cfg = make_config()
    rng = np.random.default_rng(0)
    batch = {
        "latents": rng.normal(size=(BATCH, *LATENT)).astype(np.float32),
        "text_states": rng.normal(size=(BATCH, TEXT_LEN, SIZES["text_dim"])).astype(np.float32),
    }
    jax_result = bench_jax(cfg, batch, args.steps)
    torch_result = bench_torch(cfg, batch, args.steps)
    if jax_result["params"] != torch_result["params"]:
        raise RuntimeError(f"models differ: jax {jax_result['params']} vs torch params")
    result = {
        "benchmark": "train_step_small_dit_cpu",
        "model": {**SIZES, "batch": BATCH, "latent_thwc": LATENT, "text_len": TEXT_LEN},
        "optimizer": "AdamW + global-norm clip, fp32",
        "steps_timed": args.steps,
        "jax": jax_result,
        "torch": torch_result,
        "torch_over_jax": torch_result["step_s"] / jax_result["step_s"],
        "device": jax.devices()[0].device_kind,
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
