"""Test helpers: the diffusers WanTransformer3DModel reference for a DiT config, with every weight
re-randomised, its inputs in both layouts, and its weights mapped onto the Flax tree (the model and
the mapping live in wow_jax.interop.dit_reference, shared with the benchmarks)."""

import ml_collections
import numpy as np

from wow_jax.interop import dit_reference

TEXT_TOKENS_I2V = 512  # diffusers' i2v cross-attention assumes exactly 512 text tokens.
IMAGE_TOKENS = 257  # CLIP ViT-H/14 tokens at 224 px (1 + 16*16).


def dit_config(base: ml_collections.ConfigDict, variant: str = "t2v", **overrides):
    cfg = ml_collections.ConfigDict(base.to_dict())
    cfg.variant = variant
    cfg.in_channels = 16 if variant == "t2v" else 36
    if variant == "i2v":
        cfg.text_len = TEXT_TOKENS_I2V  # The Flax DiT zero-pads the text to text_len.
    cfg.update(overrides)
    return cfg


torch_model = dit_reference.random_diffusers_dit
state_dict_numpy = dit_reference.state_dict_numpy
flax_params = dit_reference.flax_params


def inputs(dit_cfg, batch=2, frames=3, height=4, width=8, text_len=16, seed=1):
    """Channels-last numpy inputs for the Flax model (i2v: 512 text tokens, 257 image tokens)."""
    rng = np.random.default_rng(seed)
    if dit_cfg.variant == "i2v":
        text_len = TEXT_TOKENS_I2V
    out = {
        "latents": rng.standard_normal(
            (batch, frames, height, width, dit_cfg.in_channels), np.float32
        ),
        "timesteps": rng.uniform(0, 1000, (batch,)).astype(np.float32),
        "text_states": rng.standard_normal((batch, text_len, dit_cfg.text_dim), np.float32),
    }
    if dit_cfg.variant == "i2v":
        out["image_tokens"] = rng.standard_normal(
            (batch, IMAGE_TOKENS, dit_cfg.image_dim), np.float32
        )
    return out


def torch_forward(model, x: dict):
    """Runs the diffusers model on channels-last inputs; returns a channels-last torch tensor."""
    import torch

    out = model(
        hidden_states=torch.from_numpy(np.moveaxis(x["latents"], -1, 1).copy()),
        timestep=torch.from_numpy(x["timesteps"]),
        encoder_hidden_states=torch.from_numpy(x["text_states"]),
        encoder_hidden_states_image=(
            torch.from_numpy(x["image_tokens"]) if "image_tokens" in x else None
        ),
        return_dict=False,
    )[0]
    return out.permute(0, 2, 3, 4, 1)


def rel_err(got, want) -> float:
    """max |got - want| / max |want|."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.max(np.abs(got - want)) / np.max(np.abs(want)))
