"""Schedules and solver steps against diffusers' UniPC (flow) and FlowMatchEuler schedulers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler
from jax.sharding import NamedSharding, PartitionSpec

from configs import wan1_3b, wan_i2v14b, wow14b
from tests.sampling import reference_schedulers
from wow_jax.sampling import euler, schedulers, solvers, unipc


def diffusers_unipc(shift):
    # As Wan2.1 diffusers checkpoints configure it (scheduler_config.json, Wan2.1-*-Diffusers).
    return UniPCMultistepScheduler(
        num_train_timesteps=1000,
        prediction_type="flow_prediction",
        use_flow_sigmas=True,
        flow_shift=shift,
        solver_order=2,
        solver_type="bh2",
        predict_x0=True,
        lower_order_final=True,
        final_sigmas_type="zero",
    )


@pytest.mark.parametrize("steps", [10, 30, 50])
@pytest.mark.parametrize("shift", [3.0, 5.0])
def test_unipc_schedule_matches_diffusers(steps, shift):
    ref = diffusers_unipc(shift)
    ref.set_timesteps(steps)
    ours = schedulers.unipc_schedule(steps, shift)
    np.testing.assert_allclose(ours.sigmas, ref.sigmas.numpy(), rtol=0, atol=1e-6)
    np.testing.assert_allclose(ours.timesteps, ref.timesteps.numpy(), rtol=0, atol=1e-6)
    assert ours.sigmas.shape == (steps + 1,) and ours.sigmas[-1] == 0


@pytest.mark.parametrize("steps", [10, 50])
def test_unipc_wan_grid_matches_wan_repository(steps):
    sigmas, timesteps = reference_schedulers.wan_repo_schedule(steps, 5.0)
    ours = schedulers.unipc_schedule(steps, 5.0, grid="wan")
    np.testing.assert_allclose(ours.sigmas, sigmas, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(ours.timesteps, timesteps)
    assert ours.timesteps[0] == 999 and ours.sigmas[0] < 0.9999  # Differs from the diffusers grid.


# issue 16: wan_i2v14b and wan1_3b sample as the Wan2.1 repository does (FlowUniPC, its grid).
@pytest.mark.parametrize("module", [wan_i2v14b, wan1_3b])
def test_wan_configs_sample_as_the_wan_repository(module):
    sample = module.get_config().sample
    schedule = schedulers.from_config(sample)
    sigmas, timesteps = reference_schedulers.wan_repo_schedule(sample.steps, sample.shift)
    np.testing.assert_allclose(schedule.sigmas, sigmas, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(schedule.timesteps, timesteps)
    w, bias = fake_model_weights()
    noise = np.random.default_rng(3).normal(size=(2, 3, 5, 4)).astype(np.float32)
    expected = reference_schedulers.wan_repo_loop(
        torch_velocity(w, bias), noise, sample.steps, sample.shift
    )
    run = jax.jit(lambda n: solvers.sample(sample.solver, jax_velocity(w, bias), n, schedule))
    got = np.asarray(run(noise))
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
    assert np.abs(got - noise).max() > 0.1  # The loop moved the sample.


# issue 16: wow14b samples as WoW's release (DiffSynth FlowMatchScheduler, Euler, bf16 timesteps).
def test_wow14b_schedule_matches_diffsynth():
    sample = wow14b.get_config().sample
    ref = reference_schedulers.DiffSynthFlowMatch(sample.steps, sample.shift)
    schedule = schedulers.from_config(sample)
    np.testing.assert_allclose(schedule.sigmas[:-1], ref.sigmas.numpy(), rtol=0, atol=1e-6)
    assert schedule.sigmas[-1] == 0 and schedule.num_steps == 50
    fed = ref.timesteps.to(torch.bfloat16).float().numpy()  # What the pipeline's DiT sees.
    np.testing.assert_array_equal(schedule.timesteps, fed)
    unrounded = schedulers.make_schedule("euler", sample.steps, sample.shift, "diffsynth")
    np.testing.assert_allclose(unrounded.timesteps, ref.timesteps.numpy(), rtol=1e-6, atol=0)
    assert np.abs(unrounded.timesteps - schedule.timesteps).max() > 1  # bf16 rounding matters.
    diffusers_grid = schedulers.make_schedule("euler", sample.steps, sample.shift, "diffusers")
    assert np.abs(diffusers_grid.sigmas - schedule.sigmas).max() > 1e-3  # Another grid.


# issue 16: a 10-step sample of wow14b's recipe equals DiffSynth's loop to 1e-6.
def test_wow14b_sample_matches_diffsynth_loop():
    sample = wow14b.get_config().sample
    w, bias = fake_model_weights()
    noise = np.random.default_rng(4).normal(size=(2, 3, 5, 4)).astype(np.float32)
    expected = reference_schedulers.diffsynth_pipeline_loop(
        torch_velocity(w, bias), noise, 10, sample.shift, torch.bfloat16
    )
    schedule = schedulers.make_schedule(
        sample.solver, 10, sample.shift, sample.sigma_grid, sample.timestep_dtype
    )
    run = jax.jit(lambda n: solvers.sample(sample.solver, jax_velocity(w, bias), n, schedule))
    got = np.asarray(run(noise))
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
    assert np.abs(got - noise).max() > 0.1


@pytest.mark.parametrize("steps", [10, 30, 50])
@pytest.mark.parametrize("shift", [3.0, 5.0])
def test_euler_schedule_matches_diffusers(steps, shift):
    ref = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=shift)
    ref.set_timesteps(steps)
    ours = schedulers.euler_schedule(steps, shift)
    np.testing.assert_allclose(ours.sigmas, ref.sigmas.numpy(), rtol=0, atol=1e-6)
    np.testing.assert_allclose(ours.timesteps, ref.timesteps.numpy(), rtol=0, atol=1e-4)


def fake_model_weights(channels=4, seed=0):
    """A fixed 'model': v = tanh(x @ w + t / 1000 * bias), the same in numpy, torch and jax."""
    rng = np.random.default_rng(seed)
    w = (rng.normal(size=(channels, channels)) / np.sqrt(channels)).astype(np.float32)
    bias = rng.normal(size=(channels,)).astype(np.float32)
    return w, bias


def jax_velocity(w, bias):
    return lambda x, t: jnp.tanh(x @ w + t / 1000.0 * bias)


def torch_velocity(w, bias):
    w, bias = torch.from_numpy(w), torch.from_numpy(bias)
    return lambda x, t: torch.tanh(x @ w + t.float() / 1000.0 * bias)


def reference_loop(scheduler, velocity, noise, steps):
    scheduler.set_timesteps(steps)
    x = torch.from_numpy(noise)
    for t in scheduler.timesteps:
        x = scheduler.step(velocity(x, t), t, x, return_dict=False)[0]
    return x.numpy()


@pytest.mark.parametrize("steps,shift", [(5, 3.0), (5, 5.0), (2, 5.0), (12, 5.0)])
def test_unipc_steps_match_diffusers(steps, shift):
    w, bias = fake_model_weights()
    noise = np.random.default_rng(1).normal(size=(2, 3, 5, 4)).astype(np.float32)
    expected = reference_loop(diffusers_unipc(shift), torch_velocity(w, bias), noise, steps)
    schedule = schedulers.unipc_schedule(steps, shift)
    run = jax.jit(lambda n: unipc.unipc_sample(jax_velocity(w, bias), n, schedule))
    got = np.asarray(run(noise))
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
    assert np.abs(got - noise).max() > 0.1  # The loop moved the sample.


@pytest.mark.parametrize("steps,shift", [(5, 3.0), (10, 5.0)])
def test_euler_steps_match_diffusers(steps, shift):
    w, bias = fake_model_weights()
    noise = np.random.default_rng(2).normal(size=(2, 3, 5, 4)).astype(np.float32)
    ref = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=shift)
    expected = reference_loop(ref, torch_velocity(w, bias), noise, steps)
    schedule = schedulers.euler_schedule(steps, shift)
    got = jax.jit(lambda n: euler.euler_sample(jax_velocity(w, bias), n, schedule))(noise)
    np.testing.assert_allclose(np.asarray(got), expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("solver", ["unipc", "euler"])
def test_sharded_over_8_devices_equals_one_device(solver):
    w, bias = fake_model_weights()
    noise = jax.random.normal(jax.random.key(0), (8, 8, 4))  # [B, L, C]
    schedule = schedulers.make_schedule(solver, 6, 5.0, "diffusers")
    fn = jax.jit(lambda n: solvers.sample(solver, jax_velocity(w, bias), n, schedule))
    single = np.asarray(fn(jax.device_put(noise, jax.devices()[0])))
    mesh = jax.make_mesh((8,), ("shard",))
    for spec in (PartitionSpec("shard"), PartitionSpec(None, "shard")):  # Batch, then length.
        sharded = fn(jax.device_put(noise, NamedSharding(mesh, spec)))
        assert len(sharded.sharding.device_set) == 8
        np.testing.assert_allclose(np.asarray(sharded), single, rtol=0, atol=1e-6)
    again = np.asarray(fn(jax.device_put(noise, jax.devices()[0])))
    np.testing.assert_array_equal(again, single)  # Deterministic.


def test_bad_schedule_arguments():
    with pytest.raises(ValueError, match="positive integer"):
        schedulers.unipc_schedule(0, 5.0)
    with pytest.raises(ValueError, match="shift must be > 0"):
        schedulers.euler_schedule(10, 0.0)
    with pytest.raises(ValueError, match=r"solver must be one of \['euler', 'unipc'\]"):
        schedulers.make_schedule("ddim", 10, 5.0, "diffusers")
    with pytest.raises(ValueError, match=r"sigma_grid must be one of \('diffusers', 'diffsynth'\)"):
        schedulers.make_schedule("euler", 10, 5.0, "wan")
