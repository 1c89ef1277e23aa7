"""Imagined vs real: per-clip and per-frame PSNR/SSIM against two baselines, side-by-side GIFs
and a per-frame plot (the demo's closing act).

Frames are uint8 [T, H, W, 3]. The metrics are dm-pix's (JAX): PSNR over the whole clip (data
range 255) or per frame; SSIM (Wang et al. 2004: 11x11 Gaussian window, sigma 1.5, K1 0.01, K2
0.03, per channel) on frames reflect-padded by 5 pixels, averaged over channels and pixels per
frame (and over frames for a clip), as torchmetrics' structural_similarity_index_measure computes
it (dm-pix alone keeps only the valid window, ~1e-3 lower on 24x20 frames).

Per frame index t, every clip is scored three ways (METHODS): the imagined clip; copy-first, the
real first frame repeated (the do-nothing baseline: a world model must beat it on frames 2..T);
reconstruction, the real clip through VAE encode -> decode (the latent space's ceiling).
"""

import functools
import os

import dm_pix
import imageio.v3 as iio
import jax
import jax.numpy as jnp
import numpy as np
from matplotlib.figure import Figure  # Not pyplot: no global backend or figure state.

from wow_jax.data import clips
from wow_jax.sampling import rollout

SSIM_WINDOW = 11  # Gaussian window size (dm-pix's filter_size).
METHODS = ("imagined", "copy_first", "reconstruction")  # Per-frame rows of every clip.
PLOT_NAME = "per_frame.png"  # The per-frame PSNR plot in imagine_and_compare's out_dir.


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
def _frame_ssim(generated: jax.Array, real: jax.Array, pad: int) -> jax.Array:
    """[T] SSIM of each frame pair."""
    widths = ((0, 0), (pad, pad), (pad, pad), (0, 0))
    x, y = (jnp.pad(_unit(a), widths, mode="reflect") for a in (generated, real))
    return dm_pix.ssim(x, y, max_val=1.0, filter_size=SSIM_WINDOW)


