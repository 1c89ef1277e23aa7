"""Text-embedding cache: umT5 states of every caption of a dataset, computed once.

Training a 14B DiT must not run the 5.7B text encoder on every step. `TextEmbeddingCache.write`
encodes each distinct caption once (batched, jitted, optionally sharded over a mesh) and stores
its states trimmed to the real token count (Wan trims, and zero-pads to text_len) in one
ArrayRecord file; `TextEmbeddingCache(directory)` reads them back by caption string.

Layout of a cache directory (written next to the episodes, e.g. `<data.path>/text_embeddings`):
  text_embeddings.array_record  one record per caption: 4-byte header length, JSON header
                                {caption, shape [n, dim], dtype}, then the raw array bytes
  index.json                    {"meta": {text_len, dim, dtype, ...}, "keys": [sha256 of caption]}

The reader is a Grain random-access data source (`len`, `__getitem__` -> record dict) and
answers `lookup(caption) -> [text_len, dim]` (zeros past the caption's tokens). The empty caption
(the unconditional embedding for classifier-free guidance) is always included.
"""

import hashlib
import json
import os
import struct
from collections.abc import Callable, Iterable, Sequence

import jax
import ml_collections
import numpy as np
from absl import logging
from tqdm import tqdm

RECORDS_FILE = "text_embeddings.array_record"
INDEX_FILE = "index.json"
_HEADER = struct.Struct("<I")
# Embedding dtype name -> numpy dtype (bfloat16 through ml_dtypes, which jax ships).
DTYPES = {"float32": np.float32, "float16": np.float16, "bfloat16": jax.numpy.bfloat16}


def caption_key(caption: str) -> str:
    """The record key of a caption: sha256 of its UTF-8 bytes (exact string, no cleaning)."""
    return hashlib.sha256(caption.encode("utf-8")).hexdigest()


def serialize(caption: str, embedding: np.ndarray, dtype: str) -> bytes:
    header = json.dumps(
        {"caption": caption, "shape": list(embedding.shape), "dtype": dtype}, ensure_ascii=False
    ).encode("utf-8")
    data = np.ascontiguousarray(embedding, dtype=DTYPES[dtype]).tobytes()
    return _HEADER.pack(len(header)) + header + data


def deserialize(record: bytes) -> dict:
    """-> {'caption': str, 'embedding': [n, dim] array in the stored dtype}."""
    (size,) = _HEADER.unpack_from(record)
    header = json.loads(record[_HEADER.size : _HEADER.size + size].decode("utf-8"))
    data = np.frombuffer(record[_HEADER.size + size :], dtype=DTYPES[header["dtype"]])
    return {"caption": header["caption"], "embedding": data.reshape(header["shape"])}


def unique_captions(captions: Iterable[str]) -> list[str]:
    """Distinct captions in first-seen order, always starting with the empty caption."""
    out = dict.fromkeys([""])
    for caption in captions:
        if not isinstance(caption, str):
            raise ValueError(f"captions must be strings, got {type(caption).__name__}: {caption!r}")
        out[caption] = None
    return list(out)


