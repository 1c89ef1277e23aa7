"""mp4 folder + captions -> RLDS ArrayRecord -> pipeline, round trip."""

import json

import imageio.v2 as imageio
import numpy as np

from wow_jax.data import pipeline, rlds, videos


def _write_mp4(path, num_frames, colour):
    writer = imageio.get_writer(str(path), fps=10, codec="libx264", quality=9, macro_block_size=1)
    for t in range(num_frames):
        frame = np.zeros((40, 48, 3), np.uint8)
        frame[..., 0] = 10 * t
        frame[..., 1] = colour
        writer.append_data(frame)
    writer.close()


def test_video_folder_round_trip(tmp_path, tiny_config):
    src = tmp_path / "in"
    src.mkdir()
    for k in range(3):
        _write_mp4(src / f"v{k}.mp4", 12, 60 * (k + 1))
    np.save(src / "v0_actions.npy", np.arange(24, dtype=np.float32).reshape(12, 2))
    np.save(src / "v1_actions.npy", -np.arange(24, dtype=np.float32).reshape(12, 2))
    records = [
        {
            "video": "v0.mp4",
            "caption": "open the drawer",
            "actions": "v0_actions.npy",
            "segments": [{"start": 0, "end": 6, "text": "grasp the handle"}],
            "robot": "the Franka Panda arm",
        },
        {"video": "v1.mp4", "caption": "wipe the table", "actions": "v1_actions.npy"},
    ]  # v2.mp4 has no caption: skipped and counted.
    (src / "captions.jsonl").write_text("\n".join(json.dumps(r) for r in records))
    path = videos.build_video_dataset(src, tmp_path / "out")

    source = rlds.EpisodeSource(path)
    assert len(source) == 2
    assert source.episode_info(0) == (12, 10.0)
    episode = source.read(0, [0, 5, 11], [0, 1])
    assert episode["frames"].shape == (3, 40, 48, 3)
    # H.264 is lossy: compare colours within a few levels.
    np.testing.assert_allclose(episode["frames"][:, 20, 20, 0], [0, 50, 110], atol=6)
    np.testing.assert_allclose(episode["frames"][:, 20, 20, 1], 60, atol=6)
    np.testing.assert_array_equal(episode["actions"], [[0, 1], [2, 3]])
    assert episode["segments"] == ["grasp the handle", "grasp the handle", ""]
    assert (episode["instruction"], episode["robot"]) == ("open the drawer", "the Franka Panda arm")

    from wow_jax.data import stats

    stats.save_stats(stats.compute_action_stats(source, False), path)
    cfg = tiny_config.data
    cfg.path = str(path)
    batch = next(pipeline.create_iterator(cfg, process_index=0, process_count=1))
    assert batch["video"].shape == (2, 5, 32, 32, 3)
    assert batch["actions"].shape == (2, 4, 2)
    assert set(batch["instruction"]) <= {"open the drawer", "wipe the table"}
    # Two simulated processes read disjoint episodes (one each).
    firsts = [
        str(next(pipeline.create_iterator(cfg, process_index=i, process_count=2))["episode_id"][0])
        for i in range(2)
    ]
    assert sorted(firsts) == ["v0.mp4", "v1.mp4"]
