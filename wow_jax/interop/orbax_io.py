"""Orbax checkpoints written and read a few leaves at a time.

The importer writes with Orbax's partial save (`orbax.checkpoint.experimental.v1.partial`): each
call adds a group of leaves to a pending checkpoint and `finalize` commits it, so the whole model
never has to exist at once. The resulting folder is a standard Orbax checkpoint whose pytree item
is `<path>/state`, holding `{'params': ...}`; restore it with `load_params`, or with Orbax v0 as
`StandardCheckpointer().restore(path / 'state', abstract_tree)`.

Reading (the exporter) restores chosen leaves of any Orbax pytree item (ours, or a training
checkpoint's `params` / `ema_params`) with the others left as placeholders.
"""

import re
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import traverse_util
from orbax.checkpoint.experimental import v1 as ocpv1

ITEM = "state"  # Sub-folder of the pytree item in a checkpoint written by `PartialWriter`.


class PartialWriter:
    """Adds leaf groups to one Orbax checkpoint at `path`; `finalize()` commits it."""

    def __init__(self, path: Path, custom_metadata: dict | None = None):
        self.path = Path(path)
        self.custom_metadata = custom_metadata
        self.calls = 0

    def add(self, flat: dict[tuple[str, ...], jax.Array]) -> None:
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


def item_dir(path: Path) -> Path:
    """The pytree item folder (the one holding `_METADATA`) of a checkpoint, a step or its root.

    Accepts a checkpoint written by the importer, an Orbax v0 item folder, a CheckpointManager
    step folder (one item sub-folder) or a CheckpointManager root (latest numeric step).
    """
    path = Path(path)
    if not path.is_dir():
        raise ValueError(f"Orbax checkpoint {path} does not exist or is not a folder")
    if (path / "_METADATA").exists():
        return path
    if (path / ITEM / "_METADATA").exists():
        return path / ITEM
    steps = sorted((int(p.name), p) for p in path.iterdir() if re.fullmatch(r"\d+", p.name))
    if steps:
        return item_dir(steps[-1][1])
    items = sorted(p for p in path.iterdir() if (p / "_METADATA").exists())
    if len(items) == 1:
        return items[0]
    raise ValueError(
        f"{path} is not an Orbax checkpoint (no _METADATA in it, in {path / ITEM}, in one item "
        f"sub-folder or in a numeric step folder); found items {[p.name for p in items]}"
    )


def leaf_metadata(path: Path) -> dict[tuple[str, ...], tuple[tuple[int, ...], np.dtype]]:
    """{leaf path: (shape, dtype)} of every array in a checkpoint item, without reading data."""
    tree = ocp.PyTreeCheckpointer().metadata(item_dir(path)).item_metadata.tree
    flat = traverse_util.flatten_dict(_as_dict(tree))
    return {k: (tuple(v.shape), np.dtype(v.dtype)) for k, v in flat.items() if hasattr(v, "shape")}


def _as_dict(tree):
    if isinstance(tree, dict):
        return {k: _as_dict(v) for k, v in tree.items()}
    if isinstance(tree, list | tuple):
        return {str(i): _as_dict(v) for i, v in enumerate(tree)}
    return tree


def _restore(path: Path, flat_args: dict) -> dict:
    """Restores the leaves whose value in `flat_args` is an ArrayRestoreArgs (others skipped)."""
    restore_args = traverse_util.unflatten_dict(flat_args)
    item = jax.tree.map(lambda a: a if a is ocp.PLACEHOLDER else 0, restore_args)
    restored = ocp.PyTreeCheckpointer().restore(
        item_dir(path), args=ocp.args.PyTreeRestore(item=item, restore_args=restore_args)
    )
    return traverse_util.flatten_dict(restored)


def read_leaves(
    path: Path, wanted: list[tuple[str, ...]], all_leaves: dict
) -> dict[tuple[str, ...], np.ndarray]:
    """Restores only the `wanted` leaves (whole, on this host) straight into numpy arrays."""
    flat = {key: ocp.PLACEHOLDER for key in all_leaves}
    for key in wanted:
        flat[key] = ocp.RestoreArgs(restore_type=np.ndarray, dtype=all_leaves[key][1])
    out = _restore(path, flat)
    return {key: np.asarray(out[key]) for key in wanted}


def fit_sharding(sharding: jax.sharding.NamedSharding, shape) -> jax.sharding.NamedSharding:
    """`sharding` with the mesh axes dropped from dims they do not divide (those dims replicated),
    e.g. a 3-channel VAE output bias under an 8-way fsdp mesh."""
    spec = list(sharding.spec) + [None] * (len(shape) - len(sharding.spec))
    fitted = []
    for size, axes in zip(shape, spec, strict=True):
        names = (axes,) if isinstance(axes, str) else tuple(axes or ())
        ways = int(np.prod([sharding.mesh.shape[a] for a in names])) if names else 1
        fitted.append(axes if size % ways == 0 else None)
    return jax.sharding.NamedSharding(sharding.mesh, jax.sharding.PartitionSpec(*fitted))


def param_shardings(abstract_params, mesh) -> dict:
    """{flat path: NamedSharding} from the params' logical axis names, fitted to their shapes;
    with `mesh=None` everything goes to this host's first device."""
    from flax import linen as nn  # noqa: PLC0415

    from wow_jax import sharding as shd  # noqa: PLC0415

    unboxed = traverse_util.flatten_dict(nn.meta.unbox(abstract_params))
    if mesh is None:
        single = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        return {k: single for k in unboxed}
    shardings = traverse_util.flatten_dict(shd.variable_shardings(abstract_params, mesh))
    return {k: fit_sharding(shardings[k], unboxed[k].shape) for k in unboxed}


def load_params(path: Path, abstract_params, mesh=None, key: str = "params"):
    """Restores the `key` sub-tree of an imported checkpoint onto `mesh` (or one device).

    `abstract_params` is the model's boxed abstract tree (`abstract_params(model_cfg)`); its
    logical axis names decide each array's sharding. Returns the unboxed param tree.
    """
    from flax import linen as nn  # noqa: PLC0415

    unboxed = traverse_util.flatten_dict(nn.meta.unbox(abstract_params))
    shardings = param_shardings(abstract_params, mesh)
    all_leaves = leaf_metadata(path)
    flat = {leaf: ocp.PLACEHOLDER for leaf in all_leaves}
    missing = [k for k in unboxed if (key, *k) not in all_leaves]
    if missing:
        raise ValueError(
            f"{path} has no {key}/{'/'.join(missing[0])} (and {len(missing) - 1} more params "
            f"the model needs); was it imported for another component or config?"
        )
    for k, leaf in unboxed.items():
        flat[(key, *k)] = ocp.ArrayRestoreArgs(
            sharding=shardings[k], global_shape=leaf.shape, dtype=leaf.dtype
        )
    out = _restore(path, flat)
    return traverse_util.unflatten_dict({k: out[(key, *k)] for k in unboxed})
