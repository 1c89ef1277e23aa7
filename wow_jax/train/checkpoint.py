"""Orbax checkpoints of the train state and the data-iterator position.

Layout (one Orbax CheckpointManager under `<workdir>/checkpoints`):

    checkpoints/<step>/state/   TrainState: step, params, opt_state, ema_params, rng, NaN-guard
                                counters. params (and ema_params) = {'dit', 'vae', 'text', 'clip'}
                                for the world model, {'vae'} for the VAE task: generation reads
                                state/params (or state/ema_params) directly (docs/generation.md)
    checkpoints/<step>/data/    process_<i>-of-<n>.json: each process's iterator get_state()
    checkpoints/<step>/meta/    JSON: step (and what the loop adds)

Saves are asynchronous (`checkpoint.async_save`); the last `checkpoint.keep` checkpoints are kept
plus the `checkpoint.keep_best` ones with the lowest eval loss. Restoring takes an abstract state
whose leaves carry the *current* mesh's shardings, so a checkpoint written on one mesh shape
(e.g. fsdp=8) restores onto another (fsdp=2, tensor=4); every process reads only its shards.
"""

import dataclasses
import json
from typing import Any

import jax
import ml_collections
import orbax.checkpoint as ocp
from etils import epath
from orbax.checkpoint import checkpoint_managers as policies


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


def make_manager(directory: str, ckpt_cfg: ml_collections.ConfigDict) -> ocp.CheckpointManager:
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
        epath.Path(directory).absolute(),
        options=options,
        item_names=("state", "data", "meta"),
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


def abstract_with_shardings(abstract_tree, shardings):
    """ShapeDtypeStructs carrying the target shardings (what restore places the arrays on)."""
    return jax.tree.map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract_tree, shardings
    )


def restore(manager, step: int, abstract_state, data_iterator=None):
    """Restores the state (onto the shardings in `abstract_state`) and the iterator position.

    Returns (state, meta dict).
    """
    items = {"state": ocp.args.StandardRestore(abstract_state), "meta": ocp.args.JsonRestore()}
    if data_iterator is not None:
        items["data"] = DataRestore(data_iterator)
    restored = manager.restore(step, args=ocp.args.Composite(**items))
    return restored["state"], dict(restored["meta"] or {})


def params_directory(directory: str) -> epath.Path:
    """The PyTree item inside `directory`: a manager root (newest step), a step folder, or the
    item folder itself; the item is 'state' (training) or a plain params tree (importer)."""
    path = epath.Path(directory).absolute()
    if not path.exists():
        raise ValueError(f"checkpoint directory {path} does not exist")
    if (path / "_METADATA").exists():
        return path
    for item in ("state", "params", "default"):
        if (path / item / "_METADATA").exists():
            return path / item
    steps = sorted(int(p.name) for p in path.iterdir() if p.name.isdigit())
    if not steps:
        raise ValueError(f"{path} is not an Orbax checkpoint (no _METADATA, item or step folder)")
    return params_directory(str(path / str(steps[-1])))


def _params_tree(path: epath.Path, key: str):
    """(prefix, {name: metadata}) of the params in a checkpoint item: its `key` sub-tree
    ('params' / 'ema_params' of a TrainState), or its top level (a plain params tree)."""
    with ocp.PyTreeCheckpointer() as checkpointer:
        tree = checkpointer.metadata(path)
    tree = getattr(tree, "item_metadata", tree)
    tree = getattr(tree, "tree", tree)
    if key in tree:
        return (key,), dict(tree[key])
    return (), dict(tree)


def stored_params(directory: str, key: str = "params") -> list[str]:
    """Top-level names of a checkpoint's params (e.g. ['clip', 'dit', 'text', 'vae'])."""
    return sorted(_params_tree(params_directory(directory), key)[1])


def restore_params(directory: str, abstract_params: dict, key: str = "params") -> dict:
    """Reads the params subtrees named in `abstract_params` ({'vae': tree, ...}, leaves
    ShapeDtypeStructs with the target shardings) from a checkpoint; nothing else is read.

    Used by `checkpoint.init_from` and the demo; missing names raise KeyError."""
    path = params_directory(directory)
    prefix, stored = _params_tree(path, key)
    missing = [k for k in abstract_params if k not in stored]
    if missing:
        raise KeyError(f"{path} has params {sorted(stored)}, not {missing}")
    target = dict(abstract_params)
    for name in reversed(prefix):
        target = {name: target}
    restore_args = jax.tree.map(
        lambda a: ocp.ArrayRestoreArgs(sharding=a.sharding, global_shape=a.shape, dtype=a.dtype),
        target,
    )
    with ocp.PyTreeCheckpointer() as checkpointer:
        out = checkpointer.restore(
            path,
            args=ocp.args.PyTreeRestore(
                item=target, restore_args=restore_args, partial_restore=True
            ),
        )
    for name in prefix:
        out = out[name]
    return out
