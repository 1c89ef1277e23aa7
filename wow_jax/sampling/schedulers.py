"""Sigma/timestep schedules of flow-matching samplers, with the flow shift.

Flow matching (rectified flow, as trained for Wan2.1) interpolates x_sigma = (1 - sigma) x0 +
sigma noise and the DiT predicts the velocity v = noise - x0 at timestep t = 1000 sigma. Sampling
walks sigma from ~1 down to 0. The flow shift `s` bends the schedule towards high noise:
sigma' = s sigma / (1 + (s - 1) sigma) (Wan2.1 uses s = 3 for 480p I2V, 5 for 720p/T2V).

A schedule is chosen by (solver, sigma grid); each pair reproduces one reference (`SCHEDULES`):
- ('unipc', 'diffusers'): UniPCMultistepScheduler(use_flow_sigmas=True, flow_shift=s,
  prediction_type='flow_prediction'), the solver of the Wan2.1 diffusers pipelines. Timesteps are
  integers (truncated 1000 sigma), as the DiT sees them there and in Wan2.1's FlowUniPC solver.
- ('unipc', 'wan'): FlowUniPCMultistepScheduler of the Wan2.1 repository (its own sigma grid).
- ('euler', 'diffusers'): FlowMatchEulerDiscreteScheduler(shift=s); float timesteps.
- ('euler', 'diffsynth'): DiffSynth-Studio's FlowMatchScheduler as its WanVideoPipeline sets it
  up (WoW's released inference); float timesteps.
`timestep_dtype` rounds the timesteps the DiT sees ('bfloat16': DiffSynth casts them to its
bfloat16 pipeline dtype before the DiT); the sigmas of the update stay float32.

A `Schedule` holds `sigmas` [N + 1] (last one 0) and `timesteps` [N] as host numpy arrays: they
are static per (steps, shift) and become constants of the jitted denoising loop.
"""

import dataclasses

import ml_collections
import ml_dtypes
import numpy as np

NUM_TRAIN_TIMESTEPS = 1000  # Timestep = NUM_TRAIN_TIMESTEPS * sigma, the DiT's time input scale.
_UNIT_SIGMA_EPS = 1e-6  # diffusers lowers a first sigma of exactly 1 by this (keeps log finite).


@dataclasses.dataclass(frozen=True)
class Schedule:
    """sigmas: [N + 1] float32, decreasing, sigmas[-1] = 0; timesteps: [N] float32 in [0, 1000]."""

    sigmas: np.ndarray
    timesteps: np.ndarray

    @property
    def num_steps(self) -> int:
        return len(self.timesteps)


def shift_sigmas(sigmas, shift: float):
    """Flow shift: sigma -> shift sigma / (1 + (shift - 1) sigma); identity for shift = 1."""
    return shift * sigmas / (1 + (shift - 1) * sigmas)


def _check(steps: int, shift: float) -> None:
    if int(steps) != steps or steps < 1:
        raise ValueError(f"sampling steps must be a positive integer, got {steps!r}")
    if shift <= 0:
        raise ValueError(f"flow shift must be > 0 (1 = no shift; Wan uses 3 or 5), got {shift}")


def unipc_schedule(steps: int, shift: float, grid: str = "diffusers") -> Schedule:
    """Schedule of the flow UniPC solver, with a final sigma 0 and timesteps int(1000 sigma).

    grid 'diffusers' (UniPCMultistepScheduler): sigmas linspace(1, 1/1000, N + 1)[:-1], shifted,
    a first sigma of 1 lowered by 1e-6. grid 'wan' (FlowUniPCMultistepScheduler of the Wan2.1
    repository): linspace(0.999, 0, N + 1)[:-1], shifted (its training sigmas 1 - linspace(1,
    1/1000) run from 0.999 to 0).
    """
    _check(steps, shift)
    if grid == "diffusers":
        sigmas = np.linspace(1.0, 1.0 / NUM_TRAIN_TIMESTEPS, steps + 1)[:-1]
    elif grid == "wan":
        sigma_max = float(np.float32(1.0 - 1.0 / NUM_TRAIN_TIMESTEPS))
        sigmas = np.linspace(sigma_max, 0.0, steps + 1)[:-1]
    else:
        raise ValueError(f"UniPC sigma grid must be 'diffusers' or 'wan', got {grid!r}")
    sigmas = shift_sigmas(sigmas, shift)
    if grid == "diffusers" and abs(sigmas[0] - 1.0) < _UNIT_SIGMA_EPS:
        sigmas[0] -= _UNIT_SIGMA_EPS
    timesteps = (sigmas * NUM_TRAIN_TIMESTEPS).astype(np.int64).astype(np.float32)
    sigmas = np.concatenate([sigmas, [0.0]]).astype(np.float32)
    return Schedule(sigmas=sigmas, timesteps=timesteps)


