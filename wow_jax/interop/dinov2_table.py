"""DINOv2 checkpoint names <-> the Flax tree of `wow_jax.models.dinov2`.

naming='hf': transformers `Dinov2Model` as its releases (facebook/dinov2-*) store it, optionally
prefixed `dinov2.` (Dinov2ForImageClassification): embeddings.{cls_token [1, 1, D],
position_embeddings [1, N, D], patch_embeddings.projection}, encoder.layer.N.{norm1,
attention.attention.{query,key,value}, attention.output.dense, layer_scale1.lambda1, norm2,
mlp.fc1, mlp.fc2, layer_scale2.lambda1}, layernorm. transformers >= 5 names the attention
`attention.{q,k,v,o}_proj` in memory (its state_dict) and writes the release names on save; both
are read.

`checkpoint_view` squeezes the [1, ...] embeddings, renames the in-memory names and drops the
mask token (used only in DINOv2's masked pre-training), so each rule maps one tensor onto one
Flax leaf. Export is not supported (the exporter refuses tables with a view).
"""

from collections.abc import Mapping

import ml_collections
import numpy as np

from wow_jax.interop.mapping import Rule, Transform

NAMINGS = ("hf",)
HF_PREFIX = "dinov2."
UNUSED = ("embeddings.mask_token",)
_SQUEEZED = ("embeddings.cls_token", "embeddings.position_embeddings")
# transformers >= 5 in-memory attention names -> the release names the rules use.
_RENAMED = {
    ".attention.q_proj.": ".attention.attention.query.",
    ".attention.k_proj.": ".attention.attention.key.",
    ".attention.v_proj.": ".attention.attention.value.",
    ".attention.o_proj.": ".attention.output.dense.",
}

# Per block: (hf name, flax path under blocks/, transform).
_BLOCK = [
    ("norm1.weight", ("norm1", "scale"), Transform.IDENTITY),
    ("norm1.bias", ("norm1", "bias"), Transform.IDENTITY),
    ("attention.attention.query.weight", ("q", "kernel"), Transform.LINEAR),
    ("attention.attention.query.bias", ("q", "bias"), Transform.IDENTITY),
    ("attention.attention.key.weight", ("k", "kernel"), Transform.LINEAR),
    ("attention.attention.key.bias", ("k", "bias"), Transform.IDENTITY),
    ("attention.attention.value.weight", ("v", "kernel"), Transform.LINEAR),
    ("attention.attention.value.bias", ("v", "bias"), Transform.IDENTITY),
    ("attention.output.dense.weight", ("proj", "kernel"), Transform.LINEAR),
    ("attention.output.dense.bias", ("proj", "bias"), Transform.IDENTITY),
    ("layer_scale1.lambda1", ("layer_scale1",), Transform.IDENTITY),
    ("norm2.weight", ("norm2", "scale"), Transform.IDENTITY),
    ("norm2.bias", ("norm2", "bias"), Transform.IDENTITY),
    ("mlp.fc1.weight", ("fc1", "kernel"), Transform.LINEAR),
    ("mlp.fc1.bias", ("fc1", "bias"), Transform.IDENTITY),
    ("mlp.fc2.weight", ("fc2", "kernel"), Transform.LINEAR),
    ("mlp.fc2.bias", ("fc2", "bias"), Transform.IDENTITY),
    ("layer_scale2.lambda1", ("layer_scale2",), Transform.IDENTITY),
]


def rules(model_cfg: ml_collections.ConfigDict, naming: str) -> list[Rule]:
    """One Rule per (squeezed, see module doc) checkpoint tensor the model uses."""
    if naming not in NAMINGS:
        raise ValueError(f"DINOv2 naming must be one of {NAMINGS}, got {naming!r}")
    out = [
        Rule(
            "embeddings.patch_embeddings.projection.weight",
            ("patch_embedding", "kernel"),
            Transform.CONV,
        ),
        Rule("embeddings.patch_embeddings.projection.bias", ("patch_embedding", "bias")),
        Rule("embeddings.cls_token", ("cls_token",)),
        Rule("embeddings.position_embeddings", ("position_embeddings",)),
        Rule("layernorm.weight", ("norm", "scale")),
        Rule("layernorm.bias", ("norm", "bias")),
    ]
    for i in range(model_cfg.num_layers):
        for name, path, transform in _BLOCK:
            out.append(Rule(f"encoder.layer.{i}.{name}", ("blocks",) + path, transform, layer=i))
    return out


def unused(name: str, model_cfg: ml_collections.ConfigDict, naming: str) -> bool:
    """Whether a checkpoint tensor is one the model deliberately has no place for."""
    del model_cfg, naming
    return name in UNUSED


def checkpoint_view(
    tensors: Mapping[str, np.ndarray], model_cfg: ml_collections.ConfigDict, naming: str
) -> dict[str, np.ndarray]:
    """Checkpoint tensors -> the names and shapes of `rules(model_cfg, naming)`."""
    out = {}
    for name, value in tensors.items():
        name = name.removeprefix(HF_PREFIX)
        if unused(name, model_cfg, naming):
            continue
        for modern, release in _RENAMED.items():
            name = name.replace(modern, release)
        value = np.asarray(value)
        if name in _SQUEEZED and value.ndim == 3:
            value = value.reshape(value.shape[1:]) if value.shape[1] > 1 else value.reshape(-1)
        out[name] = value
    return out
