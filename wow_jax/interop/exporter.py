"""Orbax checkpoint -> PyTorch safetensors with Wan-native names or as a diffusers folder.

The output is planned from the checkpoint's metadata alone: every PyTorch tensor (name, shape,
dtype) in order, grouped into shards of at most `max_shard_size` bytes. Tensors are ordered by the
Flax param they come from, so each shard needs only a few params restored at a time; each shard
is streamed to disk tensor by tensor (`formats.write_safetensors`). Host memory peaks at about one
restored param plus one tensor.

Crash safety and resume: everything is written under `.<target>.exporting/`, each shard to
`<name>.incomplete` first and renamed when complete; `plan.json` records the plan, so a rerun
with the same plan skips finished shards. The folder is renamed to `target` at the very end.
"""

import json
import os
import shutil
import time
from collections.abc import Mapping
from pathlib import Path

import ml_dtypes
import numpy as np
from absl import logging
from tqdm import tqdm

from wow_jax import checkpointing
from wow_jax.interop import formats, mapping, registry
from wow_jax.interop.mapping import MappingError, Rule

DTYPES = {"bfloat16": np.dtype(ml_dtypes.bfloat16), "float32": np.dtype(np.float32)}
MAX_SHARD_SIZE = 5 * 10**9  # Bytes per safetensors shard, as diffusers' default "5GB".
READ_BYTES = 256 * 2**20  # Params restored per Orbax call (a bigger param alone).


