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

Videos without a caption are skipped with a counted warning (or raise with on_missing='raise').
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
    """mp4 -> (uint8 [N, H, W, 3], fps) through imageio's ffmpeg plugin."""
    import imageio.v2 as imageio

    with imageio.get_reader(str(path), "ffmpeg") as reader:
        fps = float(reader.get_meta_data().get("fps", 0.0) or 0.0)
        frames = np.stack([np.asarray(f)[..., :3] for f in reader])
    return frames, fps


def _resize(frames: np.ndarray, size) -> np.ndarray:
    if size is None or frames.shape[1:3] == tuple(size):
        return frames
    h, w = size
    return np.stack([np.asarray(Image.fromarray(f).resize((w, h), Image.BILINEAR)) for f in frames])


def video_episodes(video_dir: str | Path, size=None, on_missing: str = "skip", counts=None):
    """Yields rlds.Episode for every captioned video (sorted by path)."""
    video_dir = Path(video_dir)
    captions = read_captions(video_dir)
    videos = sorted(p.relative_to(video_dir).as_posix() for p in video_dir.rglob("*.mp4"))
    counts = {} if counts is None else counts
    counts.update(written=0, skipped=0)
    for rel in tqdm(videos, desc="videos", unit="video"):
        record = captions.get(rel, {})
        caption = str(record.get("caption", "")).strip()
        if not caption:
            if on_missing == "raise":
                raise ValueError(f"{video_dir / rel} has no caption in {CAPTION_FILES}")
            counts["skipped"] += 1
            logging.warning("skipping %s: no caption (%d skipped)", rel, counts["skipped"])
            continue
        frames, fps = read_video(video_dir / rel)
        frames = _resize(frames, size)
        n = len(frames)
        if record.get("actions"):
            actions = np.load(video_dir / record["actions"]).astype(np.float32)
            if len(actions) != n:
                raise ValueError(
                    f"{record['actions']} has {len(actions)} actions for {n} frames of {rel}; "
                    "store one action per frame (the last one is ignored)"
                )
        else:
            actions = np.zeros((n, 0), np.float32)
        segments = tuple(
            (int(s["start"]), int(s["end"]), str(s["text"])) for s in record.get("segments", ())
        )
        counts["written"] += 1
        yield rlds.Episode(
            frames=frames,
            actions=actions,
            instruction=caption,
            episode_id=rel,
            robot=str(record.get("robot", "")),
            fps=fps,
            source="videos",
            segments=segments,
        )


def build_video_dataset(
    video_dir: str | Path,
    out_dir: str | Path,
    name: str = DATASET_NAME,
    size=None,
    on_missing: str = "skip",
    image_format: str = "jpeg",
) -> Path:
    """Converts the folder into `out_dir/<name>/1.0.0` (actions: width from the first .npy).

    Frames are stored as JPEG (quality 95) by default: the source is lossy already and JPEG
    decodes ~3x faster than PNG; pass image_format='png' for lossless frames.
    """
    video_dir = Path(video_dir)
    captions = read_captions(video_dir)
    action_files = [r["actions"] for r in captions.values() if r.get("actions")]
    action_dim = np.load(video_dir / action_files[0]).shape[-1] if action_files else 0
    counts: dict = {}
    path = rlds.write_episodes(
        video_episodes(video_dir, size, on_missing, counts),
        out_dir,
        name,
        action_dim=int(action_dim),
        image_shape=tuple(size) if size else (None, None),
        description=f"videos from {video_dir}",
        image_format=image_format,
    )
    logging.info(
        "video dataset %s: %d episodes, %d skipped", path, counts["written"], counts["skipped"]
    )
    return path
