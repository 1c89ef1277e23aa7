"""CLIP vision tower import (transformers layout and Wan's fused-qkv .pth) through the registry:
the streamed Orbax params equal the table's in-memory import, whose parity the CLIP tests show."""

import jax
import numpy as np
import pytest
import torch
import transformers
from flax import linen as nn

from wow_jax import checkpointing
from wow_jax import sharding as shd
from wow_jax.interop import clip_table, exporter, importer, mapping
from wow_jax.models import clip


def test_clip_import_both_namings(tiny_config, tmp_path):
    cfg = tiny_config.model.clip
    config = transformers.CLIPVisionConfig(
        hidden_size=cfg.width, intermediate_size=cfg.mlp_dim, num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads, image_size=cfg.image_size, patch_size=cfg.patch_size,
        hidden_act=cfg.activation,
    )  # fmt: skip
    torch.manual_seed(0)
    model = transformers.CLIPVisionModel(config).eval()
    model.save_pretrained(tmp_path / "hf")
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    want = clip_table.import_params(state, cfg, "hf")
    mesh = shd.make_mesh(tiny_config.mesh)
    report = importer.import_checkpoint("clip", tmp_path / "hf", tmp_path / "ckpt", cfg, mesh)
    assert report["naming"] == "hf"
    abstract = clip.abstract_params(cfg)
    target = {"clip": shd.abstract_on_mesh(abstract, None)}
    got = checkpointing.restore_subtrees(tmp_path / "ckpt", target)["clip"]
    jax.tree.map(np.testing.assert_array_equal, got, want)

    shapes = mapping.flax_shapes_of(nn.meta.unbox(abstract))
    flat = mapping.flax_to_torch(want, clip_table.rules(cfg, "wan"))
    wan = clip_table.to_checkpoint(flat, "wan")
    wan["textual.token_embedding.weight"] = np.zeros((3, 2), np.float32)  # text tower: skipped
    torch.save({k: torch.from_numpy(v) for k, v in wan.items()}, tmp_path / "clip.pth")
    report = importer.import_checkpoint("clip", tmp_path / "clip.pth", tmp_path / "ck2", cfg, mesh)
    assert report["naming"] == "wan" and len(shapes) > 0
    jax.tree.map(
        np.testing.assert_array_equal,
        checkpointing.restore_subtrees(tmp_path / "ck2", target)["clip"],
        want,
    )
    with pytest.raises(NotImplementedError, match="not supported"):
        exporter.export_checkpoint("clip", tmp_path / "ck2", tmp_path / "out", cfg)
