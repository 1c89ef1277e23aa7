"""The one Orbax checkpoint reader/writer: training, generation, conversion and later modes.

Paths are `etils.epath.Path`s (`as_path`): a URL such as 'gs://bucket/run' stays that URL (epath
and Orbax write to it directly), a local path is made absolute. Nothing here uses os.path.

Layouts read (`item_directory` finds the pytree item, the folder holding `_METADATA`):
- an item folder itself (`save_params`, `StandardCheckpointer`);
- a step folder whose item is `state/` (training, the importer), `params/` or `default/`;
- a CheckpointManager root (`<workdir>/checkpoints`): its newest step that reads back.

A damaged newest step (an interrupted save, a lost or broken `_METADATA`, truncated or altered
array files) never hides the intact ones (`read_newest`): it is skipped with a warning naming it
and why, and the step before it is read; only when no step reads back is it an error.

Trees read (`restore_subtrees`): a training state {'params', 'ema_params', 'opt_state', ...}
whose params are {'dit', 'vae', 'text', 'clip'} (world model) or {'vae'} (VAE task); a params
tree {'params': {name: ...}} (`save_params`); or one component {'params': tree} (the importer).
Only the requested subtrees are read, straight onto the target shardings; every other leaf
(optimizer state, other components) stays on disk (Orbax partial restore).

EMA: training keeps an EMA of the trained leaves only (frozen leaves never change), so
`ema_params` lacks frozen components/leaves; asked for key='ema_params', the reader takes each
leaf the EMA lacks from `params`, and the caller always gets a full params set.

Training writes with a CheckpointManager (`make_manager`, `save`, `restore`) holding per step:
    <step>/state/   the TrainState (step, params, opt_state, ema_params, rng, NaN-guard counters)
    <step>/data/    process_<i>-of-<n>.json: each process's data-iterator get_state()
    <step>/meta/    JSON: step (and what the loop adds)
"""

import dataclasses
import json
import time
from collections.abc import Callable
from typing import Any

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from etils import epath
from flax import traverse_util
from orbax.checkpoint import checkpoint_managers as policies
from orbax.checkpoint.experimental import v1 as ocpv1

ITEM_NAMES = ("state", "params", "default")  # Item sub-folders of a step, looked in this order.
PARAMS = "params"  # The TrainState field holding every parameter (EMA gaps are filled from it).
EMA = "ema_params"  # The TrainState field holding the EMA of the trained parameters.
# A leaf's path in a checkpoint tree, e.g. ('params', 'dit', 'head', 'bias').
Leaf = tuple[str, ...]


def as_path(path: "str | epath.PathLike") -> epath.Path:
    """`path` as an epath.Path: URLs ('gs://b/run') unchanged, local paths absolute."""
    if not str(path):
        raise ValueError("empty checkpoint path; give a folder or a URL such as gs://bucket/run")
    if "://" in str(path):
        return epath.Path(str(path))
    return epath.Path(path).expanduser().absolute()


class UnreadableCheckpoint(ValueError):
    """A checkpoint whose files do not read back (truncated, altered or half-written)."""


def _item_of(path: epath.Path) -> epath.Path | None:
    """The item folder (holding `_METADATA`) of an item or step folder, else None."""
    if (path / "_METADATA").exists():
        return path
    for name in ITEM_NAMES:
        if (path / name / "_METADATA").exists():
            return path / name
    return None


def step_problem(step: epath.Path) -> str | None:
    """Why a step folder of a CheckpointManager root cannot be read, or None when it looks
    intact. Cheap: Orbax's commit marker and the item's `_METADATA` (present, valid JSON); no
    array is read (a damaged array file shows only when it is restored)."""
    if not ocp.utils.is_checkpoint_finalized(step):
        return "its save did not finish (no commit marker)"
    item = _item_of(step)
    if item is None:
        return f"no _METADATA in it or in its {list(ITEM_NAMES)} item folders"
    try:
        json.loads((item / "_METADATA").read_text())
    except (ValueError, UnicodeDecodeError) as error:
        return f"{item.name}/_METADATA is not valid JSON ({error})"
    return None


def _reason(error: BaseException) -> str:
    """The first line of the innermost cause of `error` (TensorStore's, not Orbax's wrapper)."""
    while error.__cause__ is not None:
        error = error.__cause__
    lines = str(error).strip().splitlines() or [type(error).__name__]
    return lines[0][:300]


