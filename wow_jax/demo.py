"""Mode 'demo' (`configs/demo.py`): the CPU recipe from simulator episodes to imagined clips.

    python -m wow_jax.main --config=configs/demo.py --workdir=DIR

Stages, each a function that reuses its outputs when they exist (a training stage restores its
last checkpoint and stops at its step count; delete a stage's outputs to redo it):

  collect   Meta-World episodes into config.data.path or <workdir>/data (training) and the
            IDM's held-out collection <workdir>/idm/heldout (seeds + config.idm.heldout_seed_offset,
            idm.heldout_episodes per task; one held-out set for every stage); config.demo.clips /
            demo.heldout clips with their mixture captions drawn from the Grain pipeline
                                                             -> <workdir>/clips/{train,heldout}.npz
  vae       the tiny VAE on random crops (demo.vae_frames x demo.vae_crop^2 pixels, demo.vae_steps)
                                                             -> <workdir>/vae/checkpoints
  cache     one VAE encode per clip: per-channel latent statistics (-> <workdir>/latent_stats.json)
            and the normalised latents; conditioning latents of the first frames; a sentencepiece
            tokenizer trained on the captions (-> <workdir>/tokenizer/spiece.model); caption states
            of a tiny random umT5 and CLIP tokens of the first frames
             (wow_jax/train/latent_cache.py, the cache mode train reads)
                                                             -> <workdir>/cache/{train,heldout}/
  world     the tiny I2V world model on the cache (train.steps) -> <workdir>/world_model, a run
            directory (wow_jax.rundir: config.json with the tokenizer copy and the latent
            statistics) whose checkpoints/ hold params {'dit', 'vae', 'text', 'clip'}: mode
            generate reads it with --config.checkpoint.init_from=<workdir>/world_model alone
  imagine   every held-out clip imagined from its first frame and instruction; PSNR/SSIM per
            clip and per frame index of the imagined clip, copy-first-frame (the do-nothing
            baseline) and the VAE's reconstruction of the real clip (the latent ceiling)
            -> <workdir>/imagined/compare_<i>.gif (real | imagined), metrics.json, per_frame.png
  idm       the FM-IDM (task 'idm', demo.idm_steps) on the training episodes, scored on held-out
            episodes against zero / mean / nearest-flow actions and replayed open loop from the
            real frames (wow_jax/sim/idm_eval.py)        -> <workdir>/idm, idm/idm_eval.json
  evaluate  closed loop in Meta-World on held-out seeds (wow_jax/evaluate.py): imagine-then-act
            against the IDM on the expert's video, the expert, random and zero actions
            -> <workdir>/evaluate/results.json, gifs/ (imagined | executed); finished episode
            groups survive a kill; the IDM's actions from real vs imagined first clips of the
            IDM's held-out episodes (the imagination gap) -> evaluate/idm_gap.json; SOPHIA
            refinement of the instructions with the offline critic -> <workdir>/refine
  report    <workdir>/report.html and summary.md (wow_jax/report.py)

run_demo writes <workdir>/demo_summary.json and prints the held-out PSNR/SSIM and closed-loop
tables.
"""

import json
import os
import time

import jax
import ml_collections
import numpy as np
from absl import logging

import wow_jax.sim  # noqa: F401 (registers the 'metaworld' data source the demo collects)
from wow_jax import evaluate, report
from wow_jax.sampling import conditioning
from wow_jax.train import latent_cache, loop
from wow_jax.train.array_data import ArrayIterator
from wow_jax.train.tasks.vae import VAETask
from wow_jax.train.tasks.world_model import WorldModelTask

SPM_VOCAB = 256  # Sentencepiece pieces (+100 sentinels must fit config.model.text.vocab_size).
IDM_DIR = "idm"  # <workdir>/idm: the IDM stage's run directory.
# config.sample keys that change imagined clips: the imagine stage reruns when one changes.
IMAGINE_SETTINGS = ("solver", "steps", "guidance", "shift", "sigma_grid", "negative_prompt")


