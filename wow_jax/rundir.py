"""A run directory describes itself: what mode train writes next to its checkpoints, so that
generate, export and later modes read the run with no other flags.

    <workdir>/config.json              the resolved config of the run, model.text.tokenizer_path
                                       pointing at the copy below, model.vae.latents_mean/std as
                                       trained with
    <workdir>/tokenizer/spiece.model   copy of config.model.text.tokenizer_path (when set)
    <workdir>/action_stats.json        copy of the dataset's action statistics (tasks in
                                       ACTION_TASKS, on a dataset that has them)
    <workdir>/checkpoints/             the CheckpointManager root (wow_jax.checkpointing)

`describe(config, workdir)` writes config.json and the tokenizer when training starts; on a resume
(config.json and a checkpoint exist) it first compares the stored config with the new one and
refuses a change outside RESUME_SAFE_KEYS with one line naming the key. `copy_action_stats` adds
the action statistics once the dataset is ready. `adopt(config, overridden)` overlays the runs a
mode reads (RUN_SOURCES: generate and export read a world model; act reads a world model and an
IDM, each run contributing its own keys) onto the mode's config, keeping the command line's
overrides. Paths are epath (a gs:// workdir works); only process 0 writes.
"""

import dataclasses
import fnmatch
import json
from collections.abc import Collection
from typing import Any

import jax
import ml_collections
from absl import logging
from etils import epath

from wow_jax import checkpointing
from wow_jax import models as registry

CONFIG_FILE = "config.json"
TOKENIZER_FILE = "tokenizer/spiece.model"
ACTION_STATS_FILE = "action_stats.json"
CHECKPOINTS = "checkpoints"
SEARCH_DEPTH = 3  # Parents looked at above a given path: <run>/checkpoints/<step>/state -> <run>.
# Training tasks (Task.name) whose runs carry action statistics (the IDM's de-normalise its output).
ACTION_TASKS = ("world_model", "idm")

# Model keys that choose how the same parameters run (kernels, remat, VAE tiling), not what the
# model is: a resume may change them and `adopt` leaves them to the reading mode's config.
RUNTIME_MODEL_KEYS = (
    "model.cpu_kernels",
    "model.dit.cpu_kernels",
    "model.vae.cpu_kernels",
    "model.dit.attention",
    "model.dit.pallas_interpret",
    "model.dit.remat_policy",
    "model.vae.tile",
    "model.vae.tile_size",
    "model.vae.tile_overlap",
)
# Keys (fnmatch patterns) a resumed run may change; any other changed key is refused, as it would
# corrupt the run (shapes, batch, model, optimizer state, data stream, seeds). docs/training.md,
# "Resume", lists them.
RESUME_SAFE_KEYS = (
    "mode",
    "train.steps",
    "train.learning_rate",
    "train.warmup_steps",
    "train.schedule",
    "train.final_lr_ratio",
    "train.max_bad_steps",
    "train.log_every",
    "train.eval_every",
    "train.eval_batches",
    "train.peak_flops",
    "train.tensorboard",
    "checkpoint.*",
    "data.path",
    "data.video_dir",
    "data.worker_count",
    "data.prefetch_buffer",
    "data.read_threads",
    "mesh.*",
    "model.text.tokenizer_path",  # The tokenizer's bytes are compared instead.
    "model.text.checkpoint_path",
    "model.clip.checkpoint_path",
    *RUNTIME_MODEL_KEYS,
    "sample.*",
    "convert.*",
    "demo.*",
    "act.*",
)
# What `adopt` takes from a run besides its model.* keys: the clip geometry it was trained on.
ADOPTED_DATA_KEYS = ("data.num_frames", "data.height", "data.width", "data.frame_stride")


@dataclasses.dataclass(frozen=True)
class RunSource:
    """A run a mode reads: `key`, the config key holding its path; `keys`, the config keys taken
    from its config.json (one ending in '.' takes every key under it); `files`, (file of the run,
    config key set to its path when the run has it)."""

    key: str
    keys: tuple[str, ...]
    files: tuple[tuple[str, str], ...] = ()