def read_newest(path: "str | epath.PathLike", read: Callable[[epath.Path], Any]):
    """`read(item)` of the item of `path` (an item or step folder), or for a CheckpointManager
    root, of its newest step that is intact (`step_problem`) and reads back (`read` raises no
    UnreadableCheckpoint); each step skipped is logged as a warning naming it and why.

    Returns (what `read` returned, [step folders skipped, newest first]). Raises ValueError when
    `path` holds no checkpoint or none of its steps reads back, naming it.
    """
    path = as_path(path)
    if not path.is_dir():
        raise ValueError(
            f"checkpoint {path} does not exist; give an Orbax checkpoint written by training or "
            "by `--config.mode=convert` (docs/checkpoints.md)"
        )
    item = _item_of(path)
    if item is not None:
        return read(item), []
    steps = sorted((p for p in path.iterdir() if p.name.isdigit()), key=lambda p: -int(p.name))
    if not steps:
        raise ValueError(
            f"{path} is not an Orbax checkpoint: no _METADATA in it, in its {list(ITEM_NAMES)} "
            "sub-folders or in a numbered step folder"
        )
    skipped, reasons = [], []
    for step in steps:
        problem = step_problem(step)
        if problem is None:
            try:
                return read(_item_of(step)), skipped
            except UnreadableCheckpoint as error:
                problem = f"it does not read back: {_reason(error)}"
        logging.warning("checkpoint step %s skipped: %s; trying the step before", step, problem)
        skipped.append(step)
        reasons.append(f"step {step.name}: {problem}")
    raise ValueError(
        f"no step of checkpoint {path} can be read ({'; '.join(reasons)}); restore its files "
        "from a copy, or start from another checkpoint"
    )


def item_directory(path: "str | epath.PathLike") -> epath.Path:
    """The pytree item folder (holding `_METADATA`) of an item, a step folder or a manager root
    (its newest intact step; `read_newest`)."""
    return read_newest(path, lambda item: item)[0]


def _as_dict(tree):
    if isinstance(tree, dict):
        return {str(k): _as_dict(v) for k, v in tree.items()}
    if isinstance(tree, list | tuple):
        return {str(i): _as_dict(v) for i, v in enumerate(tree)}
    return tree


def leaf_metadata(path: "str | epath.PathLike") -> dict[Leaf, tuple[tuple[int, ...], np.dtype]]:
    """{leaf path: (shape, dtype)} of every array in a checkpoint (`read_newest`), without
    reading data."""
    return read_newest(path, _item_leaf_metadata)[0]


def _item_leaf_metadata(item: epath.Path) -> dict[Leaf, tuple[tuple[int, ...], np.dtype]]:
    """`leaf_metadata` of one item folder."""
    with ocp.PyTreeCheckpointer() as checkpointer:
        metadata = checkpointer.metadata(item).item_metadata
    if metadata is None:  # The arrays' own metadata (inside the array store) did not read back.
        raise UnreadableCheckpoint(f"checkpoint {item} cannot be read: no array metadata")
    tree = metadata.tree
    flat = traverse_util.flatten_dict(_as_dict(tree))
    return {k: (tuple(v.shape), np.dtype(v.dtype)) for k, v in flat.items() if hasattr(v, "shape")}


def _split(key: str) -> Leaf:
    return tuple(part for part in key.split("/") if part)


def _under(leaves, prefix: Leaf) -> dict[Leaf, Leaf]:
    """{path relative to prefix: stored path} of the leaves under `prefix`; a boxed subtree
    (every path ending in nn.Partitioned's 'value') is unboxed."""
    n = len(prefix)
    found = {k[n:]: k for k in leaves if k[:n] == prefix}  # A leaf itself: {(): prefix}.
    if found and all(k[-1:] == ("value",) for k in found):
        found = {k[:-1]: v for k, v in found.items()}
    return found


def subtree_leaves(
    leaves, key: str = PARAMS, name: str | None = None, whole: bool = True
) -> dict[Leaf, Leaf]:
    """{leaf path inside the subtree: stored leaf path} of one params subtree.

    The subtree is `<key>/<name>` (a training state or `save_params` tree), else top-level
    `<name>`, else (with `whole`) `<key>` itself, a one-component checkpoint of the importer, whose
    shapes the caller then checks against the component's; `key` may be a
    path ('ema_params', 'params/dit'). Under an 'ema_params' key, leaves the EMA lacks (frozen
    ones) come from the same place under 'params'.
    Returns {} when nothing matches.
    """
    prefix = _split(key)
    ema = prefix[:1] == (EMA,)
    found = {}
    candidates = [prefix + (name,), (name,)] + ([prefix] if whole else []) if name else [prefix]
    for candidate in candidates:
        found = _under(leaves, candidate)
        if ema and candidate[: len(prefix)] == prefix:
            found = {**_under(leaves, (PARAMS,) + candidate[1:]), **found}
        if found:
            break
    return found