def euler_schedule(steps: int, shift: float) -> Schedule:
    """Schedule of diffusers' FlowMatchEulerDiscreteScheduler(shift): N timesteps evenly spaced
    between the (already shifted) training sigma range, shifted again, with a final sigma 0."""
    _check(steps, shift)
    train_sigmas = np.linspace(1, NUM_TRAIN_TIMESTEPS, NUM_TRAIN_TIMESTEPS, dtype=np.float32)
    train_sigmas = shift_sigmas(train_sigmas[::-1] / np.float32(NUM_TRAIN_TIMESTEPS), shift)
    train_sigmas = train_sigmas.astype(np.float32)
    sigma_max, sigma_min = float(train_sigmas[0]), float(train_sigmas[-1])
    sigmas = np.linspace(sigma_max * NUM_TRAIN_TIMESTEPS, sigma_min * NUM_TRAIN_TIMESTEPS, steps)
    sigmas = shift_sigmas(sigmas / NUM_TRAIN_TIMESTEPS, shift).astype(np.float32)
    timesteps = sigmas * np.float32(NUM_TRAIN_TIMESTEPS)
    sigmas = np.concatenate([sigmas, np.zeros(1, np.float32)])
    return Schedule(sigmas=sigmas, timesteps=timesteps.astype(np.float32))


def diffsynth_schedule(steps: int, shift: float) -> Schedule:
    """Schedule of DiffSynth's FlowMatchScheduler(shift, sigma_min=0, extra_one_step=True), as
    WanVideoPipeline builds it: sigmas linspace(1, 0, N + 1)[:-1], shifted, a final 0 (the last
    Euler step goes to sigma 0); float timesteps 1000 sigma."""
    _check(steps, shift)
    sigmas = shift_sigmas(np.linspace(1.0, 0.0, steps + 1)[:-1], shift).astype(np.float32)
    timesteps = sigmas * np.float32(NUM_TRAIN_TIMESTEPS)
    return Schedule(sigmas=np.concatenate([sigmas, np.zeros(1, np.float32)]), timesteps=timesteps)


# (solver, sigma grid) -> (the reference it reproduces, schedule builder (steps, shift)).
SCHEDULES = {
    ("unipc", "diffusers"): (
        "diffusers UniPCMultistepScheduler (flow sigmas, bh2, order 2)",
        lambda steps, shift: unipc_schedule(steps, shift, "diffusers"),
    ),
    ("unipc", "wan"): (
        "Wan2.1 FlowUniPCMultistepScheduler (bh2, order 2)",
        lambda steps, shift: unipc_schedule(steps, shift, "wan"),
    ),
    ("euler", "diffusers"): ("diffusers FlowMatchEulerDiscreteScheduler", euler_schedule),
    ("euler", "diffsynth"): ("DiffSynth FlowMatchScheduler (Euler)", diffsynth_schedule),
}
TIMESTEP_DTYPES = {"float32": np.float32, "bfloat16": ml_dtypes.bfloat16}


def grids(solver: str) -> tuple[str, ...]:
    """The sigma grids `solver` has a reference schedule for."""
    return tuple(grid for s, grid in SCHEDULES if s == solver)


def check_recipe(solver: str, grid: str, timestep_dtype: str) -> None:
    """ValueError naming the config key unless (solver, grid, timestep_dtype) is a known recipe."""
    solvers = sorted({s for s, _ in SCHEDULES})
    if solver not in solvers:
        raise ValueError(f"config.sample.solver must be one of {solvers}, got {solver!r}")
    if (solver, grid) not in SCHEDULES:
        raise ValueError(
            f"config.sample.sigma_grid must be one of {grids(solver)} for solver {solver!r}, "
            f"got {grid!r}"
        )
    if timestep_dtype not in TIMESTEP_DTYPES:
        raise ValueError(
            f"config.sample.timestep_dtype must be one of {tuple(TIMESTEP_DTYPES)}, "
            f"got {timestep_dtype!r}"
        )


def make_schedule(
    solver: str, steps: int, shift: float, grid: str, timestep_dtype: str = "float32"
) -> Schedule:
    """The schedule of (solver, grid) (`SCHEDULES`), its timesteps rounded to timestep_dtype."""
    check_recipe(solver, grid, timestep_dtype)
    schedule = SCHEDULES[solver, grid][1](steps, shift)
    rounded = schedule.timesteps.astype(TIMESTEP_DTYPES[timestep_dtype]).astype(np.float32)
    return Schedule(sigmas=schedule.sigmas, timesteps=rounded)


def from_config(sample_cfg: ml_collections.ConfigDict) -> Schedule:
    """The schedule config.sample describes (solver, sigma_grid, steps, shift, timestep_dtype)."""
    c = sample_cfg
    return make_schedule(c.solver, c.steps, c.shift, c.sigma_grid, c.timestep_dtype)


def describe(sample_cfg: ml_collections.ConfigDict) -> str:
    """One line naming the reference scheduler and the recipe of config.sample."""
    c = sample_cfg
    return (
        f"{SCHEDULES[c.solver, c.sigma_grid][0]}: solver={c.solver} sigma_grid={c.sigma_grid} "
        f"steps={c.steps} shift={c.shift} timestep_dtype={c.timestep_dtype}"
    )
