"""One entry point over the flow-matching solvers: `sample(solver, velocity_fn, noise, schedule)`.

The schedule (schedulers.make_schedule / from_config) fixes the sigmas and timesteps; the solver
only integrates over them, so every (solver, sigma grid) recipe runs through one of two loops.
"""

from wow_jax.sampling.euler import euler_sample
from wow_jax.sampling.schedulers import Schedule
from wow_jax.sampling.unipc import unipc_sample

SOLVERS = {"unipc": unipc_sample, "euler": euler_sample}


def sample(solver: str, velocity_fn, noise, schedule: Schedule, on_step=None):
    """Denoises `noise` [B, ...] with `solver` over `schedule` (call inside jit).

    velocity_fn(x [B, ...], t scalar timestep in [0, 1000]) -> velocity [B, ...]; on_step(i): an
    optional host callback after each step. Returns [B, ...] in noise.dtype.
    """
    return SOLVERS[solver](velocity_fn, noise, schedule, on_step=on_step)
