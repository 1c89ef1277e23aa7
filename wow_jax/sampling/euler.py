"""Euler solver for flow matching: x_{i+1} = x_i + (sigma_{i+1} - sigma_i) v(x_i, t_i).

The reference is diffusers' FlowMatchEulerDiscreteScheduler(shift).step (deterministic mode).
`euler_sample` runs all steps in one `lax.fori_loop`; latents may be sharded.
"""

import jax
import jax.numpy as jnp

from wow_jax.sampling.schedulers import Schedule


def euler_sample(velocity_fn, noise: jax.Array, schedule: Schedule, on_step=None) -> jax.Array:
    """Integrates from noise at sigmas[0] to sigma = 0 (call inside jit).

    velocity_fn(x [B, ...], t scalar float32 timestep) -> v [B, ...]; noise: [B, ...];
    on_step(i): optional host callback after each step. Returns [B, ...] in noise.dtype.
    """
    sigmas = jnp.asarray(schedule.sigmas, jnp.float32)
    timesteps = jnp.asarray(schedule.timesteps, jnp.float32)

    def body(i, x):
        v = velocity_fn(x, timesteps[i]).astype(jnp.float32)
        x = x + (sigmas[i + 1] - sigmas[i]) * v
        if on_step is not None:
            jax.debug.callback(on_step, i)
        return x

    x = jax.lax.fori_loop(0, schedule.num_steps, body, noise.astype(jnp.float32))
    return x.astype(noise.dtype)