def parse_size(size: int | str) -> int:
    """5000000000, '5GB', '500MB', '2GiB' -> bytes."""
    if isinstance(size, int):
        return size
    text = str(size).strip().upper()
    units = {"KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "KB": 10**3, "MB": 10**6, "GB": 10**9}
    for unit, factor in units.items():
        if text.endswith(unit):
            return int(float(text[: -len(unit)]) * factor)
    if text.endswith("B"):
        text = text[:-1]
    try:
        return int(float(text))
    except ValueError:
        raise ValueError(f"max_shard_size must be bytes or like '5GB', got {size!r}") from None


def find_params(leaves: Mapping, params_key: str, name: str | None = None) -> dict[tuple, tuple]:
    """{leaf path in the params: stored leaf path} of the params under `params_key` ('params',
    'ema_params', 'params/dit', ...), or of component `name` inside them (a training checkpoint's
    params/<name>); EMA gaps (frozen leaves) are taken from 'params' (wow_jax.checkpointing)."""
    found = checkpointing.subtree_leaves(leaves, params_key, name)
    if not found:
        tops = sorted({"/".join(k[:2]) for k in leaves})
        raise ValueError(
            f"the checkpoint has no params under {params_key!r}; it holds {tops[:20]}. Pass "
            "params_key (e.g. 'params' or 'ema_params' for the EMA weights)"
        )
    return found


def plan_tensors(rules: list[Rule], leaves: Mapping, dtype: np.dtype) -> list[dict]:
    """[{name, shape, dtype, leaf, layer, transform}] in write order (grouped by Flax param)."""
    order = {path: i for i, path in enumerate(leaves)}
    out = []
    for rule in sorted(rules, key=lambda r: (order[r.flax_path], r.layer or 0)):
        shape, leaf_dtype = leaves[rule.flax_path]
        shape = shape[1:] if rule.layer is not None else shape
        floating = np.issubdtype(leaf_dtype, np.floating) or leaf_dtype == DTYPES["bfloat16"]
        out.append(
            {
                "name": rule.torch_name,
                "shape": list(mapping.torch_layout_shape(shape, rule.transform)),
                "dtype": formats.DTYPE_CODES[dtype if floating else np.dtype(leaf_dtype)],
                "leaf": list(rule.flax_path),
                "layer": rule.layer,
                "transform": rule.transform.value,
            }
        )
    return out


def _entries(tensors: list[dict]) -> list[tuple]:
    return [(t["name"], tuple(t["shape"]), formats.SAFETENSORS_DTYPES[t["dtype"]]) for t in tensors]


def plan_shards(tensors: list[dict], max_shard_size: int, stem: str) -> list[dict]:
    """Greedy split into shards of at most `max_shard_size` data bytes (a bigger tensor alone)."""
    groups, current, size = [], [], 0
    for tensor in tensors:
        nbytes = (
            int(np.prod(tensor["shape"])) * formats.SAFETENSORS_DTYPES[tensor["dtype"]].itemsize
        )
        if current and size + nbytes > max_shard_size:
            groups.append(current)
            current, size = [], 0
        current.append(tensor)
        size += nbytes
    if current:
        groups.append(current)
    n = len(groups)
    shards = []
    for i, group in enumerate(groups):
        name = f"{stem}.safetensors" if n == 1 else f"{stem}-{i + 1:05d}-of-{n:05d}.safetensors"
        shards.append(
            {"file": name, "tensors": group, "bytes": formats.safetensors_size(_entries(group))}
        )
    return shards


class _LeafCache:
    """Restores Flax params on demand in write order, a batch of up to `batch_bytes` (at least
    one param) per Orbax call, keeping only the current batch in memory."""

    def __init__(self, path, all_leaves: Mapping, stored: Mapping, order: list, batch_bytes):
        self.path, self.all_leaves, self.stored = path, all_leaves, stored
        self.order, self.batch_bytes, self.values = order, batch_bytes, {}

    def get(self, leaf: tuple[str, ...]) -> np.ndarray:
        if leaf not in self.values:
            self.values = {}  # Free the previous batch first.
            batch, size = [], 0
            for key in self.order[self.order.index(leaf) :]:
                shape, dtype = self.all_leaves[self.stored[key]]
                nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
                if batch and size + nbytes > self.batch_bytes:
                    break
                batch.append(key)
                size += nbytes
            full = [self.stored[key] for key in batch]
            values = checkpointing.read_leaves(self.path, full, self.all_leaves)
            self.values = {key: values[self.stored[key]] for key in batch}
        return self.values[leaf]


def _tensor_arrays(tensors: list[dict], cache: _LeafCache, progress):
    for tensor in tensors:
        value = cache.get(tuple(tensor["leaf"]))
        if tensor["layer"] is not None:
            value = value[tensor["layer"]]
        value = mapping.to_torch_layout(value, mapping.Transform(tensor["transform"]))
        out = np.empty(value.shape, formats.SAFETENSORS_DTYPES[tensor["dtype"]])
        mapping.copy_into(out, value)
        progress.update(out.nbytes)
        yield out


def export_params(
    source: str | os.PathLike,
    target: str | os.PathLike,
    rules: list[Rule],
    *,
    params_key: str = "params",
    name: str | None = None,
    dtype: str = "bfloat16",
    max_shard_size: int | str = MAX_SHARD_SIZE,
    weights_name: str = "diffusion_pytorch_model",
    config: dict | None = None,
    overwrite: bool = False,
    hint: str = "",
    progress: bool = True,
) -> dict:
    """Writes the params under `params_key` of Orbax checkpoint `source` (component `name`'s
    when they hold several, as a training checkpoint does) as PyTorch safetensors.

    target: output folder: `<weights_name>.safetensors`, or shards `<weights_name>-0000i-of-0000n`
      with `<weights_name>.safetensors.index.json`, plus `config.json` when `config` is given.
    dtype: 'bfloat16' or 'float32' for floating tensors (integers keep their dtype).
    """
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {list(DTYPES)}, got {dtype!r}")
    start = time.time()
    source, target = checkpointing.item_directory(source), Path(target)
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} already exists; delete it or pass overwrite=True")
    all_leaves = checkpointing.leaf_metadata(source)
    stored = find_params(all_leaves, params_key, name)
    leaves = {k: all_leaves[v] for k, v in stored.items()}
    mapping.check_plan(rules, {k: v[0] for k, v in leaves.items()}, None, hint)
    extra = set(leaves) - {r.flax_path for r in rules}
    if extra:
        names = sorted("/".join(p) for p in extra)
        raise MappingError(
            f"{len(extra)} checkpoint params have no PyTorch name: {names[:20]}. {hint}"
        )
    tensors = plan_tensors(rules, leaves, DTYPES[dtype])
    shards = plan_shards(tensors, parse_size(max_shard_size), weights_name)
    plan = {"source": str(source), "params_key": params_key, "shards": shards}

    work = target.parent / f".{target.name}.exporting"
    plan_file = work / "plan.json"
    if work.exists() and not (plan_file.exists() and json.loads(plan_file.read_text()) == plan):
        shutil.rmtree(work)  # Another plan (or unreadable leftovers): start over.
    work.mkdir(parents=True, exist_ok=True)
    plan_file.write_text(json.dumps(plan))

    done = [s for s in shards if _complete(work / s["file"], s["bytes"])]
    todo = [s for s in shards if s not in done]
    total = sum(s["bytes"] for s in todo)
    order = list(dict.fromkeys(tuple(t["leaf"]) for s in todo for t in s["tensors"]))
    cache = _LeafCache(source, all_leaves, stored, order, READ_BYTES)
    with tqdm(total=total, unit="B", unit_scale=True, desc="export", disable=not progress) as bar:
        for shard in todo:
            partial = work / (shard["file"] + ".incomplete")
            formats.write_safetensors(
                partial, _entries(shard["tensors"]), _tensor_arrays(shard["tensors"], cache, bar)
            )
            os.rename(partial, work / shard["file"])
    del cache
    if len(shards) > 1:
        data_bytes = sum(
            int(np.prod(t["shape"])) * formats.SAFETENSORS_DTYPES[t["dtype"]].itemsize
            for t in tensors
        )
        index = {
            "metadata": {"total_size": data_bytes},  # Tensor bytes, as save_pretrained writes.
            "weight_map": {t["name"]: s["file"] for s in shards for t in s["tensors"]},
        }
        (work / f"{weights_name}.safetensors.index.json").write_text(json.dumps(index, indent=2))
    if config is not None:
        (work / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    plan_file.unlink()
    if target.exists():
        shutil.rmtree(target)
    os.rename(work, target)
    seconds = time.time() - start
    logging.info(
        "exported %d tensors into %d shards (%d skipped as done) in %.1fs",
        len(tensors), len(shards), len(done), seconds,
    )  # fmt: skip
    return {
        "tensors": len(tensors),
        "shards": [s["file"] for s in shards],
        "skipped_shards": [s["file"] for s in done],
        "bytes": sum(s["bytes"] for s in shards),
        "seconds": seconds,
        "target": str(target),
    }


def _complete(path: Path, size: int) -> bool:
    return path.exists() and path.stat().st_size == size


def export_checkpoint(
    component_name: str,
    source: str | os.PathLike,
    target: str | os.PathLike,
    model_cfg,
    *,
    naming: str = "diffusers",
    **kwargs,
) -> dict:
    """Exports one component: naming 'diffusers' (folder for `<Class>.from_pretrained`) or 'wan'
    (the Wan2.1 release's file names, with its config.json where the release has one)."""
    from wow_jax.interop import importer  # noqa: PLC0415

    component = registry.get(component_name)
    if hasattr(registry.table(component), "checkpoint_view"):
        raise NotImplementedError(
            f"export of {component_name!r} is not supported: its checkpoint layout (fused "
            "tensors) is not a 1:1 rename; WoW keeps this encoder frozen, reuse the original file"
        )
    naming = registry.resolve_naming(component, naming)
    rules = registry.rules(component, model_cfg, naming)
    make_config = component.wan_config if naming == "wan" else component.diffusers_config
    stem = component.wan_weights if naming == "wan" else component.diffusers_weights
    return export_params(
        source,
        target,
        rules,
        weights_name=stem,
        config=make_config(model_cfg) if make_config else None,
        hint=importer.config_hint(component, model_cfg),
        name=component_name,
        **kwargs,
    )
