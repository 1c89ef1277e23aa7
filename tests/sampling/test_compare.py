"""Generation metrics against torchmetrics; the imagine-vs-real comparison with stand-in models."""

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from torchmetrics.functional.image import (
    peak_signal_noise_ratio,
    structural_similarity_index_measure,
)

from tests.sampling.test_pipeline import i2v_config, make_generator  # noqa: F401 (fixture)
from wow_jax.sampling import compare


def clips(seed=0, shape=(3, 24, 20, 3)):
    rng = np.random.default_rng(seed)
    real = rng.integers(0, 256, shape, dtype=np.uint8)
    noisy = np.clip(real.astype(int) + rng.integers(-40, 40, shape), 0, 255).astype(np.uint8)
    return noisy, real


def test_psnr_and_ssim_match_torchmetrics():
    generated, real = clips()
    t = lambda a: torch.from_numpy(a.astype(np.float32) / 255).permute(0, 3, 1, 2)  # noqa: E731
    want_psnr = float(peak_signal_noise_ratio(t(generated), t(real), data_range=1.0))
    want_ssim = float(structural_similarity_index_measure(t(generated), t(real), data_range=1.0))
    assert abs(compare.psnr(generated, real) - want_psnr) < 1e-4
    assert abs(compare.ssim(generated, real) - want_ssim) < 1e-5
    assert compare.psnr(real, real) == float("inf") and abs(compare.ssim(real, real) - 1) < 1e-9
    with pytest.raises(ValueError, match="of one shape"):
        compare.psnr(generated[:2], real)


def test_imagine_and_compare_writes_side_by_side(i2v_config, tmp_path):  # noqa: F811
    c = i2v_config
    generator = make_generator(c)
    t = 2 * c.data.num_frames - 1  # A rollout of two clips.
    real = [
        np.random.default_rng(i).integers(0, 256, (t, 32, 32, 3), dtype=np.uint8) for i in (0, 1)
    ]
    summary = compare.imagine_and_compare(generator, real, ["reach", "push"], [0, 1], str(tmp_path))
    assert len(summary["clips"]) == 2 and np.isfinite(summary["mean_psnr"])
    gif = iio.imread(summary["clips"][0]["gif"])
    assert gif.shape[1:3] == (32, 66)
    left = np.abs(gif[:, :, :32, :3].astype(int) - real[0]).mean()  # (GIF palette: approximate)
    right = np.abs(gif[:, :, 34:, :3].astype(int) - real[0]).mean()
    assert left < 25 < right  # Real frames on the left, imagined on the right.
    assert "mean" in compare.format_summary(summary)
