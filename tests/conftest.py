"""Shared test set-up: 8 simulated CPU devices and one XLA compilation cache per test session
(both set before jax is imported), and tiny configs."""

import os
import shutil
import tempfile

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Many tests compile the same tiny programs (a resumed run its first run's step, a second worker
# a module fixture's run): the session's xdist workers and the subprocesses tests start inherit
# this directory from the controller and reuse one another's executables (~8% of the suite's
# CPU time). A directory given by the caller is kept; the session's own is removed at the end.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="wow_jax_test_xla_cache_")
    os.environ["WOW_JAX_TEST_XLA_CACHE_OWNER"] = str(os.getpid())
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")


@pytest.fixture
def tiny_config():
    from configs import tiny

    return tiny.get_config()


def pytest_unconfigure(config):
    if os.environ.get("WOW_JAX_TEST_XLA_CACHE_OWNER") == str(os.getpid()):
        shutil.rmtree(os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)
