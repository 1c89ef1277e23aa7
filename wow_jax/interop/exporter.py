"""Orbax checkpoint -> PyTorch safetensors with Wan-native names or as a diffusers folder.

The output is planned from the checkpoint's metadata alone: every PyTorch tensor (name, shape,
dtype) in order, grouped into shards of at most `max_shard_size` bytes. Tensors are ordered by the
Flax param they come from, so each shard needs only a few params restored at a time; each shard
is streamed to disk tensor by tensor (`formats.write_safetensors`). Host memory peaks at about one
restored param plus one tensor.

Crash safety and resume: nothing is written before the plan is checked; then everything is
written under `.<target>.exporting/`, each shard to `<name>.incomplete` first and renamed when
complete, its sha256 recorded in `hashes.json`. `plan.json` records the plan with the resolved
source item (a CheckpointManager root's step) and its fingerprint, so a rerun of the same plan
from the same step skips the finished shards whose hash still matches; any other plan starts
over. The folder is renamed to `target` at the very end (or, with overwrite into an existing
target, only the files the export writes are replaced).
"""

import hashlib
import json
import os
import re
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
HASH_BYTES = 16 * 2**20  # Bytes read per step when hashing a shard.
PLAN_FILE = "plan.json"  # In the work folder: the plan (resolved source step, its fingerprint).
HASHES_FILE = "hashes.json"  # In the work folder: {finished shard file: sha256}.


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


class ExportInterrupted(RuntimeError):
    """An export that failed while writing; its finished shards are kept for a rerun."""


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
    overwrite: an existing target keeps every file but those this export writes (the files of
      `weights_name`, and config.json when `config` is given), which are replaced.
    Nothing is written before the plan is checked. A failure while writing raises
    ExportInterrupted and keeps the finished shards for a rerun of the same export.
    """
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {list(DTYPES)}, got {dtype!r}")
    start = time.time()
    target = Path(target)
    _check_target(target, overwrite)
    # The item (a manager root's newest readable step) and its {stored leaf: (shape, dtype)}.
    source, all_leaves = checkpointing.read_newest(
        source, lambda item: (item, checkpointing.leaf_metadata(item))
    )[0]
    stored = find_params(all_leaves, params_key, name)
    tensors = _checked_tensors(rules, {k: all_leaves[v] for k, v in stored.items()}, dtype, hint)
    shards = plan_shards(tensors, parse_size(max_shard_size), weights_name)
    plan = {
        "source": str(source),  # The resolved item (a manager root's step), not the path given.
        "fingerprint": fingerprint(source),
        "params_key": params_key,
        "shards": shards,
    }
    work = target.parent / f".{target.name}.exporting"
    done = _finished_shards(work, plan)
    todo = [s for s in shards if s["file"] not in done]
    try:
        _write_shards(work, todo, done, source, all_leaves, stored, progress)
        files = [s["file"] for s in shards] + _write_index_and_config(
            work, shards, tensors, weights_name, config
        )
    except Exception as error:
        raise ExportInterrupted(
            f"export to {target} stopped ({type(error).__name__}: {error}); "
            f"{len(done)} of {len(shards)} shards are finished in {work}: rerun the same "
            f"command to resume; delete {work} to start over"
        ) from error
    _install(work, target, files, weights_name)
    seconds = time.time() - start
    skipped = [s["file"] for s in shards if s not in todo]
    logging.info(
        "exported %d tensors into %d shards (%d skipped as done) in %.1fs",
        len(tensors), len(shards), len(skipped), seconds,
    )  # fmt: skip
    return {
        "tensors": len(tensors),
        "shards": [s["file"] for s in shards],
        "skipped_shards": skipped,
        "bytes": sum(s["bytes"] for s in shards),
        "seconds": seconds,
        "target": str(target),
    }


def _checked_tensors(rules: list[Rule], leaves: Mapping, dtype: str, hint: str) -> list[dict]:
    """`plan_tensors`, after checking that the rules and the params `leaves` match one to one."""
    mapping.check_plan(rules, {k: v[0] for k, v in leaves.items()}, None, hint)
    extra = set(leaves) - {r.flax_path for r in rules}
    if extra:
        names = sorted("/".join(p) for p in extra)
        raise MappingError(
            f"{len(extra)} checkpoint params have no PyTorch name: {names[:20]}. {hint}"
        )
    return plan_tensors(rules, leaves, DTYPES[dtype])


def _check_target(target: Path, overwrite: bool) -> None:
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} already exists; delete it or pass overwrite=True")
    if target.exists() and not target.is_dir():
        raise FileExistsError(f"{target} is a file, not a folder; choose another target")


def fingerprint(item) -> str:
    """sha256 of an Orbax item's `_METADATA` and of the name and size of each of its files:
    another step, or the same step saved again (new array files), changes it."""
    digest = hashlib.sha256((item / "_METADATA").read_bytes())
    digest.update(json.dumps(sorted(_file_sizes(item))).encode())
    return digest.hexdigest()


def _file_sizes(folder, prefix: str = ""):
    """(path below `folder`, size) of every file in it (an epath: a URL or a local folder)."""
    for path in folder.iterdir():
        if path.is_dir():
            yield from _file_sizes(path, f"{prefix}{path.name}/")
        else:
            yield f"{prefix}{path.name}", path.stat().length


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(HASH_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _read_json(path: Path):
    """The JSON in `path`, or None when it is missing or unreadable."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _write_json(path: Path, value) -> None:
    """Writes `value` to `path` atomically (a crash leaves the old or the new file)."""
    partial = path.with_name(path.name + ".incomplete")
    partial.write_text(json.dumps(value))
    os.replace(partial, path)


