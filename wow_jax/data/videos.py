"""Folder of mp4 videos + captions -> the RLDS ArrayRecord format (wow_jax/data/rlds.py).

Input folder (e.g. the WoW benchmark samples):

    <video_dir>/a.mp4, b.mp4, ...
    <video_dir>/captions.jsonl   one JSON object per line, or captions.json (a list of such objects
                                 or a {"a.mp4": "caption"} mapping):
        {"video": "a.mp4",                  # path relative to video_dir
         "caption": "pick up the cup",      # episode-level instruction (required)
         "segments": [{"start": 0, "end": 40, "text": "reach the cup"}, ...],   # optional, frames
         "robot": "the Franka Panda arm",   # optional
         "actions": "a_actions.npy"}        # optional float32 [N, A] (N frames; else no actions)

A bad video (no caption, a file that does not decode, such as an empty or non-video .mp4, or a
wrong actions file) is skipped with a warning naming it and counted in the build summary, so one
bad file does not abort the build (on_bad='skip', from config.data.on_bad_episode), or raises
rlds.BadEpisodeError naming it (on_bad='raise').
Frames keep their size unless `size=(H, W)` resizes them (PIL bilinear) when stored.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from absl import logging
from PIL import Image
from tqdm import tqdm

from wow_jax.data import rlds

CAPTION_FILES = ("captions.jsonl", "captions.json")
DATASET_NAME = "videos"  # Default dataset name: <out_dir>/videos/1.0.0.
ON_BAD = ("skip", "raise")  # What a bad video does (config.data.on_bad_episode).


def read_captions(video_dir: Path) -> dict[str, dict]:
    """{video relative path: record} from captions.jsonl / captions.json."""
    for name in CAPTION_FILES:
        path = video_dir / name
        if not path.exists():
            continue
        if name.endswith(".jsonl"):
            records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        else:
            data = json.loads(path.read_text())
            if isinstance(data, dict):
                records = [{"video": k, "caption": v} for k, v in data.items()]
            else:
                records = data
        out = {}
        for i, record in enumerate(records):
            if "video" not in record:
                raise ValueError(f"{path} entry {i} has no 'video' key: {record}")
            out[record["video"]] = record
        return out
    raise ValueError(
        f"no captions file in {video_dir}: expected one of {CAPTION_FILES} (see "
        "wow_jax/data/videos.py for the format)"
    )


def read_video(path: Path) -> tuple[np.ndarray, float]:
    """mp4 -> (uint8 [N, H, W, 3], fps) through imageio's ffmpeg plugin; a file that does not
    decode to at least one frame (empty, not a video, truncated) raises rlds.BadEpisodeError."""
    import imageio.v2 as imageio

    try:
        with imageio.get_reader(str(path), "ffmpeg") as reader:
            fps = float(reader.get_meta_data().get("fps", 0.0) or 0.0)
            frames = np.stack([np.asarray(f)[..., :3] for f in reader])
    except Exception as e:  # Any decoder failure (ffmpeg's OSError, no frames, ...) is a bad file.
        first_line = (str(e).strip().splitlines() or [""])[0]
        size = path.stat().st_size if path.is_file() else 0
        raise rlds.BadEpisodeError(
            f"{path} is not a readable video ({size} bytes; {type(e).__name__}: {first_line})"
        ) from e
    return frames, fps


def _resize(frames: np.ndarray, size) -> np.ndarray:
    if size is None or frames.shape[1:3] == tuple(size):
        return frames
    h, w = size
    return np.stack([np.asarray(Image.fromarray(f).resize((w, h), Image.BILINEAR)) for f in frames])


def _episode(video_dir: Path, rel: str, record: dict, size, action_dim: int) -> rlds.Episode:
    """The episode of video `rel`; rlds.BadEpisodeError when it has no caption, does not decode,
    or its actions file is missing or does not give [frames, action_dim] values."""
    caption = str(record.get("caption", "")).strip()
    if not caption:
        raise rlds.BadEpisodeError(f"{video_dir / rel} has no caption in {CAPTION_FILES}")
    frames, fps = read_video(video_dir / rel)
    frames = _resize(frames, size)
    n = len(frames)
    actions = np.zeros((n, 0), np.float32)
    if action_dim and not record.get("actions"):
        raise rlds.BadEpisodeError(
            f"{video_dir / rel} has no 'actions' file while the dataset's videos have "
            f"{action_dim} action values per frame"
        )
    if action_dim:
        try:
            actions = np.load(video_dir / record["actions"]).astype(np.float32)
        except (OSError, ValueError) as e:
            raise rlds.BadEpisodeError(f"cannot read {video_dir / record['actions']}: {e}") from e
        if actions.shape != (n, action_dim):
            raise rlds.BadEpisodeError(
                f"{record['actions']} has actions of shape {actions.shape} for the {n} frames of "
                f"{rel}; store [{n}, {action_dim}] (one action per frame, the last one ignored)"
            )
    segments = tuple(
        (int(s["start"]), int(s["end"]), str(s["text"])) for s in record.get("segments", ())
    )
    return rlds.Episode(
        frames=frames,
        actions=actions,
        instruction=caption,
        episode_id=rel,
        robot=str(record.get("robot", "")),
        fps=fps,
        source="videos",
        segments=segments,
    )


def video_episodes(
    video_dir: str | Path, size=None, on_bad: str = "skip", counts=None, action_dim: int = 0
):
    """Yields rlds.Episode for every good video (sorted by path). A bad one (no caption, not a
    readable video, wrong actions) is skipped with a warning naming it and counted in
    counts['skipped'] (a list of their paths; on_bad='skip'), or raises (on_bad='raise'). A
    folder without one good video raises ValueError."""
    if on_bad not in ON_BAD:
        raise ValueError(f"on_bad must be one of {ON_BAD}, got {on_bad!r}")
    video_dir = Path(video_dir)
    captions = read_captions(video_dir)
    videos = sorted(p.relative_to(video_dir).as_posix() for p in video_dir.rglob("*.mp4"))
    counts = {} if counts is None else counts
    counts.update(written=0, skipped=[])
    for rel in tqdm(videos, desc="videos", unit="video"):
        try:
            episode = _episode(video_dir, rel, captions.get(rel, {}), size, action_dim)
        except rlds.BadEpisodeError as e:
            if on_bad == "raise":
                raise rlds.BadEpisodeError(
                    f"{e}; fix or remove it, or skip bad videos with "
                    "config.data.on_bad_episode='skip'"
                ) from e
            counts["skipped"].append(rel)
            logging.warning("skipping %s: %s (%d skipped)", rel, e, len(counts["skipped"]))
            continue
        counts["written"] += 1
        yield episode
    if not counts["written"]:
        raise ValueError(
            f"no usable video in {video_dir}: {len(videos)} .mp4 files, "
            f"{len(counts['skipped'])} of them bad (see the warnings above); add captioned mp4 "
            "files (format: wow_jax/data/videos.py)"
        )


def build_video_dataset(
    video_dir: str | Path,
    out_dir: str | Path,
    name: str = DATASET_NAME,
    size=None,
    on_bad: str = "skip",
    image_format: str = "jpeg",
) -> Path:
    """Converts the folder into `out_dir/<name>/1.0.0` (actions: width from the first .npy).

    Bad videos are skipped and counted (on_bad='skip', the build goes on) or raise (on_bad=
    'raise'; nothing is written). Frames are stored as JPEG (quality 95) by default: the source
    is lossy already and JPEG decodes ~3x faster than PNG; pass image_format='png' for lossless.
    """
    video_dir = Path(video_dir)
    captions = read_captions(video_dir)
    action_files = [r["actions"] for r in captions.values() if r.get("actions")]
    action_dim = np.load(video_dir / action_files[0]).shape[-1] if action_files else 0
    counts: dict = {}
    path = rlds.write_episodes(
        video_episodes(video_dir, size, on_bad, counts, int(action_dim)),
        out_dir,
        name,
        action_dim=int(action_dim),
        image_shape=tuple(size) if size else (None, None),
        description=f"videos from {video_dir}",
        image_format=image_format,
    )
    skipped = counts["skipped"]
    log = logging.warning if skipped else logging.info
    log(
        "video dataset %s: %d episodes written, %d bad videos skipped%s",
        path,
        counts["written"],
        len(skipped),
        f": {', '.join(skipped[:10])}{' ...' if len(skipped) > 10 else ''}" if skipped else "",
    )
    return path
