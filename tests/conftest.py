"""Shared test set-up: 8 simulated CPU devices and one XLA compilation cache per test session
(both set before jax is imported), and tiny configs."""

import os
import shutil
import tempfile

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Many tests compile the same tiny programs (a resumed run its first run's step, a fixture's run
# the next test's): the session's xdist workers and the subprocesses tests start inherit this
# directory from the controller and reuse one another's executables (an entry read while another
# process writes it is a warning and a recompile in jax). A directory given by the caller is
# kept; the session's own is removed at the end.
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


# Modules whose module-scoped fixture is a real training run (minutes on CI's 2 cores): all their
# tests run on one xdist worker, so the run is built once. xdist's own `xdist_group` mark is
# inert under pytest 9 (it renames `item._nodeid`, which pytest 9 no longer reads).
SHARED_RUN_MODULES = ("tests/test_checkpointing.py", "tests/test_run_directory.py")


def pytest_xdist_make_scheduler(config, log):
    """`--dist load` (the default), except that each of SHARED_RUN_MODULES is one work unit."""
    if config.getvalue("dist") != "load":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class SharedRunScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return module if module in SHARED_RUN_MODULES else nodeid

    return SharedRunScheduling(config, log)
