"""World-model and VAE tasks through the loop: loss goes down on a small fixed dataset."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from wow_jax.sampling import conditioning
from wow_jax.train import loop, tasks
from wow_jax.train.array_data import ArrayIterator
from wow_jax.train.tasks.vae import VAETask
from wow_jax.train.tasks.world_model import WorldModelTask


def _videos(n, frames, size, seed=0):
    """Smooth moving blobs in [-1, 1]: [n, frames, size, size, 3]."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    out = np.zeros((n, frames, size, size, 3), np.float32)
    for i in range(n):
        cx, cy, vx, vy = rng.uniform(0.2, 0.8, 2).tolist() + rng.uniform(-0.05, 0.05, 2).tolist()
        color = rng.uniform(-1, 1, 3)
        for t in range(frames):
            blob = np.exp(-((xx - cx - vx * t) ** 2 + (yy - cy - vy * t) ** 2) / 0.02)
            out[i, t] = -0.5 + blob[..., None] * (color + 0.5)
    return np.clip(out, -1, 1)


def _i2v_config(tiny_config):
    cfg = tiny_config
    cfg.model.dit.variant, cfg.model.dit.in_channels = "i2v", 36
    cfg.train.steps, cfg.train.warmup_steps, cfg.train.learning_rate = 40, 3, 4e-3
    cfg.train.schedule, cfg.train.log_every, cfg.train.tensorboard = "constant", 10, False
    cfg.train.text_dropout = 0.2
    cfg.checkpoint.save_every = 40
    cfg.data.batch_size = 4
    cfg.mesh.fsdp, cfg.mesh.data = 2, 2
    cfg.mesh.tensor = 2
    return cfg


def _mean_loss(task, params, batch, n=6):
    loss = jax.jit(lambda p, r: task.loss(p, batch, r)[0])
    return float(np.mean([loss(params, jax.random.PRNGKey(100 + i)) for i in range(n)]))


def _init(task, rng):
    return loop.nn.unbox(jax.jit(task.init_params)(rng))


def cached_batch(cfg, n=4, seed=0) -> dict:
    """A latent/text/image cache as the demo writes it (normalised latents [n, t, h, w, z])."""
    rng = np.random.default_rng(seed)
    t = (cfg.data.num_frames - 1) // 4 + 1
    h = cfg.data.height // 8
    z = cfg.model.vae.z_dim
    smooth = np.cumsum(rng.normal(size=(n, t, h, h, z)), axis=1) / 2
    return {
        "latents": smooth.astype(np.float32),
        "cond_latents": np.repeat(smooth[:, :1], t, axis=1).astype(np.float32),
        "text_states": rng.normal(size=(n, 6, cfg.model.text.dim)).astype(np.float32),
        "image_tokens": rng.normal(size=(n, 5, cfg.model.clip.width)).astype(np.float32),
    }


def test_world_model_i2v_overfits_and_keeps_frozen_params(tiny_config, tmp_path):
    cfg = _i2v_config(tiny_config)
    data = cached_batch(cfg)
    null = np.zeros((6, cfg.model.text.dim), np.float32)
    task = WorldModelTask(cfg, null_text_states=null, components=("dit", "clip"))
    result = loop.train(cfg, str(tmp_path), task=task, train_data=ArrayIterator(data, 4))
    params = result.state.params
    assert sorted(params) == ["clip", "dit"]
    init = _init(task, jax.random.split(jax.random.PRNGKey(0))[0])
    for a, b in zip(jax.tree.leaves(params["clip"]), jax.tree.leaves(init["clip"]), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)  # frozen (default train.freeze)
    batch = {k: jnp.asarray(v) for k, v in data.items()}
    before, after = _mean_loss(task, init, batch), _mean_loss(task, params, batch)
    assert after < 0.75 * before, (before, after)


def test_i2v_input_layout():
    mask = conditioning.frame_mask(9, 4)
    np.testing.assert_array_equal(mask, [[1, 1, 1, 1], [0, 0, 0, 0], [0, 0, 0, 0]])
    cond = jnp.ones((2, 3, 2, 2, 16))
    out = conditioning.i2v_condition(cond, 9, 4)
    assert out.shape == (2, 3, 2, 2, 20)
    np.testing.assert_array_equal(out[:, 0, ..., :4], 1.0)
    np.testing.assert_array_equal(out[:, 1:, ..., :4], 0.0)
    np.testing.assert_array_equal(out[..., 4:], 1.0)
    frame = jnp.full((2, 8, 8, 3), 0.5)
    video = conditioning.conditioning_video(frame, 5)
    assert video.shape == (2, 5, 8, 8, 3)
    np.testing.assert_array_equal(video[:, 0], 0.5)
    np.testing.assert_array_equal(video[:, 1:], 0.0)


def test_text_dropout_uses_the_empty_prompt(tiny_config):
    cfg = _i2v_config(tiny_config)
    task = WorldModelTask(cfg, components=("dit", "text"))
    params = _init(task, jax.random.PRNGKey(0))
    ids = jnp.full((2, cfg.model.text.text_len), 7, jnp.int32)
    batch = {"token_ids": ids, "text_mask": jnp.ones_like(ids)}
    states = task.text_states(params, batch, jnp.array([True, False]))
    null_ids, null_mask = (jnp.asarray(x)[None] for x in task.null_tokens)
    empty = task.text.module.apply({"params": params["text"]}, null_ids, null_mask)
    np.testing.assert_allclose(states[0], empty[0], atol=1e-6)
    assert not np.allclose(states[1], empty[0])
    assert np.all(np.asarray(states[0, 1:]) == 0)  # only the EOS position is non-zero


def test_vae_overfits(tiny_config, tmp_path):
    cfg = tiny_config
    cfg.train.task, cfg.train.steps, cfg.train.warmup_steps = "vae", 16, 2
    cfg.train.learning_rate, cfg.train.schedule, cfg.train.tensorboard = 5e-3, "constant", False
    cfg.checkpoint.save_every, cfg.data.batch_size = 16, 8
    cfg.data.height = cfg.data.width = 16
    videos = _videos(8, cfg.data.num_frames, cfg.data.height, seed=3)
    data = ArrayIterator({"video": videos}, 8)
    result = loop.train(cfg, str(tmp_path), task=VAETask(cfg), train_data=data)
    losses = [result.losses[s] for s in sorted(result.losses)]
    assert np.mean(losses[-3:]) < 0.5 * np.mean(losses[:3]), losses


# issue 14: mode train with no tokenizer collected the whole Meta-World dataset, then failed.
def test_a_missing_tokenizer_is_refused_before_any_data_work(tiny_config, tmp_path):
    cfg = tiny_config
    cfg.train.task = "world_model"
    cfg.model.text.tokenizer_path = ""
    cfg.data.source = "metaworld"
    with pytest.raises(ValueError, match="tokenizer_path is empty"):
        tasks.build(cfg, str(tmp_path))
    assert list(tmp_path.iterdir()) == []  # Nothing collected.
