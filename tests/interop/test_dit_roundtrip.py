"""DiT checkpoints both ways against diffusers' WanTransformer3DModel (random tiny models)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
import torch
from diffusers import WanTransformer3DModel
from flax import traverse_util
from safetensors.numpy import load_file, save_file

from tests import multiprocess
from tests.models import dit_torch
from wow_jax import checkpointing
from wow_jax import sharding as shd
from wow_jax.interop import convert, dit_table, exporter, importer, registry
from wow_jax.models import dit

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def mesh(tiny_config):
    return shd.make_mesh(tiny_config.mesh)


def wan_state(cfg, diffusers_state: dict) -> dict:
    """The same tensors under Wan-native names (through the table: same Flax slot)."""
    tables = registry.rules_by_naming(registry.get("dit"), cfg)
    slot = {(r.flax_path, r.layer): r.torch_name for r in tables["diffusers"]}
    return {r.torch_name: diffusers_state[slot[(r.flax_path, r.layer)]] for r in tables["wan"]}


def load_dit(ckpt, cfg, mesh) -> dict:
    """The imported DiT params restored onto `mesh` through the one checkpoint reader."""
    target = {"dit": shd.abstract_on_mesh(dit.abstract_params(cfg), mesh)}
    return checkpointing.restore_subtrees(ckpt, target)["dit"]


def jax_forward(cfg, ckpt, mesh, x):
    params = load_dit(ckpt, cfg, mesh)
    return np.asarray(jax.jit(dit.create(cfg).apply)({"params": params}, **x))


def test_diffusers_round_trip_identical(tiny_config, tmp_path, mesh):
    cfg = dit_torch.dit_config(tiny_config.model.dit, "t2v")
    model = dit_torch.torch_model(cfg)
    model.save_pretrained(tmp_path / "hf", max_shard_size="40KB")  # sharded + index json
    assert (tmp_path / "hf/diffusion_pytorch_model.safetensors.index.json").exists()
    report = importer.import_checkpoint("dit", tmp_path / "hf", tmp_path / "ckpt", cfg, mesh)
    assert report["naming"] == "diffusers"

    x = dit_torch.inputs(cfg)
    with torch.no_grad():
        want = dit_torch.torch_forward(model, x).numpy()
    assert dit_torch.rel_err(jax_forward(cfg, tmp_path / "ckpt", mesh, x), want) < 1e-5

    exporter.export_checkpoint(
        "dit", tmp_path / "ckpt", tmp_path / "out", cfg, dtype="float32", max_shard_size="60KB"
    )
    assert (tmp_path / "out/diffusion_pytorch_model.safetensors.index.json").exists()
    loaded = WanTransformer3DModel.from_pretrained(tmp_path / "out").eval()
    for key, value in dit_table.diffusers_kwargs(cfg).items():  # config.json from our config
        assert loaded.config[key] == (list(value) if isinstance(value, tuple) else value), key
    original, again = model.state_dict(), loaded.state_dict()
    assert set(original) == set(again)
    for name, value in original.items():
        assert torch.equal(value, again[name]), name
    with torch.no_grad():
        assert torch.equal(dit_torch.torch_forward(loaded, x), dit_torch.torch_forward(model, x))


def test_wan_native_i2v_round_trip(tiny_config, tmp_path, mesh):
    cfg = dit_torch.dit_config(tiny_config.model.dit, "i2v")
    model = dit_torch.torch_model(cfg, seed=3)
    state = wan_state(cfg, dit_torch.state_dict_numpy(model))
    assert "blocks.0.cross_attn.k_img.weight" in state and "img_emb.proj.1.weight" in state
    (tmp_path / "wan").mkdir()
    save_file(state, tmp_path / "wan/diffusion_pytorch_model.safetensors")
    report = importer.import_checkpoint("dit", tmp_path / "wan", tmp_path / "ckpt", cfg, mesh)
    assert report["naming"] == "wan"

    x = dit_torch.inputs(cfg, batch=1, frames=1, height=2, width=4)
    with torch.no_grad():
        want = dit_torch.torch_forward(model, x).numpy()
    assert dit_torch.rel_err(jax_forward(cfg, tmp_path / "ckpt", mesh, x), want) < 1e-5

    exporter.export_checkpoint(
        "dit", tmp_path / "ckpt", tmp_path / "out_wan", cfg, naming="wan", dtype="float32"
    )
    exported = load_file(tmp_path / "out_wan/diffusion_pytorch_model.safetensors")
    assert set(exported) == set(state)
    for name, value in state.items():
        np.testing.assert_array_equal(exported[name], value, err_msg=name)
    wan_config = json.loads((tmp_path / "out_wan/config.json").read_text())
    assert wan_config["model_type"] == "i2v" and wan_config["in_dim"] == 36

    exporter.export_checkpoint("dit", tmp_path / "ckpt", tmp_path / "out_hf", cfg, dtype="float32")
    loaded = WanTransformer3DModel.from_pretrained(tmp_path / "out_hf").eval()
    with torch.no_grad():
        assert torch.equal(dit_torch.torch_forward(loaded, x), dit_torch.torch_forward(model, x))


def test_wrong_config_is_one_clear_error(tiny_config, tmp_path, mesh):
    cfg = dit_torch.dit_config(tiny_config.model.dit, "t2v")
    dit_torch.torch_model(cfg).save_pretrained(tmp_path / "hf")
    i2v = dit_torch.dit_config(tiny_config.model.dit, "i2v")
    with pytest.raises(ValueError, match="missing from the checkpoint.*Likely cause.*variant"):
        importer.import_checkpoint("dit", tmp_path / "hf", tmp_path / "ckpt", i2v, mesh)
    wider = dit_torch.dit_config(tiny_config.model.dit, "t2v", ffn_dim=48)
    with pytest.raises(ValueError, match="wrong shape.*ffn"):
        importer.import_checkpoint("dit", tmp_path / "hf", tmp_path / "ckpt", wider, mesh)
    assert not (tmp_path / "ckpt").exists()


def test_convert_mode_imports_exports_and_refuses_to_overwrite(tiny_config, tmp_path):
    cfg = dit_torch.dit_config(tiny_config.model.dit, "t2v")
    dit_torch.torch_model(cfg).save_pretrained(tmp_path / "hf")
    config = tiny_config
    config.mode, c = "convert", config.convert
    c.source, c.target = str(tmp_path / "hf"), str(tmp_path / "ck")
    convert.convert(config, workdir=str(tmp_path), progress=False)
    c.direction, c.source, c.target, c.dtype = "export", c.target, str(tmp_path / "out"), "float32"
    report = convert.convert(config, workdir=str(tmp_path), progress=False)
    assert report["shards"] == ["diffusion_pytorch_model.safetensors"]
    c.direction, c.source, c.target = "import", str(tmp_path / "hf"), str(tmp_path / "ck")
    with pytest.raises(FileExistsError, match="already exists"):
        convert.convert(config, workdir=str(tmp_path), progress=False)

    truncated = tmp_path / "bad.safetensors"
    data = (tmp_path / "hf/diffusion_pytorch_model.safetensors").read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    run = subprocess.run(
        [sys.executable, "-m", "wow_jax.main", "--config=configs/tiny.py", "--config.mode=convert",
         f"--config.convert.source={truncated}", f"--workdir={tmp_path / 'wd'}"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode != 0
    assert run.stderr.strip().splitlines()[-1].startswith("wow_jax convert: ")
    assert "truncated" in run.stderr and "Traceback" not in run.stderr
    assert not (tmp_path / "wd/dit_orbax").exists()


def flat_params(ckpt, cfg, mesh) -> dict:
    """{flat path: numpy array} of an imported DiT checkpoint restored onto `mesh`."""
    params = load_dit(ckpt, cfg, mesh)
    return {k: np.asarray(v) for k, v in traverse_util.flatten_dict(params).items()}


def test_two_process_import_matches_single_process(tiny_config, tmp_path):
    """2 processes x 4 CPU devices import one checkpoint laid out over all 8 devices (main's
    convert mode on fsdp 4 x tensor 2); restored here it equals a single-process import and the
    torch weights exactly."""
    cfg = dit_torch.dit_config(tiny_config.model.dit, "t2v")
    model = dit_torch.torch_model(cfg)
    source, target = tmp_path / "hf", tmp_path / "ck"
    model.save_pretrained(source, max_shard_size="40KB")
    cmd = ["wow_jax.main", "--config=configs/tiny.py", "--config.mode=convert",
           "--config.mesh.fsdp=4", "--config.mesh.tensor=2", f"--workdir={tmp_path / 'wd'}",
           f"--config.convert.source={source}", f"--config.convert.target={target}"]  # fmt: skip
    tiny_config.mesh.fsdp, tiny_config.mesh.tensor = 4, 2
    mesh_shape = [1, 4, 2, 1]
    outputs = multiprocess.run_processes(
        [sys.executable, "-m", *cmd], processes=2, devices=4, timeout=120, cwd=ROOT
    )
    assert all(f"'target': '{target}'" in stdout for stdout, _ in outputs)
    # One complete checkpoint, which both processes wrote into; nothing left over.
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "wd") == ["ck", "hf"]
    assert (target / "commit_success.txt").exists()
    assert sorted(os.listdir(target / "state/array_metadatas")) == ["process_0", "process_1"]
    # Orbax's record of each array's sharding as written: all on the mesh of the 8 devices.
    written = [json.loads(s) for s in json.loads((target / "state/_sharding").read_text()).values()]
    assert len(written) == len(jax.tree.leaves(dit.abstract_params(cfg)))
    for sharding in written:
        assert sharding["shape"] == mesh_shape
        assert len({d["id"] for d in np.ravel(sharding["device_mesh"]["mesh"])}) == 8
    assert any(any(sharding["partition_spec"]) for sharding in written)

    mesh = shd.make_mesh(tiny_config.mesh)
    importer.import_checkpoint("dit", source, tmp_path / "single", cfg, mesh, progress=False)
    single = flat_params(tmp_path / "single", cfg, mesh)
    got = flat_params(target, cfg, mesh)
    want = traverse_util.flatten_dict(dit_torch.flax_params(cfg, dit_torch.state_dict_numpy(model)))
    assert set(got) == set(single) == set(want)
    for key, value in got.items():
        np.testing.assert_array_equal(value, single[key], err_msg="/".join(key))
        np.testing.assert_array_equal(value, want[key], err_msg="/".join(key))


def test_wow14b_export_plan_fits_5gb_shards():
    """The WoW-1-Wan-14B (Wan2.1-I2V-14B) DiT plans into <= 5 GB bf16 shards, from shapes only."""
    import ml_dtypes  # noqa: PLC0415
    from flax import linen as nn  # noqa: PLC0415

    from configs import wow14b  # noqa: PLC0415

    cfg = wow14b.get_config().model.dit
    flat = traverse_util.flatten_dict(nn.meta.unbox(dit.abstract_params(cfg)))
    leaves = {k: (tuple(v.shape), np.dtype(v.dtype)) for k, v in flat.items()}
    rules = registry.rules(registry.get("dit"), cfg, "diffusers")
    tensors = exporter.plan_tensors(rules, leaves, np.dtype(ml_dtypes.bfloat16))
    shards = exporter.plan_shards(tensors, exporter.parse_size("5GB"), "diffusion_pytorch_model")
    params = sum(int(np.prod(shape)) for shape, _ in leaves.values())
    assert 16.0e9 < params < 17.0e9  # Wan2.1-I2V-14B: 16.4B with the image embedder
    data = [sum(2 * int(np.prod(t["shape"])) for t in s["tensors"]) for s in shards]
    assert max(data) <= 5 * 10**9 and sum(data) == 2 * params
    assert (
        len(shards) == 7
        and shards[0]["file"] == "diffusion_pytorch_model-00001-of-00007.safetensors"
    )
