"""Mode `generate`: imagine the next seconds of video from a frame and an instruction.

    python -m wow_jax.main --config=configs/wow14b.py --workdir=W --config.mode=generate \
        --config.checkpoint.init_from=CKPT --config.sample.image=frame.png \
        --config.sample.prompt="pick up the red block"      # or --config.sample.jobs=jobs.jsonl

Per job: <out>/<name>.mp4, <name>.gif, <name>_frames.png (contact sheet) and <name>.json (prompts,
seed, steps, guidance, timings), with <out> = sample.output_dir or <workdir>/generate. Jobs run in
batches of sample.batch_size (jobs with the same number of clips), with a progress bar over
denoising steps.
"""

import copy
import importlib
import itertools
import os
import time

import jax
import ml_collections
import numpy as np
import tqdm
from absl import logging

from wow_jax import adapters, checkpointing, configuration, sharding, writable
from wow_jax import models as registry
from wow_jax.data import clips
from wow_jax.sampling import frames, guidance, jobs, media, rollout
from wow_jax.sampling import models as models_lib
from wow_jax.sampling.generator import Generator

SAMPLE_PARAM_DTYPE_COMPONENTS = ("dit", "text")  # The large ones sample.param_dtype applies to.


def param_targets(config: ml_collections.ConfigDict, mesh) -> dict:
    """{component: ShapeDtypeStruct tree with its mesh sharding} of the world model, in
    the DiT and umT5 in config.sample.param_dtype when set (checkpoints are cast to it as they
    are read); the VAE and CLIP keep their own, the precision their references run them at."""
    rules = sharding.rules(config.mesh)
    targets = {}
    for name in registry.WORLD_MODEL_NAMES:
        model_cfg = registry.model_config(config, name).copy_and_resolve_references()
        if name in SAMPLE_PARAM_DTYPE_COMPONENTS and config.sample.param_dtype:
            model_cfg.param_dtype = config.sample.param_dtype
        abstract = registry.load(name).abstract_params(model_cfg)
        targets[name] = sharding.abstract_on_mesh(abstract, mesh, rules)
    return targets


def load_for_generation(config: ml_collections.ConfigDict, mesh) -> dict:
    """Params onto `mesh` through the one checkpoint reader (docs/generation.md, "Checkpoints"):
    sample.<component>_checkpoint (a converted or trained checkpoint) wins over
    checkpoint.init_from (a training run, a step or `save_params` output: every component it
    holds is read); umT5 and CLIP missing there come from model.{text,clip}.checkpoint_path
    (PyTorch files). sample.params_key picks 'params' or 'ema_params'. sample.lora_checkpoint's
    adapters are merged into the DiT at sample.lora_scale (wow_jax/adapters.py)."""
    sample, key = config.sample, config.sample.params_key
    per_component = {
        n: sample[f"{n}_checkpoint"]
        for n in registry.WORLD_MODEL_NAMES
        if sample[f"{n}_checkpoint"]
    }
    combined = config.checkpoint.init_from
    if not combined and not per_component:
        raise ValueError(
            "generation needs trained weights: set --config.checkpoint.init_from to an Orbax "
            "checkpoint from training, and/or --config.sample.<dit|vae|text|clip>_checkpoint to "
            "ones from `--config.mode=convert`"
        )
    targets = param_targets(config, mesh)
    default = sharding.replicated(mesh)
    params = {}
    if combined:
        stored = checkpointing.subtree_names(combined, key)
        names = {
            n: targets.get(n)
            for n in registry.WORLD_MODEL_NAMES
            if n in stored and n not in per_component
        }
        if not names and not per_component:
            raise ValueError(
                f"checkpoint {combined!r} holds {stored} under {key!r}, none of "
                f"{list(registry.WORLD_MODEL_NAMES)} (docs/generation.md, 'Checkpoints'; a LoRA "
                "run holds only 'lora': pass it as --config.sample.lora_checkpoint and its base "
                "as --config.checkpoint.init_from, docs/lora.md)"
            )
        params.update(checkpointing.restore_subtrees(combined, names, key, default))
    for name, path in per_component.items():
        params.update(checkpointing.restore_subtrees(path, {name: targets.get(name)}, key, default))
    for name in ("text", "clip"):  # The encoders may come as PyTorch files (checkpoint_path).
        if name not in params and config.model[name].checkpoint_path:
            loader = importlib.import_module(registry.get(name).table)
            host = loader.load_params(config.model[name])
            params[name] = jax.device_put(host, jax.tree.map(lambda t: t.sharding, targets[name]))
    if sample.lora_checkpoint and "dit" in params:
        params["dit"] = adapters.merged(config, params["dit"], mesh)
    return params