def make_encode_fn(module, params, mesh: jax.sharding.Mesh | None = None) -> Callable:
    """A jitted (ids [B, L], mask [B, L]) -> states [B, L, dim] numpy function.

    With `mesh`, `params` must already be placed on it (e.g. by `sharding.variable_shardings`).
    Every process passes the same full batch (token ids are small); it is split over
    ('data', 'fsdp') and the states come back replicated, so this also runs on a multi-host pod.
    """
    from wow_jax import sharding

    if mesh is None:
        apply = jax.jit(lambda p, ids, mask: module.apply({"params": p}, ids, mask))
        return lambda ids, mask: np.asarray(apply(params, ids, mask))
    apply = jax.jit(
        lambda p, ids, mask: module.apply({"params": p}, ids, mask),
        out_shardings=sharding.replicated(mesh),
    )
    split = mesh.shape["data"] * mesh.shape["fsdp"]

    def place(x: np.ndarray) -> jax.Array:
        where = sharding.batch_sharding(mesh, x.ndim)
        return jax.make_array_from_callback(x.shape, where, lambda index: x[index])

    def encode(ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        if ids.shape[0] % split:
            raise ValueError(
                f"batch of {ids.shape[0]} captions does not split over data*fsdp={split} "
                f"devices; use a batch_size that is a multiple of {split}"
            )
        with sharding.activate(mesh):
            return np.asarray(apply(params, place(ids), place(mask)))

    return encode


class TextEmbeddingCache:
    """Reader of a cache directory: a Grain random-access source and a caption lookup."""

    def __init__(self, directory: str, text_cfg: ml_collections.ConfigDict | None = None):
        index_path = os.path.join(directory, INDEX_FILE)
        if not os.path.isfile(index_path):
            raise FileNotFoundError(
                f"no text-embedding cache at {directory!r} ({INDEX_FILE} missing); build it with "
                "`python -m scripts.cache_text_embeddings --config=... --captions=...` or set "
                "config.model.text.embedding_cache='' to run the encoder on the fly"
            )
        with open(index_path, encoding="utf-8") as f:
            index = json.load(f)
        self.directory = directory
        self.meta = index["meta"]
        self._rows = {key: row for row, key in enumerate(index["keys"])}
        self._source = None
        if text_cfg is not None:
            for key in ("text_len", "dim"):
                if self.meta[key] != text_cfg[key]:
                    raise ValueError(
                        f"text-embedding cache {directory!r} was written with {key}="
                        f"{self.meta[key]} but config.model.text.{key}={text_cfg[key]}; rebuild "
                        "the cache with `python -m scripts.cache_text_embeddings` for this config"
                    )

    # Grain RandomAccessDataSource protocol.
    def __len__(self) -> int:
        return len(self._rows)

    def __getitem__(self, row: int) -> dict:
        if self._source is None:
            import grain

            self._source = grain.sources.ArrayRecordDataSource(
                [os.path.join(self.directory, RECORDS_FILE)]
            )
        return deserialize(self._source[row])

    def __getstate__(self):  # Picklable for Grain worker processes: reopen lazily.
        return {**self.__dict__, "_source": None}

    def __contains__(self, caption: str) -> bool:
        return caption_key(caption) in self._rows

    def lookup(self, caption: str) -> np.ndarray:
        """caption -> states [text_len, dim] in the stored dtype, zero past its tokens."""
        row = self._rows.get(caption_key(caption))
        if row is None:
            raise KeyError(
                f"caption {caption[:80]!r} is not in the text-embedding cache {self.directory!r}; "
                "re-run `python -m scripts.cache_text_embeddings` including it"
            )
        embedding = self[row]["embedding"]
        out = np.zeros((self.meta["text_len"], self.meta["dim"]), embedding.dtype)
        out[: len(embedding)] = embedding
        return out

    def lookup_batch(self, captions: Sequence[str]) -> np.ndarray:
        """captions (B) -> states [B, text_len, dim]."""
        return np.stack([self.lookup(c) for c in captions])

    @classmethod
    def write(
        cls,
        directory: str,
        captions: Iterable[str],
        tokenizer,
        encode_fn: Callable[[np.ndarray, np.ndarray], np.ndarray],
        batch_size: int = 8,
        dtype: str = "bfloat16",
        meta: dict | None = None,
    ) -> "TextEmbeddingCache":
        """Encodes every distinct caption once and writes the cache; returns its reader.

        tokenizer: `wow_jax.data.tokenizer.Tokenizer`; encode_fn: (ids, mask) -> [B, L, dim]
        (see `make_encode_fn`). Batches are padded to `batch_size` so one program is compiled.
        """
        from array_record.python.array_record_module import ArrayRecordWriter

        if dtype not in DTYPES:
            raise ValueError(f"cache dtype must be one of {list(DTYPES)}, got {dtype!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        captions = unique_captions(captions)
        # On a multi-host pod every process encodes (the batch is sharded); process 0 writes.
        writes = jax.process_index() == 0
        writer = None
        if writes:
            os.makedirs(directory, exist_ok=True)
            writer = ArrayRecordWriter(os.path.join(directory, RECORDS_FILE), "group_size:1")
        dim = None
        try:
            for start in tqdm(range(0, len(captions), batch_size), desc="umT5 captions"):
                batch = captions[start : start + batch_size]
                padded = batch + [""] * (batch_size - len(batch))
                ids, mask = tokenizer.encode(padded)
                states = np.asarray(encode_fn(ids, mask))
                dim = states.shape[-1]
                for row, caption in enumerate(batch if writes else ()):
                    length = int(mask[row].sum())
                    writer.write(serialize(caption, states[row, :length], dtype))
        finally:
            if writer is not None:
                writer.close()
        index = {
            "meta": {
                "text_len": tokenizer.text_len,
                "dim": dim,
                "dtype": dtype,
                "count": len(captions),
                "tokenizer": os.path.abspath(tokenizer.spm_path),
                **(meta or {}),
            },
            "keys": [caption_key(c) for c in captions],
        }
        if writes:
            with open(os.path.join(directory, INDEX_FILE), "w", encoding="utf-8") as f:
                json.dump(index, f)
            logging.info("Wrote %d caption embeddings to %s", len(captions), directory)
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices("text_cache_written")
        return cls(directory)


def from_config(text_cfg: ml_collections.ConfigDict) -> TextEmbeddingCache | None:
    """The cache named by config.model.text.embedding_cache, or None ('' = encode on the fly)."""
    if not text_cfg.embedding_cache:
        return None
    return TextEmbeddingCache(text_cfg.embedding_cache, text_cfg)
