"""Reading and writing PyTorch checkpoint files tensor by tensor.

Readers open a `.safetensors` or `.pth` file, a sharded set listed by an `*.index.json`
(`weight_map: {tensor name: file}`), or a folder holding either, and hand out one tensor at a
time as a numpy array (bf16 as `ml_dtypes.bfloat16`). Safetensors headers are parsed and checked
against the file size up front, so a truncated download fails before anything is converted; data
is read with plain file reads (no mmap), so resident memory holds only the tensor asked for.
`.pth` files need torch (a test-only dependency here) and are opened with
`torch.load(mmap=True, weights_only=True)`; a file that only loads with full unpickling (which
runs code named by the file: a downloaded checkpoint is untrusted input) is refused unless the
caller opts in with `trust_pickle=True` (mode convert: `--config.convert.trust_pickle=true`).
A state dict wrapped as `{'state_dict' | 'module' | 'model': {...}, ...}` (Lightning, DeepSpeed)
is unwrapped.

The writer produces safetensors files whose header is known before any data is written, so a
shard of many tensors is streamed to disk without holding it in memory.
"""

import dataclasses
import json
import math
import os
import pickle
import struct
from collections.abc import Iterable, Iterator
from pathlib import Path

import ml_dtypes
import numpy as np

SAFETENSORS_DTYPES = {
    "F64": np.dtype(np.float64),
    "F32": np.dtype(np.float32),
    "F16": np.dtype(np.float16),
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "I64": np.dtype(np.int64),
    "I32": np.dtype(np.int32),
    "I16": np.dtype(np.int16),
    "I8": np.dtype(np.int8),
    "U8": np.dtype(np.uint8),
    "BOOL": np.dtype(np.bool_),
}
DTYPE_CODES = {dtype: code for code, dtype in SAFETENSORS_DTYPES.items()}
PTH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")
WRAPPER_KEYS = ("state_dict", "module", "model")  # Keys a .pth file may nest its state dict in.
TRUST_PICKLE_FLAG = "--config.convert.trust_pickle=true"  # The opt-in named by the refusal.
HEADER_LIMIT = 100 * 2**20  # A safetensors JSON header larger than this is corrupt.


class CheckpointFormatError(ValueError):
    """A checkpoint file or folder is unreadable, truncated or inconsistent."""


@dataclasses.dataclass(frozen=True)
class TensorInfo:
    shape: tuple[int, ...]
    dtype: np.dtype
    file: Path

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


