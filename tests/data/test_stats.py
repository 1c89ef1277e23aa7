"""Action statistics: values against numpy on the raw actions, normalisation round trips."""

import numpy as np
import pytest

from tests.data.conftest import synthetic_episode
from wow_jax.data import rlds, stats


def test_stats_match_numpy(toy_dataset):
    source = rlds.EpisodeSource(toy_dataset)
    got = stats.load_stats(toy_dataset)
    # All actions but each episode's ignored last one (synthetic: e*100 + t, episode e has 12+e).
    raw = np.concatenate([synthetic_episode(e, 12 + e).actions[:-1] for e in range(6)]).astype(
        np.float64
    )
    assert got["count"] == len(raw) and got["action_dim"] == 4
    np.testing.assert_allclose(got["mean"], raw.mean(0), rtol=1e-6)
    np.testing.assert_allclose(got["std"], raw.std(0), rtol=1e-6)
    np.testing.assert_allclose(got["q99"], np.quantile(raw, 0.99, axis=0), rtol=1e-6)
    np.testing.assert_allclose(got["min"], raw.min(0))
    assert source.all_actions(0).shape == (11, 4)


@pytest.mark.parametrize("mode", ["mean_std", "q99", "none"])
def test_normalize_round_trip(toy_dataset, mode):
    s = stats.load_stats(toy_dataset)
    actions = np.linspace(s["q01"], s["q99"], 7).astype(np.float32)
    normed = stats.normalize(actions, s, mode)
    np.testing.assert_allclose(stats.denormalize(normed, s, mode), actions, rtol=1e-5, atol=1e-3)
    if mode == "q99":
        np.testing.assert_allclose(normed[[0, -1]], [[-1.0] * 4, [1.0] * 4], atol=1e-6)
    if mode == "mean_std":
        np.testing.assert_allclose(normed, (actions - s["mean"]) / s["std"], rtol=1e-5)


def test_unknown_mode_is_rejected(toy_dataset):
    with pytest.raises(ValueError, match="action_norm"):
        stats.normalize(np.zeros((2, 4)), stats.load_stats(toy_dataset), "minmax")
