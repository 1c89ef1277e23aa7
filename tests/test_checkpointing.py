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


def _damage(step_folder, how: str) -> None:
    """Truncates or bit-flips every array store file of a step's state, or deletes _METADATA."""
    state = step_folder / "state"
    if how == "no_metadata":
        (state / "_METADATA").unlink()
        return
    for data_file in state.glob("**/d/*"):
        data = bytearray(data_file.read_bytes())
        if how == "truncated":
            data = data[: len(data) // 2]
        else:  # Flipped bits in the compressed frame's header.
            data[4:8] = bytes(b ^ 0xFF for b in data[4:8])
        data_file.write_bytes(bytes(data))


def _state(step: int) -> dict:
    rng = np.random.default_rng(step)
    return {
        "params": {"dit": {"w": rng.normal(size=(4096,)).astype(np.float32)}},
        "ema_params": {"dit": {"w": rng.normal(size=(4096,)).astype(np.float32)}},
        "step": np.int32(step),
    }


def _two_steps(root):
    """A CheckpointManager root with steps 1 and 2 (`_state`); returns the manager's config."""
    from configs import tiny

    ckpt_cfg = tiny.get_config().checkpoint
    manager = checkpointing.make_manager(root, ckpt_cfg)
    for step in (1, 2):
        assert checkpointing.save(manager, step, _state(step), meta={"step": step})
    manager.wait_until_finished()
    manager.close()
    return ckpt_cfg


def _abstract(state):
    return jax.tree.map(
        lambda a: jax.ShapeDtypeStruct(np.shape(a), np.asarray(a).dtype, sharding=_one_device()),
        state,
    )


# issue 14 B6: a damaged newest step ended resume and readers in a traceback, no fallback
@pytest.mark.parametrize("how", ["truncated", "flipped", "no_metadata"])
def test_a_damaged_newest_step_falls_back_to_the_one_before(tmp_path, caplog, how):
    root = tmp_path / "checkpoints"
    ckpt_cfg = _two_steps(root)
    _damage(root / "2", how)

    # Readers: the newest intact step, with a warning naming the damaged one.
    restored = checkpointing.restore_subtrees(root, {"dit": None})["dit"]
    _assert_equal(restored, _state(1)["params"]["dit"])
    assert f"checkpoint step {root / '2'} skipped" in caplog.text
    if how == "no_metadata":  # Seen without reading any array.
        assert checkpointing.item_directory(root) == root / "1" / "state"

    # Training resume: step 1, and step 2 moved aside (kept) so the run can save it again.
    manager = checkpointing.make_manager(root, ckpt_cfg)
    state, meta, step = checkpointing.restore_latest(manager, _abstract(_state(1)))
    assert (step, meta) == (1, {"step": 1})
    _assert_equal(state, _state(1))
    aside = [p.name for p in root.iterdir() if p.name.startswith("2.unreadable-")]
    assert len(aside) == 1 and manager.all_steps() == [1]
    assert checkpointing.save(manager, 2, _state(2), meta={"step": 2})
    manager.wait_until_finished()
    _assert_equal(checkpointing.restore_latest(manager, _abstract(_state(1)))[0], _state(2))


# issue 14 B6: every step damaged gave Orbax's traceback instead of one line naming the folder
def test_no_readable_step_is_one_error_naming_the_folder(tmp_path):
    root = tmp_path / "checkpoints"
    ckpt_cfg = _two_steps(root)
    _damage(root / "2", "no_metadata")
    _damage(root / "1", "truncated")
    manager = checkpointing.make_manager(root, ckpt_cfg)
    message = rf"no step of checkpoint {root} can be read \(step 2: no _METADATA.*step 1: it does"
    with pytest.raises(ValueError, match=message):
        checkpointing.restore_latest(manager, _abstract(_state(1)))
    with pytest.raises(ValueError, match=message):
        checkpointing.restore_subtrees(root, {"dit": None})
    assert sorted(p.name for p in root.iterdir()) == ["1", "2"]  # Nothing moved or deleted.


def test_a_state_of_another_config_is_refused_not_skipped(tmp_path):
    """Another model's state fails on every step alike: one error, and no step moved aside."""
    root = tmp_path / "checkpoints"
    manager = checkpointing.make_manager(root, _two_steps(root))
    other = _state(1)
    other["params"]["dit"]["w"] = np.zeros((32,), np.float32)
    with pytest.raises(ValueError, match=r"does not fit this run's state.*params/dit/w: stored "):
        checkpointing.restore_latest(manager, _abstract(other))
    assert sorted(p.name for p in root.iterdir()) == ["1", "2"]


# issue 14 B6: training resumed from a damaged final step crashed; the step could not be saved again
def test_training_resumes_from_the_step_before_a_damaged_one(tmp_path):
    from tests.train import toy

    cfg = toy.config(steps=4, save_every=2)
    straight = loop.train(
        cfg, str(tmp_path / "a"), task=toy.RegressionTask(), train_data=toy.make_data()
    )
    loop.train(cfg, str(tmp_path / "b"), task=toy.RegressionTask(), train_data=toy.make_data())
    root = tmp_path / "b" / "checkpoints"
    _damage(root / "4", "truncated")
    resumed = loop.train(
        cfg, str(tmp_path / "b"), task=toy.RegressionTask(), train_data=toy.make_data()
    )
    assert sorted(resumed.losses) == [3, 4]  # Steps 3-4 trained again from step 2.
    _assert_equal(resumed.state.params, straight.state.params)
    run = loop.prepare(cfg, str(tmp_path / "b"), toy.RegressionTask())
    state, _, step = checkpointing.restore_latest(run.manager, run.abstract_state)
    assert step == 4  # Saved again after the damaged one was moved aside.
    _assert_equal(state.params, straight.state.params)
    assert any(p.name.startswith("4.unreadable-") for p in root.iterdir())
