"""PyTorch checkpoint (Wan-native or diffusers names) -> Orbax checkpoint laid out for a mesh.

Streaming: the source is checked from its headers first (names, shapes, layer coverage), then
each Flax param is built from its PyTorch tensors read one at a time, straight into the per-device
shard buffers this host owns (`addressable_devices_indices_map`), turned into a sharded jax.Array
with `jax.make_array_from_callback`, and written to the Orbax checkpoint in groups with Orbax's
partial save. A param stacked by `nn.scan` ([layers, ...]) is filled layer slice by layer slice.
Host memory peaks at about one group of params (`group_bytes`) plus one source tensor. A
release's fine-tuned weights file (WoW's WoW_video_dit.pt) is read over the base the same way
(`overlay.OverlaySource`: each tensor from the file that wins, when it is asked for).

Everything is written under `.<target>.importing/` and renamed to `target` only when complete.
`target` is an epath path (`checkpointing.as_path`): a local folder or a URL such as gs://b/x.
"""

import contextlib
import json
import math
import os
import time
from collections.abc import Mapping
from pathlib import Path

import jax
import numpy as np
from absl import logging
from flax import linen as nn
from flax import traverse_util
from tqdm import tqdm

from wow_jax import checkpointing, sharding
from wow_jax.interop import formats, mapping, registry
from wow_jax.interop import overlay as overlay_lib
from wow_jax.interop.mapping import MappingError, Rule

GROUP_BYTES = 512 * 2**20  # Params buffered before each partial save.
IMPORT_MARKER = "wow_jax_import"  # custom_metadata key of every checkpoint the importer writes.


def detect_naming(names, rules_by_naming: Mapping[str, list[Rule]]) -> str:
    """'wan' or 'diffusers', from which table's names the checkpoint uses; refuses a mix."""
    names = set(names)
    tables = {n: {r.torch_name for r in rules} for n, rules in rules_by_naming.items()}
    only = {
        n: names & (t - set().union(*(o for m, o in tables.items() if m != n)))
        for n, t in tables.items()
    }
    hits = {n: s for n, s in only.items() if s}
    if len(hits) > 1:
        shown = "; ".join(f"{n} names e.g. {sorted(s)[:5]}" for n, s in hits.items())
        raise MappingError(
            f"the checkpoint mixes naming conventions ({shown}); convert from one unmodified "
            "release (Wan-native or diffusers), not a merge of both"
        )
    if not hits:
        sample = sorted(names)[:10]
        raise MappingError(
            f"unknown naming: none of the {len(names)} tensor names (e.g. {sample}) match the "
            f"{' or '.join(tables)} names of this component; is it the right component/file?"
        )
    return next(iter(hits))


def _shard_buffers(shape, dtype, sharding) -> dict:
    """{index key: (index, empty buffer)} for each distinct shard this host holds."""
    buffers = {}
    for index in sharding.addressable_devices_indices_map(shape).values():
        key = _key(index, shape)
        if key not in buffers:
            shard_shape = tuple(
                len(range(*s.indices(n))) for s, n in zip(index, shape, strict=True)
            )
            buffers[key] = (index, np.empty(shard_shape, dtype))
    return buffers


def _key(index, shape) -> tuple:
    return tuple(s.indices(n)[:2] for s, n in zip(index, shape, strict=True))


def _fill(buffers: dict, value: np.ndarray, layer: int | None, shape) -> None:
    """Copies one (Flax-layout) tensor into every shard buffer it overlaps."""
    for index, buffer in buffers.values():
        if layer is None:
            mapping.copy_into(buffer, value[index])
            continue
        start, stop = index[0].indices(shape[0])[:2]
        if start <= layer < stop:
            mapping.copy_into(buffer[layer - start], value[index[1:]])


def build_param(source, rules: list[Rule], shape, dtype, sharding, progress=None) -> jax.Array:
    """One sharded param assembled from its PyTorch tensors (one tensor in memory at a time)."""
    buffers = _shard_buffers(shape, dtype, sharding)
    for rule in sorted(rules, key=lambda r: -1 if r.layer is None else r.layer):
        raw = source.read(rule.torch_name)
        _fill(buffers, mapping.to_flax_layout(raw, rule.transform), rule.layer, shape)
        if progress is not None:
            progress.update(raw.nbytes)
        del raw
    return jax.make_array_from_callback(
        shape, sharding, lambda index: buffers[_key(index, shape)][1]
    )


