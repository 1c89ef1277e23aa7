"""prepare_dataset: config.data.source -> a ready dataset dir (built once, then reused)."""

import ast
import json
from pathlib import Path

import pytest

from tests.data.conftest import synthetic_episode, write_dataset
from tests.data.test_videos import _write_mp4
from tests.sim.fakes import FakeTask
from wow_jax.data import prepare, rlds, stats
from wow_jax.sim import metaworld_collect


def test_metaworld_source_collects_once(tmp_path, tiny_config, monkeypatch):
    monkeypatch.setattr(metaworld_collect, "MetaWorldTask", FakeTask)
    cfg = tiny_config.data
    cfg.tasks, cfg.episodes_per_task, cfg.episode_length = ("reach-v3",), 2, 6
    FakeTask.made.clear()
    path = prepare.prepare_dataset(cfg, tmp_path)
    assert path == tmp_path / "data" / "metaworld" / "1.0.0"
    assert len(rlds.EpisodeSource(path)) == 2 and (path / stats.STATS_FILE).exists()
    assert FakeTask.made == ["reach-v3"]
    assert prepare.prepare_dataset(cfg, tmp_path) == path and FakeTask.made == ["reach-v3"]


def test_videos_source_builds_once(tmp_path, tiny_config):
    src = tmp_path / "in"
    src.mkdir()
    _write_mp4(src / "a.mp4", 8, 100)
    (src / "captions.json").write_text(json.dumps({"a.mp4": "stack the cups"}))
    cfg = tiny_config.data
    cfg.source, cfg.video_dir, cfg.action_norm = "videos", str(src), "none"
    cfg.path = str(tmp_path / "out")
    path = prepare.prepare_dataset(cfg, tmp_path)
    assert rlds.EpisodeSource(path).read(0, [0], [])["instruction"] == "stack the cups"
    (src / "a.mp4").unlink()  # A rebuild would fail now: the built dataset is reused.
    assert prepare.prepare_dataset(cfg, tmp_path) == path
    # issue 18: the built version folder given back as config.data.path is reused as it is.
    cfg.path = str(path)
    assert prepare.prepare_dataset(cfg, tmp_path) == path


def test_tfds_source_computes_missing_stats(tmp_path, tiny_config):
    path = write_dataset(tmp_path, [synthetic_episode(e, 10) for e in range(4)], with_stats=False)
    cfg = tiny_config.data
    cfg.source, cfg.path = "tfds", str(tmp_path)
    assert prepare.prepare_dataset(cfg, "/unused") == path
    assert stats.load_stats(path)["count"] == 36
    subset = stats.compute_action_stats(rlds.EpisodeSource(path), False, max_episodes=2)
    assert subset["count"] == 18 and subset["episodes"] == 2


def test_sources_are_a_table_and_an_unknown_source_names_them(tiny_config):
    assert prepare.SOURCES["metaworld"] is metaworld_collect.collect_from_config  # sim registers
    assert {"tfds", "videos"} <= set(prepare.SOURCES)
    cfg = tiny_config.data
    cfg.source = "my_robot"
    with pytest.raises(ValueError, match=r"'my_robot'.*'metaworld', 'tfds', 'videos'.*register"):
        prepare.prepare_dataset(cfg, "/unused")


def test_tfds_source_without_a_dataset_names_the_key(tiny_config, tmp_path):
    cfg = tiny_config.data
    cfg.source = "tfds"
    with pytest.raises(ValueError, match=r"<workdir>/data\) does not exist.*config.data.path"):
        prepare.prepare_dataset(cfg, tmp_path)
    cfg.path = str(tmp_path / "missing")
    with pytest.raises(ValueError, match="config.data.path=.*missing"):
        prepare.prepare_dataset(cfg, tmp_path)


def test_videos_source_without_video_dir_names_the_key(tiny_config, tmp_path):
    cfg = tiny_config.data
    cfg.source = "videos"
    with pytest.raises(ValueError, match="config.data.video_dir"):
        prepare.prepare_dataset(cfg, tmp_path)


def test_data_never_imports_sim():
    """wow_jax.data sits below wow_jax.sim: no import of it, nested ones included."""
    offenders = []
    for path in sorted(Path(prepare.__file__).parent.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            offenders += [f"{path.name}: {n}" for n in names if n.startswith("wow_jax.sim")]
    assert offenders == []
