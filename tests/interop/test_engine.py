"""Streaming import/export engine on a test-local model (conv + linears + nn.scan stack)."""

import json
import shutil
from pathlib import Path

import jax
import ml_dtypes
import numpy as np
import pytest
import torch
from flax import linen as nn
from flax import traverse_util
from jax.sharding import PartitionSpec as P
from safetensors.numpy import load_file, save_file

from tests.interop import tiny_model
from wow_jax import checkpointing
from wow_jax import sharding as shd
from wow_jax.interop import exporter, formats, importer, mapping
from wow_jax.interop.mapping import MappingError


@pytest.fixture
def mesh(tiny_config):
    return shd.make_mesh(tiny_config.mesh)  # fsdp = 8


def write_sharded(state: dict, folder: Path, stem: str = "diffusion_pytorch_model") -> Path:
    """Two safetensors shards + index json, like save_pretrained / the Wan 14B release."""
    folder.mkdir(parents=True, exist_ok=True)
    names = sorted(state)
    halves = {f"{stem}-00001-of-00002.safetensors": names[::2]}
    halves[f"{stem}-00002-of-00002.safetensors"] = names[1::2]
    weight_map = {}
    for file, part in halves.items():
        save_file({n: state[n] for n in part}, folder / file)
        weight_map.update({n: file for n in part})
    index = folder / f"{stem}.safetensors.index.json"
    index.write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return folder


def do_import(source_path, target, mesh, **kwargs):
    with formats.open_source(source_path) as source:
        return importer.import_params(
            source,
            target,
            tiny_model.rules_by_naming(),
            tiny_model.abstract_params(),
            mesh,
            progress=False,
            **kwargs,
        )


@pytest.mark.parametrize("naming", ["wan", "diffusers"])
def test_import_matches_torch_and_exports_back_exactly(tmp_path, mesh, naming):
    state = tiny_model.random_state_dict(naming)
    write_sharded(state, tmp_path / "src")
    report = do_import(tmp_path / "src", tmp_path / "ckpt", mesh, group_bytes=1)
    assert report["naming"] == naming and report["tensors"] == len(state)

    target = {"model": shd.abstract_on_mesh(tiny_model.abstract_params(), mesh)}
    params = checkpointing.restore_subtrees(tmp_path / "ckpt", target)["model"]
    fc1 = params["blocks"]["fc1"]["kernel"]  # [layers, embed, mlp]
    assert fc1.sharding.spec == P(None, "fsdp", "tensor"), fc1.sharding
    assert len(fc1.addressable_shards) == 8 and fc1.addressable_shards[0].data.shape == (3, 2, 32)
    x = np.random.default_rng(1).normal(size=(2, 4, 4, tiny_model.C_IN)).astype(np.float32)
    got = tiny_model.Tiny().apply({"params": params}, x)
    np.testing.assert_allclose(
        got, tiny_model.torch_forward(state, naming, x), rtol=1e-5, atol=1e-5
    )

    for out_naming in ("wan", "diffusers"):
        out = tmp_path / f"out_{out_naming}"
        exporter.export_params(
            tmp_path / "ckpt", out, tiny_model.rules(out_naming), dtype="float32", progress=False
        )
        exported = load_file(out / "diffusion_pytorch_model.safetensors")
        expected = tiny_model.random_state_dict(out_naming)  # same seed: same values
        assert set(exported) == set(expected)
        for name, value in expected.items():
            np.testing.assert_array_equal(exported[name], value, err_msg=name)


