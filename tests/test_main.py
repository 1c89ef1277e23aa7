"""wow_jax.main reports every mode's user faults in one place: one line `wow_jax <mode>: ...`,
exit code 1, the traceback only with --verbosity=1; bugs keep their traceback."""

import errno
import os
import subprocess
import sys

import pytest
from absl import logging

from tests.data.conftest import synthetic_episode, write_dataset
from wow_jax import main, writable
from wow_jax.train.loop import TrainingHalted


def _exit_message(fn, *args) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main.run_reporting_faults("wow_jax train", fn, *args)
    return str(exit_info.value.code)


def _raise(error):
    raise error


@pytest.mark.parametrize(
    "error",
    [
        ValueError("config.x must be >= 1,\n  got 0"),
        FileNotFoundError(errno.ENOENT, "No such file or directory", "/data/x"),
        FileExistsError("target exists"),
        NotImplementedError("not for this component"),
        PermissionError(errno.EACCES, "Permission denied", "/ro/checkpoints"),
        IsADirectoryError(errno.EISDIR, "Is a directory", "/w"),
        NotADirectoryError(errno.ENOTDIR, "Not a directory", "/w/f"),
        OSError(errno.ENOSPC, "No space left on device"),
        TrainingHalted("5 train steps in a row had a NaN/Inf loss"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_user_faults_end_in_one_line(error):
    message = _exit_message(_raise, error)
    assert message.startswith("wow_jax train: ") and "\n" not in message
    assert message.endswith(" ".join(str(error).split()))


@pytest.mark.parametrize(
    "error", [RuntimeError("bug"), KeyError("k"), OSError(errno.EIO, "I/O error")]
)
def test_bugs_keep_their_traceback(error):
    with pytest.raises(type(error)):
        main.run_reporting_faults("wow_jax train", _raise, error)


def test_verbosity_1_shows_the_traceback_of_a_user_fault():
    before = logging.get_verbosity()
    logging.set_verbosity(logging.DEBUG)
    try:
        with pytest.raises(ValueError, match="bad"):
            main.run_reporting_faults("wow_jax train", _raise, ValueError("bad"))
    finally:
        logging.set_verbosity(before)


@pytest.mark.parametrize("where", ["a_file", "a_file/below"])
def test_a_workdir_that_is_not_a_folder_is_refused(tmp_path, where):
    (tmp_path / "a_file").write_text("")
    with pytest.raises(ValueError, match=r"--workdir='.*' must be a folder this process can"):
        writable.ensure_writable_dir(str(tmp_path / where), "--workdir")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_workdir_is_refused(tmp_path):
    (tmp_path / "ro").mkdir(mode=0o500)
    with pytest.raises(ValueError, match=r"--workdir=.*PermissionError"):
        writable.ensure_writable_dir(str(tmp_path / "ro"), "--workdir")


def test_a_writable_workdir_is_created_and_left_clean(tmp_path):
    folder = writable.ensure_writable_dir(str(tmp_path / "new" / "run"), "--workdir")
    assert folder.is_dir() and not list(folder.iterdir())


# issue 14: an all-bad dataset in mode train ended behind a long traceback.
def test_train_on_an_all_bad_dataset_ends_in_one_line(tiny_config, tmp_path):
    too_short = [synthetic_episode(e, 3) for e in range(3)]  # < the 5 frames of a clip
    cfg = tiny_config
    cfg.mode, cfg.train.task, cfg.train.tensorboard = "train", "vae", False
    cfg.data.source, cfg.data.path = "tfds", str(write_dataset(tmp_path / "data", too_short))
    cfg.mesh.fsdp, cfg.mesh.tensor = 2, 4
    message = _exit_message(main.start, cfg, str(tmp_path / "run"))
    assert message.startswith("wow_jax train: 4 consecutive bad episodes"), message


def _run_main(*args):
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="")
    cmd = [sys.executable, "-m", "wow_jax.main", "--config=configs/tiny.py", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)


# issue 14: train-mode failures (unwritable workdir, missing data) ended behind a traceback.
@pytest.mark.parametrize(
    "case, message",
    [
        ("workdir_is_a_file", "wow_jax train: --workdir="),
        ("missing_data", "wow_jax train: config.data.source='tfds' reads an RLDS"),
    ],
)
def test_train_failures_through_main_are_one_line(tmp_path, case, message):
    (tmp_path / "a_file").write_text("")
    workdir = tmp_path / ("a_file" if case == "workdir_is_a_file" else "run")
    args = [f"--workdir={workdir}", "--config.mode=train", "--config.train.task=vae"]
    args += ["--config.data.source=tfds", f"--config.data.path={tmp_path / 'no_data'}"]
    run = _run_main(*args)
    assert run.returncode == 1
    lines = run.stderr.strip().splitlines()
    assert lines[-1].startswith(message), run.stderr
    assert "Traceback" not in run.stderr
    if case == "workdir_is_a_file":  # Refused before any work: the one line is all there is.
        assert len(lines) == 1, run.stderr
        verbose = _run_main(*args, "--verbosity=1")
        assert verbose.returncode == 1
        assert "Traceback" in verbose.stderr and "ensure_writable_dir" in verbose.stderr
