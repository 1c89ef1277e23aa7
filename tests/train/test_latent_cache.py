"""The world model's latent cache (wow_jax/train/latent_cache.py): scripts/cache_latents.py writes
it, mode train reads it (config.train.inputs='latents'), a stale one is refused.

A tiny i2v world model on a synthetic RLDS dataset; its frozen VAE, umT5 and CLIP come from an
Orbax checkpoint (config.checkpoint.init_from), as both the command and mode train read them.
"""

import json

import jax
import numpy as np
import pytest

from scripts import cache_latents
from tests.data.conftest import synthetic_episode, write_dataset
from wow_jax import checkpointing
from wow_jax import models as registry
from wow_jax.data import captions, pipeline, prepare, rlds
from wow_jax.data import tokenizer as tokenizer_lib
from wow_jax.sampling.models import random_params
from wow_jax.train import latent_cache, loop, tasks
from wow_jax.train.tasks.world_model import WorldModelTask

CLIPS = 2


def _config(tiny_config, dataset, spm, init_from):
    cfg = tiny_config
    cfg.mode = "train"
    cfg.model.dit.variant, cfg.model.dit.in_channels = "i2v", 36
    cfg.model.text.tokenizer_path = spm
    cfg.data.source, cfg.data.path, cfg.data.batch_size = "tfds", str(dataset), 2
    cfg.data.num_frames, cfg.data.height, cfg.data.width = 5, 32, 32
    cfg.checkpoint.init_from = init_from
    cfg.train.text_dropout = 0.5  # Both the caption and the empty-prompt states are used.
    cfg.train.tensorboard, cfg.train.log_every, cfg.checkpoint.save_every = False, 1, 2
    cfg.mesh.fsdp = 2  # 8 simulated devices: data 1 x fsdp 2 x tensor 4.
    cfg.mesh.tensor = 4
    return cfg


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """(make_config(tiny_config) -> the config, all four params, cache directory)."""
    from configs import tiny

    tmp = tmp_path_factory.mktemp("latent_cache")
    dataset = write_dataset(tmp / "data", [synthetic_episode(e, 10 + e) for e in range(5)])
    base = tiny.get_config()
    variants = captions.dataset_caption_variants(rlds.EpisodeSource(dataset), base.data, False)
    spm = tokenizer_lib.train_spm(variants * 4, str(tmp / "spm"), vocab_size=200)
    probe = _config(base, dataset, spm, "")
    params = {
        name: random_params(registry.load(name).abstract_params(probe.model[name]), seed=i)
        for i, name in enumerate(registry.WORLD_MODEL_NAMES)
    }
    checkpointing.save_params(tmp / "encoders", params)

    def make_config(tiny_config):
        return _config(tiny_config, dataset, spm, str(tmp / "encoders"))

    cache_dir = str(tmp / "cache")
    cache_latents.run(make_config(tiny.get_config()), CLIPS, cache_dir, str(tmp / "work"))
    return make_config, params, cache_dir


def _latents_config(cfg, cache_dir):
    cfg.train.inputs, cfg.train.latent_cache = "latents", cache_dir
    return cfg


# issue 15: the preprocessing command writes every key of mode train's cache batch, per clip.
def test_command_writes_the_cache(setup, tiny_config):
    make_config, _, cache_dir = setup
    cfg = make_config(tiny_config)
    with open(f"{cache_dir}/{latent_cache.META_FILE}") as f:
        meta = json.load(f)
    assert meta["count"] == CLIPS
    assert meta["weights"] == latent_cache.checkpoint_weights(cfg) != ""
    arrays = latent_cache.read(cache_dir)
    shapes = latent_cache.batch_shapes(cfg, CLIPS)
    assert {k: v.shape for k, v in arrays.items() if k != latent_cache.NULL_KEY} == {
        k: shape for k, (shape, _) in shapes.items()
    }
    assert arrays[latent_cache.NULL_KEY].shape == (1, *shapes["text_states"][0][1:])
    assert np.std(arrays["latents"]) > 0 and np.std(arrays["image_tokens"]) > 0