def test_pth_source_and_bf16_export_with_shards(tmp_path, mesh):
    state = tiny_model.random_state_dict("wan")
    bf16 = {k: torch.from_numpy(v).to(torch.bfloat16) for k, v in state.items()}
    torch.save(bf16, tmp_path / "model.pth")
    do_import(tmp_path / "model.pth", tmp_path / "ckpt", mesh, dtype="float32")
    report = exporter.export_params(
        tmp_path / "ckpt", tmp_path / "out", tiny_model.rules("wan"), max_shard_size="2KB",
        progress=False,
    )  # fmt: skip
    assert len(report["shards"]) > 2
    index = json.loads(
        (tmp_path / "out/diffusion_pytorch_model.safetensors.index.json").read_text()
    )
    assert set(index["weight_map"]) == set(state)
    with formats.open_source(tmp_path / "out") as out:
        assert max(f.stat().st_size for f in out.files) <= 2000 + 4096  # data + one tensor
        for name, value in bf16.items():
            got = out.read(name)
            assert got.dtype == ml_dtypes.bfloat16
            want = value.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
            np.testing.assert_array_equal(got, want, err_msg=name)


def test_export_selects_ema_params(tmp_path):
    flat = tiny_model.random_state_dict("wan")
    shapes = mapping.flax_shapes_of(nn.meta.unbox(tiny_model.abstract_params()))
    params = mapping.torch_to_flax(flat.__getitem__, tiny_model.rules("wan"), shapes)
    ema = jax.tree.map(lambda x: x + 1.0, params)
    writer = checkpointing.PartialWriter(tmp_path / "train")
    boxed_ema = traverse_util.unflatten_dict(
        {(*k, "value"): v for k, v in traverse_util.flatten_dict(ema).items()}
    )  # As a train state with nn.Partitioned boxes is stored.
    both = {"params": params, "ema_params": boxed_ema, "step": np.int32(7)}
    writer.add(traverse_util.flatten_dict(jax.tree.map(jax.numpy.asarray, both)))
    writer.finalize()
    exporter.export_params(
        tmp_path / "train", tmp_path / "out", tiny_model.rules("wan"), params_key="ema_params",
        dtype="float32", progress=False,
    )  # fmt: skip
    got = load_file(tmp_path / "out/diffusion_pytorch_model.safetensors")
    for name, value in flat.items():
        np.testing.assert_allclose(got[name], value + 1.0, err_msg=name)
    with pytest.raises(ValueError, match="no params under 'ema'"):
        exporter.export_params(tmp_path / "train", tmp_path / "o2", [], params_key="ema")


def _error(tmp_path, mesh, state):
    save_file(state, tmp_path / "bad.safetensors")
    with pytest.raises(ValueError) as info:
        do_import(tmp_path / "bad.safetensors", tmp_path / "ckpt", mesh, hint="HINT")
    assert not (tmp_path / "ckpt").exists()
    return str(info.value)


def test_missing_unknown_and_misshaped_tensors_are_named(tmp_path, mesh):
    state = tiny_model.random_state_dict("wan")
    missing = {k: v for k, v in state.items() if k != "blocks.1.ffn.0.weight"}
    message = _error(tmp_path, mesh, missing)
    assert "1 tensors missing" in message and "blocks.1.ffn.0.weight" in message
    assert message.endswith("HINT")

    message = _error(tmp_path, mesh, {**state, "blocks.9.ffn.0.weight": state["head.head.weight"]})
    assert "no place for: blocks.9.ffn.0.weight" in message

    wrong = {**state, "head.head.weight": np.zeros((5, tiny_model.DIM), np.float32)}
    message = _error(tmp_path, mesh, wrong)
    assert "head.head.weight: checkpoint (5, 16)" in message and "model wants (16, 4)" in message

    many = {f"extra.{i}": state["head.head.weight"] for i in range(30)}
    message = _error(tmp_path, mesh, {**state, **many})
    assert "(+10 more)" in message  # first 20 listed


def test_naming_mix_and_unknown_naming_are_refused(tmp_path, mesh):
    state = tiny_model.random_state_dict("wan")
    mixed = dict(state)
    mixed["proj_out.weight"] = mixed.pop("head.head.weight")
    assert "mixes naming conventions" in _error(tmp_path, mesh, mixed)
    unknown = {f"model.{k}": v for k, v in state.items()}
    assert "unknown naming" in _error(tmp_path, mesh, unknown)


