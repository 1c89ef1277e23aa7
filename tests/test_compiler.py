"""Per-program XLA options: CPU-only, accepted by this jaxlib, and a safe fallback if not."""

import jax
import jax.numpy as jnp
import pytest

from wow_jax import compiler


def test_cpu_programs_get_options_this_jaxlib_accepts():
    assert jax.default_backend() == "cpu"
    assert compiler.program_options() == compiler.CPU_PROGRAM_OPTIONS
    assert compiler.init_options() == compiler.CPU_INIT_OPTIONS
    compiled = (
        jax.jit(lambda x: jnp.sum(x * 2)).lower(jnp.ones(4)).compile(compiler.program_options())
    )
    assert float(compiled(jnp.ones(4))) == 8.0


def test_options_this_jaxlib_does_not_know_fall_back_to_defaults(monkeypatch):
    monkeypatch.setattr(compiler, "CPU_PROGRAM_OPTIONS", {"xla_cpu_no_such_option": ""})
    assert compiler.program_options() == {}


def test_other_backends_get_no_options(monkeypatch):
    monkeypatch.setattr(jax, "default_backend", lambda: "tpu")
    assert compiler.program_options() == {} and compiler.init_options() == {}


@pytest.fixture(autouse=True)
def _fresh_cache():
    compiler._accepted.cache_clear()
    yield
    compiler._accepted.cache_clear()
