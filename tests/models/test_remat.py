"""Named remat policies of the DiT: each keeps exactly its checkpoint_name-tagged block tensors for
the backward pass, and every policy gives the same gradients."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from wow_jax.models import dit

NAMED = {
    "save_attention_out": {dit.ATTENTION_OUT},
    "save_ffn_in": {dit.FFN_IN},
    "save_attention_out_ffn_in": {dit.ATTENTION_OUT, dit.FFN_IN},
    "save_qkv_attention_out": {dit.QKV, dit.ATTENTION_OUT},
    "full": set(),
}
# Tagged tensors per block: q, k, v; self- and cross-attention outputs; the FFN input.
PER_BLOCK = {dit.QKV: 3, dit.ATTENTION_OUT: 2, dit.FFN_IN: 1}


def _setup(tiny_config, policy, scan_layers):
    cfg = tiny_config.model.dit.copy_and_resolve_references()
    cfg.remat_policy, cfg.scan_layers = policy, scan_layers
    module = dit.create(cfg)
    params = nn.meta.unbox(dit.init_params(cfg, jax.random.key(0)))
    rng = np.random.default_rng(0)
    x = {
        "latents": jnp.asarray(rng.standard_normal((1, 2, 4, 4, 16)), jnp.float32),
        "timesteps": jnp.asarray([500.0]),
        "text_states": jnp.asarray(rng.standard_normal((1, 3, cfg.text_dim)), jnp.float32),
    }

    def loss(p):
        out = module.apply({"params": p}, **x)
        return jnp.sum(out * jnp.sin(out))

    return cfg, params, loss


@pytest.mark.parametrize("policy", sorted(NAMED))
def test_named_policy_saves_exactly_its_tensors(tiny_config, policy, capsys):
    cfg, params, loss = _setup(tiny_config, policy, scan_layers=False)
    jax.ad_checkpoint.print_saved_residuals(loss, params)
    saved = re.findall(r"named '(\w+)'", capsys.readouterr().out)
    want = {name: PER_BLOCK[name] * cfg.num_layers for name in NAMED[policy]}
    assert {name: saved.count(name) for name in set(saved)} == want


def test_named_policies_give_the_gradients_of_no_remat(tiny_config):
    """(The generic policies are checked against diffusers in test_dit.py.)"""
    _, params, loss = _setup(tiny_config, "none", scan_layers=True)
    want = jax.jit(jax.grad(loss))(params)
    for policy in sorted(set(NAMED) - {"full"}):
        _, _, loss = _setup(tiny_config, policy, scan_layers=True)
        got = jax.jit(jax.grad(loss))(params)
        for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
            np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-5, atol=1e-6)