def subtree_names(path: "str | epath.PathLike", key: str = PARAMS) -> list[str]:
    """Names of the params subtrees of a checkpoint (e.g. ['clip', 'dit', 'text', 'vae'])."""
    leaves = leaf_metadata(path)
    prefix = _split(key)
    n = len(prefix)
    places = [prefix, (PARAMS,) + prefix[1:]] if prefix[:1] == (EMA,) else [prefix]
    names = {k[n] for k in leaves for p in places if k[:n] == p and len(k) > n}
    return sorted(names or {k[0] for k in leaves})  # Else a plain tree: its top-level names.


def _restore(item: epath.Path, restore_args: dict[Leaf, Any]) -> dict[Leaf, Any]:
    """Reads only the leaves in `restore_args` ({stored leaf: RestoreArgs}) of an item."""
    args = traverse_util.unflatten_dict(restore_args)
    target = jax.tree.map(lambda _: 0, args, is_leaf=lambda x: isinstance(x, ocp.RestoreArgs))
    try:
        with ocp.PyTreeCheckpointer() as checkpointer:
            out = checkpointer.restore(
                item,
                args=ocp.args.PyTreeRestore(item=target, restore_args=args, partial_restore=True),
            )
    except Exception as error:  # TensorStore/Orbax raise plain Exceptions for damaged files.
        raise UnreadableCheckpoint(f"checkpoint {item} cannot be read: {_reason(error)}") from error
    return traverse_util.flatten_dict(out)


def restore_subtrees(
    path: "str | epath.PathLike",
    targets: dict[str, Any],
    key: str = PARAMS,
    default_sharding: jax.sharding.Sharding | None = None,
) -> dict[str, Any]:
    """{name: params} read from a checkpoint, each subtree found as in `subtree_leaves`.

    targets: {name: tree of ShapeDtypeStruct with .sharding} (e.g. `sharding.abstract_on_mesh`):
      restored onto those shardings and dtypes, shapes checked; a None target restores the stored
      shapes onto `default_sharding` (default: this host's first device) and is only looked for
      as `<key>/<name>` or `<name>` (a one-component checkpoint needs a target to check).
    Nothing else is read; a manager root's damaged newest step is skipped (`read_newest`).
    Raises ValueError naming what is missing or has the wrong shape.
    """
    default_sharding = default_sharding or jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    return read_newest(path, lambda item: _restore_item(item, targets, key, default_sharding))[0]


def _restore_item(item: epath.Path, targets: dict, key: str, default_sharding) -> dict[str, Any]:
    """`restore_subtrees` of one item folder."""
    leaves = _item_leaf_metadata(item)
    args, where = {}, {}
    for name, target in targets.items():
        located = subtree_leaves(leaves, key, name, whole=target is not None)
        if not located:
            raise ValueError(
                f"checkpoint {item} has no {name!r} params under {key!r}; it holds "
                f"{subtree_names(item, key)} (set the params key, e.g. 'params' or 'ema_params')"
            )
        if target is None:
            flat_target = {
                k: jax.ShapeDtypeStruct(*leaves[v], sharding=default_sharding)
                for k, v in located.items()
            }
        else:
            flat_target = _flatten(target)
            _check(item, name, flat_target, located, leaves)
        for k, t in flat_target.items():
            args[located[k]] = ocp.ArrayRestoreArgs(
                sharding=t.sharding, global_shape=t.shape, dtype=t.dtype
            )
        where[name] = {k: located[k] for k in flat_target}
    if not args:
        return {}
    out = _restore(item, args)
    return {name: _unflatten({k: out[v] for k, v in flat.items()}) for name, flat in where.items()}


def _flatten(tree) -> dict:
    return traverse_util.flatten_dict(tree) if isinstance(tree, dict) else {(): tree}


def _unflatten(flat: dict):
    return flat[()] if () in flat else traverse_util.unflatten_dict(flat)


