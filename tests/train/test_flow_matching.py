"""Flow-matching math against hand computations and diffusers' scheduler / training utilities."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler
from diffusers.training_utils import compute_loss_weighting_for_sd3

from wow_jax.train import flow_matching as fm


@pytest.mark.parametrize("shift", [1.0, 3.0, 5.0])
def test_shift_matches_diffusers_scheduler(shift):
    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=shift)
    unshifted = np.linspace(1.0, 1.0 / 1000, 1000, dtype=np.float32)  # scheduler's own grid
    ours = np.asarray(fm.shift_sigmas(jnp.asarray(unshifted), shift))
    np.testing.assert_allclose(ours, scheduler.sigmas.numpy()[:1000], rtol=1e-6, atol=1e-7)


def test_shift_hand_values():
    # shift 3 at s=0.5: 1.5 / (1 + 2 * 0.5) = 0.75; endpoints fixed.
    out = fm.shift_sigmas(jnp.array([0.0, 0.5, 1.0]), 3.0)
    np.testing.assert_allclose(out, [0.0, 0.75, 1.0], rtol=1e-7)


def test_add_noise_and_target_by_hand():
    x0 = jnp.arange(8.0).reshape(2, 4)
    noise = -jnp.ones((2, 4))
    sigma = jnp.array([0.25, 1.0])
    x_t = fm.add_noise(x0, noise, sigma)
    np.testing.assert_allclose(x_t[0], 0.75 * np.arange(4.0) - 0.25)
    np.testing.assert_allclose(x_t[1], -np.ones(4))
    np.testing.assert_allclose(fm.velocity_target(x0, noise), -1.0 - np.arange(8.0).reshape(2, 4))
    # x_t moves along the target: d x_t / d sigma = noise - x0.
    dx = jax.jacfwd(lambda s: fm.add_noise(x0, noise, s))(sigma)
    np.testing.assert_allclose(dx[0, :, 0], fm.velocity_target(x0, noise)[0])


@pytest.mark.parametrize("weighting", ["none", "sigma_sqrt", "cosmap"])
def test_loss_weight_matches_diffusers(weighting):
    sigma = np.linspace(0.05, 0.95, 7, dtype=np.float32)
    ref = compute_loss_weighting_for_sd3(weighting, torch.from_numpy(sigma)).numpy()
    np.testing.assert_allclose(fm.loss_weight(jnp.asarray(sigma), weighting), ref, rtol=1e-6)


def test_sample_sigmas_distributions():
    rng = jax.random.key(0)
    u = fm.sample_sigmas(rng, 20000, "uniform", 1.0)
    assert float(u.min()) > 0.0 and float(u.max()) < 1.0
    assert abs(float(u.mean()) - 0.5) < 0.01
    ln = fm.sample_sigmas(rng, 20000, "logit_normal", 1.0, logit_mean=0.0, logit_std=1.0)
    logits = np.log(ln / (1 - ln))
    assert abs(logits.mean()) < 0.03 and abs(logits.std() - 1.0) < 0.03
    shifted = fm.sample_sigmas(rng, 20000, "logit_normal", 5.0)
    np.testing.assert_allclose(shifted, fm.shift_sigmas(ln, 5.0), rtol=1e-6)
    assert float(shifted.mean()) > float(ln.mean()) + 0.2  # shift pushes towards noise
    with pytest.raises(ValueError, match="timestep sampling"):
        fm.sample_sigmas(rng, 2, "cosine", 1.0)


def test_weighted_mse_by_hand():
    pred = jnp.zeros((2, 2, 3))
    target = jnp.stack([jnp.ones((2, 3)), 2 * jnp.ones((2, 3))])
    weight = jnp.array([1.0, 0.5])
    np.testing.assert_allclose(fm.weighted_mse(pred, target, weight), (1.0 + 0.5 * 4.0) / 2)
    mask = jnp.array([1.0, 0.0])[None, :, None]  # only the first row counts
    target = target.at[:, 1].set(100.0)
    np.testing.assert_allclose(fm.weighted_mse(pred, target, weight, mask), (1.0 + 2.0) / 2)


def test_noisy_inputs_consistent(tiny_config):
    train_cfg = tiny_config.train
    x0 = jax.random.normal(jax.random.key(1), (3, 2, 4, 4, 16))
    out = fm.noisy_inputs(jax.random.key(2), x0, train_cfg)
    noise = out["target"] + x0
    np.testing.assert_allclose(out["x_t"], fm.add_noise(x0, noise, out["sigma"]), atol=1e-6)
    np.testing.assert_allclose(out["timesteps"], 1000 * out["sigma"], rtol=1e-6)
    assert out["x_t"].shape == x0.shape and out["weight"].shape == (3,)
