"""Mode 'train' prepares its data through wow_jax.data.prepare for every config.data.source.

`--config.data.source=videos --config.data.video_dir=IN` (config.data.path unset): the videos are
converted into <workdir>/data, their missing action statistics computed, and the model trains.
"""

import json

import numpy as np

from tests.data.test_videos import _write_mp4
from wow_jax.data import rlds, stats
from wow_jax.train import loop


def test_videos_source_with_only_video_dir_converts_and_trains(tiny_config, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    records = []
    for k in range(2):
        _write_mp4(src / f"v{k}.mp4", 10, 80 * (k + 1))
        np.save(src / f"v{k}.npy", np.arange(30, dtype=np.float32).reshape(10, 3) * (k + 1))
        records.append({"video": f"v{k}.mp4", "caption": "wipe the table", "actions": f"v{k}.npy"})
    (src / "captions.jsonl").write_text("\n".join(json.dumps(r) for r in records))
    cfg = tiny_config
    cfg.mode, cfg.train.task, cfg.train.steps = "train", "vae", 1
    cfg.train.tensorboard, cfg.checkpoint.save_every = False, 1
    cfg.data.source, cfg.data.video_dir, cfg.data.batch_size = "videos", str(src), 2
    cfg.data.action_norm = "mean_std"
    assert cfg.data.path == ""
    cfg.mesh.fsdp, cfg.mesh.tensor = 2, 4
    workdir = tmp_path / "run"

    loop.run_train(cfg, str(workdir))

    dataset = workdir / "data" / "videos" / "1.0.0"
    assert len(rlds.EpisodeSource(dataset)) == 2
    # Computed on the way (the video converter writes none): 2 episodes x 9 used actions.
    action_stats = stats.load_stats(dataset)
    assert action_stats["count"] == 18 and action_stats["action_dim"] == 3
    with open(workdir / "metrics.jsonl") as f:
        losses = [json.loads(line)["train/loss"] for line in f if "train/loss" in line]
    assert len(losses) == 1 and np.isfinite(losses[0])
