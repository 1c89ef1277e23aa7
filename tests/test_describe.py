"""`describe` sizes every component that exists, without allocating it."""

import subprocess
import sys

from configs import tiny
from wow_jax import describe, models


def test_describe_reports_existing_components(capsys):
    summaries = describe.run_describe(tiny.get_config(), workdir="unused")
    out = capsys.readouterr().out
    assert out.startswith("mesh: data=1, fsdp=8, tensor=1, sequence=1 over 8 cpu device(s)")
    for name in models.COMPONENTS:
        if models.load_component(name) is None:
            assert f"{name}: not built yet" in out
        else:
            assert summaries[name]["params"] > 0
            assert summaries[name]["bytes_per_device"] <= summaries[name]["bytes"]


def test_describe_wow14b_runs_on_cpu():
    result = subprocess.run(
        [sys.executable, "-m", "wow_jax.main", "--config=configs/wow14b.py",
         "--config.mode=describe"],
        capture_output=True, text=True, timeout=120, env={"JAX_PLATFORMS": "cpu"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "mesh: data=1, fsdp=1" in result.stdout
    assert "dit:" in result.stdout