# A world-model run gives its components' model config, clip geometry and tokenizer copy.
WORLD_MODEL_KEYS = (*(f"model.{name}." for name in registry.WORLD_MODEL_NAMES), *ADOPTED_DATA_KEYS)
WORLD_MODEL_FILES = ((TOKENIZER_FILE, "model.text.tokenizer_path"),)
# An IDM run gives its model config, pair/flow settings, action normalisation and statistics.
IDM_KEYS = ("model.idm.", "idm.", "data.action_norm")
IDM_FILES = ((ACTION_STATS_FILE, "act.action_stats"),)
# A LoRA run (train.lora.rank > 0) gives its adapters' shape and scaling.
LORA_KEYS = ("train.lora.",)
LORA_SOURCE = RunSource("sample.lora_checkpoint", LORA_KEYS)
# config.mode -> the runs it reads (convert only when it exports).
RUN_SOURCES = {
    "generate": (
        RunSource("checkpoint.init_from", WORLD_MODEL_KEYS, WORLD_MODEL_FILES),
        LORA_SOURCE,
    ),
    "convert": (RunSource("convert.source", (*WORLD_MODEL_KEYS, *LORA_KEYS), WORLD_MODEL_FILES),),
    "merge": (RunSource("checkpoint.init_from", WORLD_MODEL_KEYS), LORA_SOURCE),
    "act": (
        RunSource("checkpoint.init_from", WORLD_MODEL_KEYS, WORLD_MODEL_FILES),
        RunSource("act.idm_checkpoint", IDM_KEYS, IDM_FILES),
        LORA_SOURCE,
    ),
}
RUN_SOURCES["evaluate"] = RUN_SOURCES["act"]  # Imagine-then-act in the simulator reads both.
RUN_SOURCES["refine"] = RUN_SOURCES["act"]  # SOPHIA imagines and reads actions (critic, loop).


def _flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    """{'a.b.c': value} of a nested dict (values as JSON gives them: lists for tuples)."""
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _as_json(config: ml_collections.ConfigDict) -> dict:
    return json.loads(json.dumps(config.to_dict()))