def test_truncated_file_and_broken_index(tmp_path, mesh):
    state = tiny_model.random_state_dict("wan")
    save_file(state, tmp_path / "model.safetensors")
    data = (tmp_path / "model.safetensors").read_bytes()
    (tmp_path / "model.safetensors").write_bytes(data[:-100])
    with pytest.raises(formats.CheckpointFormatError, match="truncated"):
        formats.open_source(tmp_path / "model.safetensors")
    (tmp_path / "model.safetensors").write_bytes(data[:5])
    with pytest.raises(formats.CheckpointFormatError, match="truncated"):
        formats.open_source(tmp_path / "model.safetensors")

    torch.save({k: torch.from_numpy(v) for k, v in state.items()}, tmp_path / "m.pth")
    (tmp_path / "m.pth").write_bytes((tmp_path / "m.pth").read_bytes()[:3000])
    with pytest.raises(formats.CheckpointFormatError, match="m.pth: cannot read.*truncated"):
        formats.open_source(tmp_path / "m.pth")

    folder = write_sharded(state, tmp_path / "sharded")
    index_file = folder / "diffusion_pytorch_model.safetensors.index.json"
    index = json.loads(index_file.read_text())
    del index["weight_map"]["blocks.0.norm.weight"]
    index_file.write_text(json.dumps(index))
    with pytest.raises(formats.CheckpointFormatError, match="no entry for.*blocks.0.norm.weight"):
        formats.open_source(folder)
    index["weight_map"]["blocks.0.norm.weight"] = (
        "diffusion_pytorch_model-00003-of-00002.safetensors"
    )
    index_file.write_text(json.dumps(index))
    with pytest.raises(formats.CheckpointFormatError, match="missing"):
        formats.open_source(folder)


def test_interrupted_import_leaves_no_checkpoint(tmp_path, mesh, monkeypatch):
    save_file(tiny_model.random_state_dict("wan"), tmp_path / "m.safetensors")
    real, calls = importer.build_param, []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(importer, "build_param", failing)
    with pytest.raises(KeyboardInterrupt):
        do_import(tmp_path / "m.safetensors", tmp_path / "ckpt", mesh, group_bytes=1)
    assert not (tmp_path / "ckpt").exists()
    monkeypatch.setattr(importer, "build_param", real)
    do_import(tmp_path / "m.safetensors", tmp_path / "ckpt", mesh)  # starts over cleanly
    assert checkpointing.leaf_metadata(tmp_path / "ckpt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt", "m.safetensors"]


def _fail_on_write(monkeypatch, n: int) -> None:
    """The n-th shard write (and only it) raises OSError('disk full')."""
    real, calls = formats.write_safetensors, []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == n:
            raise OSError("disk full")
        return real(*args, **kwargs)

    monkeypatch.setattr(formats, "write_safetensors", failing)


EXPORT = {"max_shard_size": 1000, "dtype": "float32", "progress": False}  # About 10 shards.


