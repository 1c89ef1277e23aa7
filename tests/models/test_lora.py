"""LoRA adapters on the tiny DiT (issue 21): forward = base + scale * A @ B by hand, zero B = base,
and merge."""

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from flax import traverse_util

from configs import tiny
from tests.models import dit_torch
from wow_jax.models import dit, lora
from wow_jax.sampling import models as sampling_models


def lora_setup(scan_layers: bool = True, rank: int = 2, alpha: float = 3.0):
    """(dit cfg, lora cfg, random base params with a non-zero head, inputs)."""
    config = tiny.get_config()
    cfg = config.model.dit
    cfg.scan_layers = scan_layers
    config.train.lora.rank, config.train.lora.alpha = rank, alpha
    base = jax.tree.map(jnp.asarray, sampling_models.random_params(dit.abstract_params(cfg), 3))
    x = dit_torch.inputs(cfg, batch=1, frames=2, height=4, width=4)
    return cfg, config.train.lora, base, x


def random_adapters(cfg, lora_cfg, seed: int = 5) -> dict:
    """Adapters with A and B both non-zero (a trained adapter)."""
    abstract = nn.meta.unbox(dit.abstract_adapters(cfg, lora_cfg))
    rng = np.random.default_rng(seed)
    return jax.tree.map(
        lambda s: jnp.asarray(0.3 * rng.standard_normal(s.shape), s.dtype), abstract
    )


def merged_by_hand(base: dict, adapters: dict, scaling: float) -> dict:
    """W + scaling * A @ B for every adapted kernel, in numpy float64 (per layer of the stack)."""
    flat = {k: np.asarray(v, np.float64) for k, v in traverse_util.flatten_dict(base).items()}
    pairs = traverse_util.flatten_dict(adapters)
    for path in pairs:
        if path[-1] != lora.A:
            continue
        a, b = np.asarray(pairs[path], np.float64), np.asarray(pairs[(*path[:-1], lora.B)])
        for i in range(a.shape[0]):
            flat[(*path[:-1], "kernel")][i] += scaling * a[i] @ b[i]
    return traverse_util.unflatten_dict({k: v.astype(np.float32) for k, v in flat.items()})


# issue 21: the LoRA forward pass equals the base model run with W + (alpha/rank) A B computed by
# hand (scanned blocks, every default target: q/k/v/o of both attentions and the FFN).
def test_lora_forward_equals_base_plus_scaled_ba_by_hand():
    cfg, lora_cfg, base, x = lora_setup()
    adapters = random_adapters(cfg, lora_cfg)
    modules = lora.adapter_modules(adapters)
    assert len(modules) == 10  # self/cross q k v o + ffn fc1 fc2, stacked over the layers
    assert all(
        adapters_leaf.shape[0] == cfg.num_layers for adapters_leaf in jax.tree.leaves(adapters)
    )
    got = jax.jit(dit.create(cfg, lora_cfg).apply)({"params": base, "lora": adapters}, **x)
    by_hand = merged_by_hand(base, adapters, lora_cfg.alpha / lora_cfg.rank)
    want = jax.jit(dit.create(cfg).apply)({"params": by_hand}, **x)
    plain = jax.jit(dit.create(cfg).apply)({"params": base}, **x)
    assert dit_torch.rel_err(got, want) <= 1e-5
    assert dit_torch.rel_err(plain, want) > 1e-2  # the adapters change the output
    merged = lora.merge(base, adapters, lora.LoRASpec.from_config(lora_cfg))
    for k, v in traverse_util.flatten_dict(merged).items():
        np.testing.assert_allclose(v, traverse_util.flatten_dict(by_hand)[k], rtol=1e-5, atol=1e-6)


# issue 21: freshly initialised adapters (B = 0) leave the output exactly the base output (the same
# arithmetic: unscanned, eager), and within float rounding once XLA fuses the scanned program.
def test_zero_b_leaves_the_base_output_unchanged():
    cfg, lora_cfg, base, x = lora_setup(scan_layers=False)
    adapters = nn.meta.unbox(dit.init_adapters(cfg, lora_cfg, jax.random.key(0)))
    flat = traverse_util.flatten_dict(adapters)
    assert all(np.all(v == 0) for k, v in flat.items() if k[-1] == lora.B)
    assert all(np.abs(v).max() > 0 for k, v in flat.items() if k[-1] == lora.A)
    with jax.disable_jit():
        got = dit.create(cfg, lora_cfg).apply({"params": base, "lora": adapters}, **x)
        want = dit.create(cfg).apply({"params": base}, **x)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))

    cfg, lora_cfg, base, x = lora_setup(scan_layers=True)
    adapters = nn.meta.unbox(dit.init_adapters(cfg, lora_cfg, jax.random.key(0)))
    got = jax.jit(dit.create(cfg, lora_cfg).apply)({"params": base, "lora": adapters}, **x)
    want = jax.jit(dit.create(cfg).apply)({"params": base}, **x)
    assert dit_torch.rel_err(got, want) <= 1e-6
