"""One training run per workdir: `<workdir>/.lock` holds the owner {host, pid, started}.

    with workdir_lock.hold(workdir):   # process 0 takes the lock; other processes skip
        ...train...                    # released (deleted if still ours) in a finally

A second run on a held workdir is refused with one line naming the owner. A lock whose owner is
on this host and no longer alive (a run killed with kill -9), or is this very process id (a
restarted container reuses pids), is stale: taken over with a warning. A lock of another host
cannot be checked: delete it by hand when that run is gone.

Local workdirs are locked atomically (a hard link fails when the lock exists); on a URL (gs://)
the check and the write are two requests, so two runs started within that gap both proceed.
"""

import contextlib
import json
import os
import socket
import time

import jax
from absl import logging
from etils import epath

from wow_jax import checkpointing

LOCK_FILE = ".lock"


class WorkdirLocked(ValueError):
    """Another live run holds the workdir."""


def _pid_alive(pid: int) -> bool:
    """Whether process `pid` of this host runs (a zombie, killed but not yet reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # Another user's process.
    stat = f"/proc/{pid}/stat"
    if os.path.exists(stat):
        with open(stat) as f:
            return f.read().rsplit(")", 1)[-1].split()[0] != "Z"
    return True


def _stale(owner: dict) -> bool:
    if owner.get("host") != socket.gethostname():
        return False
    pid = owner.get("pid")
    return not isinstance(pid, int) or pid == os.getpid() or not _pid_alive(pid)


def _create(path: epath.Path, text: str) -> bool:
    """Writes `text` to `path` unless it exists; False when it does."""
    if "://" in str(path):
        if path.exists():
            return False
        path.write_text(text)
        return True
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".lock.{os.getpid()}.tmp"
    tmp.write_text(text)
    try:
        os.link(tmp, path)  # Atomic: fails when the lock exists.
        return True
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)


def _read(path: epath.Path) -> dict | None:
    try:
        owner = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return owner if isinstance(owner, dict) else None


def acquire(workdir: str) -> dict:
    """Takes `<workdir>/.lock`; returns the owner record written. Raises WorkdirLocked."""
    path = checkpointing.as_path(workdir) / LOCK_FILE
    mine = {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    for _ in range(3):
        if _create(path, json.dumps(mine)):
            return mine
        owner = _read(path)
        if owner is not None and not _stale(owner):
            raise WorkdirLocked(
                f"{checkpointing.as_path(workdir)} is in use by the training run with pid "
                f"{owner.get('pid')} on host {owner.get('host')} (started {owner.get('started')}); "
                f"wait for it to end or use another --workdir (if that run is gone, delete {path})"
            )
        logging.warning("taking over the stale workdir lock %s of %s", path, owner)
        path.unlink(missing_ok=True)
    raise WorkdirLocked(f"could not take the workdir lock {path}; delete it and run again")


def release(workdir: str, mine: dict) -> None:
    """Deletes `<workdir>/.lock` if it still holds `mine`."""
    path = checkpointing.as_path(workdir) / LOCK_FILE
    if _read(path) == mine:
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def hold(workdir: str):
    """The workdir lock around a training run (process 0 only)."""
    if jax.process_index() != 0:
        yield
        return
    mine = acquire(workdir)
    try:
        yield
    finally:
        release(workdir, mine)
