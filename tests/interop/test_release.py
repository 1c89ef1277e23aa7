"""Importing a WoW-1-Wan-14B release folder as published: the stock Wan2.1-I2V-14B files (DiT
shards + index, VAE / umT5 / CLIP .pth files) with WoW_video_dit.pt loaded over the base DiT."""

import argparse
import json
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
import torch
from flax import linen as nn

from tests.interop.test_dit_roundtrip import load_dit
from tests.models import dit_torch
from wow_jax import sharding as shd
from wow_jax.interop import convert, dit_table, formats, mapping
from wow_jax.models import dit

SHARDS = 7  # The Wan2.1-I2V-14B DiT ships as 7 safetensors shards.
OTHER_FILES = (
    "Wan2.1_VAE.pth",
    "models_t5_umt5-xxl-enc-bf16.pth",
    "models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth",
)


@pytest.fixture
def cfg(tiny_config):
    return dit_torch.dit_config(tiny_config.model.dit, "i2v")


def random_base(cfg) -> dict[str, np.ndarray]:
    """Every tensor of a Wan-native i2v DiT state dict, random bf16 (as released)."""
    shapes = mapping.flax_shapes_of(nn.meta.unbox(dit.abstract_params(cfg)))
    rng = np.random.default_rng(0)
    out = {}
    for rule in dit_table.rules(cfg, "wan"):
        shape = mapping.torch_layout_shape(mapping.target_shape(rule, shapes), rule.transform)
        out[rule.torch_name] = rng.standard_normal(shape).astype(ml_dtypes.bfloat16)
    return out


def write_release(folder: Path, base: dict[str, np.ndarray]) -> Path:
    """The release layout: 7 DiT shards + their index json, and the encoders' / VAE's .pth."""
    from safetensors.numpy import save_file  # noqa: PLC0415

    folder.mkdir()
    names, weight_map = sorted(base), {}
    for i in range(SHARDS):
        file = f"diffusion_pytorch_model-{i + 1:05d}-of-{SHARDS:05d}.safetensors"
        save_file({n: base[n] for n in names[i::SHARDS]}, folder / file)
        weight_map.update({n: file for n in names[i::SHARDS]})
    index = {"metadata": {"total_size": 0}, "weight_map": weight_map}
    (folder / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps(index))
    for name in OTHER_FILES:
        torch.save({"weight": torch.zeros(2)}, folder / name)
    return folder


def overlay_subset(base: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """New float32 values for some base tensors (every block's self-attention q, the head)."""
    rng = np.random.default_rng(1)
    names = [n for n in base if ".self_attn.q." in n or n.startswith("head.")]
    return {n: rng.standard_normal(base[n].shape).astype(np.float32) for n in names}


def save_overlay(path: Path, tensors: dict, prefix: str = "pipe.dit.", **extra) -> Path:
    """A trainer's checkpoint: {'state_dict': {prefix + name: tensor}, ...extra entries}."""
    state = {prefix + n: torch.from_numpy(np.asarray(v)) for n, v in tensors.items()}
    torch.save({"state_dict": state, "global_step": 600_000, **extra}, path)
    return path


def expected_params(cfg, tensors: dict[str, np.ndarray]) -> dict:
    shapes = mapping.flax_shapes_of(nn.meta.unbox(dit.abstract_params(cfg)))
    rules = dit_table.rules(cfg, "wan")
    return mapping.torch_to_flax(lambda n: tensors[n].astype(np.float32), rules, shapes)


def assert_params_equal(got, want) -> None:
    from flax import traverse_util  # noqa: PLC0415

    got, want = traverse_util.flatten_dict(got), traverse_util.flatten_dict(want)
    assert got.keys() == want.keys()
    for path, value in want.items():
        np.testing.assert_array_equal(np.asarray(got[path]), value, err_msg="/".join(path))


# issue 16: a WoW release folder imports as the base DiT shards with WoW_video_dit.pt (wrapped,
# prefixed, one stray key) loaded over them, found by itself, with the counts printed.
def test_release_folder_imports_base_then_overlay(tiny_config, cfg, tmp_path, capsys):
    base = random_base(cfg)
    release = write_release(tmp_path / "WoW-1-Wan-14B-600k", base)
    new = overlay_subset(base)
    stray = {"lora_A.default.weight": np.zeros((2, 2), np.float32)}
    save_overlay(release / "WoW_video_dit.pt", new | stray)

    config = tiny_config
    config.mode, config.model.dit = "convert", cfg
    config.convert.source, config.convert.target = str(release), str(tmp_path / "wow")
    report = convert.convert(config, str(tmp_path), progress=False)

    printed = capsys.readouterr().out
    assert f"{len(new)} tensors from the overlay, {len(base) - len(new)} from the base" in printed
    assert "1 overlay tensors match no base tensor" in printed
    assert "pipe.dit.lora_A.default.weight" in printed
    assert report["overlay"]["from_overlay"] == len(new) and report["overlay"]["unmatched"] == 1
    mesh = shd.make_mesh(config.mesh)
    assert_params_equal(load_dit(tmp_path / "wow", cfg, mesh), expected_params(cfg, base | new))

    config.convert.overlay, config.convert.target = "", str(tmp_path / "stock")
    report = convert.convert(config, str(tmp_path), progress=False)
    assert "overlay" not in report
    assert_params_equal(load_dit(tmp_path / "stock", cfg, mesh), expected_params(cfg, base))


# issue 16: an overlay that matches nothing, one whose tensor disagrees in shape, and one that
# needs full unpickling (without config.convert.trust_pickle) are refused before writing.
def test_overlay_refusals(tiny_config, cfg, tmp_path):
    base = random_base(cfg)
    release = write_release(tmp_path / "release", base)
    config, target = tiny_config, tmp_path / "ckpt"
    config.mode, config.model.dit = "convert", cfg
    config.convert.source, config.convert.target = str(release), str(target)

    def run(overlay: Path, trust_pickle: bool = False):
        config.convert.overlay, config.convert.trust_pickle = str(overlay), trust_pickle
        convert.convert(config, str(tmp_path), progress=False)

    unrelated = save_overlay(tmp_path / "other.pt", {"decoder.conv.weight": np.zeros(3)}, "module.")
    with pytest.raises(formats.CheckpointFormatError, match="none of its 1 tensors.*names a"):
        run(unrelated)
    name = "blocks.0.ffn.0.weight"
    wrong = {name: np.zeros((base[name].shape[0] + 1, base[name].shape[1]), np.float32)}
    with pytest.raises(formats.CheckpointFormatError, match=f"disagree in shape.*{name}"):
        run(save_overlay(tmp_path / "wrong.pt", wrong))
    pickled = save_overlay(
        tmp_path / "pickled.pt", overlay_subset(base), args=argparse.Namespace(lr=1e-5)
    )
    with pytest.raises(formats.CheckpointFormatError, match="full unpickling.*trust_pickle=true"):
        run(pickled)
    assert not target.exists()

    run(pickled, trust_pickle=True)  # Opted in: the same file imports.
    want = expected_params(cfg, base | overlay_subset(base))
    assert_params_equal(load_dit(target, cfg, shd.make_mesh(config.mesh)), want)
