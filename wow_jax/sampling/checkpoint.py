"""The parameter checkpoint that generation reads (see docs/generation.md, "Checkpoint layout").

An Orbax PyTree checkpoint (StandardCheckpointer) whose top level is a dict with some of
    {'dit': ..., 'vae': ..., 'text': ..., 'clip': ...}
each the unboxed 'params' collection of that component's Flax module. `checkpoint_dir` may be
that directory itself, or an Orbax CheckpointManager root: then its newest numbered step is used,
and inside it the item directory 'params' when there is one.
"""

import os
import re

import jax
import orbax.checkpoint as ocp

COMPONENTS = ("dit", "vae", "text", "clip")


def resolve(checkpoint_dir: str) -> str:
    """The PyTree directory inside `checkpoint_dir` (newest step, item 'params' if present)."""
    path = os.path.abspath(os.path.expanduser(checkpoint_dir))
    if not checkpoint_dir or not os.path.isdir(path):
        raise ValueError(
            f"checkpoint directory {checkpoint_dir!r} does not exist; set "
            "--config.checkpoint.init_from to an Orbax checkpoint written by training or by "
            "`--config.mode=convert`"
        )
    steps = [d for d in os.listdir(path) if re.fullmatch(r"\d+", d)]
    if steps:
        path = os.path.join(path, max(steps, key=int))
    if os.path.isdir(os.path.join(path, "params")):
        path = os.path.join(path, "params")
    return path


def save_params(checkpoint_dir: str, params: dict) -> None:
    """Writes {'dit': ..., 'vae': ..., ...} as an Orbax PyTree checkpoint (blocking)."""
    unknown = set(params) - set(COMPONENTS)
    if unknown:
        raise ValueError(f"checkpoint components must be among {COMPONENTS}, got {sorted(unknown)}")
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(os.path.abspath(checkpoint_dir), params)
    checkpointer.wait_until_finished()


def load_params(checkpoint_dir: str, targets: dict | None = None, default_sharding=None) -> dict:
    """Restores the component trees.

    targets: optional {component: tree of jax.ShapeDtypeStruct with .sharding} to restore straight
    onto a mesh (what a 14B model needs); components without a target are restored with
    `default_sharding` (e.g. replicated on the mesh; default: the first device).
    Returns {component: params} for the components the checkpoint holds.
    """
    path = resolve(checkpoint_dir)
    checkpointer = ocp.StandardCheckpointer()
    metadata = checkpointer.metadata(path)
    tree = getattr(metadata, "item_metadata", metadata)
    names = set(tree.keys()) if hasattr(tree, "keys") else set()
    if not names & set(COMPONENTS):
        raise ValueError(
            f"checkpoint {path!r} holds {sorted(names)}, expected a dict with some of "
            f"{list(COMPONENTS)} (see docs/generation.md, 'Checkpoint layout')"
        )
    targets = targets or {}
    default_sharding = default_sharding or jax.sharding.SingleDeviceSharding(jax.devices()[0])
    target = {k: targets.get(k) or _abstract(tree[k], default_sharding) for k in names}
    params = checkpointer.restore(path, target)
    return {k: v for k, v in params.items() if k in COMPONENTS}


def _abstract(metadata_tree, sharding):
    """ShapeDtypeStructs with `sharding` for a subtree we have no target for."""
    return jax.tree.map(
        lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=sharding), metadata_tree
    )