def _write_atomic(path: epath.Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp"
    tmp.write_bytes(data)
    tmp.replace(path)


def _read_json(path: epath.Path) -> dict:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(
            f"{path} is not valid JSON ({error}); restore it from a copy or delete it (the next "
            "run writes it again without comparing)"
        ) from error


def has_checkpoint(run: epath.Path) -> bool:
    """Whether `<run>/checkpoints` holds a numbered step folder."""
    root = run / CHECKPOINTS
    return root.is_dir() and any(p.name.isdigit() for p in root.iterdir())


def check_resume(stored: dict, new: dict, run: epath.Path) -> None:
    """Raises ValueError naming the first key outside RESUME_SAFE_KEYS whose value differs
    between the stored and the new config (flat {'a.b': value}, keys of both only)."""
    for key in sorted(stored.keys() & new.keys()):
        if stored[key] == new[key] or any(fnmatch.fnmatch(key, p) for p in RESUME_SAFE_KEYS):
            continue
        raise ValueError(
            f"{run} was trained with config.{key}={stored[key]!r} but this run has "
            f"{new[key]!r}; resuming with it would corrupt the run (docs/training.md, "
            "'Resume'): use a new --workdir or restore the value"
        )


def _check_tokenizer(source: str, run: epath.Path) -> None:
    copy = run / TOKENIZER_FILE
    if source and copy.exists() and checkpointing.as_path(source).read_bytes() != copy.read_bytes():
        raise ValueError(
            f"{run} was trained with the tokenizer {copy} but config.model.text.tokenizer_path="
            f"{source!r} is another one; resuming with it would corrupt the run: use a new "
            "--workdir or restore the value"
        )


def describe(config: ml_collections.ConfigDict, workdir: str) -> None:
    """Writes <workdir>/config.json and the tokenizer copy (process 0), after refusing a resume
    whose config changes a key outside RESUME_SAFE_KEYS."""
    run = checkpointing.as_path(workdir)
    source = config.model.text.tokenizer_path
    described = _as_json(config)
    if source:
        described["model"]["text"]["tokenizer_path"] = str(run / TOKENIZER_FILE)
    stored_path = run / CONFIG_FILE
    if stored_path.exists() and has_checkpoint(run):
        check_resume(stored_config(run), _flatten(described), run)
        _check_tokenizer(source, run)
    if jax.process_index() != 0:
        return
    if source and checkpointing.as_path(source) != run / TOKENIZER_FILE:
        _write_atomic(run / TOKENIZER_FILE, checkpointing.as_path(source).read_bytes())
    _write_atomic(stored_path, json.dumps(described, indent=1, sort_keys=True).encode())


def copy_action_stats(workdir: str, task: str, dataset_dir) -> None:
    """<workdir>/action_stats.json from the dataset's (process 0; tasks in ACTION_TASKS, datasets
    that have them)."""
    if jax.process_index() != 0 or task not in ACTION_TASKS or dataset_dir is None:
        return
    source = epath.Path(dataset_dir) / ACTION_STATS_FILE
    if source.exists():
        _write_atomic(checkpointing.as_path(workdir) / ACTION_STATS_FILE, source.read_bytes())


def find_run(path: str) -> epath.Path | None:
    """The run directory holding `path` (itself, its checkpoints root, a step folder or a step's
    item): the nearest of it and its SEARCH_DEPTH parents with config.json next to checkpoints/."""
    here = checkpointing.as_path(path)
    for _ in range(SEARCH_DEPTH + 1):
        if (here / CONFIG_FILE).exists() and (here / CHECKPOINTS).is_dir():
            return here
        if here.parent == here or str(here.parent).endswith("://"):
            return None
        here = here.parent
    return None


def stored_config(run: epath.Path) -> dict[str, Any]:
    """{'a.b': value} of the config a run was trained with (<run>/config.json)."""
    return _flatten(_read_json(run / CONFIG_FILE))


def _sources(config: ml_collections.ConfigDict) -> tuple[RunSource, ...]:
    """The runs config.mode reads (RUN_SOURCES); none for convert's imports."""
    if config.mode == "convert" and config.convert.direction != "export":
        return ()
    return RUN_SOURCES.get(config.mode, ())


def _selected(name: str, keys: tuple[str, ...]) -> bool:
    return any(name == k or (k.endswith(".") and name.startswith(k)) for k in keys)


def _adopt_one(
    config: ml_collections.ConfigDict, source: RunSource, overridden: Collection[str]
) -> epath.Path | None:
    """Overlays one run (module docstring of `adopt`); returns it, or None."""
    current = _flatten(config.to_dict())
    path = current[source.key]
    run = find_run(path) if path else None
    if run is None:
        return None
    taken = {
        name: value
        for name, value in stored_config(run).items()
        if _selected(name, source.keys)
        and name in current
        and name not in RUNTIME_MODEL_KEYS
        and name not in overridden
    }
    for file, key in source.files:
        if (run / file).exists() and key not in overridden:
            taken[key] = str(run / file)
    if checkpointing.as_path(path) == run:
        taken[source.key] = str(run / CHECKPOINTS)
    config.update_from_flattened_dict(taken)
    logging.info(
        "%s and %s from the run %s (config.%s); kept from the command line: %s",
        source.keys,
        [file for file, _ in source.files],
        run,
        source.key,
        sorted(k for k in overridden if _selected(k, source.keys)) or "none",
    )
    return run


def adopt(
    config: ml_collections.ConfigDict, overridden: Collection[str] = ()
) -> dict[str, epath.Path]:
    """Overlays each run that config.mode reads (RUN_SOURCES) onto `config`, in place: the keys
    its RunSource names (never RUNTIME_MODEL_KEYS) and its files' paths; keys in `overridden`
    (dotted, from the command line) keep their value. A path naming the run directory itself
    becomes its checkpoints root. Returns {source key: run directory} of the paths that are
    inside a run directory (a plain checkpoint leaves `config` unchanged)."""
    runs = {}
    for source in _sources(config):
        run = _adopt_one(config, source, overridden)
        if run is not None:
            runs[source.key] = run
    return runs