class TensorSource:
    """A read-only name -> tensor store. `info` is free; `read` loads one tensor."""

    def __init__(self, infos: dict[str, TensorInfo], files: list[Path]):
        self.infos = infos
        self.files = files

    def names(self) -> list[str]:
        return list(self.infos)

    def read(self, name: str) -> np.ndarray:
        raise NotImplementedError

    def largest_file_bytes(self) -> int:
        return max((f.stat().st_size for f in self.files), default=0)

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def read_safetensors_header(path: Path) -> tuple[dict[str, TensorInfo], dict[str, tuple[int, int]]]:
    """({name: info}, {name: (absolute start, end) byte range}); checks the file is complete."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise CheckpointFormatError(
                f"{path}: {size} bytes is too short for a safetensors file; it is truncated or "
                "not safetensors, download it again"
            )
        (header_len,) = struct.unpack("<Q", head)
        if header_len > min(HEADER_LIMIT, size - 8):
            raise CheckpointFormatError(
                f"{path}: header claims {header_len} bytes but the file has {size}; the file is "
                "truncated or not safetensors, download it again"
            )
        try:
            header = json.loads(f.read(header_len))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise CheckpointFormatError(
                f"{path}: unreadable safetensors header ({error})"
            ) from None
    header.pop("__metadata__", None)
    data_start = 8 + header_len
    infos, ranges = {}, {}
    for name, entry in header.items():
        code = entry.get("dtype")
        if code not in SAFETENSORS_DTYPES:
            raise CheckpointFormatError(f"{path}: tensor {name} has unsupported dtype {code!r}")
        info = TensorInfo(tuple(entry["shape"]), SAFETENSORS_DTYPES[code], path)
        begin, end = entry["data_offsets"]
        if end - begin != info.nbytes:
            raise CheckpointFormatError(
                f"{path}: tensor {name} has {end - begin} bytes for shape {info.shape} "
                f"{code}; the header is corrupt"
            )
        infos[name], ranges[name] = info, (data_start + begin, data_start + end)
    needed = max((end for _, end in ranges.values()), default=data_start)
    if needed > size:
        raise CheckpointFormatError(
            f"{path}: the header needs {needed} bytes but the file has only {size}; the file is "
            "truncated (interrupted download or copy?), download it again"
        )
    return infos, ranges


class SafetensorsSource(TensorSource):
    def __init__(self, files: list[Path], weight_map: dict[str, str] | None = None):
        infos, self._ranges = {}, {}
        for path in files:
            file_infos, file_ranges = read_safetensors_header(path)
            duplicate = set(file_infos) & set(infos)
            if duplicate:
                raise CheckpointFormatError(
                    f"{path}: tensors also found in another file: {sorted(duplicate)[:20]}"
                )
            infos.update(file_infos)
            self._ranges.update(file_ranges)
        if weight_map is not None:
            _check_index(weight_map, infos)
        super().__init__(infos, files)
        self._handles = {}

    def read(self, name: str) -> np.ndarray:
        info = self.infos[name]
        begin, end = self._ranges[name]
        if info.file not in self._handles:
            self._handles[info.file] = open(info.file, "rb")  # noqa: SIM115 (closed in close())
        f = self._handles[info.file]
        f.seek(begin)
        buffer = np.empty(end - begin, np.uint8)
        if f.readinto(memoryview(buffer)) != end - begin:
            raise CheckpointFormatError(f"{info.file}: short read of {name}; file truncated")
        return buffer.view(info.dtype).reshape(info.shape)

    def close(self) -> None:
        for handle in self._handles.values():
            handle.close()
        self._handles = {}


class DictSource(TensorSource):
    """In-memory tensors (for tables that need the whole checkpoint, e.g. CLIP's fused qkv)."""

    def __init__(self, tensors: dict[str, np.ndarray], files: list[Path]):
        self.tensors = {k: np.asarray(v) for k, v in tensors.items()}
        infos = {k: TensorInfo(v.shape, v.dtype, Path("<memory>")) for k, v in self.tensors.items()}
        super().__init__(infos, files)

    def read(self, name: str) -> np.ndarray:
        return self.tensors[name]


class AliasedSource(TensorSource):
    """Folds tied duplicates onto one canonical name (`aliases`: alias -> canonical)."""

    def __init__(self, source: TensorSource, aliases: dict[str, str]):
        self.source, self.names_map = source, {}
        for name in source.names():
            canonical = aliases.get(name, name)
            if canonical in self.names_map and name in aliases:
                continue  # Both present: the canonical one is used.
            self.names_map[canonical] = name
        infos = {c: source.infos[n] for c, n in self.names_map.items()}
        super().__init__(infos, source.files)

    def read(self, name: str) -> np.ndarray:
        return self.source.read(self.names_map[name])

    def close(self) -> None:
        self.source.close()


def _torch():
    try:
        import torch  # noqa: PLC0415 (torch is optional: only .pth files need it)
    except ImportError:
        raise CheckpointFormatError(
            "reading a .pth checkpoint needs PyTorch, which is not installed; install the CPU "
            "wheel (pip install torch --index-url https://download.pytorch.org/whl/cpu) or "
            "convert the file to .safetensors first"
        ) from None
    return torch


def _state_dict(loaded, path: Path) -> dict:
    """The flat {name: tensor} dict of a torch.load result: unwraps a dict with one entry or
    with a `WRAPPER_KEYS` entry (other entries, e.g. a training step count, are dropped)."""
    torch = _torch()
    if isinstance(loaded, dict) and not all(torch.is_tensor(v) for v in loaded.values()):
        wrapped = [loaded[k] for k in WRAPPER_KEYS if isinstance(loaded.get(k), dict)]
        if len(loaded) == 1 and isinstance(next(iter(loaded.values())), dict):
            wrapped = list(loaded.values())
        loaded = wrapped[0] if wrapped else loaded
    if not isinstance(loaded, dict) or not all(torch.is_tensor(v) for v in loaded.values()):
        kinds = {type(v).__name__ for v in loaded.values()} if isinstance(loaded, dict) else ""
        raise CheckpointFormatError(
            f"{path}: expected a state dict of tensors (possibly inside one of {WRAPPER_KEYS}), "
            f"got {type(loaded).__name__} {sorted(kinds) if kinds else ''}"
        )
    return loaded


def _load_pth(path: Path, trust_pickle: bool):
    """torch.load of `path` (memory-mapped): weights_only first; full unpickling only if
    `trust_pickle`, else refused naming the opt-in."""
    torch = _torch()
    try:
        return torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    except pickle.UnpicklingError as error:
        refused = _first_line(error)
    except Exception as error:  # torch raises many types for a broken file
        raise _unreadable(path, error) from None
    if not trust_pickle:
        raise CheckpointFormatError(
            f"{path}: loads only with full unpickling (torch.load weights_only=True refused it: "
            f"{refused}). Unpickling runs code named by the file, so it is not done silently: if "
            f"you trust the file, pass {TRUST_PICKLE_FLAG} (trust_pickle=True in code), or "
            "re-save its state dict as safetensors"
        )
    try:
        return torch.load(path, map_location="cpu", mmap=True, weights_only=False)
    except Exception as error:
        raise _unreadable(path, error) from None


def _unreadable(path: Path, error: Exception) -> CheckpointFormatError:
    return CheckpointFormatError(
        f"{path}: cannot read as a PyTorch checkpoint ({type(error).__name__}: "
        f"{_first_line(error)}); the file is truncated or not a state dict, download it again"
    )


def _first_line(error: Exception) -> str:
    return str(error).splitlines()[0] if str(error) else ""


class PthSource(TensorSource):
    def __init__(
        self,
        files: list[Path],
        weight_map: dict[str, str] | None = None,
        trust_pickle: bool = False,
    ):
        torch = _torch()
        self._tensors, infos = {}, {}
        for path in files:
            for name, tensor in _state_dict(_load_pth(path, trust_pickle), path).items():
                self._tensors[name] = tensor
                dtype = np.dtype(ml_dtypes.bfloat16) if tensor.dtype == torch.bfloat16 else None
                dtype = dtype or np.dtype(str(tensor.dtype).removeprefix("torch."))
                infos[name] = TensorInfo(tuple(tensor.shape), dtype, path)
        if weight_map is not None:
            _check_index(weight_map, infos)
        super().__init__(infos, files)

    def read(self, name: str) -> np.ndarray:
        torch = _torch()
        tensor = self._tensors[name].contiguous()
        if tensor.dtype == torch.bfloat16:
            return tensor.view(torch.int16).numpy().view(ml_dtypes.bfloat16).copy()
        return tensor.numpy().copy()


def _check_index(weight_map: dict[str, str], infos: dict[str, TensorInfo]) -> None:
    """The index and the shard files must list the same tensors in the same files."""
    not_in_files = [n for n in weight_map if n not in infos]
    not_in_index = [n for n in infos if n not in weight_map]
    wrong_file = [n for n in weight_map if n in infos and infos[n].file.name != weight_map[n]]
    problems = []
    if not_in_files:
        problems.append(f"index lists tensors no shard holds: {sorted(not_in_files)[:20]}")
    if not_in_index:
        problems.append(
            f"shards hold tensors the index has no entry for: {sorted(not_in_index)[:20]}"
        )
    if wrong_file:
        problems.append(f"tensors found in a different file than the index says: {wrong_file[:20]}")
    if problems:
        raise CheckpointFormatError(
            "; ".join(problems) + ". The index json and the shard files do not belong together "
            "(incomplete download or edited index); download the checkpoint again"
        )


def open_index(index_path: Path, trust_pickle: bool = False) -> TensorSource:
    try:
        weight_map = json.loads(index_path.read_text())["weight_map"]
    except (json.JSONDecodeError, KeyError) as error:
        raise CheckpointFormatError(f"{index_path}: not a shard index ({error})") from None
    files = sorted({index_path.parent / f for f in weight_map.values()})
    missing = [f.name for f in files if not f.exists()]
    if missing:
        raise CheckpointFormatError(
            f"{index_path}: shard files listed in the index are missing: {missing[:20]}; "
            "download them or point at a complete folder"
        )
    if all(f.suffix == ".safetensors" for f in files):
        return SafetensorsSource(files, weight_map)
    return PthSource(files, weight_map, trust_pickle)


def open_source(path: str | os.PathLike, trust_pickle: bool = False) -> TensorSource:
    """Opens a checkpoint file, a `*.index.json`, or a folder of shards for tensor-wise reading.

    A folder must hold exactly one index json, or else safetensors files, or else .pth files.
    trust_pickle: allow .pth files that load only with full unpickling (see the module doc).
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointFormatError(f"checkpoint {path} does not exist")
    if path.is_file():
        if path.name.endswith(".index.json"):
            return open_index(path, trust_pickle)
        if path.suffix == ".safetensors":
            return SafetensorsSource([path])
        if path.suffix in PTH_SUFFIXES:
            return PthSource([path], trust_pickle=trust_pickle)
        raise CheckpointFormatError(
            f"{path}: unknown checkpoint file type; expected .safetensors, .pth/.pt/.bin or "
            "an *.index.json"
        )
    indexes = sorted(path.glob("*.index.json"))
    if len(indexes) > 1:
        raise CheckpointFormatError(
            f"{path} holds several index files {[i.name for i in indexes]}; point at one of them"
        )
    if indexes:
        return open_index(indexes[0], trust_pickle)
    safetensors = sorted(path.glob("*.safetensors"))
    if safetensors:
        return SafetensorsSource(safetensors)
    pth = sorted(p for p in path.iterdir() if p.suffix in PTH_SUFFIXES)
    if pth:
        return PthSource(pth, trust_pickle=trust_pickle)
    raise CheckpointFormatError(
        f"{path} holds no .safetensors, .pth or *.index.json checkpoint files"
    )


def safetensors_header(entries: Iterable[tuple[str, tuple[int, ...], np.dtype]]) -> bytes:
    """The 8-byte length + JSON header (padded to 8 bytes) for tensors written in this order."""
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for name, shape, dtype in entries:
        nbytes = math.prod(shape) * np.dtype(dtype).itemsize
        header[name] = {
            "dtype": DTYPE_CODES[np.dtype(dtype)],
            "shape": list(shape),
            "data_offsets": [offset, offset + nbytes],
        }
        offset += nbytes
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text


def safetensors_size(entries: list[tuple[str, tuple[int, ...], np.dtype]]) -> int:
    data = sum(math.prod(shape) * np.dtype(dtype).itemsize for _, shape, dtype in entries)
    return len(safetensors_header(entries)) + data


def write_safetensors(
    path: Path,
    entries: list[tuple[str, tuple[int, ...], np.dtype]],
    arrays: Iterator[np.ndarray],
) -> int:
    """Streams `arrays` (in `entries` order, matching shapes/dtypes) into one safetensors file."""
    written = 0
    with open(path, "wb") as f:
        f.write(safetensors_header(entries))
        for (name, shape, dtype), array in zip(entries, arrays, strict=True):
            if array.shape != tuple(shape) or array.dtype != np.dtype(dtype):
                raise ValueError(
                    f"{name}: writer expected {tuple(shape)} {np.dtype(dtype)}, "
                    f"got {array.shape} {array.dtype}"
                )
            f.write(np.ascontiguousarray(array).reshape(-1).view(np.uint8).data)
            written += array.nbytes
        f.flush()
        os.fsync(f.fileno())
    return written