def import_params(
    source: formats.TensorSource,
    target: str | os.PathLike,
    rules_by_naming: Mapping[str, list[Rule]],
    abstract_params,
    mesh,
    *,
    naming: str = "auto",
    dtype: str | None = None,
    hint: str = "",
    overwrite: bool = False,
    group_bytes: int = GROUP_BYTES,
    metadata: dict | None = None,
    progress: bool = True,
) -> dict:
    """Streams `source` into an Orbax checkpoint `{'params': tree}` at `target`; returns a report.

    abstract_params: the model's boxed abstract params (logical axis names -> shardings on mesh).
    naming: 'wan', 'diffusers' or 'auto' (detected from the tensor names; a mix is refused).
    dtype: stored param dtype; None keeps each param's dtype from `abstract_params`.
    overwrite: replace an existing `target` that is a checkpoint written by this importer (or an
      empty folder); anything else is refused.
    """
    target = checkpointing.as_path(target)
    _check_target(target, overwrite)
    if naming == "auto":
        naming = detect_naming(source.names(), rules_by_naming)
    if naming not in rules_by_naming:
        raise ValueError(f"naming must be 'auto' or one of {list(rules_by_naming)}, got {naming!r}")
    rules = rules_by_naming[naming]
    placed = traverse_util.flatten_dict(sharding.abstract_on_mesh(abstract_params, mesh))
    unboxed = traverse_util.flatten_dict(nn.meta.unbox(abstract_params))
    shardings = {k: v.sharding for k, v in placed.items()}
    flax_shapes = {k: tuple(v.shape) for k, v in unboxed.items()}
    mapping.check_names(source.names(), rules, hint)
    torch_shapes = {n: source.infos[n].shape for n in source.names()}
    mapping.check_plan(rules, flax_shapes, torch_shapes, hint)

    by_path: dict[tuple[str, ...], list[Rule]] = {}
    for rule in rules:
        by_path.setdefault(rule.flax_path, []).append(rule)
    total = sum(source.infos[r.torch_name].nbytes for r in rules)
    work = target.parent / f".{target.name}.importing"
    main_process = jax.process_index() == 0
    if main_process and work.exists():
        work.rmtree()  # Left over by an interrupted import: start again.
    checkpointing.sync("wow_jax_import_start")
    info = {"naming": naming, "source": [str(f) for f in source.files], **(metadata or {})}
    writer = checkpointing.PartialWriter(work / "ckpt", custom_metadata={IMPORT_MARKER: info})
    start, pending, pending_bytes = time.time(), {}, 0
    with tqdm(total=total, unit="B", unit_scale=True, desc="import", disable=not progress) as bar:
        for path, leaf in unboxed.items():
            leaf_dtype = np.dtype(dtype or leaf.dtype)
            nbytes = math.prod(flax_shapes[path]) * leaf_dtype.itemsize
            if pending and pending_bytes + nbytes > group_bytes:
                writer.add(pending)  # Flush first: a big param is then written on its own.
                pending, pending_bytes = {}, 0
            pending[("params", *path)] = build_param(
                source, by_path[path], flax_shapes[path], leaf_dtype, shardings[path], bar
            )
            pending_bytes += nbytes
        if pending:
            writer.add(pending)
        del pending
        writer.finalize()
    if main_process:
        if target.exists():
            target.rmtree()
        (work / "ckpt").rename(target)
        work.rmtree()
    checkpointing.sync("wow_jax_import_done")
    seconds = time.time() - start
    logging.info(
        "imported %d tensors (%.2f GB, %s names) in %.1fs", len(rules), total / 1e9, naming, seconds
    )
    return {
        "naming": naming,
        "tensors": len(rules),
        "bytes": total,
        "seconds": seconds,
        "target": str(target),
    }


def _check_target(target, overwrite: bool) -> None:
    """Refuses an existing target unless `overwrite` and it is empty or an import's checkpoint."""
    if not target.exists():
        return
    if not overwrite:
        raise FileExistsError(f"{target} already exists; delete it or pass overwrite=True")
    if target.is_dir() and not any(target.iterdir()):
        return
    metadata = target / "_CHECKPOINT_METADATA"
    try:
        custom = json.loads(metadata.read_text()).get("custom_metadata") or {}
    except (OSError, ValueError, AttributeError):
        custom = {}
    if IMPORT_MARKER not in custom:
        raise FileExistsError(
            f"{target} is not a checkpoint written by the importer (no {IMPORT_MARKER!r} in its "
            "_CHECKPOINT_METADATA), so overwrite does not replace it; delete it yourself or "
            "choose another target"
        )