def _check(item, name: str, flat_target: dict, located: dict, leaves: dict) -> None:
    missing = sorted(set(flat_target) - set(located))
    if missing:
        raise ValueError(
            f"checkpoint {item} lacks {name}/{'/'.join(missing[0])} (and {len(missing) - 1} more "
            "params the model needs): it was made for another component or config"
        )
    for k, t in flat_target.items():
        stored = leaves[located[k]][0]
        if tuple(t.shape) != stored:
            raise ValueError(
                f"checkpoint {item}: {'/'.join(located[k])} has shape {stored} but the config "
                f"needs {tuple(t.shape)}: the checkpoint was made for another config"
            )


def read_leaves(path: "str | epath.PathLike", wanted: list[Leaf], leaves: dict) -> dict:
    """{leaf: numpy array} of the `wanted` stored leaves, whole on this host; nothing else read."""
    args = {k: ocp.RestoreArgs(restore_type=np.ndarray, dtype=leaves[k][1]) for k in wanted}
    out = _restore(item_directory(path), args)
    return {k: np.asarray(out[k]) for k in wanted}


def save_params(path: "str | epath.PathLike", params: dict, key: str = PARAMS) -> None:
    """Writes {key: params} (e.g. {'dit': ..., 'vae': ...}) as an Orbax item folder (blocking)."""
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(as_path(path), {key: params})
        checkpointer.wait_until_finished()


class PartialWriter:
    """Adds leaf groups to one Orbax checkpoint at `path` (item `<path>/state`, Orbax's partial
    save), so a whole model never has to exist at once; `finalize()` commits it."""

    def __init__(self, path: "str | epath.PathLike", custom_metadata: dict | None = None):
        self.path = as_path(path)
        self.custom_metadata = custom_metadata
        self.calls = 0

    def add(self, flat: dict[Leaf, jax.Array]) -> None:
        tree = traverse_util.unflatten_dict(flat)
        metadata = self.custom_metadata if self.calls == 0 else None
        context = ocpv1.Context()
        context.array.saving.use_compression = False  # Weights barely compress; 3x faster.
        context.array.saving.use_replica_parallel = False  # No per-device slice programs.
        with context:
            ocpv1.partial.save(self.path, tree, custom_metadata=metadata)
        self.calls += 1

    def finalize(self) -> None:
        ocpv1.partial.finalize(self.path)


class DataIteratorHandler(ocp.CheckpointHandler):
    """Saves/restores one iterator per process as JSON (grain-compatible file naming).

    The iterator needs `get_state()` (a JSON-able dict, or bytes as grain's DataLoader returns)
    and `set_state(state)`.
    """

    def _file(self, directory: epath.Path) -> epath.Path:
        return directory / f"process_{jax.process_index()}-of-{jax.process_count()}.json"

    def save(self, directory: epath.Path, args: "DataSave"):
        state = args.item.get_state()
        payload = {"bytes": state.decode()} if isinstance(state, bytes) else {"json": state}
        self._file(directory).write_text(json.dumps(payload))

    def restore(self, directory: epath.Path, args: "DataRestore"):
        path = self._file(directory)
        if not path.exists():
            raise ValueError(
                f"no data-iterator state {path.name} in {directory}: the checkpoint was written "
                "by a different number of processes; resume with the same process count"
            )
        payload = json.loads(path.read_text())
        state = payload["bytes"].encode() if "bytes" in payload else payload["json"]
        args.item.set_state(state)
        return args.item

    def structure(self, directory):
        return None

    def metadata(self, directory):
        return None

    def finalize(self, directory):
        pass

    def close(self):
        pass


@ocp.args.register_with_handler(DataIteratorHandler, for_save=True)
@dataclasses.dataclass
class DataSave(ocp.args.CheckpointArgs):
    item: Any


@ocp.args.register_with_handler(DataIteratorHandler, for_restore=True)
@dataclasses.dataclass
class DataRestore(ocp.args.CheckpointArgs):
    item: Any


def make_manager(
    directory: "str | epath.PathLike", ckpt_cfg: ml_collections.ConfigDict
) -> ocp.CheckpointManager:
    """CheckpointManager keeping the latest `keep` (+ `keep_best` by eval loss) checkpoints."""
    keep = [policies.LatestN(n=ckpt_cfg.keep)]
    if ckpt_cfg.keep_best > 0:
        keep.append(
            policies.BestN(
                get_metric_fn=lambda metrics: metrics["eval_loss"],
                reverse=True,  # BestN keeps the largest after sorting; reversed = lowest loss
                n=ckpt_cfg.keep_best,
                keep_checkpoints_without_metrics=False,
            )
        )
    options = ocp.CheckpointManagerOptions(
        preservation_policy=policies.AnyPreservationPolicy(keep),
        enable_async_checkpointing=ckpt_cfg.async_save,
        cleanup_tmp_directories=True,
        create=True,
    )
    return ocp.CheckpointManager(
        as_path(directory), options=options, item_names=("state", "data", "meta")
    )