# issue 14 B2: an export failing mid-write raised the bare error, not saying how to resume
def test_interrupted_export_resumes_and_skips_finished_shards(tmp_path, mesh, monkeypatch):
    save_file(tiny_model.random_state_dict("wan"), tmp_path / "m.safetensors")
    do_import(tmp_path / "m.safetensors", tmp_path / "ckpt", mesh)
    _fail_on_write(monkeypatch, 3)
    rules = tiny_model.rules("wan")
    work = tmp_path / ".out.exporting"
    message = rf"disk full.*2 of \d+ shards .*rerun the same command to resume; delete {work} to"
    with pytest.raises(exporter.ExportInterrupted, match=message):
        exporter.export_params(tmp_path / "ckpt", tmp_path / "out", rules, **EXPORT)
    assert not (tmp_path / "out").exists() and work.is_dir()
    monkeypatch.undo()
    report = exporter.export_params(tmp_path / "ckpt", tmp_path / "out", rules, **EXPORT)
    assert len(report["skipped_shards"]) == 2 and len(report["shards"]) > 3
    with formats.open_source(tmp_path / "out") as out:
        for name, value in tiny_model.random_state_dict("wan").items():
            np.testing.assert_array_equal(out.read(name), value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt", "m.safetensors", "out"]


def _save_step(root, step: int, ckpt_cfg) -> None:
    """Step `step` of a CheckpointManager root: a train-state-like {'params', 'step'} holding the
    tiny model's params (+ step, so each step's values differ)."""
    flat = tiny_model.random_state_dict("wan")
    shapes = mapping.flax_shapes_of(nn.meta.unbox(tiny_model.abstract_params()))
    params = mapping.torch_to_flax(flat.__getitem__, tiny_model.rules("wan"), shapes)
    manager = checkpointing.make_manager(root, ckpt_cfg)
    state = {"params": jax.tree.map(lambda x: np.asarray(x) + step, params), "step": step}
    assert checkpointing.save(manager, step, state)
    manager.wait_until_finished()
    manager.close()


def _files(folder) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


# issue 14 B3: a resumed export mixed shards of two steps and accepted a damaged shard by its size
def test_export_resume_reads_one_step_and_rewrites_a_damaged_shard(
    tmp_path, tiny_config, monkeypatch
):
    root, rules = tmp_path / "checkpoints", tiny_model.rules("wan")
    _save_step(root, 1, tiny_config.checkpoint)
    _fail_on_write(monkeypatch, 3)
    with pytest.raises(exporter.ExportInterrupted):
        exporter.export_params(root, tmp_path / "out", rules, **EXPORT)  # Step 1: 2 shards done.
    monkeypatch.undo()
    _save_step(root, 2, tiny_config.checkpoint)  # A newer step lands in the same root.
    exporter.export_params(root / "2", tmp_path / "clean", rules, **EXPORT)
    report = exporter.export_params(root, tmp_path / "out", rules, **EXPORT)
    assert report["skipped_shards"] == []  # The plan was step 1's: started over.
    assert _files(tmp_path / "out") == _files(tmp_path / "clean")

    shutil.rmtree(tmp_path / "out")
    _fail_on_write(monkeypatch, 3)
    with pytest.raises(exporter.ExportInterrupted):
        exporter.export_params(root, tmp_path / "out", rules, **EXPORT)
    monkeypatch.undo()
    finished = sorted((tmp_path / ".out.exporting").glob("*.safetensors"))
    assert len(finished) == 2
    data = bytearray(finished[0].read_bytes())
    data[-1] ^= 0xFF  # Same size, other bytes.
    finished[0].write_bytes(bytes(data))
    report = exporter.export_params(root, tmp_path / "out", rules, **EXPORT)
    assert report["skipped_shards"] == [finished[1].name]  # The damaged one was written again.
    assert _files(tmp_path / "out") == _files(tmp_path / "clean")


# issue 14 B6: export from a root whose newest step lost its _METADATA failed
def test_export_from_a_root_skips_a_damaged_newest_step(tmp_path, tiny_config, caplog):
    root, rules = tmp_path / "checkpoints", tiny_model.rules("wan")
    for step in (1, 2):
        _save_step(root, step, tiny_config.checkpoint)
    (root / "2" / "state" / "_METADATA").unlink()
    exporter.export_params(root, tmp_path / "out", rules, **EXPORT)
    assert f"checkpoint step {root / '2'} skipped" in caplog.text
    exporter.export_params(root / "1", tmp_path / "clean", rules, **EXPORT)
    assert _files(tmp_path / "out") == _files(tmp_path / "clean")


# issue 14 B2: nothing may be written before the plan is checked (also true since 887781d)
def test_a_refused_export_plan_writes_nothing(tmp_path, mesh):
    save_file(tiny_model.random_state_dict("wan"), tmp_path / "m.safetensors")
    do_import(tmp_path / "m.safetensors", tmp_path / "ckpt", mesh)
    with pytest.raises(ValueError, match="no params under 'weights'"):
        exporter.export_params(
            tmp_path / "ckpt", tmp_path / "out", tiny_model.rules("wan"), params_key="weights"
        )
    with pytest.raises(MappingError, match="have no checkpoint tensor"):
        exporter.export_params(tmp_path / "ckpt", tmp_path / "out", tiny_model.rules("wan")[1:])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt", "m.safetensors"]


# issue 14 B5: export --overwrite deleted every file of the target folder
def test_export_overwrite_replaces_only_the_files_it_writes(tmp_path, mesh):
    save_file(tiny_model.random_state_dict("wan"), tmp_path / "m.safetensors")
    do_import(tmp_path / "m.safetensors", tmp_path / "ckpt", mesh)
    out = tmp_path / "out"
    out.mkdir()
    kept = {"notes.txt": b"mine", "other_model.safetensors": b"other"}
    stale = ["diffusion_pytorch_model-00001-of-00099.safetensors"]
    stale.append("diffusion_pytorch_model.safetensors.index.json")
    for name, data in {**kept, **dict.fromkeys(stale, b"old")}.items():
        (out / name).write_bytes(data)
    rules = tiny_model.rules("wan")
    with pytest.raises(FileExistsError, match="already exists"):
        exporter.export_params(tmp_path / "ckpt", out, rules, **EXPORT)
    report = exporter.export_params(tmp_path / "ckpt", out, rules, overwrite=True, **EXPORT)
    names = set(report["shards"]) | {"diffusion_pytorch_model.safetensors.index.json"}
    assert set(_files(out)) == names | set(kept)
    assert all(_files(out)[name] == data for name, data in kept.items())
    with formats.open_source(out / "diffusion_pytorch_model.safetensors.index.json") as back:
        for name, value in tiny_model.random_state_dict("wan").items():
            np.testing.assert_array_equal(back.read(name), value)


# issue 14 B5: import --overwrite deleted whatever folder the target named
def test_import_overwrite_replaces_only_an_imported_checkpoint(tmp_path, mesh):
    save_file(tiny_model.random_state_dict("wan"), tmp_path / "m.safetensors")
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "keep.txt").write_text("mine")
    checkpointing.save_params(tmp_path / "orbax", {"w": np.ones(3, np.float32)})
    for target in (folder, tmp_path / "orbax"):
        with pytest.raises(FileExistsError, match=f"{target} is not a checkpoint written by the"):
            do_import(tmp_path / "m.safetensors", target, mesh, overwrite=True)
    assert (folder / "keep.txt").read_text() == "mine"
    assert checkpointing.leaf_metadata(tmp_path / "orbax")
    do_import(tmp_path / "m.safetensors", tmp_path / "ckpt", mesh)
    do_import(tmp_path / "m.safetensors", tmp_path / "ckpt", mesh, overwrite=True)
    (tmp_path / "empty").mkdir()
    do_import(tmp_path / "m.safetensors", tmp_path / "empty", mesh, overwrite=True)
    assert checkpointing.leaf_metadata(tmp_path / "empty")


def test_resolve_source_finds_the_component_in_release_folders(tmp_path):
    from wow_jax.interop import registry  # noqa: PLC0415

    dit, vae = registry.get("dit"), registry.get("vae")
    release = tmp_path / "Wan2.1-T2V-1.3B"
    release.mkdir()
    for name in ("diffusion_pytorch_model.safetensors", "Wan2.1_VAE.pth", "config.json"):
        (release / name).write_bytes(b"x")
    assert importer.resolve_source(release, dit) == release / "diffusion_pytorch_model.safetensors"
    assert importer.resolve_source(release, vae) == release / "Wan2.1_VAE.pth"
    pipeline = tmp_path / "Wan2.1-T2V-1.3B-Diffusers"
    for sub in ("transformer", "vae"):
        (pipeline / sub).mkdir(parents=True)
        (pipeline / sub / "config.json").write_text("{}")
    assert importer.resolve_source(pipeline, dit) == pipeline / "transformer"
    assert importer.resolve_source(pipeline, vae) == pipeline / "vae"
    (release / "diffusion_pytorch_model-00002.safetensors").write_bytes(b"x")
    with pytest.raises(formats.CheckpointFormatError, match="no index"):
        importer.resolve_source(release, dit)
