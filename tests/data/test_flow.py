"""Data-time optical flow (wow_jax/data/flow.py): a moved square's flow, its mask, bad frames."""

import numpy as np
import pytest

from wow_jax.data import clips, flow


def square_frame(x: float, y: float, size: int = 64, side: int = 12) -> np.ndarray:
    """uint8 [size, size, 3]: a striped background and an orange square centred at (x, y)."""
    frame = np.full((size, size, 3), 40, np.uint8)
    frame[::8] = 70
    yy, xx = np.mgrid[0:size, 0:size]
    frame[(np.abs(xx - x) < side / 2) & (np.abs(yy - y) < side / 2)] = (220, 90, 30)
    return frame


@pytest.mark.parametrize("preset", sorted(flow.DIS_PRESETS))
def test_flow_of_a_moved_square_is_its_displacement(preset):
    rng = np.random.default_rng(0)
    errors = []
    for _ in range(8):
        (x, y), (dx, dy) = rng.uniform(20, 44, 2), rng.uniform(-3, 3, 2)
        a, b = square_frame(x, y), square_frame(x + dx, y + dy)
        field = flow.dense_flow(a, b, preset)
        assert field.shape == (64, 64, 2) and field.dtype == np.float32
        inside = (np.abs(np.arange(64)[None] - x) < 4) & (np.abs(np.arange(64)[:, None] - y) < 4)
        errors.append(np.abs(field[inside].mean(0) - (dx, dy)))
    assert np.mean(errors) < 0.6, np.mean(errors)


def test_mask_marks_the_moving_square_only():
    a, b = square_frame(30, 30), square_frame(33, 30)
    moving, mask = flow.pair_motion(a[None], b[None], "medium", threshold=0.5)
    assert moving.shape == (1, 64, 64, 2) and mask.shape == (1, 64, 64, 1)
    assert set(np.unique(mask)) <= {0.0, 1.0}
    assert mask[0, 27:33, 28:36].mean() > 0.8  # the square's core moved
    assert mask[0, 50:, 50:].mean() == 0.0  # the static far corner did not
    still, still_mask = flow.pair_motion(a[None], a[None], "medium", threshold=0.5)
    assert np.abs(still).max() < 0.5 and still_mask.sum() == 0


def test_bad_frames_are_refused():
    a = square_frame(30, 30)
    with pytest.raises(ValueError, match=r"two frames of one size, got \(64, 64, 3\) and"):
        flow.dense_flow(a, a[:32], "medium")
    with pytest.raises(ValueError, match=r"uint8 RGB frames .*clips.to_uint8"):
        flow.dense_flow(a.astype(np.float32), a.astype(np.float32), "medium")
    with pytest.raises(ValueError, match=r"config.idm.flow_preset must be one of"):
        flow.dense_flow(a, a, "slow")
    with pytest.raises(ValueError, match=r"frame pairs of different shapes"):
        flow.pair_motion(a[None], a[None, :32], "medium", 0.5)


def test_to_uint8_inverts_to_unit_range():
    pixels = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1).repeat(3, -1)
    np.testing.assert_array_equal(clips.to_uint8(clips.to_unit_range(pixels)), pixels)
    assert clips.to_uint8(np.array([-1.5, 1.5])).tolist() == [0, 255]
