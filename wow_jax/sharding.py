"""Device mesh, logical-axis names and the one table of rules mapping them onto the mesh.

Model code annotates every parameter (`nn.with_logical_partitioning`) and large activation
(`nn.with_logical_constraint`) with the logical names defined here. `LOGICAL_RULES` maps those
names onto the mesh axes ('data', 'fsdp', 'tensor', 'sequence'); changing the parallelism is a
config change (`config.mesh`, whose `rules` may replace the table: `rules(config.mesh)`), never a
code change. Every function taking `rules` defaults to `LOGICAL_RULES`; no rules are global state.

Flax resolves the rules in table order and never uses one mesh axis twice in a spec (a rule
whose axes are taken falls through to the next rule for that name), so a parameter
`[embed, mlp]` lands on `[(fsdp, sequence), tensor]` while an activation `[batch, length,
embed]` lands on `[(data, fsdp), sequence, None]`. Parameters (and their Adam moments and EMA)
are sharded over every axis that holds replicas of them, fsdp and sequence: with fsdp=8 x
sequence=8 each chip keeps 1/64 of the 14B train state, not 1/8.
"""

import contextlib
from collections.abc import Sequence

import jax
import ml_collections
import numpy as np
from flax import linen as nn
from jax.experimental import mesh_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor", "sequence")

# Logical axis names: the only spelling model code may use.
BATCH = "batch"
LENGTH = "length"  # Video/text tokens of a sequence.
EMBED = "embed"  # Model width.
MLP = "mlp"  # Feed-forward hidden width.
HEADS = "heads"  # Attention heads.
KV = "kv"  # Width of one head.
VOCAB = "vocab"
LAYERS = "layers"  # Stacked (scanned) blocks.
FRAMES = "frames"
HEIGHT = "height"
WIDTH = "width"
CHANNELS = "channels"  # Convolution channels (VAE) and small vectors.
CONV_IN = "conv_in"  # Input channels of a convolution kernel.

Rules = tuple[tuple[str, str | tuple[str, ...] | None], ...]  # (logical name, mesh axes) pairs.

LOGICAL_RULES: Rules = (
    (BATCH, ("data", "fsdp")),
    (BATCH, "data"),
    (LENGTH, "sequence"),
    (EMBED, ("fsdp", "sequence")),  # Parameters: over both axes that hold replicas.
    (EMBED, "fsdp"),
    (MLP, "tensor"),
    (HEADS, "tensor"),
    (KV, None),
    (VOCAB, "tensor"),
    (LAYERS, None),
    (FRAMES, None),
    (HEIGHT, "sequence"),
    (WIDTH, None),
    (CHANNELS, ("fsdp", "sequence")),
    (CHANNELS, "fsdp"),
    (CONV_IN, None),
)


def rules(mesh_config: ml_collections.ConfigDict) -> Rules:
    """`config.mesh.rules` as a tuple of (logical name, mesh axes) pairs; empty = LOGICAL_RULES."""
    given = tuple(mesh_config.get("rules", ()) or ())
    if not given:
        return LOGICAL_RULES
    pairs = []
    for rule in given:
        if len(rule) != 2 or not isinstance(rule[0], str):
            raise ValueError(
                f"config.mesh.rules: each rule is (logical name, mesh axes), got {rule!r}; e.g. "
                "(('embed', 'fsdp'), ('mlp', 'tensor'), ('batch', ('data', 'fsdp')))"
            )
        axes = rule[1]
        axes = tuple(axes) if isinstance(axes, list | tuple) else axes
        unknown = [
            a for a in ((axes,) if isinstance(axes, str) else axes or ()) if a not in MESH_AXES
        ]
        if unknown:
            raise ValueError(
                f"config.mesh.rules: {rule[0]!r} maps to unknown mesh axes {unknown}; "
                f"use {MESH_AXES}"
            )
        pairs.append((rule[0], axes))
    return tuple(pairs)


def mesh_shape(mesh_config: ml_collections.ConfigDict, num_devices: int) -> tuple[int, ...]:
    """Resolves the config's axis sizes (one may be -1 = fill) against the device count."""
    sizes = [int(mesh_config[axis]) for axis in MESH_AXES]
    fill = [axis for axis, size in zip(MESH_AXES, sizes, strict=True) if size == -1]
    if len(fill) > 1:
        raise ValueError(
            f"config.mesh: at most one axis may be -1 (fill), got {fill}; fix all but one"
        )
    bad = [f"{a}={s}" for a, s in zip(MESH_AXES, sizes, strict=True) if s == 0 or s < -1]
    if bad:
        raise ValueError(f"config.mesh: axis sizes must be positive or -1, got {', '.join(bad)}")
    known = int(np.prod([s for s in sizes if s != -1]))
    if fill:
        if num_devices % known:
            raise ValueError(
                f"config.mesh: fixed axes multiply to {known}, which does not divide the "
                f"{num_devices} devices; set config.mesh.{fill[0]} or the other axes so they do"
            )
        sizes[MESH_AXES.index(fill[0])] = num_devices // known
    elif known != num_devices:
        shape = "x".join(str(s) for s in sizes)
        raise ValueError(
            f"config.mesh: data*fsdp*tensor*sequence = {shape} = {known} but there are "
            f"{num_devices} devices; change the sizes or set one axis to -1 (fill)"
        )
    return tuple(sizes)


