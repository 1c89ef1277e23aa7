"""Restatements (torch, float32 as the originals) of the two schedulers the recipes reproduce:

- `DiffSynthFlowMatch`: DiffSynth-Studio's FlowMatchScheduler (diffsynth/schedulers/flow_match.py
  at commit 3edf3583b1f08944cee837b94d9f84d669c2729c, the commit WoW's demo/README.md pins), with
  the arguments its WanVideoPipeline passes: FlowMatchScheduler(shift=5, sigma_min=0.0,
  extra_one_step=True), set_timesteps(steps, denoising_strength=1.0, shift=sigma_shift).
- `WanFlowUniPC`: FlowUniPCMultistepScheduler of the Wan2.1 repository (wan/utils/
  fm_solvers_unipc.py at commit 9737cba9c1c3c4d04b33fcad41c111989865d315) as WanI2V.generate and
  WanT2V.generate build it: (num_train_timesteps=1000, shift=1, use_dynamic_shifting=False), then
  set_timesteps(steps, shift=shift); defaults solver_order=2, 'bh2', predict_x0,
  lower_order_final, final_sigmas_type='zero'. Only the branches that configuration takes.
"""

import numpy as np
import torch


class DiffSynthFlowMatch:
    """set_timesteps and step of DiffSynth's FlowMatchScheduler (Wan setup, no inversion)."""

    def __init__(self, steps: int, shift: float, sigma_max=1.0, sigma_min=0.0):
        sigma_start = sigma_min + (sigma_max - sigma_min) * 1.0  # denoising_strength = 1.
        sigmas = torch.linspace(sigma_start, sigma_min, steps + 1)[:-1]  # extra_one_step.
        self.sigmas = shift * sigmas / (1 + (shift - 1) * sigmas)
        self.timesteps = self.sigmas * 1000

    def step(self, model_output, timestep, sample):
        timestep_id = torch.argmin((self.timesteps - timestep).abs())
        sigma = self.sigmas[timestep_id]
        last = timestep_id + 1 >= len(self.timesteps)
        sigma_ = 0 if last else self.sigmas[timestep_id + 1]
        return sample + model_output * (sigma_ - sigma)


def diffsynth_pipeline_loop(velocity, noise: np.ndarray, steps: int, shift: float, dtype):
    """WanVideoPipeline.__call__'s denoising loop around the scheduler, latents in float32: the
    DiT sees each timestep cast to the pipeline dtype (`timestep.unsqueeze(0).to(dtype)`), the
    step looks its sigma up by the float32 timestep."""
    scheduler = DiffSynthFlowMatch(steps, shift)
    x = torch.from_numpy(noise)
    for progress_id, timestep in enumerate(scheduler.timesteps):
        fed = timestep.unsqueeze(0).to(dtype)
        x = scheduler.step(velocity(x, fed.float()[0]), scheduler.timesteps[progress_id], x)
    return x.numpy()


def wan_repo_schedule(steps: int, shift: float):
    """FlowUniPCMultistepScheduler(shift=1).set_timesteps(steps, shift=shift) -> (sigmas [N + 1]
    float32 with a final 0, timesteps [N] int64)."""
    alphas = np.linspace(1, 1 / 1000, 1000)[::-1].copy()
    train = torch.from_numpy(1.0 - alphas).to(torch.float32)  # shift=1: unshifted.
    sigma_max, sigma_min = train[0].item(), train[-1].item()
    sigmas = np.linspace(sigma_max, sigma_min, steps + 1).copy()[:-1]
    sigmas = shift * sigmas / (1 + (shift - 1) * sigmas)
    timesteps = torch.from_numpy(sigmas * 1000).to(dtype=torch.int64)
    return np.concatenate([sigmas, [0]]).astype(np.float32), timesteps.numpy()


