"""The RLDS ArrayRecord episode format: round trips, bad bytes, dataset discovery."""

import numpy as np
import pytest

from tests.data.conftest import synthetic_episode, write_dataset
from wow_jax.data import rlds


def test_png_round_trip_is_exact(toy_dataset):
    source = rlds.EpisodeSource(toy_dataset)
    assert len(source) == 6
    for i in range(len(source)):
        got = source.read(i, list(range(12)), list(range(12)))
        e = int(got["episode_id"][2:])
        want = synthetic_episode(e, 12 + e)
        np.testing.assert_array_equal(got["frames"], want.frames[:12])
        expected_actions = want.actions[:12].copy()
        if e == 0:
            expected_actions[-1] = 0.0  # The episode's last action is stored as zeros.
        np.testing.assert_array_equal(got["actions"], expected_actions)
        assert got["segments"][0] == "reach the block" and got["robot"] == "the Franka Panda arm"
        assert source.episode_info(i) == (12 + e, 10.0)
    texts = source.step_texts(0)
    assert texts["instruction"] == "push the red block" and len(texts["segments"]) >= 12


def test_jpeg_round_trip_is_close(tmp_path):
    rng = np.random.default_rng(0)
    episode = synthetic_episode(0, 6)
    episode.frames[:] = np.clip(episode.frames + rng.integers(0, 3, episode.frames.shape), 0, 255)
    path = rlds.write_episodes([episode], tmp_path, "j", action_dim=4, image_format="jpeg")
    got = rlds.EpisodeSource(path).read(0, range(6), [])["frames"]
    assert np.abs(got.astype(int) - episode.frames).mean() < 2.0


def test_bad_image_bytes_name_file_and_record(tmp_path, monkeypatch):
    real = rlds.encode_image
    calls = []

    def corrupt_third_episode(frame, image_format="png"):
        calls.append(1)
        return b"not an image" if len(calls) == 2 * 8 + 5 else real(frame, image_format)

    monkeypatch.setattr(rlds, "encode_image", corrupt_third_episode)
    path = write_dataset(tmp_path, [synthetic_episode(e, 8) for e in range(3)], with_stats=False)
    source = rlds.EpisodeSource(path)
    source.read(1, range(8), [])
    with pytest.raises(rlds.BadEpisodeError, match=r"array_record-00000-of-00001 record 2"):
        source.read(2, range(8), [])


def test_dataset_dir_discovery(tmp_path, toy_dataset):
    assert rlds.resolve_dataset_dir(toy_dataset.parent.parent) == toy_dataset
    with pytest.raises(ValueError, match="found 0"):
        rlds.resolve_dataset_dir(tmp_path)


def test_write_rejects_wrong_shapes(tmp_path):
    bad = synthetic_episode(0, 5)
    bad.actions = bad.actions[:3]
    with pytest.raises(ValueError, match="actions must be"):
        rlds.write_episodes([bad], tmp_path, "bad", action_dim=4)
