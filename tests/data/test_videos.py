"""mp4 folder + captions -> RLDS ArrayRecord -> pipeline, round trip."""

import json

import imageio.v2 as imageio
import numpy as np
import pytest

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


def _folder_with_bad_files(tmp_path):
    """Two good mp4s, a 0-byte one and a text file named .mp4, all captioned."""
    src = tmp_path / "in"
    src.mkdir()
    _write_mp4(src / "a_good.mp4", 6, 60)
    (src / "b_empty.mp4").write_bytes(b"")
    (src / "c_text.mp4").write_text("not a video\n")
    _write_mp4(src / "d_good.mp4", 6, 120)
    names = ("a_good", "b_empty", "c_text", "d_good")
    records = [{"video": f"{n}.mp4", "caption": f"clip {n}"} for n in names]
    (src / "captions.jsonl").write_text("\n".join(json.dumps(r) for r in records))
    return src


# issue 14 B8: one 0-byte or non-video .mp4 aborted the whole build (an OSError from ffmpeg).
def test_bad_video_files_are_skipped_named_and_counted(tmp_path, caplog):
    src = _folder_with_bad_files(tmp_path)
    counts = {}
    episodes = list(videos.video_episodes(src, counts=counts))
    assert [e.episode_id for e in episodes] == ["a_good.mp4", "d_good.mp4"]
    assert counts == {"written": 2, "skipped": ["b_empty.mp4", "c_text.mp4"]}
    warned = " ".join(r.getMessage() for r in caplog.records if r.levelname == "WARNING")
    assert "skipping b_empty.mp4" in warned and "0 bytes" in warned
    assert "skipping c_text.mp4" in warned

    with caplog.at_level("INFO"):
        path = videos.build_video_dataset(src, tmp_path / "out")
    source = rlds.EpisodeSource(path)
    assert len(source) == 2  # The good videos' converted work is kept.
    assert str(source.read(1, [0], [])["episode_id"]) == "d_good.mp4"
    summary = [r.getMessage() for r in caplog.records if "video dataset" in r.getMessage()]
    assert (
        summary
        and "2 episodes written, 2 bad videos skipped: b_empty.mp4, c_text.mp4" in (summary[-1])
    )


# issue 14 B8: with on_bad='raise' the error names the bad file (not ffmpeg's meta error).
def test_bad_video_file_raises_naming_it(tmp_path):
    src = _folder_with_bad_files(tmp_path)
    with pytest.raises(rlds.BadEpisodeError, match=r"b_empty\.mp4 is not a readable video"):
        videos.build_video_dataset(src, tmp_path / "out", on_bad="raise")


def test_actions_of_the_wrong_shape_are_a_bad_video(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for name in ("a", "b"):
        _write_mp4(src / f"{name}.mp4", 6, 60)
    np.save(src / "a.npy", np.zeros((6, 2), np.float32))
    np.save(src / "b.npy", np.zeros((5, 2), np.float32))
    records = [{"video": f"{n}.mp4", "caption": "c", "actions": f"{n}.npy"} for n in "ab"]
    (src / "captions.jsonl").write_text("\n".join(json.dumps(r) for r in records))
    counts = {}
    assert len(list(videos.video_episodes(src, counts=counts, action_dim=2))) == 1
    assert counts["skipped"] == ["b.mp4"]
    with pytest.raises(rlds.BadEpisodeError, match=r"b.npy has actions of shape \(5, 2\)"):
        list(videos.video_episodes(src, on_bad="raise", action_dim=2))


def test_a_folder_without_a_good_video_is_refused_in_one_message(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    (src / "x.mp4").write_bytes(b"")
    (src / "captions.jsonl").write_text(json.dumps({"video": "x.mp4", "caption": "c"}))
    with pytest.raises(ValueError, match=r"no usable video in .*1 .mp4 files, 1 of them bad"):
        videos.build_video_dataset(src, tmp_path / "out")
