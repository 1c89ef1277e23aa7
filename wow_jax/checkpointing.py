"""The one Orbax checkpoint reader/writer: training, generation, conversion and later modes.

Paths are `etils.epath.Path`s (`as_path`): a URL such as 'gs://bucket/run' stays that URL (epath
and Orbax write to it directly), a local path is made absolute. Nothing here uses os.path.

Layouts read (`item_directory` finds the pytree item, the folder holding `_METADATA`):
- an item folder itself (`save_params`, `StandardCheckpointer`);
- a step folder whose item is `state/` (training, the importer), `params/` or `default/`;
- a CheckpointManager root (`<workdir>/checkpoints`): its newest numeric step.

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
from typing import Any

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
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


def item_directory(path: "str | epath.PathLike") -> epath.Path:
    """The pytree item folder (holding `_METADATA`) of an item, a step folder or a manager root."""
    path = as_path(path)
    if not path.is_dir():
        raise ValueError(
            f"checkpoint {path} does not exist; give an Orbax checkpoint written by training or "
            "by `--config.mode=convert` (docs/checkpoints.md)"
        )
    if (path / "_METADATA").exists():
        return path
    for name in ITEM_NAMES:
        if (path / name / "_METADATA").exists():
            return path / name
    steps = sorted((int(p.name), p) for p in path.iterdir() if p.name.isdigit())
    if steps:
        return item_directory(steps[-1][1])
    raise ValueError(
        f"{path} is not an Orbax checkpoint: no _METADATA in it, in its {list(ITEM_NAMES)} "
        "sub-folders or in a numbered step folder"
    )


def _as_dict(tree):
    if isinstance(tree, dict):
        return {str(k): _as_dict(v) for k, v in tree.items()}
    if isinstance(tree, list | tuple):
        return {str(i): _as_dict(v) for i, v in enumerate(tree)}
    return tree


def leaf_metadata(path: "str | epath.PathLike") -> dict[Leaf, tuple[tuple[int, ...], np.dtype]]:
    """{leaf path: (shape, dtype)} of every array in a checkpoint item, without reading data."""
    with ocp.PyTreeCheckpointer() as checkpointer:
        tree = checkpointer.metadata(item_directory(path)).item_metadata.tree
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
    with ocp.PyTreeCheckpointer() as checkpointer:
        out = checkpointer.restore(
            item,
            args=ocp.args.PyTreeRestore(item=target, restore_args=args, partial_restore=True),
        )
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
    Nothing else is read. Raises ValueError naming what is missing or has the wrong shape.
    """
    item = item_directory(path)
    leaves = leaf_metadata(item)
    default_sharding = default_sharding or jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
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
