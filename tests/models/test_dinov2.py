"""DINOv2: parity with transformers' Dinov2Model (weights moved by the importer through the name
table), position interpolation to other input grids, the model contract, bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy
import torch
import transformers
from flax import linen as nn

from wow_jax import checkpointing
from wow_jax import sharding as shd
from wow_jax.interop import importer, mapping
from wow_jax.models import dinov2


def hf_model(cfg, seed=0):
    """A tiny transformers Dinov2Model with every weight re-randomised (layer scales too)."""
    config = transformers.Dinov2Config(
        hidden_size=cfg.width, num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads,
        mlp_ratio=cfg.mlp_dim // cfg.width, image_size=cfg.image_size, patch_size=cfg.patch_size,
    )  # fmt: skip
    model = transformers.Dinov2Model(config).eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            if ("norm" in name and name.endswith("weight")) or "lambda1" in name:
                p.copy_(1.0 + 0.2 * noise)
            else:
                p.copy_(noise * (0.1 if p.ndim == 1 else p[0].numel() ** -0.5))
    return model


def hf_pixels(images):
    """[B, H, W, 3] in [-1, 1] -> what Dinov2Model takes: ImageNet-normalised [B, 3, H, W]."""
    mean, std = np.asarray(dinov2.IMAGENET_MEAN), np.asarray(dinov2.IMAGENET_STD)
    pixels = (images * 0.5 + 0.5 - mean) / std
    return torch.from_numpy(pixels.astype(np.float32)).permute(0, 3, 1, 2)


def imported(cfg, source, target):
    """Params of `source` (a file or folder) through mode convert's importer and checkpoint."""
    from configs import tiny

    mesh = shd.make_mesh(tiny.get_config().mesh)
    report = importer.import_checkpoint("dinov2", source, target, cfg, mesh)
    assert report["naming"] == "hf"
    abstract = {"dinov2": shd.abstract_on_mesh(dinov2.abstract_params(cfg), None)}
    return checkpointing.restore_subtrees(target, abstract)["dinov2"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from configs import tiny

    cfg = tiny.get_config().model.dinov2
    model = hf_model(cfg)
    folder = tmp_path_factory.mktemp("dinov2")
    model.save_pretrained(folder / "hf")  # The release names (attention.attention.query, ...).
    return cfg, model, imported(cfg, folder / "hf", folder / "ckpt")


@pytest.mark.parametrize("size", [(16, 16), (28, 28), (16, 28), (12, 8)])
def test_parity_with_transformers(setup, size):
    cfg, model, params = setup
    images = np.random.default_rng(0).uniform(-1, 1, (2, *size, 3)).astype(np.float32)
    got = np.asarray(jax.jit(dinov2.create(cfg).apply)({"params": params}, images))
    with torch.no_grad():
        out = model(pixel_values=hf_pixels(images))
    want = out.last_hidden_state.numpy()
    grid = (size[0] // cfg.patch_size, size[1] // cfg.patch_size)
    assert got.shape == want.shape == (2, 1 + grid[0] * grid[1], cfg.width)
    rel = np.abs(got - want).max() / np.abs(want).max()
    print(f"DINOv2 {size} max relative error vs transformers: {rel:.2e}")
    assert rel <= 1e-5
    pooled = out.pooler_output.numpy()  # The class token after the final LayerNorm.
    assert np.abs(got[:, 0] - pooled).max() / np.abs(pooled).max() <= 1e-5
    assert dinov2.patch_grid(jnp.asarray(got), grid).shape == (2, *grid, cfg.width)


def test_in_memory_state_dict_with_prefix_imports_the_same(setup, tmp_path):
    cfg, model, params = setup
    state = {"dinov2." + k: v.detach().numpy() for k, v in model.state_dict().items()}
    assert any(".attention.q_proj." in k for k in state)  # transformers >= 5 in-memory names.
    safetensors.numpy.save_file(state, tmp_path / "dino.safetensors")
    got = imported(cfg, tmp_path / "dino.safetensors", tmp_path / "ckpt")
    jax.tree.map(np.testing.assert_array_equal, got, params)


def test_import_refuses_another_size(setup, tmp_path):
    cfg, model, _ = setup
    model.save_pretrained(tmp_path / "hf")
    cfg = cfg.copy_and_resolve_references()
    cfg.num_layers = 3
    with pytest.raises(
        mapping.MappingError, match="missing from the checkpoint.*config.model.dinov2"
    ):
        imported(cfg, tmp_path / "hf", tmp_path / "ckpt")


def test_param_count_matches_torch_minus_mask_token(setup):
    cfg, model, _ = setup
    abstract = nn.meta.unbox(dinov2.abstract_params(cfg))
    count = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(abstract))
    torch_used = sum(p.numel() for n, p in model.named_parameters() if "mask_token" not in n)
    assert count == torch_used


def test_vit_s14_size():
    from configs import base

    abstract = nn.meta.unbox(dinov2.abstract_params(base.get_config().model.dinov2))
    count = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(abstract))
    d, m, n = 384, 1536, 1 + 37 * 37
    block = 4 * (d * d + d) + 2 * d * m + m + d + 4 * d + 2 * d  # qkvo, mlp, 2 norms, 2 scales
    assert count == 12 * block + 14 * 14 * 3 * d + d + d + n * d + 2 * d  # 22,056,192


def test_bad_input(tiny_config):
    module = dinov2.create(tiny_config.model.dinov2)
    with pytest.raises(ValueError, match=r"multiples of config.model.dinov2.patch_size \(4\)"):
        jax.eval_shape(module.init, jax.random.key(0), jnp.zeros((1, 16, 18, 3)))
    with pytest.raises(ValueError, match=r"\[B, H, W, 3\]"):
        jax.eval_shape(module.init, jax.random.key(0), jnp.zeros((1, 3, 16, 16)))
    tiny_config.model.dinov2.image_size = 18
    with pytest.raises(ValueError, match="multiple of patch_size"):
        dinov2.create(tiny_config.model.dinov2)
