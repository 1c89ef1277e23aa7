"""config.data -> a ready RLDS dataset dir (collecting / converting it on first use).

Data sources are a dispatch table, `SOURCES = {name: prepare_fn}`, with
`prepare_fn(data_cfg, root: Path) -> Path` (the dataset version dir, built on first use and
reused after). This module registers

    'tfds':   <root> is an RLDS ArrayRecord dataset (prepared elsewhere)
    'videos': convert config.data.video_dir into <root>/videos/1.0.0 (reused when already built)

and a simulator registers its own source when its package is imported (`import wow_jax.sim`
registers 'metaworld', which collects config.data.tasks into <root>), so wow_jax.data never
imports a simulator. A new source is one function plus `register_source(name, fn)`.

<root> is config.data.path, or <workdir>/data when empty. Action statistics are computed when
missing (and config.data.action_norm needs them).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from absl import logging

from wow_jax.data import rlds, stats, videos

PrepareFn = Callable[..., Path]  # (data_cfg, root: Path) -> dataset version dir
SOURCES: dict[str, PrepareFn] = {}


def register_source(name: str, prepare_fn: PrepareFn) -> None:
    """Adds `name` to the table: config.data.source=name then calls prepare_fn(data_cfg, root)."""
    SOURCES[name] = prepare_fn


def dataset_root(data_cfg, workdir: str | Path) -> Path:
    return Path(data_cfg.path) if data_cfg.path else Path(workdir) / "data"


def _prepare_tfds(data_cfg, root: Path) -> Path:
    if not root.is_dir():
        where = (
            f"config.data.path={data_cfg.path!r}" if data_cfg.path else f"{root} (<workdir>/data)"
        )
        raise ValueError(
            f"config.data.source='tfds' reads an RLDS ArrayRecord dataset, but {where} does not "
            "exist; set config.data.path to the dataset folder"
        )
    return rlds.resolve_dataset_dir(root)


def _prepare_videos(data_cfg, root: Path) -> Path:
    built = sorted(root.glob(f"{videos.DATASET_NAME}/*/dataset_info.json"))
    if (root / "dataset_info.json").exists():  # config.data.path is the built version folder
        built = [root / "dataset_info.json"]
    if built:
        logging.info("video dataset %s already built; reusing it", built[0].parent)
        return built[0].parent
    if not data_cfg.video_dir:
        raise ValueError(
            "config.data.source='videos' needs config.data.video_dir (a folder of mp4 files with "
            f"captions.jsonl), converted into {root}; set --config.data.video_dir=DIR"
        )
    return videos.build_video_dataset(data_cfg.video_dir, root, on_bad=data_cfg.on_bad_episode)


register_source("tfds", _prepare_tfds)
register_source("videos", _prepare_videos)


def source_fn(name: str) -> PrepareFn:
    """The prepare function registered for config.data.source `name`."""
    if name not in SOURCES:
        raise ValueError(
            f"config.data.source={name!r} is not a registered data source; registered: "
            f"{sorted(SOURCES)}. A source registers itself when its module is imported, with "
            "wow_jax.data.prepare.register_source(name, prepare_fn) (the simulators' sources, "
            "e.g. 'metaworld', by `import wow_jax.sim`)"
        )
    return SOURCES[name]


def prepare_dataset(data_cfg, workdir: str | Path) -> Path:
    """Returns the dataset version dir for config.data, building it (and its action statistics)
    if needed."""
    path = Path(source_fn(data_cfg.source)(data_cfg, dataset_root(data_cfg, workdir)))
    if data_cfg.action_norm != "none" and not (path / stats.STATS_FILE).exists():
        logging.info("computing action statistics of %s", path)
        source = rlds.EpisodeSource(path, action_key=data_cfg.action_key)
        stats.save_stats(stats.compute_action_stats(source), path)
    return path
