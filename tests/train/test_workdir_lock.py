"""One training run per workdir (issue 14 B7): `<workdir>/.lock` names its owner; a live owner
refuses a second run with one line, a dead one's lock is taken over, the lock goes at the end."""

import json
import os
import socket
import subprocess
import sys

import pytest

from tests.train import toy
from wow_jax.train import loop, workdir_lock


def _lock(workdir, pid: int, host: str | None = None) -> None:
    owner = {"host": host or socket.gethostname(), "pid": pid, "started": "2025-01-01 00:00:00"}
    (workdir / ".lock").write_text(json.dumps(owner))


def _train(workdir):
    cfg = toy.config(steps=2, save_every=2)
    return loop.train(cfg, str(workdir), task=toy.RegressionTask(), train_data=toy.make_data())


@pytest.fixture
def sleeper():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc.pid
    proc.kill()
    proc.wait()


# issue 14 B7: two train runs on one workdir at once were not refused (no lock)
def test_a_live_owner_refuses_a_second_run_with_one_line(tmp_path, sleeper):
    _lock(tmp_path, sleeper)
    with pytest.raises(workdir_lock.WorkdirLocked) as error:
        _train(tmp_path)
    message = str(error.value)
    assert f"pid {sleeper} on host {socket.gethostname()}" in message and "\n" not in message
    assert not (tmp_path / "checkpoints").exists()  # Refused before anything was written.
    assert json.loads((tmp_path / ".lock").read_text())["pid"] == sleeper  # Not taken.


def test_another_hosts_lock_is_kept(tmp_path):
    _lock(tmp_path, os.getpid() + 1, host="other-host")
    with pytest.raises(workdir_lock.WorkdirLocked, match="pid .* on host other-host"):
        workdir_lock.acquire(str(tmp_path))


def test_a_dead_owners_lock_is_taken_over_and_released(tmp_path, caplog):
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()  # Gone: the lock of a run killed with kill -9.
    _lock(tmp_path, proc.pid)
    result = _train(tmp_path)
    assert int(result.state.step) == 2
    assert "taking over the stale workdir lock" in caplog.text
    assert not (tmp_path / ".lock").exists()


def test_the_lock_is_exclusive_and_released_only_by_its_owner(tmp_path):
    mine = workdir_lock.acquire(str(tmp_path))
    assert json.loads((tmp_path / ".lock").read_text()) == mine
    workdir_lock.release(str(tmp_path), {**mine, "pid": mine["pid"] + 1})
    assert (tmp_path / ".lock").exists()  # Not the owner: kept.
    workdir_lock.release(str(tmp_path), mine)
    assert not (tmp_path / ".lock").exists()
