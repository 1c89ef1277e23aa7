"""The PyTorch side of each model component of `wow_jax.models.COMPONENTS` (the one registry).

The registry entry names the Flax model module (`abstract_params(model_cfg)`) and the name table
(`rules(model_cfg, naming)` in `wow_jax/interop/<model>_table.py`); `LAYOUTS` adds, per component
name, the file layout of its releases: the diffusers class with its sub-folder and `config.json`,
and the file names of the Wan-native release. A component without a layout is not convertible.
"""

import dataclasses
import importlib
from collections.abc import Callable

import ml_collections

from wow_jax import models
from wow_jax.interop import mapping

NAMINGS = ("wan", "diffusers")  # Namings of the DiT/VAE tables; the encoders use ("wan", "hf").


def _dit_diffusers_config(c: ml_collections.ConfigDict) -> dict:
    i2v = c.variant == "i2v"
    return {
        "_class_name": "WanTransformer3DModel",
        "_diffusers_version": "0.33.0",
        "patch_size": list(c.patch_size),
        "num_attention_heads": c.num_heads,
        "attention_head_dim": c.dim // c.num_heads,
        "in_channels": c.in_channels,
        "out_channels": c.out_channels,
        "text_dim": c.text_dim,
        "freq_dim": c.freq_dim,
        "ffn_dim": c.ffn_dim,
        "num_layers": c.num_layers,
        "cross_attn_norm": c.cross_attn_norm,
        "qk_norm": "rms_norm_across_heads" if c.qk_norm else None,
        "eps": c.eps,
        "image_dim": c.image_dim if i2v else None,
        "added_kv_proj_dim": c.dim if i2v else None,
        "rope_max_seq_len": c.rope_max_len,
        "pos_embed_seq_len": None,
    }


def _dit_wan_config(c: ml_collections.ConfigDict) -> dict:
    """The config.json of the Wan2.1 release (read by Wan's `WanModel.from_pretrained`)."""
    return {
        "_class_name": "WanModel",
        "_diffusers_version": "0.30.0",
        "model_type": c.variant,
        "patch_size": list(c.patch_size),
        "text_len": c.text_len,
        "in_dim": c.in_channels,
        "dim": c.dim,
        "ffn_dim": c.ffn_dim,
        "freq_dim": c.freq_dim,
        "text_dim": c.text_dim,
        "out_dim": c.out_channels,
        "num_heads": c.num_heads,
        "num_layers": c.num_layers,
        "window_size": [-1, -1],
        "qk_norm": c.qk_norm,
        "cross_attn_norm": c.cross_attn_norm,
        "eps": c.eps,
    }


def _vae_diffusers_config(c: ml_collections.ConfigDict) -> dict:
    return {
        "_class_name": "AutoencoderKLWan",
        "_diffusers_version": "0.33.0",
        "base_dim": c.base_dim,
        "z_dim": c.z_dim,
        "dim_mult": list(c.dim_mult),
        "num_res_blocks": c.num_res_blocks,
        "attn_scales": list(c.attn_scales),
        "temperal_downsample": list(c.temporal_downsample),
        "dropout": 0.0,
        "latents_mean": list(c.latents_mean),
        "latents_std": list(c.latents_std),
    }


def _text_diffusers_config(c: ml_collections.ConfigDict) -> dict:
    """transformers `UMT5EncoderModel` config (the diffusers Wan pipeline's text_encoder)."""
    return {
        "architectures": ["UMT5EncoderModel"],
        "model_type": "umt5",
        "vocab_size": c.vocab_size,
        "d_model": c.dim,
        "d_ff": c.ffn_dim,
        "d_kv": c.head_dim,
        "num_heads": c.num_heads,
        "num_layers": c.num_layers,
        "num_decoder_layers": c.num_layers,
        "relative_attention_num_buckets": c.num_buckets,
        "relative_attention_max_distance": c.max_distance,
        "feed_forward_proj": "gated-gelu",
        "dense_act_fn": "gelu_new",
        "is_gated_act": True,
        "layer_norm_epsilon": 1e-6,
        "dropout_rate": 0.0,
        "scalable_attention": True,
        "tie_word_embeddings": False,
        "is_encoder_decoder": True,
        "use_cache": False,
        "pad_token_id": 0,
        "eos_token_id": 1,
        "decoder_start_token_id": 0,
    }


@dataclasses.dataclass(frozen=True)
class Component:
    """A model component's PyTorch checkpoint layout on disk."""

    name: str  # Key in wow_jax.models.COMPONENTS (model module, name table, config section).
    diffusers_class: str  # Class whose from_pretrained loads the exported diffusers folder.
    diffusers_subfolder: str  # Sub-folder of a diffusers pipeline repo holding it.
    diffusers_weights: str  # Weight file stem in a diffusers folder.
    wan_weights: str  # Weight file stem of the Wan-native release.
    wan_globs: tuple[str, ...]  # File patterns locating it inside a Wan-native release folder.
    diffusers_config: Callable | None  # model_cfg -> config.json dict of the diffusers folder.
    wan_config: Callable | None  # model_cfg -> config.json dict of the Wan release (if any).
    wan_overlay: str = ""  # Fine-tuned weights a release loads over these (WoW: WoW_video_dit.pt).


