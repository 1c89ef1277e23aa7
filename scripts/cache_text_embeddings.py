"""Encodes every caption of a dataset once with umT5 and writes a TextEmbeddingCache.

    python -m scripts.cache_text_embeddings --config=configs/wow14b.py \
        --config.model.text.tokenizer_path=/ckpt/google/umt5-xxl/spiece.model \
        --config.model.text.checkpoint_path=/ckpt/models_t5_umt5-xxl-enc-bf16.pth \
        --captions=/data/robot/captions.txt --output=/data/robot/text_embeddings

--captions: a .txt file (one caption per line), a .json list of strings, or a .jsonl file whose
lines are strings or objects with a "caption" (or "instruction") field. --output defaults to
config.model.text.embedding_cache, else <config.data.path>/text_embeddings. Weights come from
config.model.text.checkpoint_path in config.model.text.checkpoint_naming ('wan' or 'hf'); with
no checkpoint the encoder is randomly initialised from config.seed (tests and the tiny demo).
The encoder runs jitted, sharded over config.mesh.
"""

import json
import os

import jax
import numpy as np
from absl import app, flags, logging
from flax import linen as nn
from ml_collections import config_flags

from wow_jax import sharding
from wow_jax.data import text_cache
from wow_jax.data.tokenizer import Tokenizer
from wow_jax.interop import umt5_table
from wow_jax.models import text_encoder


def define_flags() -> None:
    """The script's flags, defined when it runs (not on import: `run` is importable next to
    wow_jax.main, which defines its own --config)."""
    config_flags.DEFINE_config_file("config", "configs/base.py", "wow_jax config file.")
    flags.DEFINE_string("captions", None, "Captions file (.txt, .json or .jsonl).", required=True)
    flags.DEFINE_string("output", "", "Cache directory (see module docstring).")
    flags.DEFINE_integer("batch_size", 8, "Captions encoded per jitted call.")


def read_captions(path: str) -> list[str]:
    """Captions from a .txt (one per line), .json (list) or .jsonl (strings or objects) file."""
    with open(path, encoding="utf-8") as f:
        if path.endswith(".json"):
            captions = json.load(f)
        elif path.endswith(".jsonl"):
            captions = []
            for line in filter(str.strip, f):
                item = json.loads(line)
                captions.append(item if isinstance(item, str) else _caption_field(item, path))
        else:
            captions = [line.rstrip("\n") for line in f]
    if not isinstance(captions, list) or not all(isinstance(c, str) for c in captions):
        raise ValueError(f"{path}: expected a list of caption strings")
    return captions


def _caption_field(item: dict, path: str) -> str:
    for key in ("caption", "instruction"):
        if key in item:
            return item[key]
    raise ValueError(f"{path}: jsonl objects need a 'caption' or 'instruction' field, got {item}")


def load_params(text_cfg, seed: int):
    """umT5 params from config.model.text.checkpoint_path, or random ones when it is empty."""
    if not text_cfg.checkpoint_path:
        logging.warning("config.model.text.checkpoint_path is empty: RANDOM umT5 weights.")
        return nn.meta.unbox(text_encoder.init_params(text_cfg, jax.random.key(seed)))
    return umt5_table.load_params(text_cfg)


def run(config, captions_path: str, output: str = "", batch_size: int = 8):
    """Writes the cache for `captions_path`; returns the TextEmbeddingCache reader."""
    text_cfg = config.model.text
    output = output or text_cfg.embedding_cache
    if not output:
        if not config.data.path:
            raise ValueError(
                "no output directory: pass --output, or set config.model.text.embedding_cache "
                "or config.data.path (the cache then goes to <data.path>/text_embeddings)"
            )
        output = os.path.join(config.data.path, "text_embeddings")
    tokenizer = Tokenizer(text_cfg.tokenizer_path, text_cfg.text_len)
    module = text_encoder.create(text_cfg)
    mesh = sharding.make_mesh(config.mesh)
    shardings = nn.meta.unbox(
        sharding.variable_shardings(text_encoder.abstract_params(text_cfg), mesh)
    )
    params = jax.device_put(load_params(text_cfg, config.seed), shardings)
    batch_size = -(-batch_size // _batch_divisor(mesh)) * _batch_divisor(mesh)
    meta = {"checkpoint": text_cfg.checkpoint_path, "naming": text_cfg.checkpoint_naming}
    return text_cache.TextEmbeddingCache.write(
        output,
        read_captions(captions_path),
        tokenizer,
        text_cache.make_encode_fn(module, params, mesh),
        batch_size=batch_size,
        dtype=text_cfg.cache_dtype,
        meta=meta,
    )


def _batch_divisor(mesh) -> int:
    """Batch sizes must split evenly over the ('data', 'fsdp') mesh axes."""
    return int(np.prod([mesh.shape[a] for a in ("data", "fsdp")]))


def main(argv):
    del argv
    f = flags.FLAGS
    cache = run(f.config, f.captions, f.output, f.batch_size)
    print(f"{len(cache)} caption embeddings in {cache.directory}")


if __name__ == "__main__":
    define_flags()
    app.run(main)
