"""prepare_dataset: config.data.source -> a ready dataset dir (built once, then reused)."""

import json

from tests.data.conftest import synthetic_episode, write_dataset
from tests.data.test_videos import _write_mp4
from tests.sim.test_metaworld_collect import FakeTask
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


def test_tfds_source_computes_missing_stats(tmp_path, tiny_config):
    path = write_dataset(tmp_path, [synthetic_episode(e, 10) for e in range(4)], with_stats=False)
    cfg = tiny_config.data
    cfg.source, cfg.path = "tfds", str(tmp_path)
    assert prepare.prepare_dataset(cfg, "/unused") == path
    assert stats.load_stats(path)["count"] == 36
    subset = stats.compute_action_stats(rlds.EpisodeSource(path), False, max_episodes=2)
    assert subset["count"] == 18 and subset["episodes"] == 2
