"""PyTorch <-> Flax parameter name mapping, written as data.

A model's table (`wow_jax/interop/<model>_table.py`) is a function of its config returning
`Rule`s, one per PyTorch tensor. A rule names the PyTorch tensor, the Flax parameter path, the
layout transform between them, and, for blocks stacked by `nn.scan`, the layer index the tensor
fills along the stacked leading axis.

Transforms (PyTorch layout -> Flax layout):
  IDENTITY: same array (norm scales, biases, modulation tables).
  LINEAR:   [out, in] -> [in, out].
  CONV:     [out, in, *kernel] -> [*kernel, in, out] (any number of spatial dims).
"""

import dataclasses
import enum
from collections.abc import Callable, Iterable, Mapping

import numpy as np
from flax import traverse_util

MAX_LISTED = 20  # Names listed in a mismatch error.


class Transform(enum.Enum):
    IDENTITY = "identity"
    LINEAR = "linear"
    CONV = "conv"


@dataclasses.dataclass(frozen=True)
class Rule:
    torch_name: str  # e.g. 'blocks.3.self_attn.q.weight'
    flax_path: tuple[str, ...]  # e.g. ('blocks', 'self_attn', 'q', 'kernel')
    transform: Transform = Transform.IDENTITY
    layer: int | None = None  # Index along the stacked 'layers' axis of a scanned param.


class MappingError(ValueError):
    """A checkpoint and a model do not correspond one-to-one."""


def to_flax_layout(array: np.ndarray, transform: Transform) -> np.ndarray:
    if transform is Transform.LINEAR:
        return array.T
    if transform is Transform.CONV:
        return np.moveaxis(array, (0, 1), (-1, -2))
    return array


def to_torch_layout(array: np.ndarray, transform: Transform) -> np.ndarray:
    if transform is Transform.LINEAR:
        return array.T
    if transform is Transform.CONV:
        return np.moveaxis(array, (-1, -2), (0, 1))
    return array


def _listed(names: Iterable[str]) -> str:
    names = sorted(names)
    shown = ", ".join(names[:MAX_LISTED])
    return shown + (f" ... (+{len(names) - MAX_LISTED} more)" if len(names) > MAX_LISTED else "")


def check_names(source_names: Iterable[str], rules: list[Rule], hint: str = "") -> None:
    """Raises MappingError unless the checkpoint has exactly the tensors the rules expect."""
    source, expected = set(source_names), {r.torch_name for r in rules}
    unused, missing = source - expected, expected - source
    if unused or missing:
        parts = []
        if missing:
            parts.append(f"{len(missing)} tensors missing from the checkpoint: {_listed(missing)}")
        if unused:
            parts.append(
                f"{len(unused)} checkpoint tensors the model has no place for: {_listed(unused)}"
            )
        raise MappingError("; ".join(parts) + (f". {hint}" if hint else ""))


def target_shape(rule: Rule, flax_shapes: Mapping[tuple[str, ...], tuple[int, ...]]):
    """Shape one PyTorch tensor must have, in Flax layout, to fill `rule`'s slot."""
    if rule.flax_path not in flax_shapes:
        raise MappingError(
            f"rule for {rule.torch_name} targets unknown Flax path {'/'.join(rule.flax_path)}"
        )
    shape = tuple(flax_shapes[rule.flax_path])
    return shape[1:] if rule.layer is not None else shape


def torch_to_flax(
    get_tensor: Callable[[str], np.ndarray],
    rules: list[Rule],
    flax_shapes: Mapping[tuple[str, ...], tuple[int, ...]],
    hint: str = "",
) -> dict:
    """Builds the nested Flax param dict from PyTorch tensors fetched one by one by name.

    `flax_shapes` maps every Flax param path to its shape (from `jax.eval_shape` of init); every
    path must be filled and every shape must match after the transform, else MappingError.
    """
    stacked: dict[tuple[str, ...], np.ndarray] = {}
    flat: dict[tuple[str, ...], np.ndarray] = {}
    filled: dict[tuple[str, ...], set[int]] = {}
    bad_shapes = []
    for rule in rules:
        value = to_flax_layout(np.asarray(get_tensor(rule.torch_name)), rule.transform)
        want = target_shape(rule, flax_shapes)
        if value.shape != want:
            bad_shapes.append(f"{rule.torch_name}: got {value.shape}, model wants {want}")
            continue
        if rule.layer is None:
            flat[rule.flax_path] = value
        else:
            full = flax_shapes[rule.flax_path]
            if rule.flax_path not in stacked:
                stacked[rule.flax_path] = np.zeros(full, value.dtype)
            stacked[rule.flax_path][rule.layer] = value
            filled.setdefault(rule.flax_path, set()).add(rule.layer)
    if bad_shapes:
        raise MappingError(
            f"{len(bad_shapes)} tensors have the wrong shape (after the layout transform): "
            + "; ".join(bad_shapes[:MAX_LISTED])
            + (f". {hint}" if hint else "")
        )
    for path, layers in filled.items():
        if len(layers) != flax_shapes[path][0]:
            raise MappingError(
                f"{'/'.join(path)}: got layers {sorted(layers)} of {flax_shapes[path][0]}. {hint}"
            )
    flat.update(stacked)
    unfilled = set(flax_shapes) - set(flat)
    if unfilled:
        raise MappingError(
            f"{len(unfilled)} model params not filled by the checkpoint: "
            f"{_listed('/'.join(p) for p in unfilled)}. {hint}"
        )
    return traverse_util.unflatten_dict(flat)