class WanFlowUniPC:
    """step() of Wan2.1's FlowUniPCMultistepScheduler (order 2, bh2, data prediction)."""

    def __init__(self, steps: int, shift: float):
        sigmas, self.timesteps = wan_repo_schedule(steps, shift)
        self.sigmas = torch.from_numpy(sigmas)
        self.model_outputs, self.last_sample = [None, None], None
        self.lower_order_nums, self.step_index, self.this_order = 0, 0, 1

    @staticmethod
    def _lambda(sigma):
        return torch.log(1 - sigma) - torch.log(sigma)

    @staticmethod
    def _b(hh, order):
        """b_i = h phi_i(hh) i! / B(h) for i = 1..order, B(h) = expm1(hh) ('bh2')."""
        b_h, h_phi_k, factorial_i, b = torch.expm1(hh), torch.expm1(hh) / hh - 1, 1, []
        for i in range(1, order + 1):
            b.append(h_phi_k * factorial_i / b_h)
            factorial_i *= i + 1
            h_phi_k = h_phi_k / hh - 1 / factorial_i
        return torch.tensor(b)

    def _predictor(self, x, order):  # multistep_uni_p_bh_update
        i, (m1, m0) = self.step_index, self.model_outputs
        sigma_t, sigma_s0 = self.sigmas[i + 1], self.sigmas[i]
        alpha_t, lambda_s0 = 1 - sigma_t, self._lambda(sigma_s0)
        h = self._lambda(sigma_t) - lambda_s0
        hh = -h
        x_t = sigma_t / sigma_s0 * x - alpha_t * torch.expm1(hh) * m0
        if order == 2:
            rk = (self._lambda(self.sigmas[i - 1]) - lambda_s0) / h
            pred_res = torch.einsum(
                "k,bkc...->bc...", torch.tensor([0.5]), ((m1 - m0) / rk)[:, None]
            )
            x_t = x_t - alpha_t * torch.expm1(hh) * pred_res
        return x_t

    def _corrector(self, model_t, x, order):  # multistep_uni_c_bh_update
        i, (m1, m0) = self.step_index, self.model_outputs
        sigma_t, sigma_s0 = self.sigmas[i], self.sigmas[i - 1]
        alpha_t, lambda_s0 = 1 - sigma_t, self._lambda(sigma_s0)
        h = self._lambda(sigma_t) - lambda_s0
        hh = -h
        b = self._b(hh, order)
        corr_res = 0
        if order == 1:
            rhos_c = torch.tensor([0.5])
        else:
            rk = (self._lambda(self.sigmas[i - 2]) - lambda_s0) / h
            rhos_c = torch.linalg.solve(
                torch.stack([torch.ones(2), torch.stack([rk, torch.tensor(1.0)])]), b
            )
            corr_res = torch.einsum("k,bkc...->bc...", rhos_c[:-1], ((m1 - m0) / rk)[:, None])
        x_t = sigma_t / sigma_s0 * x - alpha_t * torch.expm1(hh) * m0
        return x_t - alpha_t * torch.expm1(hh) * (corr_res + rhos_c[-1] * (model_t - m0))

    def step(self, model_output, sample):
        i = self.step_index
        converted = sample - self.sigmas[i] * model_output
        if i > 0 and self.last_sample is not None:
            sample = self._corrector(converted, self.last_sample, self.this_order)
        self.model_outputs = [self.model_outputs[1], converted]
        this_order = min(2, len(self.timesteps) - i)
        self.this_order = min(this_order, self.lower_order_nums + 1)
        self.last_sample = sample
        prev_sample = self._predictor(sample, self.this_order)
        self.lower_order_nums = min(self.lower_order_nums + 1, 2)
        self.step_index += 1
        return prev_sample


def wan_repo_loop(velocity, noise: np.ndarray, steps: int, shift: float):
    """WanI2V.generate's loop: the DiT sees the int64 timesteps, the scheduler steps in float32."""
    scheduler = WanFlowUniPC(steps, shift)
    x = torch.from_numpy(noise)
    for t in scheduler.timesteps:
        x = scheduler.step(velocity(x, torch.tensor(t)), x)
    return x.numpy()
