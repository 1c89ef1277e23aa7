"""Orbax checkpoints of the train state and the data-iterator position.

Layout (one Orbax CheckpointManager under `<workdir>/checkpoints`):

    checkpoints/<step>/state/   TrainState: step, params, opt_state, ema_params, rng, bad counters
    checkpoints/<step>/data/    process_<i>-of-<n>.json: each process's iterator get_state()
    checkpoints/<step>/meta/    JSON: step, config name, eval loss (when measured)

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
        epath.Path(directory).absolute(), options=options, item_names=("state", "data", "meta")
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


def restore_params(directory: str, abstract_params, key: str = "params"):
    """Reads only the `params` subtree (or `ema_params`) of the latest checkpoint in `directory`.

    `abstract_params` carries the target shardings. Used by `checkpoint.init_from` and by
    generation; a checkpoint directory may be a manager root or one `<step>` folder.
    """
    path = epath.Path(directory).absolute()
    if not (path / "state").exists():
        steps = sorted(int(p.name) for p in path.iterdir() if p.name.isdigit())
        if not steps:
            raise ValueError(f"no checkpoint under {path}; expected <dir>/<step>/state")
        path = path / str(steps[-1])
    target = {key: abstract_params}
    restore_args = jax.tree.map(
        lambda a: ocp.ArrayRestoreArgs(sharding=a.sharding, global_shape=a.shape, dtype=a.dtype),
        target,
    )
    with ocp.PyTreeCheckpointer() as checkpointer:
        out = checkpointer.restore(
            path / "state",
            args=ocp.args.PyTreeRestore(
                item=target, restore_args=restore_args, partial_restore=True
            ),
        )
    return out[key]
