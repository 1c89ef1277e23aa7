"""Test helpers: the diffusers WanTransformer3DModel reference for a DiT config, with every weight
re-randomised, its inputs in both layouts, and its weights mapped onto the Flax tree."""

import ml_collections
import numpy as np

from wow_jax.interop import dit_table, mapping
from wow_jax.models import dit

TEXT_TOKENS_I2V = 512  # diffusers' i2v cross-attention assumes exactly 512 text tokens.
IMAGE_TOKENS = 257  # CLIP ViT-H/14 tokens at 224 px (1 + 16*16).


def dit_config(base: ml_collections.ConfigDict, variant: str = "t2v", **overrides):
    cfg = ml_collections.ConfigDict(base.to_dict())
    cfg.variant = variant
    cfg.in_channels = 16 if variant == "t2v" else 36
    cfg.update(overrides)
    return cfg


def torch_model(dit_cfg, seed: int = 0):
    """diffusers model for `dit_cfg` with torch.nn.init.normal_ applied to every parameter
    (also the zero-initialised output head): weights ~ N(0, 1/fan_in), vectors ~ N(0, 0.5),
    norm scales ~ N(1, 0.5)."""
    import torch
    from diffusers import WanTransformer3DModel

    torch.manual_seed(seed)
    model = WanTransformer3DModel(**dit_table.diffusers_kwargs(dit_cfg)).float().eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim >= 2 and "scale_shift_table" not in name:
                torch.nn.init.normal_(p, std=float(np.prod(p.shape[1:])) ** -0.5)
            elif "norm" in name and name.endswith("weight"):
                torch.nn.init.normal_(p, mean=1.0, std=0.5)
            else:
                torch.nn.init.normal_(p, std=0.5)
    return model


def state_dict_numpy(model) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}


def flax_params(dit_cfg, state: dict[str, np.ndarray], naming: str = "diffusers"):
    """Maps a state dict onto the Flax tree of `dit_cfg` through the DiT table."""
    from flax import linen as nn

    shapes = mapping.flax_shapes_of(nn.meta.unbox(dit.abstract_params(dit_cfg)))
    return mapping.torch_to_flax(state.__getitem__, dit_table.rules(dit_cfg, naming), shapes)


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
