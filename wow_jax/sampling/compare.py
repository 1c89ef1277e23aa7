"""Imagined vs real: per-clip PSNR/SSIM and side-by-side GIFs (the demo's closing act).

Frames are uint8 [T, H, W, 3]. PSNR over the whole clip (data range 255); SSIM (Wang et al. 2004:
11x11 Gaussian window, sigma 1.5, K1 0.01, K2 0.03, per channel) on reflect-padded frames,
averaged over frames, channels and pixels, as torchmetrics' structural_similarity_index_measure
computes it.
"""

import os

import imageio.v3 as iio
import numpy as np

from wow_jax.sampling import media, rollout

SSIM_WINDOW = 11  # Gaussian window size.
SSIM_SIGMA = 1.5  # Gaussian window std.
SSIM_K1, SSIM_K2 = 0.01, 0.03  # Stabilising constants (times the data range, squared).


def _check_pair(generated: np.ndarray, real: np.ndarray) -> None:
    if generated.shape != real.shape or generated.ndim != 4 or generated.shape[-1] != 3:
        raise ValueError(
            f"generated and real clips must both be uint8 [T, H, W, 3] of one shape, got "
            f"{generated.shape} and {real.shape}"
        )


def psnr(generated: np.ndarray, real: np.ndarray) -> float:
    """PSNR in dB of two uint8 clips [T, H, W, 3] (inf when equal)."""
    _check_pair(generated, real)
    mse = np.mean((generated.astype(np.float64) - real.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


def _gaussian() -> np.ndarray:
    dist = np.arange((1 - SSIM_WINDOW) / 2, (1 + SSIM_WINDOW) / 2)
    g = np.exp(-((dist / SSIM_SIGMA) ** 2) / 2)
    return g / g.sum()


def _filter(x: np.ndarray) -> np.ndarray:
    """Separable Gaussian, valid region, over axes 1, 2 of [N, H, W, C]."""
    g = _gaussian()
    h, w = x.shape[1] - SSIM_WINDOW + 1, x.shape[2] - SSIM_WINDOW + 1
    x = sum(g[i] * x[:, i : i + h] for i in range(SSIM_WINDOW))
    return sum(g[i] * x[:, :, i : i + w] for i in range(SSIM_WINDOW))


def ssim(generated: np.ndarray, real: np.ndarray) -> float:
    """Mean SSIM of two uint8 clips [T, H, W, 3] (frames at least 11x11)."""
    _check_pair(generated, real)
    if min(generated.shape[1:3]) < SSIM_WINDOW:
        raise ValueError(f"SSIM needs frames of at least {SSIM_WINDOW}x{SSIM_WINDOW} pixels")
    pad = (SSIM_WINDOW - 1) // 2
    x, y = (
        np.pad(a.astype(np.float64) / 255.0, ((0, 0), (pad, pad), (pad, pad), (0, 0)), "reflect")
        for a in (generated, real)
    )
    c1, c2 = SSIM_K1**2, SSIM_K2**2
    mu_x, mu_y = _filter(x), _filter(y)
    var_x = np.maximum(_filter(x * x) - mu_x**2, 0.0)
    var_y = np.maximum(_filter(y * y) - mu_y**2, 0.0)
    cov = _filter(x * y) - mu_x * mu_y
    num = (2 * mu_x * mu_y + c1) * (2 * cov + c2)
    den = (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
    return float(np.mean(num / den))


def side_by_side(real: np.ndarray, generated: np.ndarray, gap: int = 2) -> np.ndarray:
    """[T, H, W, 3] x 2 -> [T, H, 2W + gap, 3]: real left, imagined right, white gap."""
    _check_pair(generated, real)
    spacer = np.full((*real.shape[:2], gap, 3), 255, np.uint8)
    return np.concatenate([real, spacer, generated], axis=2)


def imagine_and_compare(generator, real_clips, prompts, seeds, out_dir: str, fps: int = 16):
    """For each real clip (uint8 [T, H, W, 3], T = the generator's frames, or 1 + N(T' - 1) for a
    rollout of N clips), imagine it from its first frame and instruction, write
    <out_dir>/compare_<i>.gif (real | imagined) and return per-clip metrics plus their mean.
    """
    frames_per_clip = generator.num_frames
    results = []
    os.makedirs(out_dir, exist_ok=True)
    for i, (real, prompt, seed) in enumerate(zip(real_clips, prompts, seeds, strict=True)):
        real = np.asarray(real, np.uint8)
        if (real.shape[0] - 1) % (frames_per_clip - 1 or 1):
            raise ValueError(
                f"real clip {i} has {real.shape[0]} frames; a rollout gives 1 + N x "
                f"{frames_per_clip - 1}: trim it"
            )
        num_clips = max(1, (real.shape[0] - 1) // max(frames_per_clip - 1, 1))
        start = real[:1].astype(np.float32) / 127.5 - 1.0
        video, _ = rollout.rollout(generator, start, [[prompt]] * num_clips, [seed])
        imagined = media.to_uint8(video[0])
        path = os.path.join(out_dir, f"compare_{i}.gif")
        iio.imwrite(path, side_by_side(real, imagined), duration=1000.0 / fps, loop=0)
        scores = {"psnr": psnr(imagined, real), "ssim": ssim(imagined, real)}
        results.append({"clip": i, "prompt": prompt, **scores, "gif": path})
    summary = {
        "clips": results,
        "mean_psnr": float(np.mean([r["psnr"] for r in results])),
        "mean_ssim": float(np.mean([r["ssim"] for r in results])),
    }
    return summary


def format_summary(summary: dict) -> str:
    """A printable table of imagine_and_compare's result."""
    lines = [f"{'clip':>4}  {'PSNR dB':>8}  {'SSIM':>6}  instruction"]
    for r in summary["clips"]:
        lines.append(f"{r['clip']:>4}  {r['psnr']:>8.2f}  {r['ssim']:>6.3f}  {r['prompt']}")
    lines.append(f"{'mean':>4}  {summary['mean_psnr']:>8.2f}  {summary['mean_ssim']:>6.3f}")
    return "\n".join(lines)
