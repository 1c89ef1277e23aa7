"""The XLA:CPU fusion barrier: an exact identity (values and gradients) that XLA cannot remove;
with cpu_kernels off, the plain identity."""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from wow_jax.models import layers


def _chain(x):
    """A residual-style chain whose sum XLA would otherwise fuse into every consumer."""
    for i in range(4):
        x = layers.fusion_barrier(x + jnp.sin(x) * (i + 1), cpu_kernels=True)
    return x


def test_fusion_barrier_is_an_exact_identity_for_values_and_gradients():
    x = jnp.asarray(np.random.default_rng(0).standard_normal((3, 5, 7)), jnp.float32)
    special = x.at[0, 0, 0].set(jnp.nan).at[1, 1, 1].set(jnp.inf).at[2, 2, 2].set(-jnp.inf)
    barrier = functools.partial(layers.fusion_barrier, cpu_kernels=True)
    for value in (x, special):
        np.testing.assert_array_equal(np.asarray(jax.jit(barrier)(value)), value)
    cotangent = jnp.asarray(np.random.default_rng(1).standard_normal(x.shape), jnp.float32)
    _, pullback = jax.vjp(barrier, x)
    np.testing.assert_array_equal(np.asarray(pullback(cotangent)[0]), cotangent)
    want = jax.jit(jax.grad(lambda v: jnp.sum(_chain_without_barrier(v) ** 2)))(x)
    got = jax.jit(jax.grad(lambda v: jnp.sum(_chain(v) ** 2)))(x)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5)


def _chain_without_barrier(x):
    for i in range(4):
        x = x + jnp.sin(x) * (i + 1)
    return x


def test_fusion_barrier_survives_xla_cpu_in_forward_and_backward():
    """XLA:CPU drops lax.optimization_barrier; the barrier's loop must still be in the compiled
    program, once per call in the forward and once per call in the backward pass."""
    x = jnp.ones((8, 16), jnp.float32)
    forward = jax.jit(_chain).lower(x).compile().as_text()
    train = jax.jit(jax.grad(lambda v: jnp.sum(_chain(v) ** 2))).lower(x).compile().as_text()
    assert forward.count(" while(") == 4
    assert train.count(" while(") == 8
    plain = jax.jit(lambda v: jax.lax.optimization_barrier(v) * 2).lower(x).compile().as_text()
    assert "opt-barrier" not in plain  # Why the loop: XLA:CPU removes optimization barriers.


def test_without_cpu_kernels_the_barrier_is_the_identity_itself():
    x = jnp.ones((8, 16), jnp.float32)
    assert layers.fusion_barrier(x, cpu_kernels=False) is x
