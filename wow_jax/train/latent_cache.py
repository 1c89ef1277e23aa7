"""The world model's latent/embedding cache: every clip encoded once by the frozen encoders, as
WoW's pipeline pre-encodes its clips, then read by mode train (config.train.inputs='latents') and
the demo instead of running the VAE, umT5 and CLIP in every train step.

One writer (`write`), one reader (`read`), one staleness check (`mismatch`); the encoding is
`encode_clips` (the world-model task's own encoder calls, ENCODE_BATCH clips per jitted call).

Layout of a cache directory (row i of every array is clip i; float32):
  latents.npy           [N, t, h, w, z]  VAE posterior means normalised by model.vae.latents_*
  cond_latents.npy      [N, t, h, w, z]  (i2v) latents of the first frame followed by zeros
  text_states.npy       [N, L, D]        umT5 states of the clip's caption (zero past its tokens)
  image_tokens.npy      [N, K, E]        (i2v) CLIP tokens of the first frame
  null_text_states.npy  [1, L, D]        states of the empty prompt (text dropout, CFG)
  meta.json             {"count": N, "weights": str, "config": {key: value of SOURCE_KEYS}},
                        written last: a directory without it is not a cache
"""

import json
import os
from collections.abc import Callable

import jax
import ml_collections
import numpy as np

from wow_jax import checkpointing, configuration
from wow_jax.sampling import conditioning

META_FILE = "meta.json"
NULL_KEY = "null_text_states"
ENCODE_BATCH = 8  # Clips / captions per encoder call while writing a cache.
# Config keys the cached arrays depend on: a cache written with another value is stale.
SOURCE_KEYS = (
    "data.source",
    "data.path",
    "data.num_frames",
    "data.height",
    "data.width",
    "data.frame_stride",
    "data.fps",
    "data.crop",
    "data.shuffle_seed",
    "data.caption_long_prob",
    "data.caption_fine_prob",
    "data.caption_robot_probs",
    "data.robot_name",
    "model.dit.variant",
    "model.vae.z_dim",
    "model.vae.dtype",
    "model.vae.latents_mean",
    "model.vae.latents_std",
    "model.text.text_len",
    "model.text.dim",
    "model.text.dtype",
    "model.text.tokenizer_path",
    "model.text.embedding_cache",
    "model.clip.image_size",
    "model.clip.width",
    "model.clip.dtype",
)
COMMAND = "python -m scripts.cache_latents --config=<this config> --clips=N"


def _value(config: ml_collections.ConfigDict, key: str):
    value = config
    for part in key.split("."):
        value = value[part]
    return list(value) if isinstance(value, tuple | list) else value


def source(config: ml_collections.ConfigDict, weights: str) -> dict:
    """What a cache of `config` is made from: the SOURCE_KEYS values and `weights`, the identity
    of the frozen encoders' weights (a checkpoint step directory, or how they were made)."""
    return {"weights": weights, "config": {key: _value(config, key) for key in SOURCE_KEYS}}


def checkpoint_weights(config: ml_collections.ConfigDict) -> str:
    """The weights identity of mode train's frozen encoders: the step directory that
    checkpoint.init_from resolves to ('' when it is empty)."""
    init_from = config.checkpoint.init_from
    return str(checkpointing.item_directory(init_from)) if init_from else ""


def mismatch(directory: str, meta: dict, expected: dict) -> str | None:
    """None when the cache's meta matches `expected` (`source`), else what differs and the fix."""
    fix = (
        f"rebuild it with `{COMMAND} --output={directory}`, or point config.train.latent_cache "
        "at a cache made for this config"
    )
    if meta["weights"] != expected["weights"]:
        return (
            f"latent cache {directory!r} was encoded by weights {meta['weights']!r}, but "
            f"config.checkpoint.init_from gives {expected['weights']!r}; {fix}"
        )
    for key, want in expected["config"].items():
        got = meta["config"].get(key)
        if got != want:
            return (
                f"latent cache {directory!r} was written with config.{key}={got!r}, but this "
                f"config has config.{key}={want!r}; {fix}"
            )
    return None


# ----------------------------------------------------------------------------- encode


def batched(fn: Callable, array: np.ndarray, size: int = ENCODE_BATCH) -> np.ndarray:
    """fn over `size`-row slices of `array`, concatenated on the host as float32. The last slice
    is padded by repeating its final row, so every call has one shape and compiles once."""
    outs = []
    for i in range(0, len(array), size):
        rows = array[i : i + size]
        pad = size - len(rows)
        rows = np.concatenate([rows, np.repeat(rows[-1:], pad, axis=0)]) if pad else rows
        outs.append(np.asarray(fn(rows), np.float32)[: len(rows) - pad])
    return np.concatenate(outs, axis=0)