def _finished_shards(work: Path, plan: dict) -> dict[str, str]:
    """{shard file: sha256} of the shards an interrupted run of this same `plan` finished in
    `work` and that still hash as recorded (a mismatch is written again). Leftovers of another
    plan (another source step, params or shard size) are discarded. Creates `work`."""
    if work.exists() and _read_json(work / PLAN_FILE) != plan:
        logging.warning("discarding the unfinished export in %s: it had another plan", work)
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    _write_json(work / PLAN_FILE, plan)
    recorded = _read_json(work / HASHES_FILE) or {}
    done = {}
    for shard in plan["shards"]:
        path, want = work / shard["file"], recorded.get(shard["file"])
        if want is None or not path.exists():
            continue
        if _sha256(path) == want:
            done[shard["file"]] = want
        else:
            logging.warning("%s does not match its recorded sha256; writing it again", path)
    _write_json(work / HASHES_FILE, done)
    return done


def _write_shards(work, todo, done, source, all_leaves, stored, progress) -> None:
    """Writes each shard of `todo` as `<file>.incomplete`, renamed when complete; its sha256 is
    then added to `done` and recorded in the work folder."""
    total = sum(s["bytes"] for s in todo)
    order = list(dict.fromkeys(tuple(t["leaf"]) for s in todo for t in s["tensors"]))
    cache = _LeafCache(source, all_leaves, stored, order, READ_BYTES)
    with tqdm(total=total, unit="B", unit_scale=True, desc="export", disable=not progress) as bar:
        for shard in todo:
            partial = work / (shard["file"] + ".incomplete")
            formats.write_safetensors(
                partial, _entries(shard["tensors"]), _tensor_arrays(shard["tensors"], cache, bar)
            )
            digest = _sha256(partial)
            os.rename(partial, work / shard["file"])
            done[shard["file"]] = digest
            _write_json(work / HASHES_FILE, done)


def _write_index_and_config(work, shards, tensors, weights_name, config) -> list[str]:
    """Writes the shard index (several shards) and config.json (when given); their names."""
    files = []
    if len(shards) > 1:
        data_bytes = sum(
            int(np.prod(t["shape"])) * formats.SAFETENSORS_DTYPES[t["dtype"]].itemsize
            for t in tensors
        )
        index = {
            "metadata": {"total_size": data_bytes},  # Tensor bytes, as save_pretrained writes.
            "weight_map": {t["name"]: s["file"] for s in shards for t in s["tensors"]},
        }
        files.append(f"{weights_name}.safetensors.index.json")
        (work / files[-1]).write_text(json.dumps(index, indent=2))
    if config is not None:
        files.append("config.json")
        (work / files[-1]).write_text(json.dumps(config, indent=2) + "\n")
    return files


def _install(work: Path, target: Path, files: list[str], weights_name: str) -> None:
    """Renames the finished `work` folder to `target`; into an existing target, removes the
    files of `weights_name` (shards of another count too) and moves `files` in, nothing else."""
    (work / PLAN_FILE).unlink()
    (work / HASHES_FILE).unlink()
    if not target.exists():
        os.rename(work, target)
        return
    owned = re.compile(rf"{re.escape(weights_name)}(-\d+-of-\d+)?\.safetensors(\.index\.json)?")
    for old in target.iterdir():
        if owned.fullmatch(old.name) and old.is_file():
            old.unlink()
    for file in files:
        os.replace(work / file, target / file)
    shutil.rmtree(work)


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
