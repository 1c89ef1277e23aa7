"""Image-to-video conditioning of Wan2.1 I2V: the conditioning frame followed by zeros is
VAE-encoded, and a 4-channel frame mask marks which pixel frames are given.

Pixel frames T = 1 + 4k become t = 1 + k latent frames. Wan's mask is over pixel frames (1 for
the first, 0 after), the first entry repeated 4 times so there are 4t entries, then reshaped to
[t, 4]: latent frame i carries pixel-frame flags 4i..4i+3 as channels. The DiT input is the
channel concat [noisy latent z | mask 4 | conditioning latent z].
"""

import einops
import jax
import jax.numpy as jnp
import numpy as np


def latent_frames(num_frames: int, temporal_stride: int) -> int:
    return (num_frames - 1) // temporal_stride + 1


def frame_mask(num_frames: int, temporal_stride: int, num_given: int = 1) -> np.ndarray:
    """Mask [t, temporal_stride] of given pixel frames in Wan's layout (first `num_given` = 1)."""
    flags = np.zeros(num_frames, np.float32)
    flags[:num_given] = 1.0
    flags = np.concatenate([np.repeat(flags[:1], temporal_stride), flags[1:]])
    return einops.rearrange(flags, "(t c) -> t c", c=temporal_stride)


def conditioning_video(images: jax.Array, num_frames: int) -> jax.Array:
    """images [B, H, W, 3] in [-1, 1] -> video [B, T, H, W, 3]: the frame, then T - 1 zeros."""
    b, h, w, c = images.shape
    rest = jnp.zeros((b, num_frames - 1, h, w, c), images.dtype)
    return jnp.concatenate([images[:, None], rest], axis=1)


def i2v_condition(cond_latents: jax.Array, num_frames: int, temporal_stride: int) -> jax.Array:
    """Normalized latents of the conditioning video [B, t, h, w, z] -> [B, t, h, w, 4 + z]
    (mask channels first, as the DiT expects after the noisy latent)."""
    b, t, h, w, _ = cond_latents.shape
    mask = jnp.asarray(frame_mask(num_frames, temporal_stride))
    if mask.shape[0] != t:
        raise ValueError(
            f"{num_frames} frames give {mask.shape[0]} latent frames but the VAE returned {t}"
        )
    mask = jnp.broadcast_to(mask[None, :, None, None, :], (b, t, h, w, temporal_stride))
    return jnp.concatenate([mask.astype(cond_latents.dtype), cond_latents], axis=-1)
