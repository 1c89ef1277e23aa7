"""Classifier-free guidance with a negative prompt (Wan2.1):
v = v_uncond + g (v_cond - v_uncond), where 'uncond' is the model run on the negative prompt.

The conditional and negative passes run as one model call on a doubled batch (the two halves
are independent rows, so the result equals two calls). guidance = 1 skips the negative pass.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp


def check_guidance(scale: float) -> None:
    if not scale >= 1.0:
        raise ValueError(
            f"guidance scale must be >= 1 (1 = no guidance, Wan uses 5), got {scale}; "
            "set --config.sample.guidance to 1 or more"
        )


def combine(v_cond: jax.Array, v_uncond: jax.Array, scale: float) -> jax.Array:
    """v_uncond + scale (v_cond - v_uncond); shapes [B, ...]."""
    return v_uncond + scale * (v_cond - v_uncond)


def guided_velocity(
    model_fn: Callable, text_states: jax.Array, negative_states: jax.Array, scale: float
) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """velocity_fn(x [B, ...], t) for a solver.

    model_fn(x [N, ...], t, states [N, L, D]) -> v [N, ...], where N is B or 2B (model_fn tiles
    its other per-row inputs, e.g. the I2V conditioning, to N rows); text_states and
    negative_states: [B, L, D].
    """
    check_guidance(scale)
    if scale == 1.0:
        return lambda x, t: model_fn(x, t, text_states)

    def velocity(x, t):
        states = jnp.concatenate([text_states, negative_states], axis=0)
        v = model_fn(jnp.concatenate([x, x], axis=0), t, states)
        v_cond, v_uncond = jnp.split(v, 2, axis=0)
        return combine(v_cond, v_uncond, scale)

    return velocity