def flax_to_torch(params: Mapping, rules: list[Rule]) -> dict[str, np.ndarray]:
    """The inverse of `torch_to_flax`: a flat {torch_name: array} dict in PyTorch layout."""
    flat = traverse_util.flatten_dict(params)
    unmapped = set(flat) - {r.flax_path for r in rules}
    if unmapped:
        raise MappingError(
            f"{len(unmapped)} Flax params have no PyTorch name: "
            f"{_listed('/'.join(p) for p in unmapped)}"
        )
    out = {}
    for rule in rules:
        value = np.asarray(flat[rule.flax_path])
        if rule.layer is not None:
            value = value[rule.layer]
        out[rule.torch_name] = np.ascontiguousarray(to_torch_layout(value, rule.transform))
    return out


def flax_shapes_of(abstract_params: Mapping) -> dict[tuple[str, ...], tuple[int, ...]]:
    """{path: shape} of an (unboxed) abstract or concrete param tree."""
    return {
        path: tuple(leaf.shape)
        for path, leaf in traverse_util.flatten_dict(abstract_params).items()
    }


def flax_layout_shape(shape: tuple[int, ...], transform: Transform) -> tuple[int, ...]:
    """Shape of a PyTorch tensor of `shape` after `to_flax_layout`, without the data."""
    shape = tuple(shape)
    if transform is Transform.LINEAR:
        return shape[::-1]
    if transform is Transform.CONV:
        return shape[2:] + (shape[1], shape[0])
    return shape


def torch_layout_shape(shape: tuple[int, ...], transform: Transform) -> tuple[int, ...]:
    """Inverse of `flax_layout_shape`."""
    shape = tuple(shape)
    if transform is Transform.LINEAR:
        return shape[::-1]
    if transform is Transform.CONV:
        return (shape[-1], shape[-2]) + shape[:-2]
    return shape


def check_plan(
    rules: list[Rule],
    flax_shapes: Mapping[tuple[str, ...], tuple[int, ...]],
    torch_shapes: Mapping[str, tuple[int, ...]] | None = None,
    hint: str = "",
) -> None:
    """Checks, from shapes alone, that `rules` fill every Flax param exactly once.

    With `torch_shapes` (name -> PyTorch shape), also checks every tensor's shape after its layout
    transform. Raises MappingError listing the offending names (first 20) and `hint`.
    """
    suffix = f". {hint}" if hint else ""
    unknown = [r.torch_name for r in rules if r.flax_path not in flax_shapes]
    if unknown:
        raise MappingError(
            f"{len(unknown)} table rules target params the model does not have: "
            f"{_listed(unknown)}{suffix}"
        )
    if torch_shapes is not None:
        bad = []
        for rule in rules:
            got = flax_layout_shape(torch_shapes[rule.torch_name], rule.transform)
            want = target_shape(rule, flax_shapes)
            if got != want:
                bad.append(
                    f"{rule.torch_name}: checkpoint {tuple(torch_shapes[rule.torch_name])} -> "
                    f"{got} after the {rule.transform.value} transform, model wants {want}"
                )
        if bad:
            raise MappingError(
                f"{len(bad)} tensors have the wrong shape: " + "; ".join(bad[:MAX_LISTED]) + suffix
            )
    fills: dict[tuple[str, ...], list] = {}
    for rule in rules:
        fills.setdefault(rule.flax_path, []).append(rule.layer)
    problems = []
    for path, layers in fills.items():
        name = "/".join(path)
        if None in layers and len(layers) > 1:
            problems.append(f"{name} filled {len(layers)} times")
        elif None not in layers and sorted(layers) != list(range(flax_shapes[path][0])):
            problems.append(f"{name} gets layers {sorted(layers)} of {flax_shapes[path][0]}")
    unfilled = set(flax_shapes) - set(fills)
    if unfilled:
        problems.append(
            f"{len(unfilled)} model params have no checkpoint tensor: "
            f"{_listed('/'.join(p) for p in unfilled)}"
        )
    if problems:
        raise MappingError("; ".join(problems[:MAX_LISTED]) + suffix)


TILE = 256  # Square tile (elements) of the cache-friendly copy of transposed arrays.


def copy_into(dst: np.ndarray, src: np.ndarray) -> None:
    """`dst[...] = src` (with dtype cast), tiled over the last two axes when `src` is a
    transposed view: ~5-8x faster than numpy's element order for large matrices."""
    if src.ndim < 2 or src.flags.c_contiguous or src.size < TILE * TILE:
        dst[...] = src
        return
    rows, cols = dst.shape[-2:]
    for i in range(0, rows, TILE):
        for j in range(0, cols, TILE):
            dst[..., i : i + TILE, j : j + TILE] = src[..., i : i + TILE, j : j + TILE]
