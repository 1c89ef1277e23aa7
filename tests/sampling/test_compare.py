"""Generation metrics against torchmetrics; the imagine-vs-real comparison with stand-in models."""

import imageio.v3 as iio
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from torchmetrics.functional.image import (
    peak_signal_noise_ratio,
    structural_similarity_index_measure,
)

from tests.sampling.test_pipeline import i2v_config, make_generator  # noqa: F401 (fixture)
from wow_jax.data.clips import to_uint8
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


# issue 18: the demo reported one whole-clip PSNR/SSIM of the imagined clip, with no per-frame
# scores, no copy-first-frame baseline and no reconstruction ceiling to read it against.
def test_imagine_and_compare_scores_every_frame_against_baselines(i2v_config, tmp_path):  # noqa: F811
    c = i2v_config
    generator = make_generator(c)
    t = c.data.num_frames
    rng = np.random.default_rng(0)
    real = [rng.integers(0, 256, (t, 32, 32, 3), dtype=np.uint8) for _ in range(2)]
    summary = compare.imagine_and_compare(generator, real, ["reach", "push"], [0, 1], str(tmp_path))

    first = summary["clips"][0]["per_frame"]
    assert sorted(first) == sorted(compare.METHODS)
    assert first["copy_first"]["psnr"][0] == float("inf") and first["copy_first"]["ssim"][0] == 1
    copy = np.repeat(real[0][:1], t, axis=0)
    np.testing.assert_allclose(
        first["copy_first"]["psnr"], compare.frame_scores(copy, real[0])["psnr"]
    )
    # The ceiling is the real clip through the generator's own VAE encode -> decode.
    vae = generator.params["vae"]
    video = jnp.asarray(real[0][None], jnp.float32) / 127.5 - 1.0
    recon = to_uint8(
        np.clip(generator.models.decode(vae, generator.models.encode(vae, video)), -1, 1)[0]
    )
    want = compare.frame_scores(recon, real[0])
    np.testing.assert_allclose(first["reconstruction"]["psnr"], want["psnr"], rtol=1e-5)
    np.testing.assert_allclose(first["reconstruction"]["ssim"], want["ssim"], rtol=1e-5)
    # Per-frame PSNR is per frame: frame 2 alone, not the whole clip.
    frame2 = compare.psnr(recon[1:2], real[0][1:2])
    assert abs(first["reconstruction"]["psnr"][1] - frame2) < 1e-4
    assert abs(np.mean(first["imagined"]["ssim"]) - summary["clips"][0]["ssim"]) < 1e-6

    for method in compare.METHODS:
        per_clip = [r["per_frame"][method]["psnr"] for r in summary["clips"]]
        np.testing.assert_allclose(summary["per_frame"][method]["psnr"], np.mean(per_clip, axis=0))
        later = summary["frames_2_to_T"][method]
        assert abs(later["psnr"] - np.mean(np.asarray(per_clip)[:, 1:])) < 1e-9
        assert len(summary["per_frame"][method]["ssim"]) == t
    plot = iio.imread(summary["plot"])
    assert summary["plot"] == str(tmp_path / compare.PLOT_NAME) and plot.shape[0] > 100
    table = compare.format_summary(summary)
    assert "2..T" in table and f"{summary['frames_2_to_T']['copy_first']['psnr']:.2f}" in table
