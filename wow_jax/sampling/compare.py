"""Imagined vs real: per-clip PSNR/SSIM and side-by-side GIFs (the demo's closing act).

Frames are uint8 [T, H, W, 3]. The metrics are dm-pix's (JAX): PSNR over the whole clip (data
range 255); SSIM (Wang et al. 2004: 11x11 Gaussian window, sigma 1.5, K1 0.01, K2 0.03, per
channel) on frames reflect-padded by 5 pixels, averaged over frames, channels and pixels, as
torchmetrics' structural_similarity_index_measure computes it (dm-pix alone keeps only the valid
window, ~1e-3 lower on 24x20 frames).
"""

import functools
import os

import dm_pix
import imageio.v3 as iio
import jax
import jax.numpy as jnp
import numpy as np

from wow_jax.data import clips
from wow_jax.sampling import rollout

SSIM_WINDOW = 11  # Gaussian window size (dm-pix's filter_size).


def _check_pair(generated: np.ndarray, real: np.ndarray) -> None:
    if generated.shape != real.shape or generated.ndim != 4 or generated.shape[-1] != 3:
        raise ValueError(
            f"generated and real clips must both be uint8 [T, H, W, 3] of one shape, got "
            f"{generated.shape} and {real.shape}"
        )


def _unit(clip: np.ndarray) -> jax.Array:
    return jnp.asarray(clip, jnp.float32) / 255.0


@jax.jit
def _psnr(generated: jax.Array, real: jax.Array) -> jax.Array:
    """The clip as one [T*H, W, 3] image: its PSNR, not the mean of per-frame PSNRs."""
    t, h, w, c = real.shape
    return dm_pix.psnr(_unit(generated).reshape(t * h, w, c), _unit(real).reshape(t * h, w, c))


def psnr(generated: np.ndarray, real: np.ndarray) -> float:
    """PSNR in dB of two uint8 clips [T, H, W, 3] (inf when equal)."""
    _check_pair(generated, real)
    return float(_psnr(generated, real))


@functools.partial(jax.jit, static_argnames="pad")
def _ssim(generated: jax.Array, real: jax.Array, pad: int) -> jax.Array:
    widths = ((0, 0), (pad, pad), (pad, pad), (0, 0))
    x, y = (jnp.pad(_unit(a), widths, mode="reflect") for a in (generated, real))
    return jnp.mean(dm_pix.ssim(x, y, max_val=1.0, filter_size=SSIM_WINDOW))


def ssim(generated: np.ndarray, real: np.ndarray) -> float:
    """Mean SSIM of two uint8 clips [T, H, W, 3] (frames at least 11x11)."""
    _check_pair(generated, real)
    if min(generated.shape[1:3]) < SSIM_WINDOW:
        raise ValueError(f"SSIM needs frames of at least {SSIM_WINDOW}x{SSIM_WINDOW} pixels")
    return float(_ssim(generated, real, pad=(SSIM_WINDOW - 1) // 2))


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
        imagined = clips.to_uint8(video[0])
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