def _batches(job_list: list[jobs.Job], batch_size: int):
    """Consecutive runs of jobs with the same clip count, in chunks of batch_size."""
    for _, group in itertools.groupby(job_list, key=lambda j: len(j.prompts)):
        group = list(group)
        for i in range(0, len(group), batch_size):
            yield group[i : i + batch_size]


def conditioning_frame(config: ml_collections.ConfigDict, path: str) -> frames.ConditioningFrame:
    """The frame at `path` prepared as config.sample.image_resize says (sampling/frames.py); an
    image of another size than data.height x data.width is refused or warned about, per
    sample.image_mismatch."""
    data, sample = config.data, config.sample
    image, want = media.read_image(path), (data.height, data.width)
    size = want
    if sample.image_resize == "wan":
        stride = configuration.vae_spatial_stride(config.model.vae)
        patch = tuple(config.model.dit.patch_size[1:])
        size = frames.wan_size(*image.shape[:2], data.height * data.width, stride, patch)
    if image.shape[:2] != want:
        got = f"{image.shape[0]}x{image.shape[1]}"
        if sample.image_mismatch == "error":
            raise ValueError(
                f"conditioning image {path!r} is {got} (HxW) but the model generates "
                f"{data.height}x{data.width}; resize it, or set "
                "--config.sample.image_mismatch=resize"
            )
        logging.warning(
            "conditioning image %s is %s, resizing to %dx%d (sample.image_resize=%r)",
            path, got, *size, sample.image_resize,
        )  # fmt: skip
    if sample.image_resize == "wan":
        return frames.wan_frame(image, size, config.model.clip.image_size)
    return frames.diffsynth_frame(image, *size)


def load_images(config: ml_collections.ConfigDict, job_list) -> dict[str, frames.ConditioningFrame]:
    """{job name: its conditioning frame} for the jobs that give an image."""
    return {job.name: conditioning_frame(config, job.image) for job in job_list if job.image}


def clip_geometry(config: ml_collections.ConfigDict, images: dict) -> ml_collections.ConfigDict:
    """config, or a copy with data.height/width set to the frames' size when Wan2.1's max-area
    rule (sample.image_resize='wan') sized them otherwise; all frames must agree."""
    sizes = sorted({tuple(f.frame.shape[:2]) for f in images.values()})
    if len(sizes) > 1:
        raise ValueError(
            f"the jobs' images give clips of different sizes {sizes} (HxW) under "
            "sample.image_resize='wan'; run jobs of one aspect ratio together"
        )
    if not sizes or sizes[0] == (config.data.height, config.data.width):
        return config
    logging.warning(
        "Wan2.1's max-area rule (sample.image_resize='wan') makes the clip %dx%d, not "
        "data.height x data.width = %dx%d", *sizes[0], config.data.height, config.data.width,
    )  # fmt: skip
    config = copy.deepcopy(config)
    config.data.height, config.data.width = sizes[0]
    return config


def stack_frames(batch: list[frames.ConditioningFrame]):
    """-> (frames [B, H, W, 3] or None without frames, CLIP frames [B, S, S, 3] or None)."""
    if not batch:
        return None, None
    clip = None if batch[0].clip_frame is None else np.stack([f.clip_frame for f in batch])
    return np.stack([f.frame for f in batch]), clip


