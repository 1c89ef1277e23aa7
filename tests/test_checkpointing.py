"""The one checkpoint reader on a REAL training run (the tiny i2v world model through loop.train):
generate's loader, export (params and ema_params) and a later mode's `restore_subtrees` read it,
from a gs:// URL served by an offline fake GCS (tests/fake_gcs.py) that Orbax writes and reads
through; a gs:// path is never turned into a local one (the old `<cwd>/gs:/...` bug)."""

import os
import shutil

import jax
import numpy as np
import pytest
from flax import traverse_util

from tests.fake_gcs import fake_gcs
from tests.train.test_tasks import cached_batch
from wow_jax import checkpointing, sharding
from wow_jax.interop import exporter, importer
from wow_jax.models import dit as dit_lib
from wow_jax.models import vae as vae_lib
from wow_jax.sampling import pipeline
from wow_jax.train import loop
from wow_jax.train.array_data import ArrayIterator
from wow_jax.train.tasks.world_model import WorldModelTask

URL = "gs://bucket/run/checkpoints"  # Where the fake bucket holds the run's checkpoints.


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """(config, workdir, final state) of 3 real train steps (checkpoints at steps 2 and 3) of the
    tiny i2v world model with a frozen VAE and CLIP and an EMA, on an fsdp=4 x tensor=2 mesh."""
    from configs import tiny

    cfg = tiny.get_config()
    cfg.model.dit.variant, cfg.model.dit.in_channels = "i2v", 36
    cfg.train.steps, cfg.train.ema_decay, cfg.train.tensorboard = 3, 0.5, False
    cfg.checkpoint.save_every, cfg.data.batch_size = 2, 4
    cfg.mesh.fsdp, cfg.mesh.tensor = 4, 2
    workdir = tmp_path_factory.mktemp("run")
    null = np.zeros((6, cfg.model.text.dim), np.float32)
    task = WorldModelTask(cfg, null_text_states=null, components=("dit", "vae", "clip"))
    result = loop.train(
        cfg, str(workdir), task=task, train_data=ArrayIterator(cached_batch(cfg), 4)
    )
    assert sorted(result.state.ema_params) == ["dit"]  # No EMA of the frozen VAE and CLIP.
    return cfg, workdir, jax.device_get(result.state)


@pytest.fixture
def bucket(run, tmp_path):
    """The run's checkpoints copied into the fake bucket at URL; yields the bucket's folder."""
    _, workdir, _ = run
    shutil.copytree(workdir / "checkpoints", tmp_path / "gcs" / "bucket" / "run" / "checkpoints")
    with fake_gcs(tmp_path / "gcs"):
        yield tmp_path / "gcs"


def _assert_equal(got, want):
    jax.tree.map(
        lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)), got, want
    )


def test_generate_reads_the_run_from_a_url(run, bucket):
    cfg, _, state = run
    cfg = cfg.copy_and_resolve_references()
    cfg.checkpoint.init_from = URL  # Documented: the run's checkpoints folder (newest step).
    mesh = sharding.make_mesh(cfg.mesh)
    params = pipeline.load_for_generation(cfg, mesh)
    assert sorted(params) == ["clip", "dit", "vae"]
    _assert_equal(params, state.params)
    kernel = params["dit"]["blocks"]["self_attn"]["q"]["kernel"]
    assert len(kernel.sharding.device_set) == 8  # Straight onto the mesh.

    cfg.sample.params_key = "ema_params"
    ema = pipeline.load_for_generation(cfg, mesh)
    assert sorted(ema) == ["clip", "dit", "vae"]  # Frozen parts come from params.
    _assert_equal(ema["dit"], state.ema_params["dit"])
    _assert_equal(
        {k: ema[k] for k in ("vae", "clip")}, {k: state.params[k] for k in ("vae", "clip")}
    )
    assert not np.allclose(
        ema["dit"]["head"]["head"]["kernel"], state.params["dit"]["head"]["head"]["kernel"]
    )


