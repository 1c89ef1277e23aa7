"""Clip geometry: step selection, fps stride, action reduction, resize + crop modes."""

import numpy as np
import pytest

from wow_jax.data import clips, rlds


def test_select_steps_and_reduce_actions():
    spec = clips.ClipSpec(num_frames=5, height=8, width=8, action_reduce="mean")
    frames, acts = clips.select_steps(30, spec, 3, np.random.default_rng(0), "x")
    np.testing.assert_array_equal(np.diff(frames), 3)
    assert frames[0] >= 0 and frames[-1] < 30 and acts == list(range(frames[0], frames[-1]))
    actions = np.arange(12 * 2, dtype=np.float32).reshape(12, 2)
    mean = clips.reduce_actions(actions, spec, 3)
    np.testing.assert_allclose(mean, actions.reshape(4, 3, 2).mean(1))
    summed = clips.reduce_actions(actions, clips.ClipSpec(5, 8, 8, action_reduce="sum"), 3)
    np.testing.assert_allclose(summed, actions.reshape(4, 3, 2).sum(1))
    with pytest.raises(rlds.BadEpisodeError, match="shorter than one clip"):
        clips.select_steps(12, spec, 3, np.random.default_rng(0), "file record 3")


def test_fps_sets_the_stride():
    spec = clips.ClipSpec(5, 8, 8, frame_stride=2, fps=5.0)
    assert spec.stride_for(15.0) == 3 and spec.stride_for(0.0) == 2
    assert clips.ClipSpec(5, 8, 8, frame_stride=2).stride_for(15.0) == 2


def test_crop_modes():
    video = np.zeros((3, 20, 40, 3), np.uint8)
    video[:, :, :20, 0] = 255  # Left half red, right half black.
    center = clips.resize_crop(video, clips.ClipSpec(3, 10, 10, crop="center"), None)
    assert center.shape == (3, 10, 10, 3)
    assert center[0, 5, 0, 0] == 255 and center[0, 5, 9, 0] == 0  # The centre straddles halves.
    rng = np.random.default_rng(1)
    crops = {
        clips.resize_crop(video, clips.ClipSpec(3, 10, 10, crop="random"), rng)[0, 5, :, 0].mean()
        for _ in range(10)
    }
    assert len(crops) > 1  # Different windows...
    one = clips.resize_crop(video, clips.ClipSpec(3, 10, 10, crop="random"), rng)
    np.testing.assert_array_equal(one[0], one[2])  # ...but the same window for every frame.
    stretched = clips.resize_crop(video, clips.ClipSpec(3, 10, 10, crop="resize"), None)
    assert stretched[0, 5, 2, 0] == 255 and stretched[0, 5, 7, 0] == 0
    unit = clips.to_unit_range(np.array([0, 255], np.uint8))
    np.testing.assert_allclose(unit, [-1.0, 1.0])


def test_bad_spec_is_rejected():
    with pytest.raises(ValueError, match="config.data.crop"):
        clips.ClipSpec(5, 8, 8, crop="zoom")
