"""Shared fixtures of the data tests: tiny RLDS ArrayRecord datasets written on the fly."""

import numpy as np
import pytest

from wow_jax.data import rlds, stats


def synthetic_episode(index: int, length: int, size=(24, 32), action_dim: int = 4, **kw):
    """An episode whose frame t of episode e is filled with (e, t, 7) and action t = e*100 + t."""
    h, w = size
    frames = np.zeros((length, h, w, 3), np.uint8)
    frames[..., 0] = index
    frames[..., 1] = np.arange(length, dtype=np.uint8)[:, None, None]
    frames[..., 2] = 7
    actions = (index * 100 + np.arange(length, dtype=np.float32))[:, None] * np.ones(action_dim)
    fields = dict(
        instruction="push the red block",
        episode_id=f"ep{index:03d}",
        robot="the Franka Panda arm",
        fps=10.0,
        segments=((0, length // 2, "reach the block"), (length // 2, length, "push it left")),
    )
    fields.update(kw)
    return rlds.Episode(frames=frames, actions=actions.astype(np.float32), **fields)


def write_dataset(root, episodes, name="toy", with_stats=True, **kw):
    path = rlds.write_episodes(episodes, root, name, action_dim=4, **kw)
    if with_stats:
        stats.save_stats(stats.compute_action_stats(rlds.EpisodeSource(path), False), path)
    return path


@pytest.fixture(scope="session")
def toy_dataset(tmp_path_factory):
    """6 episodes of 12..17 steps, 24x32 frames, 4-dim actions, with action_stats.json."""
    root = tmp_path_factory.mktemp("toy")
    return write_dataset(root, [synthetic_episode(e, 12 + e) for e in range(6)])


@pytest.fixture
def data_cfg(tiny_config, toy_dataset):
    """config.data of the tiny config pointed at toy_dataset (5 frames of 32x32, batch 2)."""
    cfg = tiny_config.data
    cfg.path = str(toy_dataset)
    cfg.batch_size = 2
    return cfg
