"""Wan2.1 image-to-video conditioning, as training builds it (the sampler builds the same).

The conditioning frame followed by T-1 black frames is VAE-encoded (normalised) and prefixed by a
4-channel frame mask: pixel-frame flags (1 for the first frame, 0 after; the first repeated
`temporal_stride` times) regrouped so latent frame i carries flags 4i..4i+3 as channels. The DiT
input is the channel concat [noisy latent z | mask 4 | conditioning latent z] (16+4+16 = 36).
"""

import jax
import jax.numpy as jnp
import numpy as np
from einops import rearrange


def frame_mask(num_frames: int, temporal_stride: int) -> np.ndarray:
    """[t, temporal_stride] flags of given pixel frames (only the first is given)."""
    flags = np.zeros(num_frames, np.float32)
    flags[0] = 1.0
    flags = np.concatenate([np.repeat(flags[:1], temporal_stride), flags[1:]])
    return rearrange(flags, "(t c) -> t c", c=temporal_stride)


def conditioning_video(first_frame: jax.Array, num_frames: int) -> jax.Array:
    """first_frame [B, H, W, 3] -> [B, T, H, W, 3]: the frame, then T-1 zero (grey) frames."""
    rest = jnp.zeros((first_frame.shape[0], num_frames - 1, *first_frame.shape[1:]))
    return jnp.concatenate([first_frame[:, None], rest.astype(first_frame.dtype)], axis=1)


def condition_channels(cond_latents: jax.Array, num_frames: int, temporal_stride: int):
    """Normalised conditioning latents [B, t, h, w, z] -> [B, t, h, w, 4 + z] (mask first)."""
    b, t, h, w, _ = cond_latents.shape
    mask = jnp.asarray(frame_mask(num_frames, temporal_stride))
    if mask.shape[0] != t:
        raise ValueError(
            f"{num_frames} frames give {mask.shape[0]} latent frames, but the conditioning "
            f"latents have {t}; encode a {num_frames}-frame conditioning video"
        )
    mask = jnp.broadcast_to(mask[None, :, None, None, :], (b, t, h, w, temporal_stride))
    return jnp.concatenate([mask.astype(cond_latents.dtype), cond_latents], axis=-1)
