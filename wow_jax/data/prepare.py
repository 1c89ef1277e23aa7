"""config.data -> a ready RLDS dataset dir (collecting / converting it on first use).

    source='metaworld': collect config.data.tasks into <path> (reused when already collected)
    source='videos':    convert config.data.video_dir into <path> (reused when already built)
    source='tfds':      <path> is an RLDS ArrayRecord dataset (prepared elsewhere)

<path> is config.data.path, or <workdir>/data when empty. Action statistics are computed when
missing (and config.data.action_norm needs them).
"""

from __future__ import annotations

from pathlib import Path

from absl import logging

from wow_jax.data import rlds, stats


def dataset_root(data_cfg, workdir: str | Path) -> Path:
    return Path(data_cfg.path) if data_cfg.path else Path(workdir) / "data"


def prepare_dataset(data_cfg, workdir: str | Path) -> Path:
    """Returns the dataset version dir for config.data, building it if needed."""
    root = dataset_root(data_cfg, workdir)
    if data_cfg.source == "metaworld":
        from wow_jax.sim import metaworld_collect

        path = metaworld_collect.collect_from_config(data_cfg, root)
    elif data_cfg.source == "videos":
        from wow_jax.data import videos

        built = list(root.glob("videos/*/dataset_info.json"))
        if built:
            path = built[0].parent
        else:
            if not data_cfg.video_dir:
                raise ValueError(
                    "config.data.source='videos' needs config.data.video_dir (a folder of mp4 "
                    "files with captions.jsonl)"
                )
            path = videos.build_video_dataset(data_cfg.video_dir, root)
    elif data_cfg.source == "tfds":
        path = rlds.resolve_dataset_dir(root)
    else:
        raise ValueError(
            f"config.data.source must be 'metaworld', 'tfds' or 'videos', got {data_cfg.source!r}"
        )
    if data_cfg.action_norm != "none" and not (path / stats.STATS_FILE).exists():
        logging.info("computing action statistics of %s", path)
        source = rlds.EpisodeSource(path, action_key=data_cfg.action_key)
        stats.save_stats(stats.compute_action_stats(source), path)
    return path
