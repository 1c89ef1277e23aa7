"""What the Wan2.1 DiT is conditioned on, computed one way for training, sampling and the demo.

Video -> latents: the frozen VAE's posterior mean, normalised per channel by
config.model.vae.latents_mean/std (the scale the DiT works in):
    encode_video(vae_params, video [B, T, H, W, 3] in [-1, 1], vae_cfg) -> [B, t, h, w, z]

Image-to-video (Wan2.1 I2V): the conditioning frame followed by T - 1 zero frames is VAE-encoded,
and a 4-channel frame mask marks which pixel frames are given. Pixel frames T = 1 + 4k become
t = 1 + k latent frames. Wan's mask is over pixel frames (1 for the first, 0 after), the first
entry repeated 4 times so there are 4t entries, then reshaped to [t, 4]: latent frame i carries
pixel-frame flags 4i..4i+3 as channels. The DiT input is the channel concat
[noisy latent z | mask 4 | conditioning latent z] (16 + 4 + 16 = 36 channels; with a VAE of
temporal stride s the mask has s channels, e.g. 2 in configs/demo.py):
    conditioning_latents(vae_params, first_frame [B, H, W, 3], T, vae_cfg) -> [B, t, h, w, z]
    i2v_condition(cond_latents [B, t, h, w, z], T, temporal_stride) -> [B, t, h, w, 4 + z]

Caption -> tokens -> umT5 states: `TextEncoder(text_cfg)` tokenizes as Wan does (sentencepiece,
EOS, pad/truncate to text_len) and runs the umT5 encoder:
    TextEncoder.tokenize(captions) -> ids, mask [B, L] int32                  (host)
    TextEncoder.states(text_params, ids, mask) -> [B, L, D]                   (traceable)
    TextEncoder(text_params, captions) -> [B, L, D]                           (both, jitted)
"""

import einops
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from wow_jax.models import text_encoder, vae


def latent_frames(num_frames: int, temporal_stride: int) -> int:
    return (num_frames - 1) // temporal_stride + 1


def encode_video(vae_params, video, vae_cfg: ml_collections.ConfigDict, chunked: bool = True):
    """video [B, T, H, W, 3] in [-1, 1] -> normalised posterior mean [B, t, h, w, z].

    `chunked=False` encodes the whole clip at once (same numbers, faster for short training
    clips); True scans over temporal chunks with the VAE's cache (bounded memory)."""
    return vae.normalize(vae.encode(vae_params, video, vae_cfg, chunked=chunked), vae_cfg)


def frame_mask(num_frames: int, temporal_stride: int) -> np.ndarray:
    """Mask [t, temporal_stride] of given pixel frames in Wan's layout (only the first given)."""
    flags = np.zeros(num_frames, np.float32)
    flags[0] = 1.0
    flags = np.concatenate([np.repeat(flags[:1], temporal_stride), flags[1:]])
    return einops.rearrange(flags, "(t c) -> t c", c=temporal_stride)


def conditioning_video(images: jax.Array, num_frames: int) -> jax.Array:
    """images [B, H, W, 3] in [-1, 1] -> video [B, T, H, W, 3]: the frame, then T - 1 zeros."""
    b, h, w, c = images.shape
    rest = jnp.zeros((b, num_frames - 1, h, w, c), images.dtype)
    return jnp.concatenate([images[:, None], rest], axis=1)


def conditioning_latents(
    vae_params, images, num_frames: int, vae_cfg: ml_collections.ConfigDict, chunked: bool = True
):
    """images [B, H, W, 3] -> normalised latents [B, t, h, w, z] of their conditioning video."""
    video = conditioning_video(jnp.asarray(images), num_frames)
    return encode_video(vae_params, video, vae_cfg, chunked)


def i2v_condition(cond_latents: jax.Array, num_frames: int, temporal_stride: int) -> jax.Array:
    """Normalised latents of the conditioning video [B, t, h, w, z] -> [B, t, h, w, 4 + z]
    (mask channels first, as the DiT expects after the noisy latent)."""
    b, t, h, w, _ = cond_latents.shape
    mask = jnp.asarray(frame_mask(num_frames, temporal_stride))
    if mask.shape[0] != t:
        raise ValueError(
            f"{num_frames} frames give {mask.shape[0]} latent frames, but the conditioning "
            f"latents have {t}; encode a {num_frames}-frame conditioning video"
        )
    mask = jnp.broadcast_to(mask[None, :, None, None, :], (b, t, h, w, temporal_stride))
    return jnp.concatenate([mask.astype(cond_latents.dtype), cond_latents], axis=-1)


class TextEncoder:
    """Captions -> umT5 token ids/mask -> encoder states, as config.model.text describes.

    The sentencepiece model (config.model.text.tokenizer_path) is loaded when the path is set;
    training on cached tokens or states needs none."""

    def __init__(self, text_cfg: ml_collections.ConfigDict):
        from wow_jax.data import tokenizer as tokenizer_lib

        path, self.text_len = text_cfg.tokenizer_path, text_cfg.text_len
        self.tokenizer = tokenizer_lib.Tokenizer(path, self.text_len) if path else None
        self.module = text_encoder.create(text_cfg)
        self._states = jax.jit(self.states)

    def require_tokenizer(self):
        """The sentencepiece tokenizer; ValueError naming the key when none is configured."""
        if self.tokenizer is None:
            raise ValueError(
                "config.model.text.tokenizer_path is empty; set it to the umT5 sentencepiece "
                "model (spiece.model of google/umt5-xxl)"
            )
        return self.tokenizer

    def tokenize(self, captions) -> tuple[np.ndarray, np.ndarray]:
        """captions (B strings; '' is the empty prompt) -> ids, mask [B, text_len] int32."""
        ids, mask = self.require_tokenizer().encode([str(c) for c in captions])
        return np.asarray(ids, np.int32), np.asarray(mask, np.int32)

    def states(self, text_params, ids, mask) -> jax.Array:
        """ids, mask [B, L] -> umT5 states [B, L, D] (padded positions zero)."""
        return self.module.apply({"params": text_params}, ids, mask)

    def __call__(self, text_params, captions) -> jax.Array:
        """captions (B strings) -> states [B, L, D], jitted."""
        return self._states(text_params, *self.tokenize(captions))
