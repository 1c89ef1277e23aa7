"""Optimizer factory: schedules, freezing by path, clipping, accumulation, EMA."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from wow_jax.train import optimizer as opt_lib


@pytest.fixture
def train_cfg(tiny_config):
    cfg = tiny_config.train
    cfg.steps, cfg.warmup_steps, cfg.learning_rate = 100, 10, 1e-3
    cfg.freeze, cfg.weight_decay, cfg.clip_norm = "", 0.0, 1e6
    return cfg


def test_schedules(train_cfg):
    cosine = opt_lib.make_schedule(train_cfg)
    np.testing.assert_allclose([cosine(0), cosine(5), cosine(10)], [0.0, 5e-4, 1e-3], rtol=1e-6)
    np.testing.assert_allclose(cosine(55), 0.5e-3, rtol=1e-5)  # half-way down the cosine
    np.testing.assert_allclose(cosine(100), 0.0, atol=1e-9)
    train_cfg.schedule = "constant"
    constant = opt_lib.make_schedule(train_cfg)
    np.testing.assert_allclose([constant(5), constant(10), constant(99)], [5e-4, 1e-3, 1e-3])


def test_freeze_by_path_regex(train_cfg):
    params = {"dit": {"w": jnp.ones(3)}, "vae": {"enc": {"w": jnp.ones(2)}}, "text": jnp.ones(1)}
    labels = opt_lib.freeze_labels(params, "^(vae|text)")
    assert labels == {"dit": {"w": "trainable"}, "vae": {"enc": {"w": "frozen"}}, "text": "frozen"}
    train_cfg.freeze = "^(vae|text)"
    tx = opt_lib.make_optimizer(train_cfg, params)
    grads = jax.tree.map(jnp.ones_like, params)
    updates, _ = tx.update(grads, tx.init(params), params)
    assert float(jnp.abs(updates["dit"]["w"]).sum()) == 0.0  # warmup step 0: lr 0
    updates, _ = tx.update(grads, tx.update(grads, tx.init(params), params)[1], params)
    assert float(jnp.abs(updates["dit"]["w"]).min()) > 0
    assert float(jnp.abs(updates["vae"]["enc"]["w"]).max()) == 0.0
    assert float(jnp.abs(updates["text"]).max()) == 0.0
    train_cfg.freeze = "."
    with pytest.raises(ValueError, match="freezes every parameter"):
        opt_lib.make_optimizer(train_cfg, params)


def test_clipping_bounds_the_update_norm(train_cfg):
    train_cfg.clip_norm, train_cfg.warmup_steps, train_cfg.schedule = 0.5, 0, "constant"
    params = {"w": jnp.zeros(4)}
    tx = opt_lib.make_optimizer(train_cfg, params)
    clip = optax.clip_by_global_norm(0.5)
    grads = {"w": jnp.array([3.0, 4.0, 0.0, 0.0])}
    clipped, _ = clip.update(grads, clip.init(params))
    np.testing.assert_allclose(optax.tree.norm(clipped), 0.5, rtol=1e-6)
    ref = optax.adamw(1e-3, weight_decay=0.0)
    want, _ = ref.update(clipped, ref.init(params), params)
    got, _ = tx.update(grads, tx.init(params), params)
    np.testing.assert_allclose(got["w"], want["w"], rtol=1e-6)


def test_grad_accumulation_equals_the_big_batch(train_cfg):
    train_cfg.warmup_steps, train_cfg.schedule = 0, "constant"
    x = jax.random.normal(jax.random.key(0), (8, 3))
    y = x @ jnp.array([1.0, -2.0, 0.5])
    params = {"w": jnp.zeros(3)}

    def grad(p, xb, yb):
        return jax.grad(lambda p: jnp.mean(jnp.square(xb @ p["w"] - yb)))(p)

    big = opt_lib.make_optimizer(train_cfg, params)
    want, _ = big.update(grad(params, x, y), big.init(params), params)
    train_cfg.grad_accum = 2
    acc = opt_lib.make_optimizer(train_cfg, params)
    state = acc.init(params)
    first, state = acc.update(grad(params, x[:4], y[:4]), state, params)
    assert float(jnp.abs(first["w"]).max()) == 0.0  # no update after the first micro-batch
    second, state = acc.update(grad(params, x[4:], y[4:]), state, params)
    np.testing.assert_allclose(second["w"], want["w"], rtol=1e-5)


def test_ema_warmup_and_decay():
    ema, params = {"w": jnp.zeros(2)}, {"w": jnp.ones(2)}
    out = opt_lib.update_ema(ema, params, 0.99, jnp.asarray(0))
    np.testing.assert_allclose(out["w"], 1 - 0.1, rtol=1e-6)  # decay min(0.99, 1/10) = 0.1
    out = opt_lib.update_ema(ema, params, 0.99, jnp.asarray(10_000))
    np.testing.assert_allclose(out["w"], 0.01, rtol=1e-4)