# issue 15: a step on cached latents/embeddings has the loss of the step on the same clips'
# pixels (frozen VAE, umT5 and CLIP in the step) with the same noise and caption dropout.
def test_cached_loss_equals_pixels_loss(setup, tiny_config):
    make_config, params, cache_dir = setup
    cfg = _latents_config(make_config(tiny_config), cache_dir)
    data_cfg = cfg.data.copy_and_resolve_references()
    data_cfg.path = str(prepare.prepare_dataset(cfg.data, ""))
    clips = pipeline.take_clips(data_cfg, CLIPS)  # The clips the command encoded.
    pixel_task = WorldModelTask(cfg)
    ids, mask = pixel_task.text.tokenize(clips["caption"])
    pixels = {"video": clips["video"], "first_frame": clips["video"][:, 0]}
    pixels.update(token_ids=ids, text_mask=mask)
    arrays = latent_cache.load_for_training(cfg)
    cached_task = tasks.cached_world_model(cfg, np.asarray(arrays.pop(latent_cache.NULL_KEY)[0]))
    cached = {k: np.asarray(v) for k, v in arrays.items()}
    rng = jax.random.key(1)  # Drops one of the two captions.
    pixel_loss = jax.jit(pixel_task.loss)(params, pixels, rng)
    cached_loss = jax.jit(cached_task.loss)({"dit": params["dit"]}, cached, rng)
    assert 0 < float(jax.numpy.mean(pixel_loss[1]["text_dropped"])) < 1
    np.testing.assert_allclose(float(cached_loss[0]), float(pixel_loss[0]), rtol=1e-4)


# issue 15: mode train on the cache trains, and a run resumed from step 2 repeats step 3 exactly.
@pytest.mark.slow  # ~90 s: cache training is covered by test_cached_loss_equals_pixels_loss, the
# loop's exact resume on an ArrayIterator by tests/train/test_cotrain.py and test_lora_train.py.
def test_mode_train_from_cache_resumes_exactly(setup, tiny_config, tmp_path):
    import shutil

    make_config, _, cache_dir = setup
    cfg = _latents_config(make_config(tiny_config), cache_dir)
    cfg.train.steps = 3

    def losses():
        with open(tmp_path / "metrics.jsonl") as f:
            return [(r["step"], r["train/loss"]) for r in map(json.loads, f) if "train/loss" in r]

    loop.run_train(cfg, str(tmp_path))  # Checkpoints at steps 2 and 3.
    straight = losses()
    shutil.rmtree(tmp_path / "checkpoints" / "3")  # As if killed before step 3 was saved.
    loop.run_train(cfg, str(tmp_path))
    assert [step for step, _ in straight] == [1, 2, 3]
    assert np.all(np.isfinite([loss for _, loss in straight]))
    assert losses() == straight


# issue 15: mode train refuses a cache made from another config or checkpoint, naming the key.
def test_mismatched_cache_is_refused(setup, tiny_config, tmp_path):
    make_config, params, cache_dir = setup
    cfg = _latents_config(make_config(tiny_config), cache_dir)
    cfg.data.shuffle_seed = 7
    with pytest.raises(
        ValueError, match=r"config\.data\.shuffle_seed=0.*config\.data\.shuffle_seed=7"
    ):
        tasks.build(cfg, str(tmp_path))
    cfg = _latents_config(make_config(tiny_config), cache_dir)
    checkpointing.save_params(tmp_path / "other", params)
    cfg.checkpoint.init_from = str(tmp_path / "other")
    with pytest.raises(ValueError, match=r"config\.checkpoint\.init_from.*scripts\.cache_latents"):
        tasks.build(cfg, str(tmp_path))
    cfg.train.latent_cache = str(tmp_path / "none")
    with pytest.raises(FileNotFoundError, match="config.train.latent_cache"):
        tasks.build(cfg, str(tmp_path))


# issue 15: train.inputs='latents' without a cache directory, or for another task, is refused.
def test_latent_inputs_need_a_cache_and_the_world_model(tiny_config):
    from wow_jax import configuration

    tiny_config.train.inputs = "latents"
    with pytest.raises(ValueError, match="config.train.latent_cache"):
        configuration.validate(tiny_config, 8)
    tiny_config.train.latent_cache, tiny_config.train.task = "/cache", "vae"
    with pytest.raises(ValueError, match="config.train.task='vae'"):
        configuration.validate(tiny_config, 8)


# issue 15: scripts/aot_compile.py --inputs=latents compiles mode train's cache program: the same
# task (the DiT alone) on batches shaped as the cache's.
def test_aot_latents_program_is_mode_trains(setup, tiny_config, tmp_path):
    from scripts import aot_compile

    make_config, _, cache_dir = setup
    cfg = _latents_config(make_config(tiny_config), cache_dir)
    task, train_data, _ = tasks.build(cfg, str(tmp_path))
    batch = next(train_data)
    aot_shapes = aot_compile.train_shapes(cfg, "latents")
    assert {k: (v.shape, v.dtype) for k, v in batch.items()} == aot_shapes
    assert aot_compile.train_task(cfg, "latents").components == task.components == ("dit",)