def resolve_source(path: str | os.PathLike, component: registry.Component) -> Path:
    """The file/folder holding `component` inside `path`: the path itself, the diffusers
    sub-folder of a pipeline repo, or the component's files in a Wan-native release folder."""
    path = Path(path)
    if path.is_file():
        return path
    sub = path / component.diffusers_subfolder
    if (sub / "config.json").exists():
        return sub
    for pattern in component.wan_globs:
        found = sorted(path.glob(pattern))
        if len(found) == 1:
            return found[0]
        if len(found) > 1 and pattern.endswith(".safetensors"):
            raise formats.CheckpointFormatError(
                f"{path} holds several {pattern} files {[f.name for f in found]} but no index "
                "json; point at one file or restore the index"
            )
    return path


def config_hint(component: registry.Component, model_cfg) -> str:
    keys = ", ".join(f"{k}={v}" for k, v in model_cfg.items() if not isinstance(v, str | float))
    return (
        f"Likely cause: the checkpoint is another model size or variant than "
        f"config.model.{component.name} describes ({keys[:300]}); use the matching config "
        "(e.g. configs/wan1_3b.py for Wan2.1-1.3B, configs/wow14b.py for WoW-1-Wan-14B / "
        "Wan2.1-I2V-14B) or the file of the right component"
    )


def resolve_overlay(path: str | os.PathLike, component: registry.Component, overlay: str):
    """The overlay file loaded over the base, or None: `overlay` itself, or for 'auto' the
    component's overlay file in the release folder `path` (e.g. WoW_video_dit.pt) if it is there."""
    if overlay == "auto":
        found = Path(path) / component.wan_overlay
        return found if component.wan_overlay and found.is_file() else None
    if overlay and not Path(overlay).is_file():
        raise formats.CheckpointFormatError(
            f"config.convert.overlay {overlay} is not a file; point it at the weights to load over "
            "the base (e.g. WoW_video_dit.pt), or set it to '' for the base alone"
        )
    return Path(overlay) if overlay else None


@contextlib.contextmanager
def open_release(path, component: registry.Component, overlay: str, trust_pickle: bool):
    """(source, overlay report or None): the component's tensors in the release at `path`, with
    the overlay file (`resolve_overlay`) loaded over them; prints the overlay's counts."""
    with contextlib.ExitStack() as stack:
        source = stack.enter_context(
            formats.open_source(resolve_source(path, component), trust_pickle)
        )
        overlay_file, report = resolve_overlay(path, component, overlay), None
        if overlay_file is not None:
            top = stack.enter_context(formats.open_source(overlay_file, trust_pickle))
            source = overlay_lib.OverlaySource(source, top)
            report = source.report
            print(report.summary())
        yield source, report


def import_checkpoint(
    component_name: str,
    source_path: str | os.PathLike,
    target: str | os.PathLike,
    model_cfg,
    mesh,
    *,
    overlay: str = "auto",
    trust_pickle: bool = False,
    **kwargs,
) -> dict:
    """Imports one component (dit, vae, text, clip) of a Wan-native or diffusers release.

    overlay: a file loaded over the release's tensors (name by name), 'auto' for the release's
      own (WoW_video_dit.pt for the dit, when `source_path` is a folder holding it), '' for none.
    trust_pickle: allow .pth/.pt files that load only with full unpickling.
    kwargs: `import_params` options (naming, dtype, overwrite, progress, ...).
    """
    component = registry.get(component_name)
    rules_by_naming = registry.rules_by_naming(component, model_cfg)
    abstract = registry.abstract_params(component, model_cfg)
    if "naming" in kwargs and kwargs["naming"] != "auto":
        kwargs["naming"] = registry.resolve_naming(component, kwargs["naming"])
    with open_release(source_path, component, overlay, trust_pickle) as (source, report):
        metadata = {"component": component_name}
        if report is not None:
            metadata["overlay"] = report.counts()
        result = import_params(
            registry.source_view(component, source, model_cfg),
            target,
            rules_by_naming,
            abstract,
            mesh,
            hint=config_hint(component, model_cfg),
            metadata=metadata,
            **kwargs,
        )
    return result | ({"overlay": report.counts()} if report is not None else {})