@pytest.mark.parametrize("key", ["params", "ema_params"])
def test_export_reads_the_run_from_a_url(run, bucket, tmp_path, key):
    """Export the DiT (and, for ema_params, the frozen VAE the EMA lacks) of the training run to
    diffusers safetensors, import it back: equal to the trained state's arrays."""
    cfg, _, state = run
    mesh = sharding.make_mesh(cfg.mesh)
    want = getattr(state, key)
    components = {"dit": (cfg.model.dit, want["dit"], dit_lib)}
    if key == "ema_params":
        components["vae"] = (cfg.model.vae, state.params["vae"], vae_lib)
    for name, (model_cfg, expected, lib) in components.items():
        out, back = tmp_path / f"{name}_torch", tmp_path / f"{name}_back"
        exporter.export_checkpoint(
            name, URL, out, model_cfg, params_key=key, dtype="float32", progress=False
        )
        importer.import_checkpoint(name, out, back, model_cfg, mesh, progress=False)
        target = {name: sharding.abstract_on_mesh(lib.abstract_params(model_cfg), mesh)}
        _assert_equal(checkpointing.restore_subtrees(back, target)[name], expected)


def test_a_later_mode_restores_one_component_onto_its_mesh(run, bucket):
    cfg, _, state = run
    mesh = sharding.make_mesh(_mesh_cfg(8, 1))  # Another layout than training's fsdp=4 x tensor=2.
    target = {"dit": sharding.abstract_on_mesh(dit_lib.abstract_params(cfg.model.dit), mesh)}
    restored = checkpointing.restore_subtrees(URL, target)["dit"]
    _assert_equal(restored, state.params["dit"])
    flat_target = traverse_util.flatten_dict(target["dit"])
    for path, leaf in traverse_util.flatten_dict(restored).items():
        assert leaf.sharding == flat_target[path].sharding, path
    assert checkpointing.subtree_names(URL) == ["clip", "dit", "vae"]
    assert checkpointing.subtree_names(URL, "ema_params") == ["clip", "dit", "vae"]
    with pytest.raises(ValueError, match=r"has no 'text' params under 'params'.*\['clip'"):
        checkpointing.restore_subtrees(URL, {"text": None})


def _mesh_cfg(fsdp, tensor):
    from configs import tiny

    mesh = tiny.get_config().mesh
    mesh.fsdp, mesh.tensor = fsdp, tensor
    return mesh


def test_training_writes_and_resumes_through_a_url(tmp_path):
    """The CheckpointManager of a run writes to and restores from gs:// (the fake bucket)."""
    from configs import tiny

    ckpt_cfg = tiny.get_config().checkpoint  # async_save, as training saves.
    state = {"params": {"w": np.arange(8.0, dtype=np.float32)}, "step": np.int32(7)}
    with fake_gcs(tmp_path / "gcs"):
        manager = checkpointing.make_manager("gs://bucket/train/checkpoints", ckpt_cfg)
        assert str(manager.directory) == "gs://bucket/train/checkpoints"
        assert checkpointing.save(manager, 7, state, meta={"step": 7})
        manager.wait_until_finished()
        abstract = jax.tree.map(
            lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=_one_device()), state
        )
        restored, meta = checkpointing.restore(manager, 7, abstract)
        assert meta == {"step": 7}
        _assert_equal(restored, state)
        item = checkpointing.item_directory("gs://bucket/train/checkpoints")
        assert str(item) == "gs://bucket/train/checkpoints/7/state"
    assert (tmp_path / "gcs" / "bucket" / "train" / "checkpoints" / "7" / "state").is_dir()


def _one_device():
    return jax.sharding.SingleDeviceSharding(jax.local_devices()[0])


def test_urls_are_never_made_local(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert str(checkpointing.as_path("gs://b/x")) == "gs://b/x"
    assert str(checkpointing.as_path("rel/x")) == os.path.join(str(tmp_path), "rel", "x")
    with fake_gcs(tmp_path / "gcs"):
        with pytest.raises(ValueError, match="checkpoint gs://nobucket/x does not exist"):
            checkpointing.item_directory("gs://nobucket/x")
        os.makedirs(tmp_path / "gs:" / "nobucket" / "x")  # What the old abspath made of it.
        with pytest.raises(ValueError, match="checkpoint gs://nobucket/x does not exist"):
            checkpointing.item_directory("gs://nobucket/x")