def generate_jobs(
    config: ml_collections.ConfigDict,
    generator: Generator,
    job_list,
    images,
    out_dir,
    after_video=None,
):
    """Runs the jobs, writes their files; returns [{kind: path}] per job (process 0).

    after_video(stem, frames uint8 [T, H, W, 3], info) -> {kind: path}: run on every process
    after each job's video is written (the frames as written); its paths join the job's."""
    sample, data = config.sample, config.data
    total_steps = sum(len(j.prompts) for j in job_list) * sample.steps
    results = []
    with tqdm.tqdm(total=total_steps, desc="denoising steps", unit="step") as bar:
        for batch in _batches(job_list, sample.batch_size):
            start = time.perf_counter()
            has_image = [j.name in images for j in batch]
            if any(has_image) and not all(has_image):
                raise ValueError(
                    "jobs of one batch must all have an image or none; set batch_size=1"
                )
            batch_images, clip_images = stack_frames(
                [images[j.name] for j in batch if j.name in images]
            )
            prompts = [[j.prompts[k] for j in batch] for k in range(len(batch[0].prompts))]
            video, timings = rollout.rollout(
                generator, batch_images, prompts, [j.seed for j in batch], bar, clip_images
            )
            elapsed = time.perf_counter() - start
            for row, job in enumerate(batch):
                info = {
                    "name": job.name,
                    "image": job.image,
                    "prompts": list(job.prompts),
                    "negative_prompt": sample.negative_prompt,
                    "seed": job.seed,
                    "solver": sample.solver,
                    "sigma_grid": sample.sigma_grid,
                    "timestep_dtype": sample.timestep_dtype,
                    "image_resize": sample.image_resize,
                    "steps": sample.steps,
                    "shift": sample.shift,
                    "guidance": sample.guidance,
                    "frames": int(video.shape[1]),
                    "height": data.height,
                    "width": data.width,
                    "fps": sample.fps,
                    "batch_size": len(batch),
                    "timings": {"batch_total_s": elapsed, "clips": timings},
                }
                stem = os.path.join(out_dir, job.name)
                frames = clips.to_uint8(video[row])
                if jax.process_index() == 0:  # Every host holds the whole video; one writes.
                    paths = media.write_outputs(stem, frames, sample.fps, sample.sheet_frames, info)
                    results.append(paths)
                if after_video is not None:
                    more = after_video(stem, frames, info)
                    if jax.process_index() == 0:
                        paths.update(more)
            logging.info("batch of %d jobs done in %.1fs", len(batch), elapsed)
    return results


def run_generate(config: ml_collections.ConfigDict, workdir: str) -> list[dict]:
    """Mode generate (wow_jax.main reports bad input in one line)."""
    return generate(config, workdir)


def generate(
    config: ml_collections.ConfigDict, workdir: str, models=None, params=None, after_video=None
):
    """Runs the configured jobs; `models`/`params` override the config's components (tests);
    `after_video` reads each written video (`generate_jobs`; mode act). Returns [{kind: path}]
    per job; raises ValueError on bad input."""
    guidance.check_guidance(config.sample.guidance)
    job_list = jobs.parse_jobs(config.sample)
    # A bad output folder or input fails before any model loads.
    out_dir = config.sample.output_dir or os.path.join(workdir, "generate")
    writable.ensure_writable_dir(out_dir, "config.sample.output_dir (default <workdir>/generate)")
    images = load_images(config, job_list)
    config = clip_geometry(config, images)
    if config.model.dit.variant == "i2v" and len(images) < len(job_list):
        missing = [j.name for j in job_list if j.name not in images]
        raise ValueError(
            f"the i2v model needs a conditioning image; jobs {missing} have none (set "
            "--config.sample.image=PATH or 'image' in the jobs file)"
        )
    mesh = sharding.make_mesh(config.mesh)
    if params is None:
        params = load_for_generation(config, mesh)
    if models is None:
        models = models_lib.from_config(config)
    generator = Generator(config, params, models, mesh)
    results = generate_jobs(config, generator, job_list, images, out_dir, after_video)
    for job, paths in zip(job_list, results, strict=False):  # (Only process 0 has results.)
        print(f"{job.name}: {paths['mp4']} {paths['gif']} {paths['sheet']}")
    return results
