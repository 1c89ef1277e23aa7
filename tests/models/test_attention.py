"""The 'xla' attention kernel, plain and with the CPU backward pass, against autodiff of plain
attention."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from wow_jax.models import attention


def _reference(q, k, v):
    logits = jnp.einsum("bqnd,bknd->bnqk", q, k) * q.shape[-1] ** -0.5
    return jnp.einsum("bnqk,bknd->bqnd", jax.nn.softmax(logits, axis=-1), v)


def _inputs(lq, lk, dtype=jnp.float32):
    rng = np.random.default_rng(0)
    q = rng.standard_normal((2, lq, 3, 16)) * 2
    k, v = (rng.standard_normal((2, lk, 3, 16)) * 2 for _ in range(2))
    return tuple(jnp.asarray(t, dtype) for t in (q, k, v))


@pytest.mark.parametrize("cpu_kernels", [True, False])
@pytest.mark.parametrize("lq, lk", [(24, 24), (24, 7)])  # Self- and cross-attention lengths.
def test_outputs_and_gradients_match_autodiff(lq, lk, cpu_kernels):
    q, k, v = _inputs(lq, lk)
    weights = jnp.asarray(np.random.default_rng(1).standard_normal((2, lq, 3, 16)), jnp.float32)

    def loss(fn):
        return lambda *qkv: jnp.sum(fn(*qkv) * weights)

    kernel = functools.partial(attention.xla_attention, cpu_kernels=cpu_kernels)
    out, want_out = kernel(q, k, v), _reference(q, k, v)
    assert float(jnp.max(jnp.abs(out - want_out)) / jnp.max(jnp.abs(want_out))) < 1e-6
    got = jax.jit(jax.grad(loss(kernel), argnums=(0, 1, 2)))(q, k, v)
    want = jax.grad(loss(_reference), argnums=(0, 1, 2))(q, k, v)
    for g, w in zip(got, want, strict=True):
        assert g.shape == w.shape
        assert float(jnp.max(jnp.abs(g - w)) / jnp.max(jnp.abs(w))) < 1e-5


def test_bfloat16_inputs_give_bfloat16_outputs_and_gradients_close_to_float32():
    q, k, v = _inputs(24, 24)
    half = tuple(t.astype(jnp.bfloat16) for t in (q, k, v))
    kernel = functools.partial(attention.xla_attention, cpu_kernels=True)
    out = kernel(*half)
    assert out.dtype == jnp.bfloat16
    np.testing.assert_allclose(
        np.asarray(out, np.float32), np.asarray(_reference(q, k, v)), atol=0.1, rtol=0.05
    )
    grads = jax.grad(lambda *t: jnp.sum(kernel(*t).astype(jnp.float32)), (0, 1, 2))
    for g_half, g_full in zip(grads(*half), grads(q, k, v), strict=True):
        assert g_half.dtype == jnp.bfloat16
        scale = float(jnp.max(jnp.abs(g_full)))
        assert float(jnp.max(jnp.abs(g_half.astype(jnp.float32) - g_full))) < 0.05 * scale
