"""umT5 encoder checkpoint names <-> the Flax tree of `wow_jax.models.text_encoder`.

naming='wan': Wan2.1's `models_t5_umt5-xxl-enc-bf16.pth` (`wan/modules/t5.py` T5Encoder):
  token_embedding.weight, blocks.N.{norm1,norm2}.weight, blocks.N.attn.{q,k,v,o}.weight,
  blocks.N.ffn.{gate.0,fc1,fc2}.weight, blocks.N.pos_embedding.embedding.weight, norm.weight.
naming='hf': transformers `UMT5EncoderModel`: shared.weight (tied with
  encoder.embed_tokens.weight), encoder.block.N.layer.0.SelfAttention.{q,k,v,o}.weight,
  ...SelfAttention.relative_attention_bias.weight, layer.0.layer_norm.weight,
  layer.1.DenseReluDense.{wi_0,wi_1,wo}.weight, layer.1.layer_norm.weight,
  encoder.final_layer_norm.weight.
"""

import os
from collections.abc import Mapping

import ml_collections
import ml_dtypes
import numpy as np

from wow_jax.interop import formats, mapping
from wow_jax.interop.mapping import Rule, Transform

NAMINGS = ("wan", "hf")
# transformers ties the encoder's input embedding to `shared`; a state_dict holds both names,
# a safetensors file only one. Both are accepted; `shared.weight` is the canonical one.
HF_TIED = {"encoder.embed_tokens.weight": "shared.weight"}

# Per block: (wan name, hf name, flax path under blocks/, transform).
_BLOCK = (
    ("norm1.weight", "layer.0.layer_norm.weight", ("norm1", "scale"), Transform.IDENTITY),
    ("attn.q.weight", "layer.0.SelfAttention.q.weight", ("q", "kernel"), Transform.LINEAR),
    ("attn.k.weight", "layer.0.SelfAttention.k.weight", ("k", "kernel"), Transform.LINEAR),
    ("attn.v.weight", "layer.0.SelfAttention.v.weight", ("v", "kernel"), Transform.LINEAR),
    ("attn.o.weight", "layer.0.SelfAttention.o.weight", ("o", "kernel"), Transform.LINEAR),
    (
        "pos_embedding.embedding.weight",
        "layer.0.SelfAttention.relative_attention_bias.weight",
        ("pos_embedding",),
        Transform.IDENTITY,
    ),
    ("norm2.weight", "layer.1.layer_norm.weight", ("norm2", "scale"), Transform.IDENTITY),
    (
        "ffn.gate.0.weight",
        "layer.1.DenseReluDense.wi_0.weight",
        ("gate", "kernel"),
        Transform.LINEAR,
    ),
    ("ffn.fc1.weight", "layer.1.DenseReluDense.wi_1.weight", ("fc1", "kernel"), Transform.LINEAR),
    ("ffn.fc2.weight", "layer.1.DenseReluDense.wo.weight", ("fc2", "kernel"), Transform.LINEAR),
)


def rules(model_cfg: ml_collections.ConfigDict, naming: str) -> list[Rule]:
    """One Rule per checkpoint tensor of an umT5 encoder with `config.model.text` sizes."""
    if naming not in NAMINGS:
        raise ValueError(f"umT5 naming must be one of {NAMINGS}, got {naming!r}")
    wan = naming == "wan"
    out = [
        Rule(
            "token_embedding.weight" if wan else "shared.weight", ("token_embedding", "embedding")
        ),
        Rule("norm.weight" if wan else "encoder.final_layer_norm.weight", ("norm", "scale")),
    ]
    for i in range(model_cfg.num_layers):
        for wan_name, hf_name, path, transform in _BLOCK:
            name = f"blocks.{i}.{wan_name}" if wan else f"encoder.block.{i}.{hf_name}"
            out.append(Rule(name, ("blocks",) + path, transform, layer=i))
    return out


def canonical_names(tensors: Mapping[str, np.ndarray], naming: str) -> dict[str, np.ndarray]:
    """Drops transformers' tied duplicate of the embedding (keeping one copy under
    `shared.weight`) so the checkpoint corresponds one-to-one with `rules(cfg, naming)`."""
    out = dict(tensors)
    if naming == "hf":
        for alias, canonical in HF_TIED.items():
            if alias in out:
                value = out.pop(alias)
                out.setdefault(canonical, value)
    return out


def load_params(model_cfg: ml_collections.ConfigDict) -> dict:
    """Params from config.model.text.checkpoint_path in its checkpoint_naming."""
    tensors = read_checkpoint(model_cfg.checkpoint_path)
    return import_params(tensors, model_cfg, model_cfg.checkpoint_naming)


def import_params(
    tensors: Mapping[str, np.ndarray], model_cfg: ml_collections.ConfigDict, naming: str
) -> dict:
    """Checkpoint tensors (PyTorch layout, numpy) -> the Flax 'params' tree (unboxed)."""
    from flax import linen as nn

    from wow_jax.models import text_encoder

    tensors = canonical_names(tensors, naming)
    table = rules(model_cfg, naming)
    hint = f"Expected an umT5 encoder checkpoint in {naming!r} naming with config.model.text sizes"
    mapping.check_names(tensors.keys(), table, hint=hint)
    shapes = mapping.flax_shapes_of(nn.meta.unbox(text_encoder.abstract_params(model_cfg)))
    return mapping.torch_to_flax(lambda name: tensors[name], table, shapes, hint=hint)


def read_checkpoint(path: str, config_key: str = "config.model.text.checkpoint_path") -> dict:
    """All tensors of a .safetensors (read without torch) or .pth/.pt/.bin (needs torch)
    checkpoint, read through the one checkpoint reader (`formats.open_source`), as numpy arrays;
    floating point widened to float32 (numpy has no bf16 math)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"checkpoint {path!r} ({config_key}) not found; point {config_key} at the file: "
            "Wan2.1's models_t5_umt5-xxl-enc-bf16.pth / models_clip_*.pth (naming 'wan') or a "
            "transformers model.safetensors (naming 'hf')"
        )
    out = {}
    with formats.open_source(path) as source:
        for name in source.names():
            array = source.read(name)
            floating = np.issubdtype(array.dtype, np.floating) or array.dtype == ml_dtypes.bfloat16
            out[name] = array.astype(np.float32) if floating else array
    return out
