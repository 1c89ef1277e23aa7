"""Rectified-flow (flow-matching) training objective as in Wan2.1 / SD3.

A clean latent x_0 and Gaussian noise are mixed at noise level sigma in [0, 1]:

    x_t = (1 - sigma) * x_0 + sigma * noise,      target velocity v = noise - x_0,

and the network predicts v from (x_t, t = 1000 * sigma). Sigmas are drawn uniformly or
logit-normally in [0, 1] and then shifted towards high noise with Wan's / diffusers'
`FlowMatchEulerDiscreteScheduler` formula `shift * s / (1 + (shift - 1) * s)`, the same shift the
sampler uses. Loss weights follow diffusers' `compute_loss_weighting_for_sd3`.

All functions are pure; shapes: x_0, noise [B, ...] (channels-last latents [B, F, H, W, C]),
sigma [B].
"""

import math

import jax
import jax.numpy as jnp

NUM_TRAIN_TIMESTEPS = 1000  # Timestep scale the DiT's sinusoidal embedding expects (t = 1000 s).
TIMESTEP_SAMPLING = ("uniform", "logit_normal")
LOSS_WEIGHTINGS = ("none", "sigma_sqrt", "cosmap")


def shift_sigmas(sigma: jax.Array, shift: float) -> jax.Array:
    """Wan / diffusers sigma shift: `shift * s / (1 + (shift - 1) * s)` (identity at shift=1)."""
    return shift * sigma / (1.0 + (shift - 1.0) * sigma)


def sample_sigmas(
    rng: jax.Array,
    batch: int,
    method: str,
    shift: float,
    logit_mean: float = 0.0,
    logit_std: float = 1.0,
) -> jax.Array:
    """Draws shifted noise levels [B] in (0, 1).

    method 'uniform': u ~ U(0, 1); 'logit_normal': u = sigmoid(N(logit_mean, logit_std)) (SD3).
    """
    if method == "uniform":
        u = jax.random.uniform(rng, (batch,), jnp.float32)
    elif method == "logit_normal":
        u = jax.nn.sigmoid(logit_mean + logit_std * jax.random.normal(rng, (batch,), jnp.float32))
    else:
        raise ValueError(
            f"timestep sampling must be one of {list(TIMESTEP_SAMPLING)}, got {method!r}"
        )
    return shift_sigmas(u, shift)


def _expand(sigma: jax.Array, ndim: int) -> jax.Array:
    return sigma.reshape(sigma.shape + (1,) * (ndim - sigma.ndim))


def add_noise(x_0: jax.Array, noise: jax.Array, sigma: jax.Array) -> jax.Array:
    """x_t = (1 - sigma) x_0 + sigma noise; x_0, noise [B, ...], sigma [B] -> [B, ...]."""
    s = _expand(sigma, x_0.ndim).astype(x_0.dtype)
    return (1.0 - s) * x_0 + s * noise


def velocity_target(x_0: jax.Array, noise: jax.Array) -> jax.Array:
    """d x_t / d sigma = noise - x_0."""
    return noise - x_0


def timesteps_from_sigmas(sigma: jax.Array) -> jax.Array:
    """The DiT's timestep input [B] in [0, 1000]."""
    return sigma * NUM_TRAIN_TIMESTEPS


def loss_weight(sigma: jax.Array, weighting: str) -> jax.Array:
    """Per-sample loss weights [B] (diffusers `compute_loss_weighting_for_sd3`)."""
    if weighting == "none":
        return jnp.ones_like(sigma)
    if weighting == "sigma_sqrt":
        return sigma**-2.0
    if weighting == "cosmap":
        return 2.0 / (math.pi * (1.0 - 2.0 * sigma + 2.0 * sigma**2))
    raise ValueError(f"loss weighting must be one of {list(LOSS_WEIGHTINGS)}, got {weighting!r}")


def weighted_mse(
    prediction: jax.Array, target: jax.Array, weight: jax.Array, mask: jax.Array | None = None
) -> jax.Array:
    """Mean over the batch of weight[b] * mean squared error of sample b (in float32).

    prediction, target [B, ...]; weight [B]; optional mask broadcastable to target selects which
    elements count (e.g. excludes the conditioning frame).
    """
    err = jnp.square(prediction.astype(jnp.float32) - target.astype(jnp.float32))
    axes = tuple(range(1, err.ndim))
    if mask is None:
        per_sample = jnp.mean(err, axis=axes)
    else:
        mask = jnp.broadcast_to(mask.astype(jnp.float32), err.shape)
        per_sample = jnp.sum(err * mask, axis=axes) / jnp.maximum(jnp.sum(mask, axis=axes), 1.0)
    return jnp.mean(weight.astype(jnp.float32) * per_sample)


def noisy_inputs(rng: jax.Array, x_0: jax.Array, train_cfg) -> dict[str, jax.Array]:
    """Everything one flow-matching step needs, drawn with named keys from `rng`.

    Returns dict(x_t [B, ...], target [B, ...], sigma [B], timesteps [B], weight [B]).
    """
    sigma_rng, noise_rng = jax.random.split(rng)
    sigma = sample_sigmas(
        sigma_rng,
        x_0.shape[0],
        train_cfg.timestep_sampling,
        train_cfg.shift,
        train_cfg.logit_mean,
        train_cfg.logit_std,
    )
    noise = jax.random.normal(noise_rng, x_0.shape, jnp.float32).astype(x_0.dtype)
    return {
        "x_t": add_noise(x_0, noise, sigma),
        "target": velocity_target(x_0, noise),
        "sigma": sigma,
        "timesteps": timesteps_from_sigmas(sigma),
        "weight": loss_weight(sigma, train_cfg.loss_weighting),
    }
