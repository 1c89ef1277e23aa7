"""Episode -> training clip: step selection, resize + crop, action alignment.

A clip is `num_frames` = 1+4k frames `stride` steps apart from a random start. Actions are aligned
to frame transitions: actions[k] summarises the steps between frame k and frame k+1 ('first': the
action taken at frame k; 'mean' / 'sum' over the `stride` steps), so a clip of T frames has T-1
actions. Frames are resized to cover (height, width) keeping the aspect ratio, then cropped
('center' or 'random', the same window for every frame) or, with 'resize', stretched.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from PIL import Image

from wow_jax.data.rlds import BadEpisodeError

CROP_MODES = ("center", "random", "resize")
ACTION_REDUCTIONS = ("first", "mean", "sum")


@dataclasses.dataclass(frozen=True)
class ClipSpec:
    num_frames: int
    height: int
    width: int
    frame_stride: int = 1
    fps: float = 0.0  # > 0: stride = round(episode fps / fps) where the episode records its fps.
    crop: str = "center"
    action_reduce: str = "first"

    def __post_init__(self):
        if self.crop not in CROP_MODES:
            raise ValueError(f"config.data.crop must be one of {CROP_MODES}, got {self.crop!r}")
        if self.action_reduce not in ACTION_REDUCTIONS:
            raise ValueError(
                f"config.data.action_reduce must be one of {ACTION_REDUCTIONS}, "
                f"got {self.action_reduce!r}"
            )
        if self.frame_stride < 1:
            raise ValueError(f"config.data.frame_stride must be >= 1, got {self.frame_stride}")

    @classmethod
    def from_config(cls, data_cfg) -> ClipSpec:
        return cls(
            num_frames=data_cfg.num_frames,
            height=data_cfg.height,
            width=data_cfg.width,
            frame_stride=data_cfg.frame_stride,
            fps=float(data_cfg.fps),
            crop=data_cfg.crop,
            action_reduce=data_cfg.action_reduce,
        )

    def stride_for(self, episode_fps: float) -> int:
        if self.fps > 0 and episode_fps > 0:
            return max(1, int(round(episode_fps / self.fps)))
        return self.frame_stride


def select_steps(
    num_steps: int, spec: ClipSpec, stride: int, rng: np.random.Generator, where: str
) -> tuple[np.ndarray, list[int]]:
    """-> (frame steps [T], action steps needed); a random start within the episode."""
    span = (spec.num_frames - 1) * stride + 1
    if num_steps < span:
        raise BadEpisodeError(
            f"episode at {where} has {num_steps} steps, shorter than one clip ({spec.num_frames} "
            f"frames x stride {stride} = {span} steps); lower config.data.num_frames/frame_stride"
        )
    start = int(rng.integers(0, num_steps - span + 1))
    frames = start + stride * np.arange(spec.num_frames)
    if spec.action_reduce == "first":
        actions = frames[:-1].tolist()
    else:
        actions = list(range(int(frames[0]), int(frames[-1])))
    return frames, actions


def reduce_actions(actions: np.ndarray, spec: ClipSpec, stride: int) -> np.ndarray:
    """Actions read at `select_steps`' action steps -> float32 [T-1, A] aligned to transitions."""
    if spec.action_reduce == "first":
        return actions
    grouped = actions.reshape(spec.num_frames - 1, stride, actions.shape[-1])
    return grouped.mean(1) if spec.action_reduce == "mean" else grouped.sum(1)


def resize_crop(frames: np.ndarray, spec: ClipSpec, rng: np.random.Generator) -> np.ndarray:
    """uint8 [T, h, w, 3] -> uint8 [T, height, width, 3]."""
    _, h, w, _ = frames.shape
    out_h, out_w = spec.height, spec.width
    if (h, w) == (out_h, out_w):
        return frames
    if spec.crop == "resize":
        size, top, left = (out_w, out_h), 0, 0
    else:
        scale = max(out_h / h, out_w / w)
        new_h, new_w = max(out_h, round(h * scale)), max(out_w, round(w * scale))
        size = (new_w, new_h)
        if spec.crop == "random":
            top = int(rng.integers(0, new_h - out_h + 1))
            left = int(rng.integers(0, new_w - out_w + 1))
        else:
            top, left = (new_h - out_h) // 2, (new_w - out_w) // 2
    out = np.empty((len(frames), out_h, out_w, 3), np.uint8)
    for i, frame in enumerate(frames):
        image = Image.fromarray(frame).resize(size, Image.BILINEAR)
        out[i] = np.asarray(image)[top : top + out_h, left : left + out_w]
    return out


def to_unit_range(video: np.ndarray) -> np.ndarray:
    """uint8 [..., 3] -> float32 in [-1, 1]."""
    return video.astype(np.float32) * (2.0 / 255.0) - 1.0


def to_uint8(video: np.ndarray) -> np.ndarray:
    """float in [-1, 1] [..., 3] -> uint8 (the inverse of `to_unit_range`, rounded)."""
    return np.clip(np.rint((np.asarray(video, np.float32) + 1.0) * 127.5), 0, 255).astype(np.uint8)
