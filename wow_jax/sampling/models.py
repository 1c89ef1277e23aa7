"""The model functions generation needs, as one bundle of pure functions of (params, arrays).

`from_config(config)` binds the Flax components of wow_jax.models (DiT, VAE, umT5 + tokenizer,
CLIP); tests may pass their own `Models` with the same signatures. Latents handed between these
functions are normalized (per-channel VAE mean/std), as the DiT sees them.
"""

import dataclasses
from collections.abc import Callable

import ml_collections
import numpy as np

from wow_jax import models as registry
from wow_jax.sampling import conditioning


@dataclasses.dataclass(frozen=True)
class Models:
    # (params, latents [B, t, h, w, C_in], timesteps [B], text [B, L, D], image_tokens [B, N, E]
    # or None) -> velocity [B, t, h, w, z].
    dit: Callable
    # (params, video [B, T, H, W, 3] in [-1, 1]) -> normalized latents [B, t, h, w, z].
    encode: Callable
    # (params, normalized latents [B, t, h, w, z]) -> video [B, T, H, W, 3] in [-1, 1].
    decode: Callable
    # (params, prompts: list[str]) -> text states [B, L, D] (padded positions zero); host-side.
    text: Callable
    # (params, images [B, H, W, 3] in [-1, 1]) -> image tokens [B, N, E]; None for t2v.
    clip: Callable | None = None


def from_config(config: ml_collections.ConfigDict) -> Models:
    """Binds the wow_jax Flax components named by `config.model`."""
    dit_cfg, vae_cfg, text_cfg = config.model.dit, config.model.vae, config.model.text
    dit_lib, vae_lib = registry.load("dit"), registry.load("vae")
    dit = dit_lib.create(dit_cfg)

    def dit_apply(params, latents, timesteps, text_states, image_tokens):
        return dit.apply({"params": params}, latents, timesteps, text_states, image_tokens)

    def encode(params, video):
        return conditioning.encode_video(params, video, vae_cfg)

    def decode(params, latents):
        return vae_lib.decode(params, vae_lib.denormalize(latents, vae_cfg), vae_cfg)

    if not text_cfg.tokenizer_path:
        raise ValueError(
            "config.model.text.tokenizer_path is empty; set it to the umT5 sentencepiece model "
            "(spiece.model of google/umt5-xxl)"
        )
    text = conditioning.TextEncoder(text_cfg)

    clip = None
    if dit_cfg.variant == "i2v":  # CLIP resizes and normalises the frame itself.
        clip_module = registry.load("clip").create(config.model.clip)
        clip = lambda params, images: clip_module.apply({"params": params}, images)

    return Models(dit=dit_apply, encode=encode, decode=decode, text=text, clip=clip)


def random_params(abstract, seed: int = 0) -> dict:
    """Random weights (numpy) shaped like an abstract 'params' tree, without running (and
    compiling) the module's init: norm scales ('scale', 'gamma') 1, biases ('bias', 'beta') 0,
    other arrays normal / sqrt(fan-in). For smoke tests, demos and benchmarks."""
    from flax import linen as nn
    from flax import traverse_util

    rng = np.random.default_rng(seed)
    out = {}
    for path, leaf in traverse_util.flatten_dict(nn.meta.unbox(abstract)).items():
        if path[-1] in ("scale", "gamma"):
            value = np.ones(leaf.shape)
        elif path[-1] in ("bias", "beta"):
            value = np.zeros(leaf.shape)
        else:
            fan_in = int(np.prod(leaf.shape[:-1])) if len(leaf.shape) > 1 else 0
            std = 1.0 / np.sqrt(fan_in) if fan_in else 0.02
            value = std * rng.standard_normal(leaf.shape)
        out[path] = value.astype(leaf.dtype)
    return traverse_util.unflatten_dict(out)
