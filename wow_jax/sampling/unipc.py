"""UniPC multistep solver (order 2, B(h) = 'bh2', data prediction) for flow-matching velocities.

The reference is diffusers' UniPCMultistepScheduler(use_flow_sigmas=True, solver_order=2,
solver_type='bh2', prediction_type='flow_prediction', lower_order_final=True), which is the
FlowUniPCMultistepScheduler of Wan2.1. Per step i with sigma_i, the model velocity v_i becomes a
data prediction m_i = x_i - sigma_i v_i; the UniC corrector refines x_i with m_i (from step 1
on), then the UniP predictor steps to sigma_{i+1}. Orders: 1 at the first step (warm-up) and the
last step (lower_order_final), 2 in between. With alpha = 1 - sigma, lambda = log(alpha/sigma).

Every scalar of those updates depends on the schedule only, so `unipc_tables` computes them once
on the host (float64) and the loop is a fixed linear combination per step:

    corrector: x_c = k x + a_c x_last + b_c m_{i-1} + c_c (m_{i-2} - m_{i-1}) + d_c (m_i - m_{i-1})
    predictor: x_{i+1} = a_p x_c + b_p m_i + c_p (m_{i-1} - m_i)

`unipc_sample` runs all steps in one `lax.fori_loop` carrying (x, x_last, m_{i-1}, m_{i-2});
latents may be sharded (the arithmetic is elementwise).
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from wow_jax.sampling.schedulers import Schedule

SOLVER_ORDER = 2
_COEFFS = ("k", "a_c", "b_c", "c_c", "d_c", "a_p", "b_p", "c_p")


def _lambda(sigma: float) -> float:
    return np.log(1.0 - sigma) - np.log(sigma)


def _b_coefficients(hh: float, order: int) -> list[float]:
    """b_k = h phi_k(hh) k! / B(h) for k = 1..order with B(h) = expm1(hh) ('bh2')."""
    h_phi_k = np.expm1(hh) / hh - 1.0
    factorial, out = 1, []
    for k in range(1, order + 1):
        out.append(h_phi_k * factorial / np.expm1(hh))
        factorial *= k + 1
        h_phi_k = h_phi_k / hh - 1.0 / factorial
    return out


def _orders(num_steps: int) -> list[int]:
    """Predictor order per step: warm-up from 1, lower order on the final step (diffusers)."""
    return [min(SOLVER_ORDER, num_steps - i, i + 1) for i in range(num_steps)]


def unipc_tables(sigmas: np.ndarray) -> dict[str, np.ndarray]:
    """Per-step coefficients of the corrector and predictor for a schedule's sigmas [N + 1]."""
    sig = np.asarray(sigmas, np.float64)
    n = len(sig) - 1
    orders = _orders(n)
    t = {name: np.zeros(n) for name in _COEFFS}
    for i in range(n):
        if i == 0:  # No corrector before the first model evaluation.
            t["k"][i] = 1.0
        else:  # UniC from sigma_{i-1} to sigma_i, with the order of the previous predictor.
            s_t, s_0 = sig[i], sig[i - 1]
            h = _lambda(s_t) - _lambda(s_0)
            b = _b_coefficients(-h, orders[i - 1])
            bh, alpha_t = np.expm1(-h), 1.0 - s_t
            t["a_c"][i] = s_t / s_0
            t["b_c"][i] = -alpha_t * np.expm1(-h)
            if orders[i - 1] == 1:
                rhos = [0.5]
            else:
                rk = (_lambda(sig[i - 2]) - _lambda(s_0)) / h
                rhos = np.linalg.solve(np.array([[1.0, 1.0], [rk, 1.0]]), np.array(b))
                t["c_c"][i] = -alpha_t * bh * rhos[0] / rk
            t["d_c"][i] = -alpha_t * bh * rhos[-1]
        s_t, s_0 = sig[i + 1], sig[i]
        if s_t == 0.0:  # lambda = inf: the step lands on the data prediction itself.
            t["b_p"][i] = 1.0
            continue
        h = _lambda(s_t) - _lambda(s_0)
        alpha_t = 1.0 - s_t
        t["a_p"][i] = s_t / s_0
        t["b_p"][i] = -alpha_t * np.expm1(-h)
        if orders[i] == 2:
            rk = (_lambda(sig[i - 1]) - _lambda(s_0)) / h
            t["c_p"][i] = -alpha_t * np.expm1(-h) * 0.5 / rk
    return t


VelocityFn = Callable[[jax.Array, jax.Array], jax.Array]


def unipc_sample(velocity_fn: VelocityFn, noise: jax.Array, schedule: Schedule, on_step=None):
    """Integrates from noise at sigmas[0] to a sample at sigma = 0 (call inside jit).

    velocity_fn(x [B, ...], t scalar float32 timestep) -> v [B, ...]; noise: [B, ...] (any
    sharding); on_step(i) is an optional host callback after each step (progress bars).
    Returns the sample [B, ...] in noise.dtype.
    """
    tables = {k: jnp.asarray(v, jnp.float32) for k, v in unipc_tables(schedule.sigmas).items()}
    sigmas = jnp.asarray(schedule.sigmas, jnp.float32)
    timesteps = jnp.asarray(schedule.timesteps, jnp.float32)
    x = noise.astype(jnp.float32)

    def body(i, carry):
        x, x_last, m1, m2 = carry
        c = {k: v[i] for k, v in tables.items()}
        m0 = x - sigmas[i] * velocity_fn(x, timesteps[i]).astype(jnp.float32)
        x = c["k"] * x + c["a_c"] * x_last + c["b_c"] * m1
        x = x + c["c_c"] * (m2 - m1) + c["d_c"] * (m0 - m1)
        x_next = c["a_p"] * x + c["b_p"] * m0 + c["c_p"] * (m1 - m0)
        if on_step is not None:
            jax.debug.callback(on_step, i)
        return x_next, x, m0, m1

    zeros = jnp.zeros_like(x)
    x, *_ = jax.lax.fori_loop(0, schedule.num_steps, body, (x, zeros, zeros, zeros))
    return x.astype(noise.dtype)
