"""Mode 'train' on a user's own RLDS dataset through the Grain pipeline.

The same entry a user runs (`python -m wow_jax.main --config=configs/tiny.py --config.mode=train
--config.data.source=tfds --config.data.path=DATA --workdir=DIR`, i.e. `loop.run_train`), on a
tiny ArrayRecord dataset written here: finite logged losses for every step, checkpoints, resume
from the saved step, and the pipeline's skipped-episode count as the data/skipped_episodes metric.
"""

import json

import jax
import numpy as np
import pytest

from tests.data.conftest import synthetic_episode, write_dataset
from wow_jax import act, checkpointing, sharding
from wow_jax.data import captions, pipeline, rlds, stats, text_cache
from wow_jax.data import tokenizer as tokenizer_lib
from wow_jax.models import text_encoder
from wow_jax.train import loop


def _metrics(workdir):
    with open(workdir / "metrics.jsonl") as f:
        return [json.loads(line) for line in f]


def _losses(records) -> dict[int, float]:
    return {r["step"]: r["train/loss"] for r in records if "train/loss" in r}


def _skipped(records) -> int:
    return sum(int(r["data/skipped_episodes"]) for r in records if "data/skipped_episodes" in r)


def _checkpoints(workdir) -> list[int]:
    root = workdir / "checkpoints"
    return sorted(int(p.name) for p in root.iterdir() if p.name.isdigit())


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """5 good episodes and 1 too short for a 5-frame clip (skipped by the pipeline)."""
    root = tmp_path_factory.mktemp("robot_data")
    episodes = [synthetic_episode(e, 10 + e) for e in range(5)] + [synthetic_episode(5, 3)]
    return write_dataset(root, episodes)


def _config(tiny_config, dataset, task: str, steps: int):
    cfg = tiny_config
    cfg.mode = "train"
    cfg.train.task, cfg.train.steps = task, steps
    cfg.train.tensorboard, cfg.train.log_every, cfg.checkpoint.save_every = False, 1, 2
    cfg.data.source, cfg.data.path, cfg.data.batch_size = "tfds", str(dataset), 2
    cfg.mesh.fsdp = 2  # 8 simulated devices: data 1 x fsdp 2 x tensor 4.
    cfg.mesh.tensor = 4
    if task == "world_model":
        cfg.model.dit.variant, cfg.model.dit.in_channels = "i2v", 36
    return cfg


def _train_spm(dataset, data_cfg, directory) -> str:
    source = rlds.EpisodeSource(dataset)
    texts = captions.dataset_caption_variants(source, data_cfg, progress=False)
    return tokenizer_lib.train_spm(texts * 4, str(directory / "spm"), vocab_size=200)


def _expected_skipped(data_cfg, num_batches: int) -> int:
    """Bad episodes the pipeline skips while yielding the first `num_batches` training batches."""
    it = pipeline.create_iterator(data_cfg, process_index=0, process_count=1)
    return sum(int(next(it)["num_skipped"].sum()) for _ in range(num_batches))


def _check_run(workdir, steps):
    records = _metrics(workdir)
    losses = _losses(records)
    assert sorted(losses) == list(range(1, steps + 1))
    assert all(np.isfinite(v) for v in losses.values()), losses
    assert _checkpoints(workdir)[-1] == steps
    return records


def test_world_model_with_online_text_encoder_counts_skipped_and_resumes(
    tiny_config, dataset, tmp_path
):
    cfg = _config(tiny_config, dataset, "world_model", steps=2)
    cfg.model.text.tokenizer_path = _train_spm(dataset, cfg.data, tmp_path)
    workdir = tmp_path / "run"
    loop.run_train(cfg, str(workdir))
    assert _skipped(_check_run(workdir, 2)) == _expected_skipped(cfg.data, 2)

    cfg.train.steps = 4  # Resume: continues from checkpoint 2, runs steps 3 and 4 only.
    loop.run_train(cfg, str(workdir))
    records = _check_run(workdir, 4)
    assert [r["step"] for r in records if "train/loss" in r] == [1, 2, 3, 4]
    # The resumed data iterator goes on where it stopped: over both runs the logged count is
    # that of the first 4 batches of one uninterrupted pipeline, which crosses the short
    # episode (4 batches x 2 clips > 5 good episodes).
    expected = _expected_skipped(cfg.data, 4)
    assert expected >= 1 and _skipped(records) == expected


