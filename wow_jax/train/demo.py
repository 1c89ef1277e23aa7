"""The CPU demo recipe (`configs/demo.py`, config.train.demo=True), stage by stage:

  1. collect   Meta-World episodes into <workdir>/data (train) and <workdir>/heldout (other seeds)
  2. clips     config.train.demo_clips clips (+ mixture captions) from the Grain pipeline
  3. vae       train the tiny VAE on random crops (train.demo_vae_frames x demo_vae_crop^2)
                                                                    -> <workdir>/vae/checkpoints
  4. cache     VAE latents (+ per-channel stats -> latent_stats.json), conditioning latents,
               a sentencepiece tokenizer trained on the captions (<workdir>/tokenizer), caption
               states from a tiny random umT5, CLIP tokens of the first frames
  5. world     train the tiny I2V world model on the cache   -> <workdir>/world_model/checkpoints
               (state/params = {'dit', 'vae', 'text', 'clip'}: a complete generation checkpoint)
  6. imagine   if wow_jax.sampling has landed: clips for held-out start frames and instructions,
               written side by side with the real ones (<workdir>/imagined/heldout_<i>.mp4/.gif)

Every stage resumes: a finished training stage restores its last checkpoint and skips.
"""

import json
import os

import jax
import ml_collections
import numpy as np
from absl import logging

from wow_jax.train import loop, tasks
from wow_jax.train.array_data import ArrayIterator
from wow_jax.train.tasks import conditioning
from wow_jax.train.tasks.vae import VAETask
from wow_jax.train.tasks.world_model import WorldModelTask

SPM_VOCAB = 256  # Sentencepiece pieces (+100 sentinels must fit config.model.text.vocab_size).


