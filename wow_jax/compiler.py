"""XLA compile options for the programs wow_jax compiles (train steps, init, the sampler).

Passed per program (`jitted.lower(...).compile(options)`), never through the process-wide
XLA_FLAGS, so a user's own JAX code is unaffected. Only the CPU backend gets options:

- `program_options()`: XLA:CPU sends reductions, elementwise chains and matrix multiplies to
  YNNPACK fusions by default; in the DiT's backward pass the reductions (sums over the token
  axis for gate and bias gradients, the softmax backward) run several times slower than XLA's
  own loops. With YNNPACK fusions off (matrix multiplies then run on XLA's Eigen kernels) the
  small benchmark DiT's forward+backward takes 0.076 s instead of 0.107 s on 2 cores
  (scripts/benchmark_dit.py); keeping YNNPACK for matrix multiplies only was slower (0.087 s).
- `init_options()`: the random-init program runs once; skipping LLVM optimisation keeps a conv
  VAE's init from compiling ~6x slower than its train step (the tiny test VAE's init: 64 s -> 8 s
  on a loaded 2-core host). `jit_init(init)` runs the models' `init_params` with them.
"""

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
from absl import logging

CPU_PROGRAM_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": ""}
CPU_INIT_OPTIONS = {"xla_backend_optimization_level": 0}


@functools.cache
def _accepted(options: tuple) -> bool:
    """Whether this jaxlib knows the options (experimental XLA flags come and go)."""
    try:
        jax.jit(jnp.negative).lower(jnp.zeros(1)).compile(dict(options))
    except jax.errors.JaxRuntimeError as error:
        logging.warning(
            "XLA compile options %s not available here (%s); using defaults", dict(options), error
        )
        return False
    return True


def _for_cpu(options: dict, platform: str | None = None) -> dict:
    target = platform or jax.default_backend()
    if target != "cpu" or not _accepted(tuple(sorted(options.items()))):
        return {}
    return dict(options)


def program_options(platform: str | None = None) -> dict:
    """Compile options for the heavy programs (train step, sampler): empty except on CPU.
    `platform`: the compile target ('cpu', 'tpu', ...; default this host's backend)."""
    return _for_cpu(CPU_PROGRAM_OPTIONS, platform)


def init_options() -> dict:
    """Compile options for one-off programs such as random parameter init."""
    return _for_cpu(CPU_INIT_OPTIONS)


def jit_init(init: Callable) -> Callable:
    """`init` jitted and compiled with `init_options()` when called on concrete arrays; traced
    as it is inside another trace (jit, eval_shape), whose program's options then apply."""

    def run(*args, **kwargs):
        leaves = jax.tree.leaves((args, kwargs))
        if any(isinstance(leaf, jax.core.Tracer) for leaf in leaves):
            return init(*args, **kwargs)
        return jax.jit(init, compiler_options=init_options())(*args, **kwargs)

    return run