def test_world_model_with_text_embedding_cache(tiny_config, dataset, tmp_path):
    cfg = _config(tiny_config, dataset, "world_model", steps=1)
    text_cfg = cfg.model.text
    text_cfg.tokenizer_path = _train_spm(dataset, cfg.data, tmp_path)
    tokenizer = tokenizer_lib.Tokenizer(text_cfg.tokenizer_path, text_cfg.text_len)
    params = text_encoder.init_params(text_cfg, jax.random.key(0))
    encode = text_cache.make_encode_fn(text_encoder.create(text_cfg), params)
    variants = captions.dataset_caption_variants(rlds.EpisodeSource(dataset), cfg.data, False)
    text_cache.TextEmbeddingCache.write(
        str(tmp_path / "text_cache"), [""] + variants, tokenizer, encode, dtype="float32"
    )
    text_cfg.embedding_cache = str(tmp_path / "text_cache")
    text_cfg.tokenizer_path = ""  # The cache alone: no tokenizer or umT5 in training.
    workdir = tmp_path / "run"
    loop.run_train(cfg, str(workdir))
    _check_run(workdir, 1)


def test_vae(tiny_config, dataset, tmp_path):
    """(Resume is the same loop code path as the world model's, covered above.)"""
    cfg = _config(tiny_config, dataset, "vae", steps=3)
    workdir = tmp_path / "run"
    loop.run_train(cfg, str(workdir))
    records = _check_run(workdir, 3)
    assert _checkpoints(workdir) == [2, 3]
    assert _skipped(records) == _expected_skipped(cfg.data, 3)


def _params(path, names) -> dict:
    restored = checkpointing.restore_subtrees(path, dict.fromkeys(names))
    return {name: jax.tree.map(np.asarray, tree) for name, tree in restored.items()}


def _max_change(a, b) -> float:
    return max(
        float(np.max(np.abs(x - y))) for x, y in zip(*map(jax.tree.leaves, (a, b)), strict=True)
    )


# issue 17: config.idm.cotrain trains the IDM in the world model's run with its own optimiser:
# one mode-train run updates both (the IDM at its own learning rate) and checkpoints both, and
# act's reader takes the IDM from that run (resume: tests/train/test_cotrain.py).
@pytest.mark.slow  # ~150 s: the co-training task, optimiser groups and checkpoint are covered by
# tests/train/test_cotrain.py (toy world model), act's IDM reader by tests/test_act.py.
def test_world_model_cotrains_the_idm(tiny_config, dataset, tmp_path):
    cfg = _config(tiny_config, dataset, "world_model", steps=2)
    cfg.checkpoint.save_every, cfg.train.warmup_steps, cfg.train.schedule = 1, 0, "constant"
    cfg.train.learning_rate, cfg.idm.cotrain, cfg.idm.cotrain_lr = 1e-5, True, 1e-2
    cfg.model.text.tokenizer_path = _train_spm(dataset, cfg.data, tmp_path)
    workdir = tmp_path / "run"
    loop.train(cfg, str(workdir))
    records = _check_run(workdir, 2)
    assert {"train/world_model_loss", "train/idm_loss", "train/idm_gripper_bce"} <= set(records[0])
    root = workdir / "checkpoints"
    first, last = _params(root / "1", ("dit", "idm")), _params(root, ("dit", "idm", "vae"))
    # Adam moves each weight by ~its learning rate per step: the DiT by ~1e-5, the IDM by ~1e-2.
    assert 0 < _max_change(first["dit"], last["dit"]) < 1e-4
    assert _max_change(first["idm"], last["idm"]) > 2e-3

    cfg.act.idm_checkpoint = str(root)  # The run's checkpoints (mode act adopts the run).
    reader = act.ActionReader(cfg, sharding.make_mesh(cfg.mesh), stats.load_stats(workdir))
    assert _max_change(jax.device_get(reader.params), last["idm"]) == 0.0
    frames = np.random.default_rng(0).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    assert reader.read(frames)["actions"].shape == (4, 4)
