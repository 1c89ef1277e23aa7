"""Long-horizon world-model rollout: N image-to-video clips chained end to start.

Clip k + 1 is conditioned on the last generated frame of clip k, with its own instruction when
one is given per clip. The returned video keeps clip 0 whole and drops the first frame of every
later clip (it re-renders the conditioning frame), so a rollout of N clips of T frames has
T + (N - 1)(T - 1) frames.
"""

import numpy as np

from wow_jax.sampling.generator import Generator


def rollout(
    generator: Generator,
    images: np.ndarray | None,
    prompts: list[list[str]],
    seeds: list[int],
    bar=None,
    clip_images: np.ndarray | None = None,
):
    """images [B, H, W, 3] in [-1, 1] (None: T2V, one clip); prompts[k][b]: clip k, row b;
    clip_images [B, S, S, 3]: CLIP's view of the first clip's frame (None: `images`; later clips
    always show CLIP their conditioning frame).

    Returns (video float32 [B, T_total, H, W, 3] in [-1, 1], per-clip timings).
    """
    num_clips = len(prompts)
    if num_clips < 1:
        raise ValueError("a rollout needs at least one clip of prompts")
    if images is None and num_clips > 1:
        raise ValueError(
            f"chaining {num_clips} clips needs an image-to-video model (each clip is conditioned "
            "on the previous clip's last frame); set sample.num_clips=1 for text-to-video"
        )
    pieces, timings, condition = [], [], images
    for k, clip_prompts in enumerate(prompts):
        clip_view = clip_images if k == 0 else None
        video, timing = generator.generate_clip(condition, clip_prompts, seeds, k, bar, clip_view)
        pieces.append(video if k == 0 else video[:, 1:])
        timings.append(timing)
        condition = video[:, -1]
    return np.concatenate(pieces, axis=1), timings
