"""CLIP vision checkpoint names <-> the Flax tree of `wow_jax.models.clip`.

naming='hf': transformers `CLIPVisionModel` (optionally prefixed `vision_model.`):
  embeddings.{class_embedding, patch_embedding.weight, position_embedding.weight}, pre_layrnorm,
  encoder.layers.N.{layer_norm1, self_attn.{q,k,v,out}_proj, layer_norm2, mlp.fc1, mlp.fc2}.
naming='wan': Wan2.1's `models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth`
  (`wan/modules/clip.py` XLMRobertaCLIP): visual.{patch_embedding.weight, cls_embedding [1,1,D],
  pos_embedding [1,N,D], pre_norm}, visual.transformer.N.{norm1, attn.to_qkv (q, k, v stacked
  along the output rows), attn.proj, norm2, mlp.0, mlp.2}.

The model holds only the blocks before the last (Wan uses the penultimate block's tokens), so
the last block, the post-norm, the head and (for 'wan') the text tower are checkpoint tensors
with no place in the model: `checkpoint_view` drops them. It also splits Wan's fused `to_qkv`
into virtual tensors `...to_qkv.weight:q` / `:k` / `:v` and squeezes the `[1, ...]` embeddings
so every rule maps one tensor onto one Flax leaf; `to_checkpoint` undoes both for export.
"""

from collections.abc import Mapping

import ml_collections
import numpy as np

from wow_jax.interop import mapping
from wow_jax.interop.mapping import Rule, Transform
from wow_jax.interop.umt5_table import read_checkpoint

NAMINGS = ("wan", "hf")
HF_PREFIX = "vision_model."
QKV = ("q", "k", "v")
_WAN_SQUEEZED = ("visual.cls_embedding", "visual.pos_embedding")

# Per block: (wan name, hf name, flax path under blocks/, transform).
_BLOCK = [
    ("norm1.weight", "layer_norm1.weight", ("norm1", "scale"), Transform.IDENTITY),
    ("norm1.bias", "layer_norm1.bias", ("norm1", "bias"), Transform.IDENTITY),
    ("norm2.weight", "layer_norm2.weight", ("norm2", "scale"), Transform.IDENTITY),
    ("norm2.bias", "layer_norm2.bias", ("norm2", "bias"), Transform.IDENTITY),
    ("attn.proj.weight", "self_attn.out_proj.weight", ("proj", "kernel"), Transform.LINEAR),
    ("attn.proj.bias", "self_attn.out_proj.bias", ("proj", "bias"), Transform.IDENTITY),
    ("mlp.0.weight", "mlp.fc1.weight", ("fc1", "kernel"), Transform.LINEAR),
    ("mlp.0.bias", "mlp.fc1.bias", ("fc1", "bias"), Transform.IDENTITY),
    ("mlp.2.weight", "mlp.fc2.weight", ("fc2", "kernel"), Transform.LINEAR),
    ("mlp.2.bias", "mlp.fc2.bias", ("fc2", "bias"), Transform.IDENTITY),
]
for _p in QKV:
    _BLOCK += [
        (
            f"attn.to_qkv.weight:{_p}",
            f"self_attn.{_p}_proj.weight",
            (_p, "kernel"),
            Transform.LINEAR,
        ),
        (f"attn.to_qkv.bias:{_p}", f"self_attn.{_p}_proj.bias", (_p, "bias"), Transform.IDENTITY),
    ]


def rules(model_cfg: ml_collections.ConfigDict, naming: str) -> list[Rule]:
    """One Rule per (virtual, see module doc) checkpoint tensor the model uses."""
    if naming not in NAMINGS:
        raise ValueError(f"CLIP naming must be one of {NAMINGS}, got {naming!r}")
    wan = naming == "wan"
    if wan:
        out = [
            Rule("visual.patch_embedding.weight", ("patch_embedding", "kernel"), Transform.CONV),
            Rule("visual.cls_embedding", ("cls_embedding",)),
            Rule("visual.pos_embedding", ("pos_embedding",)),
            Rule("visual.pre_norm.weight", ("pre_norm", "scale")),
            Rule("visual.pre_norm.bias", ("pre_norm", "bias")),
        ]
    else:
        out = [
            Rule(
                "embeddings.patch_embedding.weight", ("patch_embedding", "kernel"), Transform.CONV
            ),
            Rule("embeddings.class_embedding", ("cls_embedding",)),
            Rule("embeddings.position_embedding.weight", ("pos_embedding",)),
            Rule("pre_layrnorm.weight", ("pre_norm", "scale")),
            Rule("pre_layrnorm.bias", ("pre_norm", "bias")),
        ]
    for i in range(model_cfg.num_layers - 1):
        for wan_name, hf_name, path, transform in _BLOCK:
            name = f"visual.transformer.{i}.{wan_name}" if wan else f"encoder.layers.{i}.{hf_name}"
            out.append(Rule(name, ("blocks",) + path, transform, layer=i))
    return out


