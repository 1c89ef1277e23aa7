"""Entry point: `python -m wow_jax.main --config=configs/<name>.py --workdir=DIR [--config.k=v]`.

Parses flags, validates the config, checks the workdir of a training mode is writable
(`writable.ensure_writable_dir`), resolves its backend-dependent choices for the backend JAX runs
on (`configuration.resolve_kernels`) and dispatches `config.mode` to `run_<mode>(config,
workdir)` in the module that owns it (`configuration.MODE_RUNNERS`).

Every mode's faults are reported here, in one place: a user fault (bad input, a missing or
unwritable file, a full disk, a halted run: `is_user_fault`) ends the run with one line
`wow_jax <mode>: <message>` and exit code 1; `--verbosity=1` shows its traceback, and any other
exception (a bug) propagates with its traceback.
"""

import errno
import importlib
import logging as std_logging
import re
import sys

import jax
from absl import app, flags, logging
from ml_collections import config_flags

import wow_jax.sim  # noqa: F401 (registers the simulators' data sources, e.g. 'metaworld')
from wow_jax import configuration, rundir, writable

_CONFIG = config_flags.DEFINE_config_file(
    "config",
    None,
    "Config file, e.g. configs/demo.py (or configs/demo.py:quick).",
    lock_config=True,
)
_WORKDIR = flags.DEFINE_string("workdir", "workdir", "Directory for data, checkpoints and outputs.")


def resolve_runner(mode: str):
    """`run_<mode>` of a mode in configuration.MODE_RUNNERS (validate has checked the mode)."""
    module_name, function_name = configuration.MODE_RUNNERS[mode]
    return getattr(importlib.import_module(module_name), function_name)


# Exceptions that are the user's to fix (bad input, missing or unwritable files): one line.
USER_FAULTS = (
    ValueError,
    FileNotFoundError,
    FileExistsError,
    NotImplementedError,
    PermissionError,
    IsADirectoryError,
    NotADirectoryError,
)
DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)  # Disk full, over quota, read-only.


def is_user_fault(error: BaseException) -> bool:
    """True for bad input, a missing/unwritable file, a full disk, a halted training run and an
    unusable chat endpoint (SOPHIA); anything else is a bug whose traceback matters. An
    interrupted export (its finished shards kept for a rerun, the message says how to resume)
    is judged by its cause."""
    from wow_jax.interop.exporter import ExportInterrupted
    from wow_jax.sophia.chat import ChatError
    from wow_jax.train.loop import TrainingHalted

    if isinstance(error, ExportInterrupted):
        return error.__cause__ is None or is_user_fault(error.__cause__)
    if isinstance(error, USER_FAULTS + (TrainingHalted, ChatError)):
        return True
    return isinstance(error, OSError) and error.errno in DISK_ERRNOS


def one_line(error: BaseException) -> str:
    """The error's message on one line (its type when it has none)."""
    return " ".join(str(error).split()) or type(error).__name__


def run_reporting_faults(prefix: str, fn, *args):
    """fn(*args); a user fault ends the process with `<prefix>: <message>` (exit 1) and no
    traceback, unless --verbosity >= 1 asks for it; other exceptions propagate."""
    try:
        return fn(*args)
    except Exception as error:  # noqa: BLE001 (re-raised unless it is a user fault)
        if logging.level_debug() or not is_user_fault(error):
            raise
        sys.exit(f"{prefix}: {one_line(error)}")


def _lines(error: BaseException) -> list[str]:
    """The non-empty lines of the error's message (its type when it has none)."""
    return [line.strip() for line in str(error).splitlines() if line.strip()] or [
        type(error).__name__
    ]


def _config_load_error(error: BaseException) -> str:
    """One line naming the config file and why it did not load."""
    if isinstance(error, SyntaxError):
        return f"{error.filename}, line {error.lineno}: {error.msg}"
    return _lines(error)[-1]


def _unknown_key(argv: list[str], error: Exception) -> str | None:
    """The `--config.<key>` override holding the name the error complains about (the first word
    of its message that is a part of an override's dotted key), or None when no override has it
    (then the config file itself failed)."""
    keys = [arg[len("--config.") :].split("=", 1)[0] for arg in argv if arg.startswith("--config.")]
    for word in re.findall(r"\w+", str(error)):
        for key in keys:
            if word in key.split("."):
                return key
    return None


def parse_flags(argv: list[str]) -> list[str]:
    """absl flag parsing whose config errors end the run with one line naming the key or file."""
    try:
        return flags.FLAGS(argv)
    except flags.Error as error:
        lines = _lines(error)  # A config file's exception comes with its traceback: keep the end.
        sys.exit(f"wow_jax: {lines[0]}" + (f" {lines[-1]}" if len(lines) > 1 else ""))
    except (OSError, SyntaxError, ImportError) as error:
        sys.exit(f"wow_jax: cannot load --config: {_config_load_error(error)}")
    except (AttributeError, KeyError) as error:
        key = _unknown_key(argv, error)
        if key is None:
            given = next((arg for arg in argv if arg.startswith("--config=")), "--config")
            sys.exit(f"wow_jax: cannot load {given}: {one_line(error)}")
        hint = str(error).strip("\"'").split("\\n")[-1]
        sys.exit(
            f"wow_jax: unknown config key config.{key}"
            + (f" ({hint})" if "Did you mean" in hint else "")
            + "; configs/base.py lists every key"
        )


# Libraries that log every checkpoint-thread or dataset-writer step at INFO; their warnings stay.
_CHATTY_LIBRARIES = ("/orbax/", "/tensorflow_datasets/", "/grain/")


def _keep_record(record: std_logging.LogRecord) -> bool:
    return record.levelno >= std_logging.WARNING or not any(
        part in record.pathname for part in _CHATTY_LIBRARIES
    )


def start(config, workdir: str, overridden: frozenset[str] = frozenset()) -> None:
    """Joins the cluster, adopts the description of the run the mode reads (`rundir.adopt`;
    keys in `overridden`, set on the command line, keep their values), validates the config,
    checks the workdir of a training mode and runs the mode."""
    # Multi-host: join the cluster (JAX_COORDINATOR_ADDRESS ... or a TPU pod) before JAX starts.
    from wow_jax.train import distributed

    distributed.initialize_from_env()
    rundir.adopt(config, overridden)
    configuration.validate(config, jax.device_count(), jax.process_count())
    if config.mode in configuration.TRAINING_MODES:
        writable.ensure_writable_dir(workdir, "--workdir")
    configuration.resolve_kernels(config, jax.default_backend())
    runner = resolve_runner(config.mode)
    logging.info("mode=%s workdir=%s devices=%d", config.mode, workdir, jax.device_count())
    runner(config, workdir)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    logging.get_absl_handler().addFilter(_keep_record)
    try:
        config = _CONFIG.value
        config.mode  # noqa: B018 (a config file that failed to load raises here)
    except OSError as error:
        sys.exit(f"wow_jax: cannot load --config: {_config_load_error(error)}")
    known = config.mode in configuration.MODE_RUNNERS
    run_reporting_faults(
        f"wow_jax {config.mode}" if known else "wow_jax",
        start,
        config,
        _WORKDIR.value,
        frozenset(config_flags.get_override_values(flags.FLAGS["config"])),
    )


if __name__ == "__main__":
    flags.mark_flag_as_required("config")
    app.run(main, flags_parser=parse_flags)