def fit_mesh(batch_size: int, num_devices: int) -> dict[str, int]:
    """Mesh axis sizes for one runtime (a Colab TPU/GPU/CPU, `config.mesh.update(...)`): the batch
    split over as many devices as divide it (fsdp = gcd(batch, devices); parameters sharded over
    them too), the rest tensor-parallel, so every device holds a part of every large weight."""
    if batch_size < 1 or num_devices < 1:
        raise ValueError(
            f"fit_mesh needs batch_size >= 1 and num_devices >= 1, got {batch_size} and "
            f"{num_devices}; pass config.data.batch_size and jax.device_count()"
        )
    fsdp = int(np.gcd(batch_size, num_devices))
    return {"data": 1, "fsdp": fsdp, "tensor": num_devices // fsdp, "sequence": 1}


def make_mesh(
    mesh_config: ml_collections.ConfigDict, devices: Sequence[jax.Device] | None = None
) -> Mesh:
    """Builds the ('data', 'fsdp', 'tensor', 'sequence') mesh over all (or the given) devices."""
    devices = list(jax.devices() if devices is None else devices)
    shape = mesh_shape(mesh_config, len(devices))
    if devices == list(jax.devices()):
        device_array = mesh_utils.create_device_mesh(shape, devices=devices)
    else:
        device_array = np.asarray(devices).reshape(shape)
    return Mesh(device_array, MESH_AXES)


def logical_to_sharding(logical_tree, mesh: Mesh, rules: Rules = LOGICAL_RULES):
    """Maps a tree of logical PartitionSpecs (or boxed abstract variables) to NamedShardings."""
    specs = nn.get_partition_spec(logical_tree)
    return nn.logical_to_mesh_sharding(specs, mesh, rules)


def _divisible_axes(axes, size: int, mesh: Mesh):
    """The mesh axes of one dimension that shard it evenly: of several axes, those of size 1 are
    dropped (P('fsdp') rather than P(('fsdp', 'sequence')) on a mesh without sequence
    parallelism), then the longest prefix whose sizes multiply to a divisor of `size` is kept."""
    names = (axes,) if isinstance(axes, str) else tuple(axes or ())
    if len(names) > 1:
        names = tuple(n for n in names if mesh.shape[n] > 1) or names[:1]
    ways, kept = 1, []
    for name in names:
        if size % (ways * mesh.shape[name]):
            break
        ways *= mesh.shape[name]
        kept.append(name)
    if not kept:
        return None
    return kept[0] if len(kept) == 1 else tuple(kept)


def _divisible_spec(spec: PartitionSpec, shape: tuple[int, ...], mesh: Mesh) -> PartitionSpec:
    """Each dimension keeps the mesh axes that divide it (`_divisible_axes`); with none it is
    replicated.

    Small parameters (a 3-channel conv bias, a 4-wide action head) cannot be split over an
    8-way fsdp axis; replicating them costs nothing and keeps one rules table for every size.
    """
    padded = tuple(spec) + (None,) * (len(shape) - len(spec))
    return PartitionSpec(
        *(_divisible_axes(axes, size, mesh) for size, axes in zip(shape, padded, strict=True))
    )


def variable_shardings(abstract_variables, mesh: Mesh, rules: Rules = LOGICAL_RULES):
    """NamedShardings for every leaf of a boxed abstract tree (`jax.eval_shape(module.init, ...)`
    output, or a whole train state created from boxed params: optimizer moments keep the boxes).

    Leaves without a logical annotation are replicated, and so is every dimension that its mesh
    axes do not divide evenly.
    """
    shardings = logical_to_sharding(abstract_variables, mesh, rules)
    leaves = nn.meta.unbox(abstract_variables)
    return jax.tree.map(
        lambda leaf, s: NamedSharding(mesh, _divisible_spec(s.spec, leaf.shape, mesh)),
        leaves,
        shardings,
    )


def abstract_on_mesh(abstract_variables, mesh: Mesh | None, rules: Rules = LOGICAL_RULES):
    """The unboxed ShapeDtypeStructs of a boxed abstract tree, each carrying its NamedSharding
    (what a restore places the arrays on); `mesh=None`: this host's first device."""
    leaves = nn.meta.unbox(abstract_variables)
    if mesh is None:
        single = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        shardings = jax.tree.map(lambda _: single, leaves)
    else:
        shardings = variable_shardings(abstract_variables, mesh, rules)
    return jax.tree.map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), leaves, shardings
    )


def batch_sharding(mesh: Mesh, ndim: int, rules: Rules = LOGICAL_RULES) -> NamedSharding:
    """Sharding of a host batch: leading axis over ('data', 'fsdp'), the rest replicated."""
    spec = nn.logical_to_mesh_axes((BATCH,) + (None,) * (ndim - 1), rules)
    return NamedSharding(mesh, spec)


def shard_batch(batch, mesh: Mesh, rules: Rules = LOGICAL_RULES):
    """Places a tree of per-process numpy arrays onto the mesh, split along the batch axis.

    Each process passes its own slice of the global batch (its data shard); the result is one
    global jax.Array per leaf whose leading dimension is the sum over processes.
    """

    def place(x):
        x = np.asarray(x)
        return jax.make_array_from_process_local_data(batch_sharding(mesh, x.ndim, rules), x)

    return jax.tree.map(place, batch)


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def axis_rules(rules: Rules = LOGICAL_RULES):
    """Context manager activating `rules` for `nn.with_logical_constraint`."""
    return nn.logical_axis_rules(rules)


@contextlib.contextmanager
def activate(mesh: Mesh, rules: Rules = LOGICAL_RULES):
    """Context in which model code runs on `mesh`: the logical rules and the mesh both set, so
    `nn.with_logical_constraint` turns into sharding constraints."""
    with jax.set_mesh(mesh), axis_rules(rules):
        yield
