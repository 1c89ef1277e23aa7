"""Meta-World collection: the code path with a fake env, then one real short MuJoCo episode."""

import json

import numpy as np
import pytest

from tests.sim.fakes import FakeTask
from wow_jax.data import pipeline, rlds, stats
from wow_jax.sim import metaworld_collect
from wow_jax.sim.instructions import TASK_INSTRUCTIONS

pytestmark = pytest.mark.filterwarnings("ignore:Constant.*may be too high:UserWarning")


def test_collect_with_fake_env_and_cache(tmp_path, tiny_config):
    FakeTask.made.clear()
    kwargs = dict(seed=3, size=16, make_task=FakeTask)
    path = metaworld_collect.collect(tmp_path, ["reach-v3", "push-v3"], 2, 8, **kwargs)
    assert FakeTask.made == ["reach-v3", "push-v3"]
    source = rlds.EpisodeSource(path)
    assert len(source) == 4
    ep = source.read(0, list(range(9)), list(range(9)))
    assert ep["frames"].shape == (9, 16, 16, 3) and ep["instruction"] == "solve reach-v3"
    assert ep["robot"] == "the Sawyer arm" and ep["episode_id"] == "reach-v3/00000"
    np.testing.assert_array_equal(ep["actions"][-1], 0.0)  # RLDS: the last action is ignored.
    np.testing.assert_array_equal(ep["actions"][:, 3], [1] * 8 + [0])
    assert stats.load_stats(path)["action_dim"] == 4
    # Positions are seeded per episode: two episodes of one task start differently.
    assert (
        source.read(0, [0], [])["frames"][0, 0, 0, 0]
        != source.read(1, [0], [])["frames"][0, 0, 0, 0]
    )

    FakeTask.made.clear()
    assert metaworld_collect.collect(tmp_path, ["reach-v3", "push-v3"], 2, 8, **kwargs) == path
    assert FakeTask.made == []  # Cached: nothing re-collected.
    # issue 18: the returned dataset folder given back as the output folder (config.data.path =
    # prepare_dataset's result) is that collection, not the root of a second one inside it.
    assert metaworld_collect.collect(path, ["reach-v3", "push-v3"], 2, 8, **kwargs) == path
    assert FakeTask.made == [] and not (path / metaworld_collect.DATASET_NAME).exists()
    with pytest.raises(ValueError, match="other settings"):
        metaworld_collect.collect(tmp_path, ["reach-v3"], 2, 8, **kwargs)

    cfg = tiny_config.data
    cfg.path = str(path)
    batch = next(pipeline.create_iterator(cfg, process_index=0, process_count=1))
    assert batch["video"].shape == (2, 5, 32, 32, 3) and batch["actions"].shape == (2, 4, 4)


def test_noise_changes_actions_within_bounds(tmp_path):
    task = FakeTask("reach-v3", 8, "corner")
    clean = metaworld_collect.collect_episode(task, 1, 6, 0.0, "a")
    noisy = metaworld_collect.collect_episode(task, 1, 6, 0.5, "a")
    assert not np.allclose(clean.actions[:-1], noisy.actions[:-1])
    assert np.abs(noisy.actions).max() <= 1.0


# issue 17: the expert's raw action (here up to 15) was stored while the env executed it clipped.
def test_the_stored_action_is_the_executed_one():
    task = FakeTask("reach-v3", 8, "corner")
    episode = metaworld_collect.collect_episode(task, 1, 6, 0.0, "a")
    np.testing.assert_array_equal(episode.actions[:-1], np.stack(task.executed))
    assert episode.actions[0, 0] == 1.0  # The expert asked for 3 * (5 - x) > 4.


# issue 17: a collection that stored unclipped actions was reused as if it were clipped.
def test_a_collection_of_an_older_version_is_refused(tmp_path):
    path = metaworld_collect.collect(tmp_path, ["reach-v3"], 1, 4, size=8, make_task=FakeTask)
    spec_file = path / metaworld_collect.SPEC_FILE
    spec = json.loads(spec_file.read_text())
    del spec["version"]  # As version 1 wrote it.
    spec_file.write_text(json.dumps(spec))
    with pytest.raises(ValueError, match=r"version 1 .*unclipped.* delete that folder"):
        metaworld_collect.collect(tmp_path, ["reach-v3"], 1, 4, size=8, make_task=FakeTask)


def test_unknown_task_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="reach-v3"):
        metaworld_collect.collect(tmp_path, ["reach-v2"], 1, 4, make_task=FakeTask)


def _real_task():
    import metaworld  # noqa: F401 (a declared dependency: missing fails, never skips)

    try:
        return metaworld_collect.MetaWorldTask("reach-v3", 32)
    except Exception as e:  # No EGL/OpenGL library on this machine.
        pytest.skip(f"MuJoCo offscreen rendering unavailable (MUJOCO_GL=egl): {e}")


def test_real_metaworld_episode():
    task = _real_task()
    try:
        a = metaworld_collect.collect_episode(task, 5, 12, 0.0, "reach-v3/0")
        b = metaworld_collect.collect_episode(task, 5, 12, 0.0, "reach-v3/0")
        c = metaworld_collect.collect_episode(task, 6, 12, 0.0, "reach-v3/1")
    finally:
        task.close()
    assert a.frames.shape == (13, 32, 32, 3) and a.frames.dtype == np.uint8
    assert a.actions.shape == (13, 4) and a.instruction == "reach the goal position"
    assert a.frames.std() > 5  # A rendered scene, not a blank image.
    assert np.abs(a.actions).max() <= 1.0  # Executed actions: clipped to the action space.
    assert not np.array_equal(a.frames[0], a.frames[-1])  # The arm moved.
    np.testing.assert_array_equal(a.frames, b.frames)  # Same seed, same episode.
    np.testing.assert_array_equal(a.actions, b.actions)
    assert not np.array_equal(a.actions, c.actions)  # Another seed, another goal.


def test_real_metaworld_dataset_through_pipeline(tmp_path, tiny_config):
    """2 real Meta-World episodes -> dataset -> batches on 1 and on 2 simulated processes."""
    _real_task().close()
    path = metaworld_collect.collect(tmp_path, ["reach-v3"], 2, 10, size=32)
    cfg = tiny_config.data
    cfg.path = str(path)
    batch = next(pipeline.create_iterator(cfg, process_index=0, process_count=1))
    assert batch["video"].shape == (2, 5, 32, 32, 3) and batch["actions"].shape == (2, 4, 4)
    assert batch["video"].min() >= -1.0 and batch["video"].max() <= 1.0
    ids = [
        str(next(pipeline.create_iterator(cfg, process_index=i, process_count=2))["episode_id"][0])
        for i in range(2)
    ]
    assert sorted(ids) == ["reach-v3/00000", "reach-v3/00001"]


def test_every_v3_task_has_an_instruction_and_an_expert():
    import metaworld.policies
    from metaworld.env_dict import ALL_V3_ENVIRONMENTS

    assert set(TASK_INSTRUCTIONS) == set(ALL_V3_ENVIRONMENTS)
    assert set(TASK_INSTRUCTIONS) <= set(metaworld.policies.ENV_POLICY_MAP)
