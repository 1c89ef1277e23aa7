"""Exact resume (kill -9 and SIGTERM) and a 2-process run, each in real subprocesses."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tests import multiprocess

RUNNER = os.path.join(os.path.dirname(__file__), "toy_run.py")
STEPS = 20


def _env(devices=8, **extra):
    return multiprocess.cpu_env(devices, **extra)


def _run(workdir, steps, *args, env=None, timeout=120):
    cmd = [sys.executable, RUNNER, str(workdir), str(steps), *map(str, args)]
    out = subprocess.run(cmd, env=env or _env(), capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def _log(workdir):
    """All JSONL records in file order: [(step, loss)]."""
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        lines = [json.loads(line) for line in f if line.strip()]
    return [(r["step"], r["train/loss"]) for r in lines if "train/loss" in r]


def _wait_for_step(workdir, proc, step, timeout=90):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if any(s >= step for s, _ in _log(workdir)):
            return
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        time.sleep(0.05)
    raise TimeoutError(f"run did not reach step {step}")


def _start(workdir, steps, sleep):
    cmd = [sys.executable, RUNNER, str(workdir), str(steps), "--sleep", str(sleep)]
    return subprocess.Popen(
        cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """20 uninterrupted steps: per-step losses and final params."""
    workdir = tmp_path_factory.mktemp("straight")
    _run(workdir, STEPS, "--out", workdir / "params.npz")
    return dict(_log(workdir)), dict(np.load(workdir / "params.npz"))


def _assert_same_run(workdir, straight):
    losses, params = straight
    resumed = dict(_log(workdir))  # later records (after a resume) overwrite earlier ones
    assert sorted(resumed) == list(range(1, STEPS + 1))
    assert [resumed[s] for s in range(1, STEPS + 1)] == [losses[s] for s in range(1, STEPS + 1)]
    got = dict(np.load(workdir / "params.npz"))
    assert sorted(got) == sorted(params)
    for key in params:
        np.testing.assert_array_equal(got[key], params[key], err_msg=key)  # bitwise


# issue 14 B7: after kill -9 and a resume metrics.jsonl repeated the steps after the checkpoint
def test_kill9_then_resume_is_bitwise_identical(tmp_path, straight):
    proc = _start(tmp_path, STEPS, sleep=0.15)
    _wait_for_step(tmp_path, proc, 12)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (tmp_path / ".lock").exists()  # Left behind by the killed run: stale, taken over.
    first = [s for s, _ in _log(tmp_path)]
    saved = [int(p) for p in os.listdir(tmp_path / "checkpoints") if p.isdigit()]
    resumed = max(saved)  # The step the next run resumes from.
    _run(tmp_path, STEPS, "--out", tmp_path / "params.npz")
    assert resumed in (5, 10) and max(first) > resumed  # Rows after the checkpoint were logged.
    assert [s for s, _ in _log(tmp_path)] == list(range(1, STEPS + 1))  # Each step once.
    _assert_same_run(tmp_path, straight)


def test_sigterm_saves_exits_cleanly_and_resumes(tmp_path, straight):
    proc = _start(tmp_path, STEPS, sleep=0.15)
    _wait_for_step(tmp_path, proc, 7)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr[-3000:]
    stopped = int(stdout.split("step=")[-1])
    assert "preempted=True" in stdout and 7 <= stopped < STEPS
    assert os.path.isdir(tmp_path / "checkpoints" / str(stopped))  # saved off the 5-step grid
    _run(tmp_path, STEPS, "--out", tmp_path / "params.npz")
    records = _log(tmp_path)
    assert [s for s, _ in records] == list(range(1, STEPS + 1))  # resumed right after `stopped`
    _assert_same_run(tmp_path, straight)


def _two_processes(workdir, steps, *args):
    cmd = [sys.executable, RUNNER, workdir, steps, *args]
    multiprocess.run_processes(cmd, processes=2, devices=4, timeout=120)


def test_two_processes_train_checkpoint_and_restore(tmp_path, straight):
    # 2 processes x 4 CPU devices = the same 8-device fsdp mesh as the single-process run.
    # Both processes get SIGTERM when asking for batch 13: they agree to save step 13 and exit.
    _two_processes(tmp_path, STEPS, "--sigterm-at", 13)
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["10", "13"]
    _two_processes(tmp_path, STEPS, "--out", tmp_path / "params.npz")  # restores 13, runs to 20
    assert [s for s, _ in _log(tmp_path)] == list(range(1, STEPS + 1))
    losses, params = straight
    resumed = dict(_log(tmp_path))
    np.testing.assert_allclose(
        [resumed[s] for s in range(1, STEPS + 1)],
        [losses[s] for s in range(1, STEPS + 1)],
        rtol=1e-5,
    )
    got = dict(np.load(tmp_path / "params.npz"))
    for key in params:
        np.testing.assert_allclose(got[key], params[key], rtol=1e-5, atol=1e-6, err_msg=key)