def stage_config(config, task: str, steps: int, lr: float) -> ml_collections.ConfigDict:
    cfg = config.copy_and_resolve_references()
    with cfg.unlocked():
        cfg.train.task, cfg.train.steps, cfg.train.learning_rate = task, steps, lr
        cfg.train.demo = False
        cfg.train.warmup_steps = min(cfg.train.warmup_steps, max(steps // 10, 1))
    return cfg


def collect_clips(config, workdir: str, subdir: str, seed_offset: int, count: int) -> dict:
    """{'video' [N, T, H, W, 3] in [-1, 1], 'caption', 'instruction' [N]} from the pipeline."""
    from wow_jax.data import pipeline

    data_cfg = config.data.copy_and_resolve_references()
    with data_cfg.unlocked():
        data_cfg.collect_seed += seed_offset
        data_cfg.shuffle_seed += seed_offset
        if seed_offset:
            data_cfg.episodes_per_task = max(1, data_cfg.episodes_per_task // 4)
        cfg = config.copy_and_resolve_references()
        cfg.data = data_cfg
        data_cfg.path = tasks.data_path(cfg, os.path.join(workdir, subdir))
    iterator = pipeline.create_iterator(data_cfg, process_index=0, process_count=1)
    videos, captions, instructions = [], [], []
    while len(videos) < count:
        batch = next(iterator)
        videos.extend(np.asarray(batch["video"], np.float32))
        captions.extend(str(c) for c in batch["caption"])
        instructions.extend(str(c) for c in batch["instruction"])
    return {
        "video": np.stack(videos[:count]),
        "caption": captions[:count],
        "instruction": instructions[:count],
    }


def vae_crops(videos: np.ndarray, frames: int, size: int, per_clip: int, seed: int) -> np.ndarray:
    """Random [frames, size, size] crops of [N, T, H, W, 3] clips (size 0 = full frames): the
    convolutional VAE trains on small crops far faster and still codes whole frames."""
    n, t, h, w, _ = videos.shape
    frames = frames or t
    size_h, size_w = (size, size) if size else (h, w)
    rng = np.random.default_rng(seed)
    crops = []
    for i in range(n):
        for _ in range(per_clip):
            t0 = rng.integers(0, t - frames + 1)
            y0, x0 = rng.integers(0, h - size_h + 1), rng.integers(0, w - size_w + 1)
            crops.append(videos[i, t0 : t0 + frames, y0 : y0 + size_h, x0 : x0 + size_w])
    return np.stack(crops)


def train_tokenizer(texts: list[str], path: str) -> str:
    """A small umT5-style sentencepiece model (pad 0, eos 1, unk 2) on the demo captions."""
    import sentencepiece

    model = os.path.join(path, "spiece.model")
    if os.path.exists(model):
        return model
    os.makedirs(path, exist_ok=True)
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(texts * 4),
        model_prefix=os.path.join(path, "spiece"),
        vocab_size=SPM_VOCAB,
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        hard_vocab_limit=False,
        model_type="unigram",
        minloglevel=2,
    )
    return model


def _batched(fn, arrays, size=8):
    outs = [fn(*(a[i : i + size] for a in arrays)) for i in range(0, len(arrays[0]), size)]
    return np.concatenate([np.asarray(o) for o in outs], axis=0)


def build_cache(config, vae_params, text_params, clip_params, clips, tokenizer) -> dict:
    """Normalised latents / conditioning latents, caption states, CLIP tokens for `clips`."""
    from wow_jax.models import clip as clip_lib
    from wow_jax.models import text_encoder
    from wow_jax.models import vae as vae_lib

    vae_cfg = config.model.vae
    frames = clips["video"].shape[1]

    @jax.jit
    def encode(video):
        latents = vae_lib.encode(vae_params, video, vae_cfg, chunked=False)
        cond_video = conditioning.conditioning_video(video[:, 0], frames)
        cond = vae_lib.encode(vae_params, cond_video, vae_cfg, chunked=False)
        return vae_lib.normalize(latents, vae_cfg), vae_lib.normalize(cond, vae_cfg)

    text_module = text_encoder.create(config.model.text)
    text_fn = jax.jit(lambda ids, mask: text_module.apply({"params": text_params}, ids, mask))
    clip_module = clip_lib.create(config.model.clip)
    clip_fn = jax.jit(lambda images: clip_module.apply({"params": clip_params}, images))
    latents = _batched(lambda v: encode(v)[0], [clips["video"]])
    cond = _batched(lambda v: encode(v)[1], [clips["video"]])
    ids, mask = tokenizer.encode(clips["caption"])
    null_ids, null_mask = tokenizer.encode([""])
    return {
        "latents": latents,
        "cond_latents": cond,
        "text_states": _batched(text_fn, [ids, mask]),
        "image_tokens": _batched(clip_fn, [clips["video"][:, 0]]),
        "null_text_states": np.asarray(text_fn(null_ids, null_mask))[0],
    }


def latent_stats(vae_params, videos, vae_cfg) -> tuple[list[float], list[float]]:
    """Per-channel mean/std of the raw posterior means of `videos`."""
    from wow_jax.models import vae as vae_lib

    encode = jax.jit(lambda v: vae_lib.encode(vae_params, v, vae_cfg, chunked=False))
    raw = _batched(encode, [videos])
    axes = tuple(range(raw.ndim - 1))
    return raw.mean(axis=axes).tolist(), np.maximum(raw.std(axis=axes), 1e-3).tolist()


def imagine(config, workdir: str, params: dict, heldout: dict) -> dict:
    """Imagines every held-out clip from its first frame and instruction; writes
    <workdir>/imagined/compare_<i>.gif (real | imagined) and returns per-clip PSNR/SSIM."""
    from wow_jax import sharding
    from wow_jax.sampling import compare, generator, media, models

    mesh = sharding.make_mesh(config.mesh)
    gen = generator.Generator(config, params, models.from_config(config), mesh)
    real = [media.to_uint8(video) for video in heldout["video"]]
    seeds = list(range(len(real)))
    out_dir = os.path.join(workdir, "imagined")
    return compare.imagine_and_compare(
        gen, real, list(heldout["instruction"]), seeds, out_dir, config.sample.fps
    )


def run_demo(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Runs every stage; returns a summary dict (also written to <workdir>/demo_summary.json)."""
    from wow_jax.data import tokenizer as tokenizer_lib
    from wow_jax.models import clip as clip_lib
    from wow_jax.models import text_encoder

    train_cfg = config.train
    summary = {}
    clips = collect_clips(config, workdir, "data", 0, train_cfg.demo_clips)
    heldout = collect_clips(config, workdir, "heldout", 1000, train_cfg.demo_heldout)
    logging.info(
        "demo: %d training clips, %d held-out clips", len(clips["video"]), len(heldout["video"])
    )

    # Stage 3: the VAE.
    vae_cfg = stage_config(config, "vae", train_cfg.demo_vae_steps, train_cfg.demo_vae_lr)
    batch = config.data.batch_size
    crops = vae_crops(
        clips["video"], train_cfg.demo_vae_frames, train_cfg.demo_vae_crop, 4, config.seed
    )
    vae_data = ArrayIterator({"video": crops}, batch, seed=config.seed)
    vae_run = loop.train(vae_cfg, os.path.join(workdir, "vae"), VAETask(vae_cfg), vae_data)
    vae_params = jax.device_get(vae_run.state.params["vae"])
    summary["vae_final_loss"] = vae_run.losses.get(max(vae_run.losses, default=0))

    # Stage 4: latent statistics, tokenizer, frozen text/CLIP encoders, the cache.
    mean, std = latent_stats(vae_params, clips["video"], config.model.vae)
    with open(os.path.join(workdir, "latent_stats.json"), "w") as f:
        json.dump({"latents_mean": mean, "latents_std": std}, f, indent=2)
    spm = train_tokenizer(
        clips["caption"] + clips["instruction"], os.path.join(workdir, "tokenizer")
    )
    config = config.copy_and_resolve_references()
    config.model.vae.latents_mean, config.model.vae.latents_std = tuple(mean), tuple(std)
    config.model.text.tokenizer_path = spm
    tokenizer = tokenizer_lib.Tokenizer(spm, config.model.text.text_len)
    if tokenizer.vocab_size + tokenizer_lib.EXTRA_IDS > config.model.text.vocab_size:
        raise ValueError(
            f"the demo tokenizer has {tokenizer.vocab_size}+{tokenizer_lib.EXTRA_IDS} ids but "
            f"config.model.text.vocab_size is {config.model.text.vocab_size}; raise it"
        )
    text_rng, clip_rng = jax.random.split(jax.random.PRNGKey(config.seed + 7))
    text_params = text_encoder.init_params(config.model.text, text_rng)
    clip_params = clip_lib.init_params(config.model.clip, clip_rng)
    cache = build_cache(config, vae_params, text_params, clip_params, clips, tokenizer)
    held_cache = build_cache(config, vae_params, text_params, clip_params, heldout, tokenizer)
    null_states = cache.pop("null_text_states")
    held_cache.pop("null_text_states")

    # Stage 5: the world model.
    wm_cfg = stage_config(config, "world_model", train_cfg.steps, train_cfg.learning_rate)
    task = WorldModelTask(wm_cfg, null_text_states=null_states)
    wm_data = ArrayIterator(cache, batch, seed=config.seed)
    eval_batch = min(batch, len(held_cache["latents"]))
    eval_data = ArrayIterator(held_cache, eval_batch, shuffle=False)
    wm_run = loop.train(
        wm_cfg,
        os.path.join(workdir, "world_model"),
        task,
        wm_data,
        eval_data,
        initial_params={"vae": vae_params, "text": text_params, "clip": clip_params},
    )
    summary["world_model_final_loss"] = wm_run.losses.get(max(wm_run.losses, default=0))
    summary["checkpoint"] = os.path.join(workdir, "world_model", "checkpoints")

    # Stage 6: imagine held-out clips.
    params = {k: jax.device_get(v) for k, v in wm_run.state.params.items()}
    summary["imagined"] = imagine(wm_cfg, workdir, params, heldout)
    summary["latent_stats"] = os.path.join(workdir, "latent_stats.json")
    summary["tokenizer"] = spm
    with open(os.path.join(workdir, "demo_summary.json"), "w") as f:
        json.dump(summary, f, indent=2, default=str)
    return summary
