"""Grain pipeline: documented batch, determinism, exact resume, process sharding, bad episodes."""

import json

import numpy as np
import pytest

from tests.data.conftest import synthetic_episode, write_dataset
from wow_jax.data import pipeline, rlds, stats


def _take(it, n):
    return [next(it) for _ in range(n)]


def _assert_batches_equal(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys()
        for key in x:
            np.testing.assert_array_equal(x[key], y[key], err_msg=key)


def test_batch_matches_documented_layout_and_source(data_cfg, toy_dataset):
    it = pipeline.create_iterator(data_cfg, process_index=0, process_count=1)
    batch = next(it)
    b, t, h, w = 2, data_cfg.num_frames, data_cfg.height, data_cfg.width
    assert batch["video"].shape == (b, t, h, w, 3) and batch["video"].dtype == np.float32
    assert batch["first_frame"].shape == (b, h, w, 3)
    assert batch["actions"].shape == (b, t - 1, 4) and batch["actions"].dtype == np.float32
    assert batch["caption"].shape == (b,) and batch["episode_id"].shape == (b,)
    assert batch["video"].min() >= -1.0 and batch["video"].max() <= 1.0
    np.testing.assert_array_equal(batch["first_frame"], batch["video"][:, 0])
    assert (batch["num_skipped"] == 0).all()

    # Recompute every element from the stored episode: frames are constant-colour per (e, t),
    # so the resized clip must carry exactly the step index of each frame.
    source = rlds.EpisodeSource(toy_dataset)
    action_stats = stats.load_stats(toy_dataset)
    for i in range(b):
        e = int(batch["episode_id"][i][2:])
        start = int(batch["start"][i])
        steps = start + np.arange(t)
        pixels = np.round((batch["video"][i, :, h // 2, w // 2] + 1.0) * 127.5)
        np.testing.assert_array_equal(pixels[:, 0], e)
        np.testing.assert_array_equal(pixels[:, 1], steps)
        raw = source.read(source_index(source, e), [start], steps[:-1])["actions"]
        np.testing.assert_allclose(
            batch["actions"][i], stats.normalize(raw, action_stats, "mean_std"), rtol=1e-6
        )
        assert batch["instruction"][i] == "push the red block"


def source_index(source, e):
    for i in range(len(source)):
        if source.read(i, [0], [])["episode_id"] == f"ep{e:03d}":
            return i
    raise KeyError(e)


def test_same_seed_same_batches_other_seed_differs(data_cfg):
    a = _take(pipeline.create_iterator(data_cfg, process_index=0, process_count=1), 4)
    data_cfg.read_threads = 0  # Threads change speed, never the batches.
    b = _take(pipeline.create_iterator(data_cfg, process_index=0, process_count=1), 4)
    _assert_batches_equal(a, b)
    c = _take(pipeline.create_iterator(data_cfg, seed=7, process_index=0, process_count=1), 4)
    ids = lambda bs: [tuple(x["episode_id"]) + tuple(x["start"]) for x in bs]  # noqa: E731
    assert ids(a) != ids(c)


@pytest.mark.parametrize("workers", [0, 2])
def test_exact_resume(data_cfg, workers):
    """7 batches, checkpoint the iterator, 5 more; a restored iterator yields the same 5."""
    reference = _take(pipeline.create_iterator(data_cfg, process_index=0, process_count=1), 12)
    data_cfg.worker_count = workers
    it = pipeline.create_iterator(data_cfg, process_index=0, process_count=1)
    _assert_batches_equal(_take(it, 7), reference[:7])  # Workers never change the batches.
    state = json.dumps(it.get_state())  # As a checkpoint stores it (grain.checkpoint: JSON).
    expected = _take(it, 5)
    _assert_batches_equal(expected, reference[7:])
    restored = pipeline.create_iterator(data_cfg, process_index=0, process_count=1)
    restored.set_state(json.loads(state))
    _assert_batches_equal(_take(restored, 5), expected)
    for i in (it, restored):
        if hasattr(i, "close"):
            i.close()


def test_processes_read_disjoint_shards(data_cfg):
    """2 simulated processes: local batch 1 each; one epoch (6 episodes) splits 3 + 3, disjoint."""
    seen = []
    for index in range(2):
        it = pipeline.create_iterator(data_cfg, process_index=index, process_count=2)
        batches = _take(it, 3)
        assert all(b["video"].shape[0] == 1 for b in batches)
        seen.append({str(b["episode_id"][0]) for b in batches})
    assert seen[0].isdisjoint(seen[1])
    assert seen[0] | seen[1] == {f"ep{e:03d}" for e in range(6)}


def test_batch_must_split_over_processes(data_cfg):
    data_cfg.batch_size = 3
    with pytest.raises(ValueError, match="divisible by the number of processes"):
        pipeline.build_dataset(data_cfg, process_index=0, process_count=2)


def test_missing_action_stats_is_a_clear_error(tmp_path, data_cfg):
    path = write_dataset(tmp_path, [synthetic_episode(0, 12)], with_stats=False)
    data_cfg.path = str(path)
    with pytest.raises(ValueError, match="scripts.compute_action_stats"):
        pipeline.build_dataset(data_cfg, process_index=0, process_count=1)


@pytest.fixture(scope="module")
def bad_dataset(tmp_path_factory):
    """4 good episodes, 1 too short for a clip, 1 without instruction, then one truncated copy."""
    root = tmp_path_factory.mktemp("bad")
    episodes = [synthetic_episode(e, 12) for e in range(4)]
    episodes += [synthetic_episode(4, 3), synthetic_episode(5, 12, instruction="")]
    return write_dataset(root, episodes)


def test_bad_episodes_are_skipped_and_counted(data_cfg, bad_dataset):
    data_cfg.path = str(bad_dataset)
    it = pipeline.create_iterator(data_cfg, process_index=0, process_count=1)
    batches = _take(it, 6)  # 12 good clips = 3 epochs of 4 good episodes; 2 bad per epoch.
    assert sum(int(b["num_skipped"].sum()) for b in batches) in (4, 5, 6)
    ids = {str(i) for b in batches for i in b["episode_id"]}
    assert ids == {f"ep{e:03d}" for e in range(4)}


def test_bad_episode_raises_with_location_when_configured(data_cfg, bad_dataset):
    data_cfg.path = str(bad_dataset)
    data_cfg.on_bad_episode = "raise"
    it = pipeline.create_iterator(data_cfg, process_index=0, process_count=1)
    with pytest.raises(rlds.BadEpisodeError, match=r"array_record-00000-of-00001 record [45]"):
        _take(it, 6)


def test_truncated_file_names_file_and_record(tmp_path, data_cfg):
    path = write_dataset(tmp_path, [synthetic_episode(e, 12) for e in range(3)])
    (shard,) = path.glob("*.array_record-*")
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])
    source = rlds.EpisodeSource(path)
    with pytest.raises(rlds.BadEpisodeError, match=rf"{shard.name} record 0"):
        source.read(0, [0], [])
    data_cfg.path = str(path)
    it = pipeline.create_iterator(data_cfg, process_index=0, process_count=1)
    with pytest.raises(ValueError, match=r"consecutive bad episodes.*record"):
        next(it)  # Every record is bad: a clear error instead of an endless skip loop.


def test_tfds_rlds_dataset_with_oxe_keys(tmp_path, data_cfg):
    """An OXE-style RLDS dataset (wrist camera, dict actions, instruction inside observation)."""
    import tensorflow_datasets as tfds

    class OxeToy(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        VERSION = tfds.core.Version("0.1.0")

        def _info(self):
            step = {
                "observation": {
                    "wrist_image": tfds.features.Image(shape=(20, 20, 3), encoding_format="png"),
                    "natural_language_instruction": tfds.features.Text(),
                },
                "action": {
                    "world_vector": tfds.features.Tensor(shape=(3,), dtype=np.float32),
                    "gripper": tfds.features.Tensor(shape=(1,), dtype=np.float32),
                },
                "is_first": np.bool_,
                "is_last": np.bool_,
            }
            return tfds.core.DatasetInfo(
                builder=self,
                features=tfds.features.FeaturesDict({"steps": tfds.features.Dataset(step)}),
            )

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples()}

        def _generate_examples(self):
            for e in range(4):
                frames = synthetic_episode(e, 10, size=(20, 20)).frames
                yield (
                    e,
                    {
                        "steps": [
                            {
                                "observation": {
                                    "wrist_image": rlds.png_bytes(frames[t]),
                                    "natural_language_instruction": "open the drawer",
                                },
                                "action": {
                                    "world_vector": np.full(3, t, np.float32),
                                    "gripper": np.full(1, -t, np.float32),
                                },
                                "is_first": t == 0,
                                "is_last": t == 9,
                            }
                            for t in range(10)
                        ]
                    },
                )

    OxeToy.__module__ = "oxe_toy"
    builder = OxeToy(data_dir=str(tmp_path), file_format="array_record")
    builder.download_and_prepare()
    data_cfg.path = str(tmp_path)
    data_cfg.image_key = "observation.wrist_image"
    data_cfg.instruction_key = "observation.natural_language_instruction"
    source = rlds.EpisodeSource(
        tmp_path, image_key=data_cfg.image_key, instruction_key=data_cfg.instruction_key
    )
    np.testing.assert_array_equal(source.all_actions(0)[3], [-3.0, 3.0, 3.0, 3.0])
    stats.save_stats(stats.compute_action_stats(source, False), source.path)
    batch = next(pipeline.create_iterator(data_cfg, process_index=0, process_count=1))
    assert batch["video"].shape == (2, 5, 32, 32, 3)
    assert batch["actions"].shape == (2, 4, 4)
    assert set(batch["instruction"]) == {"open the drawer"}
    shards = [
        {
            str(b["episode_id"][0])
            for b in _take(pipeline.create_iterator(data_cfg, process_index=i, process_count=2), 2)
        }
        for i in range(2)
    ]
    assert shards[0].isdisjoint(shards[1]) and len(shards[0] | shards[1]) == 4
