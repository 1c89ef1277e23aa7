"""Entry point: `python -m wow_jax.main --config=configs/<name>.py --workdir=DIR [--config.k=v]`.

Parses flags, validates the config, resolves its backend-dependent choices for the backend JAX
runs on (`configuration.resolve_kernels`) and dispatches `config.mode` to `run_<mode>(config,
workdir)` in the module that owns it (`configuration.MODE_RUNNERS`). Holds no other logic.
"""

import importlib
import logging as std_logging
import sys

import jax
from absl import app, flags, logging
from ml_collections import config_flags

import wow_jax.sim  # noqa: F401 (registers the simulators' data sources, e.g. 'metaworld')
from wow_jax import configuration, rundir

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


def _override_key(argv: list[str], error: Exception) -> str | None:
    """The `--config.<key>` override whose last name the config error complains about."""
    for arg in argv:
        if arg.startswith("--config."):
            key = arg[len("--config.") :].split("=", 1)[0]
            if key.split(".")[-1] in str(error):
                return key
    return None


def parse_flags(argv: list[str]) -> list[str]:
    """absl flag parsing whose config errors end the run with one line naming the key."""
    try:
        return flags.FLAGS(argv)
    except flags.Error as error:
        sys.exit(f"wow_jax: {error}")
    except (AttributeError, KeyError) as error:
        key = _override_key(argv, error)
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


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    logging.get_absl_handler().addFilter(_keep_record)
    try:
        config = _CONFIG.value
        config.mode  # noqa: B018 (a config file that failed to load raises here)
    except OSError as error:
        sys.exit(f"wow_jax: cannot load --config: {str(error).splitlines()[-1].strip()}")
    # Multi-host: join the cluster (JAX_COORDINATOR_ADDRESS ... or a TPU pod) before JAX starts.
    from wow_jax.train import distributed

    distributed.initialize_from_env()
    try:
        rundir.adopt(config, config_flags.get_override_values(flags.FLAGS["config"]))
        configuration.validate(config, jax.device_count())
    except ValueError as error:
        sys.exit(f"wow_jax: {error}")
    configuration.resolve_kernels(config, jax.default_backend())
    runner = resolve_runner(config.mode)
    logging.info("mode=%s workdir=%s devices=%d", config.mode, _WORKDIR.value, jax.device_count())
    runner(config, _WORKDIR.value)


if __name__ == "__main__":
    flags.mark_flag_as_required("config")
    app.run(main, flags_parser=parse_flags)