# Component name (wow_jax.models.COMPONENTS) -> its PyTorch layout.
LAYOUTS = {
    "dit": Component(
        "dit",
        "WanTransformer3DModel",
        "transformer",
        "diffusion_pytorch_model",
        "diffusion_pytorch_model",
        ("diffusion_pytorch_model*.index.json", "diffusion_pytorch_model*.safetensors"),
        _dit_diffusers_config,
        _dit_wan_config,
        wan_overlay="WoW_video_dit.pt",
    ),
    "vae": Component(
        "vae",
        "AutoencoderKLWan",
        "vae",
        "diffusion_pytorch_model",
        "Wan2.1_VAE",
        ("Wan2.1_VAE.pth", "Wan2.1_VAE.safetensors"),
        _vae_diffusers_config,
        None,
    ),
    "text": Component(
        "text",
        "UMT5EncoderModel",
        "text_encoder",
        "model",
        "models_t5_umt5-xxl-enc-bf16",
        ("models_t5_umt5-xxl-enc-bf16.pth", "models_t5_umt5-xxl-enc-bf16.safetensors"),
        _text_diffusers_config,
        None,
    ),
    "clip": Component(
        "clip",
        "CLIPVisionModel",
        "image_encoder",
        "model",
        "models_clip_open-clip-xlm-roberta-large-vit-huge-14",
        ("models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth",),
        None,
        None,
    ),
    "dinov2": Component(
        "dinov2",
        "Dinov2Model",
        "",  # No pipeline holds it: a transformers folder (config.json + model.safetensors).
        "model",
        "",  # No Wan-native release.
        (),
        None,
        None,
    ),
}


def get(name: str) -> Component:
    """The PyTorch layout of model component `name` (ValueError if it has none)."""
    models.get(name)
    if name not in LAYOUTS:
        raise ValueError(f"component {name!r} has no PyTorch layout; convertible: {list(LAYOUTS)}")
    return LAYOUTS[name]


def table(component: Component):
    """The component's name table module (NAMINGS, rules, ...)."""
    return importlib.import_module(models.get(component.name).table)


_CACHE: dict[tuple, object] = {}  # (what, component, naming, config json) -> rules / params.


def _cached(key: tuple, make):
    if key not in _CACHE:
        _CACHE[key] = make()
    return _CACHE[key]


def rules(component: Component, model_cfg, naming: str) -> list[mapping.Rule]:
    key = ("rules", component.name, naming, model_cfg.to_json_best_effort(sort_keys=True))
    return list(_cached(key, lambda: table(component).rules(model_cfg, naming)))


def rules_by_naming(component: Component, model_cfg) -> dict[str, list[mapping.Rule]]:
    """{naming: rules} for each naming the component's table knows ('wan' + 'diffusers'/'hf')."""
    return {naming: rules(component, model_cfg, naming) for naming in table(component).NAMINGS}


def resolve_naming(component: Component, naming: str) -> str:
    """'diffusers' means the Hugging Face layout: 'hf' for the transformers-based encoders."""
    namings = table(component).NAMINGS
    if naming == "diffusers" and "diffusers" not in namings and "hf" in namings:
        return "hf"
    if naming not in namings:
        raise ValueError(f"{component.name} naming must be one of {list(namings)}, got {naming!r}")
    return naming


def source_view(component: Component, source, model_cfg):
    """The checkpoint as the table names it: tied aliases folded (umT5 `encoder.embed_tokens`),
    or, for tables that reshape tensors (CLIP's fused qkv), the table's own eager view."""
    from wow_jax.interop import formats  # noqa: PLC0415

    module = table(component)
    if hasattr(module, "checkpoint_view"):
        names = source.names()
        naming = "wan" if any(n.startswith("visual.") for n in names) else "hf"
        prefix = getattr(module, "HF_PREFIX", "")
        keep = [n for n in names if not module.unused(n.removeprefix(prefix), model_cfg, naming)]
        tensors = {name: source.read(name) for name in keep}  # Skips e.g. the text tower.
        return formats.DictSource(module.checkpoint_view(tensors, model_cfg, naming), source.files)
    aliases = getattr(module, "HF_TIED", {})
    return formats.AliasedSource(source, aliases) if aliases else source


def abstract_params(component: Component, model_cfg):
    """Boxed abstract 'params' tree of the component's Flax model (no allocation)."""
    key = ("abstract", component.name, "", model_cfg.to_json_best_effort(sort_keys=True))
    model = models.load(component.name)
    return _cached(key, lambda: model.abstract_params(model_cfg))
