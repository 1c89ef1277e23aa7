"""One entry point over the flow-matching solvers: `sample(solver, velocity_fn, noise, ...)`."""

from wow_jax.sampling import schedulers
from wow_jax.sampling.euler import euler_sample
from wow_jax.sampling.unipc import unipc_sample

SOLVERS = {"unipc": unipc_sample, "euler": euler_sample}


def sample(
    solver: str, velocity_fn, noise, steps: int, shift: float, on_step=None, grid="diffusers"
):
    """Denoises `noise` [B, ...] with `solver` over `steps` shifted steps (call inside jit).

    velocity_fn(x [B, ...], t scalar timestep in [0, 1000]) -> velocity [B, ...]; grid: the UniPC
    sigma grid ('diffusers' or 'wan', see schedulers.unipc_schedule).
    """
    schedule = schedulers.make_schedule(solver, steps, shift, grid)
    return SOLVERS[solver](velocity_fn, noise, schedule, on_step=on_step)
