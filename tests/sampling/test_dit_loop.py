"""The jitted I2V sampling loop with the real Flax DiT (CFG + UniPC / Euler) against the same loop
in diffusers (WanTransformer3DModel + its scheduler, as WanImageToVideoPipeline steps it)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler

from tests.models import dit_torch
from wow_jax.models import dit
from wow_jax.sampling import guidance, schedulers, solvers


@pytest.mark.parametrize("solver", ["unipc", "euler"])
def test_i2v_cfg_loop_matches_diffusers(tiny_config, solver):
    cfg = dit_torch.dit_config(tiny_config.model.dit, "i2v")
    model = dit_torch.torch_model(cfg)
    params = dit_torch.flax_params(cfg, dit_torch.state_dict_numpy(model))
    x = dit_torch.inputs(cfg, batch=1, frames=2, height=4, width=4)
    rng = np.random.default_rng(3)
    noise = rng.standard_normal((1, 2, 4, 4, 16)).astype(np.float32)
    cond = x["latents"][..., 16:]  # Mask + conditioning latent channels.
    negative = rng.standard_normal(x["text_states"].shape).astype(np.float32)
    steps, shift, scale = 4, 3.0, 5.0

    module = dit.create(cfg)

    @jax.jit
    def run(noise):
        def model_fn(z, t, states):
            reps = z.shape[0]
            inputs = jnp.concatenate([z, jnp.tile(cond, (reps, 1, 1, 1, 1))], -1)
            tokens = jnp.tile(x["image_tokens"], (reps, 1, 1))
            return module.apply({"params": params}, inputs, jnp.full((reps,), t), states, tokens)

        velocity = guidance.guided_velocity(model_fn, x["text_states"], negative, scale)
        schedule = schedulers.make_schedule(solver, steps, shift, "diffusers")
        return solvers.sample(solver, velocity, noise, schedule)

    if solver == "unipc":
        scheduler = UniPCMultistepScheduler(
            prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=shift
        )
    else:
        scheduler = FlowMatchEulerDiscreteScheduler(shift=shift)
    scheduler.set_timesteps(steps)
    cf = lambda a: torch.from_numpy(np.moveaxis(np.asarray(a), -1, 1).copy())  # noqa: E731
    latents, t_cond = cf(noise), cf(cond)
    text, neg = torch.from_numpy(x["text_states"]), torch.from_numpy(negative)
    image = torch.from_numpy(x["image_tokens"])
    with torch.no_grad():
        for t in scheduler.timesteps:
            inp, ts = torch.cat([latents, t_cond], 1), t.expand(1)
            pos = model(inp, ts, text, encoder_hidden_states_image=image, return_dict=False)[0]
            unc = model(inp, ts, neg, encoder_hidden_states_image=image, return_dict=False)[0]
            latents = scheduler.step(unc + scale * (pos - unc), t, latents, return_dict=False)[0]
    want = latents.permute(0, 2, 3, 4, 1).numpy()
    got = np.asarray(run(noise))
    err = dit_torch.rel_err(got, want)
    print(f"{solver} rel err {err:.2e}")
    assert err < 1e-5
    assert np.abs(got - noise).max() > 0.1
