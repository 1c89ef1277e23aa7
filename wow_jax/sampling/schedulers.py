"""Sigma/timestep schedules of flow-matching samplers, with the flow shift.

Flow matching (rectified flow, as trained for Wan2.1) interpolates x_sigma = (1 - sigma) x0 +
sigma noise and the DiT predicts the velocity v = noise - x0 at timestep t = 1000 sigma. Sampling
walks sigma from ~1 down to 0. The flow shift `s` bends the schedule towards high noise:
sigma' = s sigma / (1 + (s - 1) sigma) (Wan2.1 uses s = 3 for 480p I2V, 5 for 720p/T2V).

Both schedules reproduce diffusers exactly (float32 values); UniPC also has Wan2.1's own grid:
- `unipc_schedule`: UniPCMultistepScheduler(use_flow_sigmas=True, flow_shift=s,
  prediction_type='flow_prediction'), the solver of the Wan2.1 diffusers pipelines. Timesteps are
  integers (truncated 1000 sigma), as the DiT sees them there and in Wan2.1's FlowUniPC solver.
- `euler_schedule`: FlowMatchEulerDiscreteScheduler(shift=s); float timesteps.

A `Schedule` holds `sigmas` [N + 1] (last one 0) and `timesteps` [N] as host numpy arrays: they
are static per (steps, shift) and become constants of the jitted denoising loop.
"""

import dataclasses

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


def make_schedule(solver: str, steps: int, shift: float, grid: str = "diffusers") -> Schedule:
    """The schedule of `solver` ('unipc' or 'euler'); `grid` picks the UniPC sigma grid."""
    if solver == "unipc":
        return unipc_schedule(steps, shift, grid)
    if solver == "euler":
        return euler_schedule(steps, shift)
    raise ValueError(f"solver must be 'unipc' or 'euler', got {solver!r}")
