"""Where generation finds its weights (docs/generation.md, "Checkpoints").

Two Orbax layouts are read, each restoring only the arrays needed, straight onto the mesh:
- combined (`config.checkpoint.init_from`): a pytree whose `<params_key>` sub-tree (or whose top
  level) is {'dit': ..., 'vae': ..., 'text': ..., 'clip': ...} (any subset). Training writes
  this (`<workdir>/checkpoints/<step>/state` with params / ema_params); `save_params` too.
- per component (`config.sample.<name>_checkpoint`): a pytree whose `<params_key>` sub-tree is
  that component's params, as `--config.mode=convert` (the PyTorch importer) writes it. These
  override the combined checkpoint.
A path may be the pytree item folder (holding _METADATA), a folder with the item in `state/`, or a
CheckpointManager root (the newest numbered step is used).
"""

import os
import re

import jax
import orbax.checkpoint as ocp
from flax import traverse_util

COMPONENTS = ("dit", "vae", "text", "clip")
ITEM_NAMES = ("state", "params", "default")  # Item sub-folders looked into, in this order.


def item_dir(checkpoint_dir: str) -> str:
    """The pytree item folder inside `checkpoint_dir` (see module docstring)."""
    path = os.path.abspath(os.path.expanduser(checkpoint_dir))
    if not checkpoint_dir or not os.path.isdir(path):
        raise ValueError(
            f"checkpoint {checkpoint_dir!r} does not exist; give an Orbax checkpoint written by "
            "training or by `--config.mode=convert` (docs/generation.md, 'Checkpoints')"
        )
    if os.path.exists(os.path.join(path, "_METADATA")):
        return path
    for name in ITEM_NAMES:
        if os.path.exists(os.path.join(path, name, "_METADATA")):
            return os.path.join(path, name)
    steps = [d for d in os.listdir(path) if re.fullmatch(r"\d+", d)]
    if steps:
        return item_dir(os.path.join(path, max(steps, key=int)))
    raise ValueError(
        f"{checkpoint_dir!r} is not an Orbax checkpoint (no _METADATA in it, in {ITEM_NAMES} "
        "sub-folders, or in a numbered step folder)"
    )


def _leaves(path: str) -> dict[tuple[str, ...], object]:
    tree = ocp.PyTreeCheckpointer().metadata(path).item_metadata.tree
    return {k: v for k, v in traverse_util.flatten_dict(tree).items() if hasattr(v, "shape")}


def _find_prefix(leaves, prefixes) -> tuple[str, ...] | None:
    for prefix in prefixes:
        if any(k[: len(prefix)] == prefix for k in leaves):
            return prefix
    return None


def restore_subtree(path: str, leaves: dict, prefix: tuple, target, default_sharding):
    """Restores the sub-tree at `prefix` only (others are skipped), onto `target`'s shardings.

    target: tree of ShapeDtypeStruct with .sharding (or None: checkpoint shapes, default_sharding).
    """
    sub = {k[len(prefix) :]: v for k, v in leaves.items() if k[: len(prefix)] == prefix}
    if target is not None:
        flat_target = traverse_util.flatten_dict(target)
        missing = sorted(set(flat_target) - set(sub))
        if missing:
            raise ValueError(
                f"{path}/{'/'.join(prefix)} lacks {'/'.join(missing[0])} (and "
                f"{len(missing) - 1} more params the model needs): the checkpoint was made for "
                "another component or config"
            )
        wrong = [k for k in flat_target if tuple(flat_target[k].shape) != tuple(sub[k].shape)]
        if wrong:
            k = wrong[0]
            raise ValueError(
                f"{path}/{'/'.join(prefix + k)} has shape {tuple(sub[k].shape)} but the config "
                f"needs {tuple(flat_target[k].shape)}: the checkpoint was made for another config"
            )
    else:
        flat_target = {
            k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=default_sharding)
            for k, v in sub.items()
        }
    flat = {k: ocp.PLACEHOLDER for k in leaves}
    for k, t in flat_target.items():
        flat[prefix + k] = ocp.ArrayRestoreArgs(
            sharding=t.sharding, global_shape=t.shape, dtype=t.dtype
        )
    restore_args = traverse_util.unflatten_dict(flat)
    item = jax.tree.map(lambda a: a if a is ocp.PLACEHOLDER else 0, restore_args)
    out = ocp.PyTreeCheckpointer().restore(
        path, args=ocp.args.PyTreeRestore(item=item, restore_args=restore_args)
    )
    out = traverse_util.flatten_dict(out)
    return traverse_util.unflatten_dict({k: out[prefix + k] for k in flat_target})


def load_params(
    combined: str = "",
    per_component: dict[str, str] | None = None,
    params_key: str = "params",
    targets: dict | None = None,
    default_sharding=None,
) -> dict:
    """{component: params} from a combined checkpoint and/or per-component ones.

    targets: optional {component: ShapeDtypeStruct tree with shardings} (restore onto a mesh and
    check shapes); other components restore with `default_sharding` (default: first device).
    """
    targets = targets or {}
    default_sharding = default_sharding or jax.sharding.SingleDeviceSharding(jax.devices()[0])
    sources = {name: path for name, path in (per_component or {}).items() if path}
    params = {}
    if combined:
        path = item_dir(combined)
        leaves = _leaves(path)
        for name in COMPONENTS:
            if name in sources:
                continue
            prefix = _find_prefix(leaves, [(params_key, name), (name,)])
            if prefix is not None:
                params[name] = restore_subtree(
                    path, leaves, prefix, targets.get(name), default_sharding
                )
        if not params and not sources:
            tops = sorted({k[0] for k in leaves})
            raise ValueError(
                f"checkpoint {combined!r} holds {tops}, expected {params_key!r} or top-level "
                f"keys among {list(COMPONENTS)} (docs/generation.md, 'Checkpoints')"
            )
    for name, source in sources.items():
        path = item_dir(source)
        leaves = _leaves(path)
        prefix = _find_prefix(leaves, [(params_key, name), (name,), (params_key,)])
        if prefix is None:
            raise ValueError(
                f"{name} checkpoint {source!r} has no {params_key!r} sub-tree; set "
                "config.sample.params_key ('params' or 'ema_params')"
            )
        params[name] = restore_subtree(path, leaves, prefix, targets.get(name), default_sharding)
    return params


def save_params(checkpoint_dir: str, params: dict, params_key: str = "params") -> None:
    """Writes {params_key: {'dit': ..., 'vae': ..., ...}} as an Orbax checkpoint (blocking)."""
    unknown = set(params) - set(COMPONENTS)
    if unknown:
        raise ValueError(f"checkpoint components must be among {COMPONENTS}, got {sorted(unknown)}")
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(os.path.abspath(checkpoint_dir), {params_key: params})
    checkpointer.wait_until_finished()
