"""CLIP vision tower: parity with transformers CLIPVisionModel, Wan/HF weights, preprocessing."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from flax import linen as nn
from flax import traverse_util

from wow_jax import sharding
from wow_jax.interop import clip_table, mapping
from wow_jax.models import clip


def hf_model(clip_cfg, seed=0):
    """A tiny transformers CLIPVisionModel with every weight re-randomised."""
    config = transformers.CLIPVisionConfig(
        hidden_size=clip_cfg.width,
        intermediate_size=clip_cfg.mlp_dim,
        num_hidden_layers=clip_cfg.num_layers,
        num_attention_heads=clip_cfg.num_heads,
        image_size=clip_cfg.image_size,
        patch_size=clip_cfg.patch_size,
        hidden_act=clip_cfg.activation,
        layer_norm_eps=1e-5,
    )
    model = transformers.CLIPVisionModel(config).eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            if "norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.2 * noise)
            else:
                p.copy_(noise * (0.1 if p.ndim == 1 else p[0].numel() ** -0.5))
    return model


def hf_state(model):
    return {k: v.detach().numpy() for k, v in model.state_dict().items()}


def hf_pixels(images):
    """[B, H, W, 3] in [-1, 1] -> what CLIPVisionModel takes: normalised [B, 3, H, W]."""
    pixels = (images * 0.5 + 0.5 - np.asarray(clip.CLIP_MEAN)) / np.asarray(clip.CLIP_STD)
    return torch.from_numpy(pixels.astype(np.float32)).permute(0, 3, 1, 2)


def wan_layout(hf, clip_cfg):
    """The same weights under Wan2.1's open-clip names, plus tensors Wan ships but never uses."""
    out = {
        "visual.patch_embedding.weight": hf["embeddings.patch_embedding.weight"],
        "visual.cls_embedding": hf["embeddings.class_embedding"][None, None],
        "visual.pos_embedding": hf["embeddings.position_embedding.weight"][None],
        "visual.pre_norm.weight": hf["pre_layrnorm.weight"],
        "visual.pre_norm.bias": hf["pre_layrnorm.bias"],
        "visual.post_norm.weight": hf["post_layernorm.weight"],
        "visual.post_norm.bias": hf["post_layernorm.bias"],
        "visual.head": np.ones((clip_cfg.width, 8), np.float32),
        "textual.token_embedding.weight": np.ones((10, 8), np.float32),
        "log_scale": np.ones((), np.float32),
    }
    names = {"layer_norm1": "norm1", "layer_norm2": "norm2", "self_attn.out_proj": "attn.proj"}
    names.update({"mlp.fc1": "mlp.0", "mlp.fc2": "mlp.2"})
    for i in range(clip_cfg.num_layers):
        src, dst = f"encoder.layers.{i}.", f"visual.transformer.{i}."
        for kind in ("weight", "bias"):
            for hf_name, wan_name in names.items():
                out[f"{dst}{wan_name}.{kind}"] = hf[f"{src}{hf_name}.{kind}"]
            qkv = [hf[f"{src}self_attn.{p}_proj.{kind}"] for p in "qkv"]
            out[f"{dst}attn.to_qkv.{kind}"] = np.concatenate(qkv, axis=0)
    return out


@pytest.fixture(scope="module")
def setup():
    from configs import tiny

    clip_cfg = tiny.get_config().model.clip
    clip_cfg.image_size = 42  # 3x3 patches + class token.
    return clip_cfg, hf_model(clip_cfg)


def test_parity_with_transformers_penultimate_layer(setup, tmp_path):
    clip_cfg, model = setup
    images = np.random.default_rng(0).uniform(-1, 1, (2, 42, 42, 3)).astype(np.float32)
    model.save_pretrained(tmp_path)
    tensors = clip_table.read_checkpoint(str(tmp_path / "model.safetensors"))
    params = clip_table.import_params(tensors, clip_cfg, "hf")
    got = np.asarray(jax.jit(clip.create(clip_cfg).apply)({"params": params}, images))
    with torch.no_grad():
        out = model(pixel_values=hf_pixels(images), output_hidden_states=True)
    want = out.hidden_states[-2].numpy()  # Wan's use_31_block: all blocks but the last.
    assert got.shape == (2, 1 + 3 * 3, clip_cfg.width)
    rel = np.abs(got - want).max() / np.abs(want).max()
    print(f"CLIP max relative error vs transformers: {rel:.2e}")
    assert rel <= 1e-5


