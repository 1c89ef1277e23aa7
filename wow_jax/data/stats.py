"""Action statistics of a dataset, computed once and stored next to the data (action_stats.json).

`compute_action_stats(source)` -> {'mean', 'std', 'min', 'max', 'q01', 'q99': [A], 'count',
'action_dim'}; `normalize(actions [..., A], stats, mode)` with mode 'mean_std' ((a - mean) / std),
'q99' (q01..q99 mapped to [-1, 1], clipped) or 'none'.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from etils import epath
from tqdm import tqdm

STATS_FILE = "action_stats.json"
NORM_MODES = ("mean_std", "q99", "none")
_EPS = 1e-6


def compute_action_stats(source, progress: bool = True, max_episodes: int = 0) -> dict:
    """Statistics over every action of the episodes of an `rlds.EpisodeSource`.

    max_episodes > 0 uses that many episodes evenly spread over the dataset (large datasets).
    """
    indices = np.arange(len(source))
    if 0 < max_episodes < len(indices):
        indices = np.linspace(0, len(source) - 1, max_episodes).round().astype(int)
    chunks = [
        source.all_actions(int(i)) for i in tqdm(indices, "action stats", disable=not progress)
    ]
    chunks = [c for c in chunks if c.size]
    if not chunks:
        raise ValueError(
            f"no actions found in {source.path}: the dataset is empty or has no actions (plain "
            "videos); train without action statistics with config.data.action_norm='none'"
        )
    dims = {c.shape[-1] for c in chunks}
    if len(dims) != 1:
        raise ValueError(f"episodes of {source.path} have different action sizes {sorted(dims)}")
    actions = np.concatenate(chunks).astype(np.float64)
    stats = {
        "mean": actions.mean(0),
        "std": actions.std(0),
        "min": actions.min(0),
        "max": actions.max(0),
        "q01": np.quantile(actions, 0.01, axis=0),
        "q99": np.quantile(actions, 0.99, axis=0),
    }
    out = {k: [float(x) for x in v] for k, v in stats.items()}
    out.update(
        count=int(len(actions)), action_dim=int(actions.shape[-1]), episodes=int(len(indices))
    )
    return out


def save_stats(stats: dict, dataset_dir: str | Path) -> Path:
    path = Path(dataset_dir) / STATS_FILE
    path.write_text(json.dumps(stats, indent=1))
    return path


def load_stats(dataset_dir: str | Path) -> dict:
    path = Path(dataset_dir) / STATS_FILE
    if not path.exists():
        raise ValueError(
            f"action statistics not found: expected {path}; compute them once with "
            f"`python -m scripts.compute_action_stats --data_dir={dataset_dir}` "
            "(or set config.data.action_norm='none')"
        )
    return read_stats(path)


def read_stats(path) -> dict:
    """The statistics in an action_stats.json file (a local path or an epath URL): lists as
    float32 arrays [A]."""
    stats = json.loads(epath.Path(path).read_text())
    return {k: np.asarray(v, np.float32) if isinstance(v, list) else v for k, v in stats.items()}


def normalize(actions: np.ndarray, stats: dict | None, mode: str) -> np.ndarray:
    """float32 [..., A] -> normalised float32 [..., A]."""
    if mode == "none":
        return actions.astype(np.float32)
    if mode == "mean_std":
        out = (actions - stats["mean"]) / np.maximum(stats["std"], _EPS)
    elif mode == "q99":
        low, high = stats["q01"], stats["q99"]
        out = np.clip(2.0 * (actions - low) / np.maximum(high - low, _EPS) - 1.0, -1.0, 1.0)
    else:
        raise ValueError(f"config.data.action_norm must be one of {NORM_MODES}, got {mode!r}")
    return out.astype(np.float32)


def denormalize(actions: np.ndarray, stats: dict | None, mode: str) -> np.ndarray:
    """Inverse of `normalize` (q99: exact inside the q01..q99 range)."""
    if mode == "none":
        return actions.astype(np.float32)
    if mode == "mean_std":
        return (actions * np.maximum(stats["std"], _EPS) + stats["mean"]).astype(np.float32)
    if mode == "q99":
        low, high = stats["q01"], stats["q99"]
        return ((actions + 1.0) / 2.0 * np.maximum(high - low, _EPS) + low).astype(np.float32)
    raise ValueError(f"config.data.action_norm must be one of {NORM_MODES}, got {mode!r}")