def save(manager, step: int, state, data_iterator=None, meta=None, eval_loss=None) -> bool:
    """Starts an (async) save of `state` at `step`; returns False if that step already exists."""
    if step in manager.all_steps():
        return False
    items = {"state": ocp.args.StandardSave(state), "meta": ocp.args.JsonSave(meta or {})}
    if data_iterator is not None:
        items["data"] = DataSave(data_iterator)
    metrics = None if eval_loss is None else {"eval_loss": float(eval_loss)}
    return manager.save(step, args=ocp.args.Composite(**items), metrics=metrics, force=True)


def restore(manager, step: int, abstract_state, data_iterator=None):
    """Restores the state (onto the shardings of `abstract_state`'s ShapeDtypeStructs) and the
    iterator position; a checkpoint written on one mesh restores onto another, each process
    reading only its shards. Returns (state, meta dict)."""
    items = {"state": ocp.args.StandardRestore(abstract_state), "meta": ocp.args.JsonRestore()}
    if data_iterator is not None:
        items["data"] = DataRestore(data_iterator)
    restored = manager.restore(step, args=ocp.args.Composite(**items))
    return restored["state"], dict(restored["meta"] or {})


def restore_latest(manager, abstract_state, data_iterator=None):
    """`restore` of the newest step of `manager` that reads back, or None before the first save.

    A damaged newer step is skipped with a warning (`read_newest`) and then moved aside to
    `<step>.unreadable-<unix time>` (kept, nothing is deleted), so the run saves that step again.
    A step whose arrays do not fit `abstract_state` (another model or optimizer) is refused with
    a ValueError, not skipped: every step of the run would be refused alike.
    Returns (state, meta dict, step).
    """
    if manager.latest_step() is None:
        return None

    def read(item: epath.Path):
        step = int(item.parent.name)
        _check_fits(item, abstract_state)
        error = None
        try:
            state, meta = restore(manager, step, abstract_state, data_iterator)
        except Exception as caught:  # Damaged files: TensorStore/Orbax raise plain Exceptions.
            error = caught
        if not _everywhere(error is None):  # Every process resumes from the same step.
            reason = _reason(error) if error else "it failed on another process"
            raise UnreadableCheckpoint(f"checkpoint {item} cannot be read: {reason}") from error
        return state, meta, step

    restored, skipped = read_newest(manager.directory, read)
    _set_aside(manager, skipped)
    return restored


def _check_fits(item: epath.Path, abstract_state) -> None:
    """Refuses a stored state whose leaves or shapes differ from `abstract_state`'s."""
    stored = {k: v[0] for k, v in _item_leaf_metadata(item).items()}
    wanted = {k: tuple(v.shape) for k, v in ocp.tree.to_flat_dict(abstract_state).items()}
    wrong = [
        f"{'/'.join(k)}: stored {stored.get(k, 'nothing')}, this run {wanted.get(k, 'nothing')}"
        for k in sorted(set(stored) | set(wanted))
        if stored.get(k) != wanted.get(k)
    ]
    if wrong:
        raise ValueError(
            f"checkpoint {item} does not fit this run's state ({len(wrong)} arrays differ, e.g. "
            f"{'; '.join(wrong[:3])}): the run was trained with another model or optimizer "
            "config; resume with the config it was trained with, or train in a new workdir"
        )


def _everywhere(ok: bool) -> bool:
    """True when `ok` holds on every process."""
    if jax.process_count() == 1:
        return ok
    from jax.experimental import multihost_utils  # noqa: PLC0415

    return bool(np.all(multihost_utils.process_allgather(np.asarray(ok))))


def sync(name: str) -> None:
    """A barrier of every process (nothing with one process)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils  # noqa: PLC0415

        multihost_utils.sync_global_devices(name)


def _set_aside(manager, steps: list[epath.Path]) -> None:
    """Renames each step folder to `<step>.unreadable-<unix time>`, which the manager no longer
    lists (so it saves that step again and never deletes the old one)."""
    if not steps:
        return
    if jax.process_index() == 0:
        stamp = int(time.time())
        for step in steps:
            aside = step.parent / f"{step.name}.unreadable-{stamp}"
            step.rename(aside)
            logging.warning("moved the unreadable step %s to %s (kept)", step, aside)
    sync("wow_jax_set_aside_unreadable_steps")
    manager.reload()