def unused(name: str, model_cfg: ml_collections.ConfigDict, naming: str) -> bool:
    """Whether a checkpoint tensor is one the model deliberately has no place for."""
    last = model_cfg.num_layers - 1
    if naming == "wan":
        return not name.startswith("visual.") or name.startswith(
            (f"visual.transformer.{last}.", "visual.post_norm.", "visual.head")
        )
    return name == "embeddings.position_ids" or name.startswith(
        (f"encoder.layers.{last}.", "post_layernorm.")
    )


def checkpoint_view(
    tensors: Mapping[str, np.ndarray], model_cfg: ml_collections.ConfigDict, naming: str
) -> dict[str, np.ndarray]:
    """Checkpoint tensors -> the (virtual) names of `rules(model_cfg, naming)`."""
    out = {}
    for name, value in tensors.items():
        if naming == "hf" and name.startswith(HF_PREFIX):
            name = name[len(HF_PREFIX) :]
        if unused(name, model_cfg, naming):
            continue
        value = np.asarray(value)
        if naming == "wan" and name in _WAN_SQUEEZED:
            value = value.reshape(value.shape[-2:]) if value.ndim == 3 else value
            value = value.reshape(-1) if name == "visual.cls_embedding" else value
        if naming == "wan" and ".attn.to_qkv." in name:
            for part, chunk in zip(QKV, np.split(value, 3, axis=0), strict=True):
                out[f"{name}:{part}"] = chunk
            continue
        out[name] = value
    return out


def to_checkpoint(torch_tensors: Mapping[str, np.ndarray], naming: str) -> dict[str, np.ndarray]:
    """Inverse of `checkpoint_view` on `flax_to_torch` output: the checkpoint's real names and
    shapes (Wan: fused to_qkv, [1, 1, D] / [1, N, D] embeddings)."""
    out = {}
    for name, value in torch_tensors.items():
        if naming == "wan" and ".attn.to_qkv." in name:
            base, part = name.rsplit(":", 1)
            if part == "q":
                parts = [torch_tensors[f"{base}:{p}"] for p in QKV]
                out[base] = np.concatenate(parts, axis=0)
            continue
        if naming == "wan" and name in _WAN_SQUEEZED:
            value = value.reshape(
                (1, 1, -1) if name == "visual.cls_embedding" else (1,) + value.shape
            )
        out[name] = value
    return out


def load_params(model_cfg: ml_collections.ConfigDict) -> dict:
    """Params from config.model.clip.checkpoint_path in its checkpoint_naming."""
    tensors = read_checkpoint(model_cfg.checkpoint_path, "config.model.clip.checkpoint_path")
    return import_params(tensors, model_cfg, model_cfg.checkpoint_naming)


def import_params(
    tensors: Mapping[str, np.ndarray], model_cfg: ml_collections.ConfigDict, naming: str
) -> dict:
    """Checkpoint tensors (PyTorch layout, numpy) -> the Flax 'params' tree (unboxed)."""
    from flax import linen as nn

    from wow_jax.models import clip

    view = checkpoint_view(tensors, model_cfg, naming)
    table = rules(model_cfg, naming)
    hint = f"Expected a CLIP vision checkpoint in {naming!r} naming with config.model.clip sizes"
    mapping.check_names(view.keys(), table, hint=hint)
    shapes = mapping.flax_shapes_of(nn.meta.unbox(clip.abstract_params(model_cfg)))
    return mapping.torch_to_flax(lambda name: view[name], table, shapes, hint=hint)