def encode_clips(
    config, params: dict, clips: dict, text: Callable, size: int = ENCODE_BATCH
) -> dict:
    """The world model's cached inputs of `clips`, one frozen-encoder pass each.

    clips: {'video' [N, T, H, W, 3] in [-1, 1], 'caption' [N]} (data.pipeline.take_clips);
    params: {'vae', 'clip' (i2v)}; text: captions [B] -> states [B, L, D]; `size` clips per call.
    Returns the cache's per-clip arrays (module docstring), latents normalised with
    config.model.vae's statistics, exactly as the task encodes a 'video' batch.
    """
    from wow_jax.models import clip

    vae_cfg, frames = config.model.vae, clips["video"].shape[1]
    first = clips["video"][:, 0]  # The image condition, the pipeline's 'first_frame'.

    def encode(video):
        return conditioning.encode_video(params["vae"], video, vae_cfg, chunked=False)

    out = {
        "latents": batched(encode, clips["video"], size),
        "text_states": batched(text, clips["caption"], size),
    }
    if config.model.dit.variant == "i2v":
        clip_module = clip.create(config.model.clip)
        clip_fn = jax.jit(lambda p, images: clip_module.apply({"params": p}, images))

        def cond(images):
            return conditioning.conditioning_latents(
                params["vae"], images, frames, vae_cfg, chunked=False
            )

        out["cond_latents"] = batched(cond, first, size)
        out["image_tokens"] = batched(lambda images: clip_fn(params["clip"], images), first, size)
    return out


def null_text_states(text: Callable) -> np.ndarray:
    """[1, L, D] states of the empty prompt, in the cache's batch shape."""
    return batched(text, np.asarray([""]))


# ----------------------------------------------------------------------------- write, read


def write(directory: str, arrays: dict, meta: dict) -> None:
    """Writes `arrays` (encode_clips' output and NULL_KEY) and `meta` (`source`) to `directory`;
    meta.json last, so an interrupted write is no cache. Process 0 writes."""
    if jax.process_index() == 0:
        os.makedirs(directory, exist_ok=True)
        stale = os.path.join(directory, META_FILE)
        if os.path.exists(stale):
            os.remove(stale)
        for key, array in arrays.items():
            tmp = os.path.join(directory, f"{key}.tmp.npy")
            np.save(tmp, np.asarray(array, np.float32))
            os.replace(tmp, os.path.join(directory, f"{key}.npy"))
        count = len(arrays["latents"])
        with open(stale + ".tmp", "w") as f:
            json.dump({"count": count, **meta}, f, indent=1)
        os.replace(stale + ".tmp", stale)
    if jax.process_count() > 1:
        checkpointing.sync("latent_cache_written")


def read_meta(directory: str) -> dict | None:
    """The cache's meta.json, or None when `directory` holds no (finished) cache."""
    path = os.path.join(directory, META_FILE)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def read(directory: str) -> dict:
    """{key: array} of a cache (per-clip arrays memory-mapped, NULL_KEY [1, L, D])."""
    names = sorted(n[: -len(".npy")] for n in os.listdir(directory) if n.endswith(".npy"))
    names = [n for n in names if not n.endswith(".tmp")]
    return {n: np.load(os.path.join(directory, f"{n}.npy"), mmap_mode="r") for n in names}


def load_for_training(config: ml_collections.ConfigDict) -> dict:
    """Mode train's cache, config.train.latent_cache, checked against `config` (`mismatch`):
    {key: array} as `read`. Raises FileNotFoundError / ValueError saying how to rebuild it."""
    directory = config.train.latent_cache
    meta = read_meta(directory)
    if meta is None:
        raise FileNotFoundError(
            f"no latent cache at config.train.latent_cache={directory!r} ({META_FILE} missing); "
            f"write it with `{COMMAND} --output={directory}`, or set config.train.inputs='pixels'"
        )
    problem = mismatch(directory, meta, source(config, checkpoint_weights(config)))
    if problem:
        raise ValueError(problem)
    return read(directory)


def batch_shapes(config: ml_collections.ConfigDict, batch: int) -> dict:
    """{key: (shape, dtype)} of a `batch`-clip cache batch: what mode train feeds the step."""
    text, vae = config.model.text, config.model.vae
    grid = (*configuration.latent_grid(config), vae.z_dim)
    shapes = {
        "latents": ((batch, *grid), np.float32),
        "text_states": ((batch, text.text_len, text.dim), np.float32),
    }
    if config.model.dit.variant == "i2v":
        clip_cfg = config.model.clip
        tokens = 1 + (clip_cfg.image_size // clip_cfg.patch_size) ** 2
        shapes["cond_latents"] = ((batch, *grid), np.float32)
        shapes["image_tokens"] = ((batch, tokens, clip_cfg.width), np.float32)
    return shapes
