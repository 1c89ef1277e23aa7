"""Encodes clips of a dataset once with the world model's frozen encoders and writes the latent
cache that mode train reads with config.train.inputs='latents' (wow_jax/train/latent_cache.py).

    python -m scripts.cache_latents --config=configs/wow14b.py \
        --config.checkpoint.init_from=/ckpt/wow14b --config.data.path=/data/robot \
        --clips=100000 --output=/data/robot/latents
    python -m wow_jax.main --config=configs/wow14b.py --config.mode=train \
        --config.checkpoint.init_from=/ckpt/wow14b --config.data.path=/data/robot \
        --config.train.inputs=latents --config.train.latent_cache=/data/robot/latents --workdir=RUN

The clips are the first --clips of the Grain pipeline over config.data (data.pipeline.take_clips,
prepared as mode train prepares it, in <workdir>/data when config.data.path is empty), with their
mixture captions. The frozen VAE, umT5 and CLIP (i2v) are read from config.checkpoint.init_from,
as mode train reads them; captions come from the text-embedding cache when
config.model.text.embedding_cache is set. The encoders run jitted on this host's first device,
--batch_size clips per call (one process: on a pod, run it on one host). --output defaults to
config.train.latent_cache. The
cache records the checkpoint step and the config keys it depends on; mode train refuses a cache
that does not match its config.
"""

import numpy as np
from absl import app, flags
from ml_collections import config_flags

from wow_jax import models, sharding
from wow_jax.train import latent_cache


def define_flags() -> None:
    """The script's flags, defined when it runs (not on import)."""
    config_flags.DEFINE_config_file("config", "configs/base.py", "wow_jax config file.")
    flags.DEFINE_integer("clips", None, "Clips drawn from the pipeline and encoded.", required=True)
    flags.DEFINE_string("output", "", "Cache directory ('' = config.train.latent_cache).")
    flags.DEFINE_string("workdir", "workdir", "Where an empty config.data.path is prepared.")
    flags.DEFINE_integer("batch_size", 1, "Clips per encoder call (the 14B VAE: one 81x480x832).")


def encoder_names(config) -> list[str]:
    """The frozen encoders a cache needs: the VAE, umT5 (unless the text-embedding cache gives
    the captions' states) and CLIP (i2v)."""
    names = ["vae"]
    if not config.model.text.embedding_cache:
        names.append("text")
    if config.model.dit.variant == "i2v":
        names.append("clip")
    return names


def frozen_params(config) -> dict:
    """{name: params} of `encoder_names` from config.checkpoint.init_from, in the dtypes mode
    train restores them in, on this host's first device."""
    from wow_jax import checkpointing

    targets = {
        name: sharding.abstract_on_mesh(
            models.load(name).abstract_params(models.model_config(config, name)), None
        )
        for name in encoder_names(config)
    }
    return checkpointing.restore_subtrees(config.checkpoint.init_from, targets)


def text_states_fn(config, params: dict):
    """captions [B] -> states [B, L, D] float32: the text-embedding cache's, or umT5's."""
    from wow_jax.data import text_cache
    from wow_jax.sampling import conditioning

    cache = text_cache.from_config(config.model.text)
    if cache is not None:
        return lambda captions: np.asarray(cache.lookup_batch([str(c) for c in captions]))
    encoder = conditioning.TextEncoder(config.model.text)
    encoder.require_tokenizer()
    return lambda captions: encoder(params["text"], captions)


def run(config, clips: int, output: str = "", workdir: str = "workdir", batch_size: int = 1) -> str:
    """Writes the cache of `clips` clips to `output` (or config.train.latent_cache); returns it."""
    from wow_jax.data import pipeline, prepare

    output = output or config.train.latent_cache
    if not output:
        raise ValueError("no output directory: pass --output or set config.train.latent_cache")
    if clips < 1 or batch_size < 1:
        raise ValueError(f"--clips and --batch_size must be >= 1, got {clips}, {batch_size}")
    if not config.checkpoint.init_from:
        raise ValueError(
            "config.checkpoint.init_from is empty: the cache is encoded by the frozen VAE/umT5/"
            "CLIP that mode train would read from it; set it to that checkpoint"
        )
    params = frozen_params(config)  # A bad checkpoint fails before the dataset is prepared.
    text = text_states_fn(config, params)
    data_cfg = config.data.copy_and_resolve_references()
    with data_cfg.unlocked():
        data_cfg.path = str(prepare.prepare_dataset(config.data, workdir))
    taken = pipeline.take_clips(data_cfg, clips)
    arrays = latent_cache.encode_clips(config, params, taken, text, batch_size)
    arrays[latent_cache.NULL_KEY] = latent_cache.null_text_states(text)
    weights = latent_cache.checkpoint_weights(config)
    latent_cache.write(output, arrays, latent_cache.source(config, weights))
    return output


def main(argv):
    del argv
    f = flags.FLAGS
    output = run(f.config, f.clips, f.output, f.workdir, f.batch_size)
    print(f"{f.clips} clips encoded into the latent cache {output}")


if __name__ == "__main__":
    define_flags()
    app.run(main)