@pytest.mark.parametrize("size", [(20, 20), (64, 64), (40, 90)])
def test_resize_matches_torch_bicubic(size):
    images = np.random.default_rng(1).uniform(-1, 1, (2, *size, 3)).astype(np.float32)
    got = np.asarray(clip.preprocess(jnp.asarray(images), 28))
    resized = torch.nn.functional.interpolate(
        torch.from_numpy(images).permute(0, 3, 1, 2), size=(28, 28), mode="bicubic",
        align_corners=False,
    )  # fmt: skip
    want = hf_pixels(resized.permute(0, 2, 3, 1).numpy()).permute(0, 2, 3, 1).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_wan_layout_maps_to_the_same_tree(setup, tmp_path):
    clip_cfg, model = setup
    hf = hf_state(model)
    wan = wan_layout(hf, clip_cfg)
    torch.save({k: torch.from_numpy(v) for k, v in wan.items()}, tmp_path / "clip.pth")
    from_hf = clip_table.import_params(hf, clip_cfg, "hf")
    from_wan = clip_table.import_params(
        clip_table.read_checkpoint(str(tmp_path / "clip.pth")), clip_cfg, "wan"
    )
    flat_a, flat_b = (traverse_util.flatten_dict(p) for p in (from_hf, from_wan))
    assert flat_a.keys() == flat_b.keys()
    for key in flat_a:
        np.testing.assert_array_equal(flat_a[key], flat_b[key])
    # Export: back to the Wan names and shapes of every tensor the model uses.
    back = clip_table.to_checkpoint(
        mapping.flax_to_torch(from_wan, clip_table.rules(clip_cfg, "wan")), "wan"
    )
    used = {k: v for k, v in wan.items() if not clip_table.unused(k, clip_cfg, "wan")}
    assert back.keys() == used.keys()
    for key in used:
        np.testing.assert_array_equal(back[key], used[key])
    # HF names with the `vision_model.` prefix of older checkpoints are accepted too.
    prefixed = {"vision_model." + k: v for k, v in hf.items()}
    jax.tree.map(np.testing.assert_array_equal, clip_table.import_params(prefixed, clip_cfg, "hf"),
                 from_hf)  # fmt: skip


def test_import_refuses_a_wrong_checkpoint(setup):
    clip_cfg, model = setup
    hf = hf_state(model)
    del hf["encoder.layers.0.self_attn.q_proj.bias"]
    with pytest.raises(mapping.MappingError, match="missing from the checkpoint"):
        clip_table.import_params(hf, clip_cfg, "hf")


def test_param_count_matches_torch_minus_unused_tail(setup):
    clip_cfg, model = setup
    abstract = nn.meta.unbox(clip.abstract_params(clip_cfg))
    count = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(abstract))
    last = clip_cfg.num_layers - 1
    torch_used = sum(
        p.numel() for n, p in model.named_parameters()
        if not n.startswith((f"encoder.layers.{last}.", "post_layernorm."))
    )  # fmt: skip
    assert count == torch_used


def test_vit_h_size():
    from configs import wow14b

    abstract = nn.meta.unbox(clip.abstract_params(wow14b.get_config().model.clip))
    count = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(abstract))
    d, m = 1280, 5120
    block = 4 * (d * d + d) + 2 * d * m + m + d + 4 * d
    assert count == 31 * block + 14 * 14 * 3 * d + d + 257 * d + 2 * d  # 611,086,080


def test_every_param_has_logical_axes(tiny_config):
    boxed = clip.abstract_params(tiny_config.model.clip)
    leaves = jax.tree.leaves(boxed, is_leaf=lambda x: isinstance(x, nn.Partitioned))
    assert leaves and all(isinstance(x, nn.Partitioned) for x in leaves)
    names = {n for x in leaves for n in x.names}
    assert {sharding.EMBED, sharding.MLP, sharding.HEADS, sharding.LAYERS} <= names


def test_bad_input(tiny_config):
    module = clip.create(tiny_config.model.clip)
    with pytest.raises(ValueError, match=r"\[B, H, W, 3\]"):
        jax.eval_shape(module.init, jax.random.key(0), jnp.zeros((1, 3, 28, 28)))
    tiny_config.model.clip.image_size = 30
    with pytest.raises(ValueError, match="multiple of patch_size"):
        clip.create(tiny_config.model.clip)


def test_bfloat16_compute_tracks_float32(tiny_config):
    clip_cfg = tiny_config.model.clip
    images = np.random.default_rng(2).uniform(-1, 1, (2, 40, 40, 3)).astype(np.float32)
    params = clip.init_params(clip_cfg, jax.random.key(0))
    want = np.asarray(jax.jit(clip.create(clip_cfg).apply)({"params": params}, images))
    clip_cfg.dtype = "bfloat16"
    got = jax.jit(clip.create(clip_cfg).apply)({"params": params}, images)
    assert got.dtype == jnp.bfloat16 and got.shape == (2, 1 + 2 * 2, clip_cfg.width)
    assert np.abs(np.asarray(got, np.float32) - want).max() / np.abs(want).max() < 3e-2