def stage_config(config, task: str, steps: int, lr: float) -> ml_collections.ConfigDict:
    cfg = config.copy_and_resolve_references()
    with cfg.unlocked():
        cfg.train.task, cfg.train.steps, cfg.train.learning_rate = task, steps, lr
        cfg.train.warmup_steps = min(cfg.train.warmup_steps, max(steps // 10, 1))
    return cfg


def _save_npz(path: str, arrays: dict) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def _load_npz(path: str) -> dict | None:
    if not os.path.exists(path):
        return None
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


def _final_loss(stage_dir: str) -> float | None:
    """The last logged train/loss of a training stage (also after a resume that trained nothing)."""
    path = os.path.join(stage_dir, "metrics.jsonl")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        losses = [r["train/loss"] for r in map(json.loads, f) if "train/loss" in r]
    return losses[-1] if losses else None


# ----------------------------------------------------------------------------- collect


def draw_clips(data_cfg, workdir: str, name: str, count: int) -> dict:
    """{'video' [N, T, H, W, 3] in [-1, 1], 'caption', 'instruction' [N]} of the dataset prepared
    for `data_cfg` (a config.data); cached in <workdir>/clips/<name>.npz."""
    from wow_jax.data import pipeline, prepare

    path = os.path.join(workdir, "clips", f"{name}.npz")
    stored = _load_npz(path)
    if stored is not None and len(stored["video"]) == count:
        return stored
    data_cfg = data_cfg.copy_and_resolve_references()
    with data_cfg.unlocked():
        data_cfg.path = str(prepare.prepare_dataset(data_cfg, workdir))
    clips = pipeline.take_clips(data_cfg, count)
    _save_npz(path, clips)
    return clips


def collect(config, workdir: str) -> tuple[dict, dict]:
    """Stage collect: (training clips, held-out clips)."""
    from wow_jax.sim import idm_eval

    clips = draw_clips(config.data, workdir, "train", config.demo.clips)
    heldout_data = idm_eval.heldout_data_config(
        idm_config(config, workdir), os.path.join(workdir, IDM_DIR)
    )
    heldout = draw_clips(heldout_data, workdir, "heldout", config.demo.heldout)
    logging.info(
        "demo: %d training clips, %d held-out clips", len(clips["video"]), len(heldout["video"])
    )
    return clips, heldout


# ----------------------------------------------------------------------------- vae


def check_vae_frames(config) -> None:
    """The VAE trains on crops of config.demo.vae_frames frames (0 = whole clip) of clips of
    config.data.num_frames frames. A shorter crop has fewer latent frames than a clip, so the
    causal temporal taps that reach further back than the crop only ever read zero padding in
    training: they get zero gradient, keep their random init and turn the later latent frames of
    every encoded clip into noise. Crops longer than the clips cannot be cut from them."""
    frames, clip_frames = config.demo.vae_frames, config.data.num_frames
    if frames not in (0, clip_frames):
        raise ValueError(
            f"config.demo.vae_frames must be 0 (whole clip) or config.data.num_frames="
            f"{clip_frames}: shorter VAE training crops leave the temporal taps that clips of "
            f"{clip_frames} frames use untrained (zero gradient), longer ones cannot be cut from "
            f"them; got {frames}; set --config.demo.vae_frames=0"
        )


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


def train_vae(config, workdir: str, clips: dict) -> tuple[dict, int]:
    """Stage vae: (trained VAE params, their step) in <workdir>/vae."""
    demo = config.demo
    cfg = stage_config(config, "vae", demo.vae_steps, demo.vae_lr)
    crops = vae_crops(clips["video"], demo.vae_frames, demo.vae_crop, 4, config.seed)
    data = ArrayIterator({"video": crops}, config.data.batch_size, seed=config.seed)
    run = loop.train(cfg, os.path.join(workdir, "vae"), VAETask(cfg), data)
    return jax.device_get(run.state.params["vae"]), int(run.state.step)


# ----------------------------------------------------------------------------- cache


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


def frozen_encoders(config) -> dict:
    """{'text', 'clip'}: the tiny umT5 and CLIP, randomly initialised from config.seed (frozen),
    as plain (unboxed) arrays."""
    from flax import linen as nn

    from wow_jax.models import clip, text_encoder

    text_rng, clip_rng = jax.random.split(jax.random.PRNGKey(config.seed + 7))
    return nn.meta.unbox(
        {
            "text": text_encoder.init_params(config.model.text, text_rng),
            "clip": clip.init_params(config.model.clip, clip_rng),
        }
    )


def _raw_latents_config(config) -> ml_collections.ConfigDict:
    """`config` with latent statistics 0/1: the encoders give raw VAE means, on which the
    statistics that normalise them are measured."""
    raw = config.copy_and_resolve_references()
    z = raw.model.vae.z_dim
    raw.model.vae.latents_mean, raw.model.vae.latents_std = (0.0,) * z, (1.0,) * z
    return raw


def _normalized(cache: dict, vae_cfg) -> dict:
    from wow_jax.models import vae

    latents = {k: np.asarray(vae.normalize(cache[k], vae_cfg)) for k in ("latents", "cond_latents")}
    return {**cache, **latents}


def build_cache(config, workdir: str, params: dict, vae_step: int, clips: dict, heldout: dict):
    """Stage cache: (config with the demo tokenizer and the measured latent statistics, training
    cache, held-out cache), written with the world model's latent cache (train/latent_cache.py) to
    <workdir>/cache/{train,heldout}. Reused when both are caches of as many clips made with the
    same VAE step and config (latent_cache.mismatch)."""
    from wow_jax.data import tokenizer as tokenizer_lib

    spm = train_tokenizer(
        list(clips["caption"]) + list(clips["instruction"]), os.path.join(workdir, "tokenizer")
    )
    config = config.copy_and_resolve_references()
    config.model.text.tokenizer_path = spm
    text = conditioning.TextEncoder(config.model.text)
    if text.tokenizer.vocab_size + tokenizer_lib.EXTRA_IDS > config.model.text.vocab_size:
        raise ValueError(
            f"the demo tokenizer has {text.tokenizer.vocab_size}+{tokenizer_lib.EXTRA_IDS} ids but "
            f"config.model.text.vocab_size is {config.model.text.vocab_size}; raise it"
        )
    stats_path = os.path.join(workdir, "latent_stats.json")
    dirs = [os.path.join(workdir, "cache", name) for name in ("train", "heldout")]
    weights = f"demo: VAE stage step {vae_step}, tiny umT5 and CLIP of config.seed={config.seed}"
    stats = evaluate.read_json(stats_path)
    if stats is not None:
        _set_stats(config, stats)
        expected = latent_cache.source(config, weights)
        metas = [latent_cache.read_meta(d) for d in dirs]
        sizes = [len(clips["video"]), len(heldout["video"])]
        if all(
            meta is not None
            and meta["count"] == size
            and latent_cache.mismatch(d, meta, expected) is None
            for d, meta, size in zip(dirs, metas, sizes, strict=True)
        ):
            return config, latent_cache.read(dirs[0]), latent_cache.read(dirs[1])

    def text_fn(captions):
        return text(params["text"], captions)

    raw = _raw_latents_config(config)
    cache, held_cache = (
        latent_cache.encode_clips(raw, params, c, text_fn) for c in (clips, heldout)
    )
    axes = tuple(range(cache["latents"].ndim - 1))
    stats = {
        "latents_mean": cache["latents"].mean(axis=axes).tolist(),
        "latents_std": np.maximum(cache["latents"].std(axis=axes), 1e-3).tolist(),
    }
    _set_stats(config, stats)
    cache, held_cache = (_normalized(c, config.model.vae) for c in (cache, held_cache))
    cache[latent_cache.NULL_KEY] = latent_cache.null_text_states(text_fn)
    meta = latent_cache.source(config, weights)
    for directory, arrays in zip(dirs, (cache, held_cache), strict=True):
        latent_cache.write(directory, arrays, meta)
    with open(stats_path, "w") as f:
        json.dump(stats, f, indent=2)
    return config, cache, held_cache


def _set_stats(config, stats: dict) -> None:
    config.model.vae.latents_mean = tuple(stats["latents_mean"])
    config.model.vae.latents_std = tuple(stats["latents_std"])


# ----------------------------------------------------------------------------- world, imagine


def train_world_model(config, workdir: str, params: dict, cache: dict, held_cache: dict):
    """Stage world: (params of the world-model checkpoint, its step) in <workdir>/world_model;
    `params` ({'vae', 'text', 'clip'}) are the frozen encoders of a fresh run."""
    cfg = stage_config(config, "world_model", config.train.steps, config.train.learning_rate)
    cache = dict(cache)
    null_states = cache.pop("null_text_states")[0]
    held_cache = {k: v for k, v in held_cache.items() if k != "null_text_states"}
    batch = config.data.batch_size
    task = WorldModelTask(cfg, null_text_states=null_states)
    eval_data = ArrayIterator(held_cache, min(batch, len(held_cache["latents"])), shuffle=False)
    run = loop.train(
        cfg,
        os.path.join(workdir, "world_model"),
        task,
        ArrayIterator(cache, batch, seed=config.seed),
        eval_data,
        initial_params=params,
    )
    return {k: jax.device_get(v) for k, v in run.state.params.items()}, int(run.state.step)


def imagine(config, workdir: str, params: dict, step: int, heldout: dict) -> dict:
    """Stage imagine: every held-out clip imagined from its first frame and instruction by the
    step-`step` world model, scored per clip and per frame against copy-first-frame and the VAE
    reconstruction (compare.imagine_and_compare; reused when metrics.json has that step, clip
    count and sampler settings)."""
    from wow_jax import sharding
    from wow_jax.data.clips import to_uint8
    from wow_jax.sampling import compare, generator, models

    out_dir = os.path.join(workdir, "imagined")
    metrics_path = os.path.join(out_dir, "metrics.json")
    sampler = {key: config.sample[key] for key in IMAGINE_SETTINGS}
    if os.path.exists(metrics_path):
        with open(metrics_path) as f:
            stored = json.load(f)
        same_run = stored["world_model_step"] == step and stored.get("sampler") == sampler
        if same_run and len(stored["clips"]) == len(heldout["video"]):
            return stored
    mesh = sharding.make_mesh(config.mesh)
    gen = generator.Generator(config, params, models.from_config(config), mesh)
    real = [to_uint8(video) for video in heldout["video"]]
    seeds = list(range(len(real)))
    prompts = [str(p) for p in heldout["instruction"]]
    summary = compare.imagine_and_compare(gen, real, prompts, seeds, out_dir, config.sample.fps)
    summary["world_model_step"], summary["sampler"] = step, sampler
    with open(metrics_path, "w") as f:
        json.dump(summary, f, indent=2)
    return summary


# ----------------------------------------------------------------------------- idm, evaluate


def idm_config(config, workdir: str) -> ml_collections.ConfigDict:
    """The IDM stage's config: task 'idm' (demo.idm_steps at demo.idm_lr) on the training
    episodes the collect stage prepared (its dataset root: the stage prepares it again and must
    find it collected, not collect a copy inside it)."""
    from wow_jax.data import prepare

    cfg = stage_config(config, "idm", config.demo.idm_steps, config.demo.idm_lr)
    with cfg.unlocked():
        cfg.data.path = str(prepare.dataset_root(config.data, workdir))
    return cfg


def train_idm(config, workdir: str) -> dict:
    """Stage idm: the FM-IDM trained on the training episodes and scored on held-out ones
    against its baselines, with open-loop replay from the real frames (sim/idm_eval.py)
    -> <workdir>/idm (a run directory) with idm_eval.json; reused when that report is of the
    configured step count."""
    from wow_jax.sim import idm_eval

    idm_dir = os.path.join(workdir, IDM_DIR)
    path = os.path.join(idm_dir, idm_eval.REPORT_FILE)
    if os.path.exists(path):
        with open(path) as f:
            stored = json.load(f)
        if stored["settings"]["train_steps"] == config.demo.idm_steps:
            return stored
    return idm_eval.run_evaluate_idm(idm_config(config, workdir), idm_dir)


def evaluate_closed_loop(config, workdir: str, params: dict, world_step: int, idm_report: dict):
    """Stage evaluate: imagine-then-act and the comparison policies in Meta-World
    (wow_jax/evaluate.py) with the world model `params` and the IDM of the idm stage, and the
    IDM's actions from real vs imagined held-out clips (evaluate.idm_gap, reused for the same
    models), and SOPHIA's critic-guided refinement of the instructions (wow_jax/sophia, offline
    critic). -> (closed-loop results, imagination gap, refinement results)."""
    from wow_jax import act, rundir, sharding
    from wow_jax.data import stats
    from wow_jax.sampling import generator, models
    from wow_jax.sim import idm_eval
    from wow_jax.sophia import refine as sophia

    idm_dir = os.path.join(workdir, IDM_DIR)
    cfg = config.copy_and_resolve_references()
    with cfg.unlocked():
        cfg.act.idm_checkpoint = os.path.join(idm_dir, "checkpoints")
        cfg.act.action_stats = os.path.join(idm_dir, rundir.ACTION_STATS_FILE)
    mesh = sharding.make_mesh(cfg.mesh)
    action_stats = stats.read_stats(cfg.act.action_stats)
    reader = act.ActionReader(cfg, mesh, action_stats)
    gen = generator.Generator(cfg, params, models.from_config(cfg), mesh)
    imagine = evaluate.generator_imagine(gen)

    def read(video):
        return reader.read(video)["actions"]

    models_used = {
        "world_model_step": world_step,
        "idm_step": idm_report["settings"]["train_steps"],
    }
    results = evaluate.evaluate(cfg, workdir, imagine, read, models_used)
    refined = sophia.refine(cfg, workdir, imagine, read, models_used)
    gap_path = os.path.join(workdir, evaluate.EVAL_DIR, evaluate.GAP_FILE)
    gap = evaluate.read_json(gap_path)
    if gap is None or gap["models"] != models_used:
        heldout_cfg = idm_eval.heldout_data_config(idm_config(config, workdir), idm_dir)
        gap = evaluate.idm_gap(cfg, imagine, read, heldout_cfg, action_stats)
        gap["models"] = models_used
        evaluate.write_json(gap_path, gap)
    return results, gap, refined


def run_demo(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Mode 'demo': runs every stage; returns the summary (also <workdir>/demo_summary.json)."""
    from wow_jax.sampling import compare

    check_vae_frames(config)
    start = time.perf_counter()

    def done(stage: str) -> None:
        logging.info("demo: stage %s done at %.1f s", stage, time.perf_counter() - start)

    clips, heldout = collect(config, workdir)
    done("collect")
    vae_params, vae_step = train_vae(config, workdir, clips)
    done("vae")
    encoders = {"vae": vae_params, **frozen_encoders(config)}
    config, cache, held_cache = build_cache(config, workdir, encoders, vae_step, clips, heldout)
    done("cache")
    params, step = train_world_model(config, workdir, encoders, cache, held_cache)
    done("world_model")
    wm_cfg = stage_config(config, "world_model", config.train.steps, config.train.learning_rate)
    imagined = imagine(wm_cfg, workdir, params, step, heldout)
    done("imagine")
    idm_report = train_idm(config, workdir)
    done("idm")
    closed_loop, gap, refined = evaluate_closed_loop(wm_cfg, workdir, params, step, idm_report)
    done("evaluate")
    summary = {
        "vae_final_loss": _final_loss(os.path.join(workdir, "vae")),
        "world_model_final_loss": _final_loss(os.path.join(workdir, "world_model")),
        "checkpoint": os.path.join(workdir, "world_model", "checkpoints"),
        "imagined": imagined,
        "idm": {k: idm_report[k] for k in ("heldout", "replay")},
        "closed_loop": {k: closed_loop[k] for k in ("tasks", "mean")},
        "idm_on_imagined": gap,
        "refine": {k: refined[k] for k in refined if k != "cases"},
        "latent_stats": os.path.join(workdir, "latent_stats.json"),
        "tokenizer": config.model.text.tokenizer_path,
    }
    with open(os.path.join(workdir, "demo_summary.json"), "w") as f:
        json.dump(summary, f, indent=2, default=str)
    paths = report.write_report(workdir)
    print(compare.format_summary(summary["imagined"]))
    print("closed-loop success rate [Wilson 95% interval], per task and policy:")
    print(evaluate.format_table(closed_loop))
    print(f"demo done: open {paths['html']} (also {paths['markdown']}, demo_summary.json)")
    return summary
