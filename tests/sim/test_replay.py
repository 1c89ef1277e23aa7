"""Open-loop replay (wow_jax/sim/replay.py): an oracle IDM, which returns the true mean actions,
run through the replay plumbing (start state, k-step execution, de-normalisation) reproduces the
expert, on a fake env with frame stride 2 and k = 2 and on one real Meta-World episode."""

import numpy as np
import pytest

from tests.sim.fakes import FakeTask
from wow_jax.data import rlds, stats
from wow_jax.evaluation import idm as evaluation
from wow_jax.sim import idm_eval, metaworld_collect, replay
from wow_jax.train.tasks import idm as idm_task

pytestmark = pytest.mark.filterwarnings("ignore:Constant.*may be too high:UserWarning")


def _collect(tmp_path, tiny_config, task: str, length: int, size: int, make_task=None):
    """(config with data.path at a 1-episode collection of `task`, its EpisodeSource)."""
    path = metaworld_collect.collect(tmp_path, [task], 1, length, size=size, make_task=make_task)
    cfg = tiny_config
    cfg.data.path, cfg.data.height, cfg.data.width = str(path), size, size
    return cfg, rlds.EpisodeSource(path)


def _oracle_actions(clip, cfg, action_stats) -> np.ndarray:
    """[S, A] env actions of the replayed pairs from the oracle's (normalised) outputs."""
    gap = cfg.idm.frame_gap
    _, _, windows = idm_task.clip_pairs(clip["video"], clip["actions"], gap)
    outputs = idm_eval.oracle_outputs(windows.mean(1), action_stats, cfg)
    actions = evaluation.to_actions(outputs, action_stats, cfg)
    np.testing.assert_allclose(actions, windows.mean(1), atol=1e-5)  # De-normalised back.
    chosen = replay.replay_pairs(len(actions), gap)
    return replay.env_actions(actions[chosen], gap, clip["stride"])


def test_oracle_replay_runs_each_mean_action_for_its_env_steps(tmp_path, tiny_config):
    cfg, source = _collect(tmp_path, tiny_config, "reach-v3", 8, 16, make_task=FakeTask)
    cfg.data.frame_stride, cfg.data.action_reduce, cfg.idm.frame_gap = 2, "mean", 2
    cfg.model.idm.gripper_index = -1  # The fake's gripper is always 1: no classifier needed.
    clip = replay.episode_clip(source, 0, cfg.data)
    assert clip["video"].shape == (1, 5, 16, 16, 3) and clip["stride"] == 2  # steps 0, 2, .., 8
    stored = source.read(0, [0], list(range(8)))["actions"]
    np.testing.assert_allclose(clip["actions"][0], stored.reshape(4, 2, 4).mean(1))

    env_steps = _oracle_actions(clip, cfg, stats.load_stats(cfg.data.path))
    assert env_steps.shape == (8, 4)  # Pairs (0, 2) and (2, 4) of 5 frames, 2 x 2 env steps each.
    np.testing.assert_allclose(env_steps[:4], np.broadcast_to(stored[:4].mean(0), (4, 4)))
    np.testing.assert_allclose(env_steps[4:], np.broadcast_to(stored[4:].mean(0), (4, 4)))
    task = FakeTask("reach-v3", 16, "corner")
    spec = replay.read_collection(cfg.data.path)
    seed = replay.episode_seeds(spec)["reach-v3/00000"][1]
    solved = replay.replay_episode(task, seed, clip["start_frame"], env_steps, "reach-v3/00000")
    np.testing.assert_allclose(np.stack(task.executed), env_steps)
    # Each pair's mean moves the point as far as the expert's 4 steps did: it ends where the
    # expert ended, and solved the episode as the expert did.
    start = FakeTask("reach-v3", 16, "corner").reset(seed)[0]
    assert task.x == pytest.approx(start + stored[:, 0].sum(), abs=1e-5)
    assert solved[-1] and clip["success"][-1]


def test_replay_refuses_a_start_state_that_is_not_the_episodes(tmp_path, tiny_config):
    cfg, source = _collect(tmp_path, tiny_config, "reach-v3", 4, 16, make_task=FakeTask)
    clip = replay.episode_clip(source, 0, cfg.data)
    with pytest.raises(ValueError, match="does not reproduce the first frame of reach-v3/00000"):
        replay.replay_episode(
            FakeTask("reach-v3", 16, "c"), 12345, clip["start_frame"], [], "reach-v3/00000"
        )


def test_replay_needs_mean_actions_when_frames_are_strided(tmp_path, tiny_config):
    cfg, source = _collect(tmp_path, tiny_config, "reach-v3", 4, 16, make_task=FakeTask)
    cfg.data.frame_stride = 2  # action_reduce 'first': a clip action is one of the two steps.
    with pytest.raises(
        ValueError, match="config.data.action_reduce='first'; set action_reduce='mean'"
    ):
        replay.episode_clip(source, 0, cfg.data)


def test_oracle_replay_reproduces_a_real_expert_episode(tmp_path, tiny_config):
    """reach-v3, one episode, k = 1: the replayed env solves it at the very step the expert did."""
    import metaworld  # noqa: F401 (a declared dependency: missing fails, never skips)

    try:
        metaworld_collect.MetaWorldTask("reach-v3", 32).close()
    except Exception as e:  # No EGL/OpenGL library on this machine.
        pytest.skip(f"MuJoCo offscreen rendering unavailable (MUJOCO_GL=egl): {e}")
    cfg, source = _collect(tmp_path, tiny_config, "reach-v3", 60, 32)
    clip = replay.episode_clip(source, 0, cfg.data)
    assert clip["success"][-1] and not clip["success"][20]  # The expert solves it mid-episode.
    env_steps = _oracle_actions(clip, cfg, stats.load_stats(cfg.data.path))
    spec = replay.read_collection(cfg.data.path)
    seed = replay.episode_seeds(spec)["reach-v3/00000"][1]
    task = metaworld_collect.MetaWorldTask("reach-v3", spec["size"], spec["camera"])
    try:
        solved = replay.replay_episode(task, seed, clip["start_frame"], env_steps, "reach-v3/00000")
    finally:
        task.close()
    np.testing.assert_array_equal(solved, clip["success"])