def _checked_frame_ssim(generated: np.ndarray, real: np.ndarray) -> jax.Array:
    _check_pair(generated, real)
    if min(generated.shape[1:3]) < SSIM_WINDOW:
        raise ValueError(f"SSIM needs frames of at least {SSIM_WINDOW}x{SSIM_WINDOW} pixels")
    return _frame_ssim(generated, real, pad=(SSIM_WINDOW - 1) // 2)


def ssim(generated: np.ndarray, real: np.ndarray) -> float:
    """Mean SSIM of two uint8 clips [T, H, W, 3] (frames at least 11x11)."""
    return float(jnp.mean(_checked_frame_ssim(generated, real)))


@jax.jit
def _frame_psnr(generated: jax.Array, real: jax.Array) -> jax.Array:
    return dm_pix.psnr(_unit(generated), _unit(real))


def frame_scores(generated: np.ndarray, real: np.ndarray) -> dict:
    """{'psnr', 'ssim'}: lists of T per-frame scores of two uint8 clips [T, H, W, 3] (PSNR in
    dB, inf for equal frames)."""
    frame_ssim = _checked_frame_ssim(generated, real)
    return {
        "psnr": np.asarray(_frame_psnr(generated, real), np.float64).tolist(),
        "ssim": np.asarray(frame_ssim, np.float64).tolist(),
    }


def side_by_side(real: np.ndarray, generated: np.ndarray, gap: int = 2) -> np.ndarray:
    """[T, H, W, 3] x 2 -> [T, H, 2W + gap, 3]: real left, imagined right, white gap."""
    _check_pair(generated, real)
    spacer = np.full((*real.shape[:2], gap, 3), 255, np.uint8)
    return np.concatenate([real, spacer, generated], axis=2)


def _imagine(generator, real: np.ndarray, prompt: str, seed: int) -> np.ndarray:
    """uint8 [T, H, W, 3] imagined from real[0] and `prompt` (a rollout of (T - 1) / (T' - 1)
    clips of the generator's T' frames)."""
    frames_per_clip = generator.num_frames
    if (real.shape[0] - 1) % (frames_per_clip - 1 or 1):
        raise ValueError(
            f"a real clip has {real.shape[0]} frames; a rollout gives 1 + N x "
            f"{frames_per_clip - 1}: trim it"
        )
    num_clips = max(1, (real.shape[0] - 1) // max(frames_per_clip - 1, 1))
    start = real[:1].astype(np.float32) / 127.5 - 1.0
    video, _ = rollout.rollout(generator, start, [[prompt]] * num_clips, [seed])
    return clips.to_uint8(video[0])


def _per_frame(results: list[dict]) -> tuple[dict, dict]:
    """(per frame index: {method: {metric: [T] mean over clips}}, {method: {metric: mean over
    frames 2..T of those}})."""
    per_frame, later = {}, {}
    for method in METHODS:
        per_frame[method], later[method] = {}, {}
        for metric in ("psnr", "ssim"):
            table = np.asarray([r["per_frame"][method][metric] for r in results])  # [N, T]
            per_frame[method][metric] = table.mean(axis=0).tolist()
            later[method][metric] = float(table[:, 1:].mean()) if table.shape[1] > 1 else None
    return per_frame, later


def imagine_and_compare(generator, real_clips, prompts, seeds, out_dir: str, fps: int = 16):
    """For each real clip (uint8 [T, H, W, 3], T = the generator's frames, or 1 + N(T' - 1) for a
    rollout of N clips), imagine it from its first frame and instruction, write
    <out_dir>/compare_<i>.gif (real | imagined) and score it per frame against copy-first and
    the VAE reconstruction (METHODS). Returns {'clips': per-clip scores (whole-clip 'psnr' /
    'ssim' of the imagined clip and 'per_frame'), 'mean_psnr', 'mean_ssim' (over clips),
    'per_frame' (mean over clips per frame index), 'frames_2_to_T' (their mean over frames
    2..T), 'plot' (<out_dir>/per_frame.png)}.
    """
    results = []
    os.makedirs(out_dir, exist_ok=True)
    for i, (real, prompt, seed) in enumerate(zip(real_clips, prompts, seeds, strict=True)):
        real = np.asarray(real, np.uint8)
        imagined = _imagine(generator, real, prompt, seed)
        recon = generator.reconstruct(real[None].astype(np.float32) / 127.5 - 1.0)
        candidates = {
            "imagined": imagined,
            "copy_first": np.repeat(real[:1], len(real), axis=0),
            "reconstruction": clips.to_uint8(recon[0]),
        }
        path = os.path.join(out_dir, f"compare_{i}.gif")
        iio.imwrite(path, side_by_side(real, imagined), duration=1000.0 / fps, loop=0)
        results.append(
            {
                "clip": i,
                "prompt": prompt,
                "psnr": psnr(imagined, real),
                "ssim": ssim(imagined, real),
                "gif": path,
                "per_frame": {k: frame_scores(v, real) for k, v in candidates.items()},
            }
        )
    per_frame, later = _per_frame(results)
    summary = {
        "clips": results,
        "mean_psnr": float(np.mean([r["psnr"] for r in results])),
        "mean_ssim": float(np.mean([r["ssim"] for r in results])),
        "per_frame": per_frame,
        "frames_2_to_T": later,
    }
    summary["plot"] = str(plot_per_frame(summary, os.path.join(out_dir, PLOT_NAME)))
    return summary


def plot_per_frame(summary: dict, path: str) -> str:
    """A png of imagine_and_compare's per-frame mean PSNR and SSIM per method (frame 1 of
    copy-first, an exact copy, is left out); writes and returns `path`."""
    figure = Figure(figsize=(9.0, 3.4))
    axes = figure.subplots(1, 2)
    for axis, metric, unit in zip(axes, ("psnr", "ssim"), ("PSNR dB", "SSIM"), strict=True):
        for method in METHODS:
            values = np.asarray(summary["per_frame"][method][metric], np.float64)
            values[~np.isfinite(values)] = np.nan
            axis.plot(np.arange(1, len(values) + 1), values, marker="o", label=method)
        axis.set_xlabel("frame")
        axis.set_ylabel(unit)
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    axes[0].set_title(f"held-out clips ({len(summary['clips'])}), mean per frame", fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    return path


def _cell(scores: dict, index) -> str:
    psnr_value, ssim_value = scores["psnr"], scores["ssim"]
    if index is not None:
        psnr_value, ssim_value = psnr_value[index], ssim_value[index]
    return f"{psnr_value:>7.2f} {ssim_value:>6.3f}"


def format_summary(summary: dict) -> str:
    """A printable table of imagine_and_compare's result: per clip, then per frame index and
    the mean over frames 2..T for each method (PSNR dB, SSIM)."""
    lines = [f"{'clip':>4}  {'PSNR dB':>8}  {'SSIM':>6}  instruction"]
    for r in summary["clips"]:
        lines.append(f"{r['clip']:>4}  {r['psnr']:>8.2f}  {r['ssim']:>6.3f}  {r['prompt']}")
    lines.append(f"{'mean':>4}  {summary['mean_psnr']:>8.2f}  {summary['mean_ssim']:>6.3f}")
    lines.append("")
    lines.append(f"{'frame':>6}  " + "  ".join(f"{m + ' PSNR/SSIM':>22}" for m in METHODS))
    per_frame = summary["per_frame"]
    for t in range(len(per_frame[METHODS[0]]["psnr"])):
        cells = "  ".join(f"{_cell(per_frame[m], t):>22}" for m in METHODS)
        lines.append(f"{t + 1:>6}  {cells}")
    if summary["frames_2_to_T"][METHODS[0]]["psnr"] is not None:
        cells = "  ".join(f"{_cell(summary['frames_2_to_T'][m], None):>22}" for m in METHODS)
        lines.append(f"{'2..T':>6}  {cells}")
    return "\n".join(lines)
