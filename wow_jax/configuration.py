"""Start-up validation of a wow_jax config (every problem is one ValueError naming the key and
fix), the table of modes, and the resolution of backend-dependent choices for a compile target.

Unknown keys and wrong types are already refused by the locked ConfigDict (configs/base.py) and by
ml_collections' flag parsing; this module checks the relations between keys.
"""

import math
import re

import ml_collections

from wow_jax import models, sharding
from wow_jax.models import attention, dit
from wow_jax.models import lora as lora_lib
from wow_jax.sampling import frames, schedulers
from wow_jax.train import flow_matching

# config.mode -> (module, function `run_<mode>(config, workdir)`); wow_jax.main dispatches on it.
MODE_RUNNERS = {
    "describe": ("wow_jax.describe", "run_describe"),
    "train": ("wow_jax.train.loop", "run_train"),
    "generate": ("wow_jax.sampling.pipeline", "run_generate"),
    "act": ("wow_jax.act", "run_act"),
    "evaluate": ("wow_jax.evaluate", "run_evaluate"),
    "refine": ("wow_jax.sophia.refine", "run_refine"),
    "convert": ("wow_jax.interop.convert", "run_convert"),
    "merge": ("wow_jax.adapters", "run_merge"),
    "demo": ("wow_jax.demo", "run_demo"),
}
TRAINING_MODES = ("train", "demo")  # Modes that train: batch checked, workdir written.
DTYPES = ("float32", "bfloat16", "float16")
CPU_KERNELS = ("auto", "on", "off")
ATTENTION_KERNELS = ("auto", "xla", "cudnn", "splash")
DIT_VARIANTS = ("t2v", "i2v")
IMAGE_MISMATCH = ("resize", "error")
TIMESTEP_SAMPLING = ("uniform", "logit_normal")
SCHEDULES = ("cosine", "constant")
TRAIN_TASKS = ("world_model", "vae", "idm")
TRAIN_INPUTS = ("pixels", "latents")  # World-model batches: clips, or the latent cache's.
SOPHIA_BACKENDS = ("offline", "chat")  # config.sophia.critic / refiner (wow_jax/sophia).
CONVERT_DIRECTIONS = ("import", "export")
CONVERT_NAMINGS = ("auto", "wan", "diffusers", "hf")
CONVERT_DTYPES = ("bfloat16", "float32")
TEXT_NAMINGS = ("wan", "hf")  # Checkpoint layouts the umT5 and CLIP importers read.
CLIP_ACTIVATIONS = ("gelu", "quick_gelu")


def vae_spatial_stride(vae: ml_collections.ConfigDict) -> int:
    """Pixels per latent cell along height and width (8 for Wan2.1)."""
    return 2 ** (len(vae.dim_mult) - 1)


def vae_temporal_stride(vae: ml_collections.ConfigDict) -> int:
    """Frames per latent frame after the first (4 for Wan2.1)."""
    return 2 ** sum(bool(t) for t in vae.temporal_downsample)


def latent_grid(config: ml_collections.ConfigDict) -> tuple[int, int, int]:
    """(t, h, w) latent cells of one clip of config.data's frames, height and width."""
    data, vae = config.data, config.model.vae
    t_stride, s_stride = vae_temporal_stride(vae), vae_spatial_stride(vae)
    return (data.num_frames - 1) // t_stride + 1, data.height // s_stride, data.width // s_stride


def _choice(key: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"config.{key} must be one of {list(choices)}, got {value!r}")


def resolve_kernels(config: ml_collections.ConfigDict, backend: str) -> None:
    """Writes config.model.cpu_kernels ('auto' | 'on' | 'off'), resolved for the backend the
    programs are compiled for ('cpu', 'gpu', 'tpu'), into model.dit/vae.cpu_kernels: 'auto' is on
    exactly for 'cpu'. Also resolves model.dit.attention='auto' (attention.AUTO_KERNELS) and runs
    splash in the Pallas interpreter on a non-TPU target (model.dit.pallas_interpret). Called
    once where programs are built (main, AOT compilation, benchmarks); the models read only the
    resolved values (docs/cpu.md)."""
    choice = config.model.cpu_kernels
    _choice("model.cpu_kernels", choice, CPU_KERNELS)
    enabled = choice == "on" or (choice == "auto" and backend == "cpu")
    config.model.dit.cpu_kernels = enabled
    config.model.vae.cpu_kernels = enabled
    dit_cfg = config.model.dit
    dit_cfg.attention = attention.resolve_kernel(dit_cfg.attention, backend)
    dit_cfg.pallas_interpret = backend != "tpu"


def _check_choices(config: ml_collections.ConfigDict) -> None:
    _choice("mode", config.mode, tuple(MODE_RUNNERS))
    _choice("model.cpu_kernels", config.model.cpu_kernels, CPU_KERNELS)
    for name in models.COMPONENT_NAMES:
        _choice(f"model.{name}.param_dtype", config.model[name].param_dtype, DTYPES)
        _choice(f"model.{name}.dtype", config.model[name].dtype, DTYPES)
    _choice("model.dit.variant", config.model.dit.variant, DIT_VARIANTS)
    _choice("model.dit.remat_policy", config.model.dit.remat_policy, tuple(dit.REMAT_POLICIES))
    _choice("model.dit.attention", config.model.dit.attention, ATTENTION_KERNELS)
    _choice("train.task", config.train.task, TRAIN_TASKS)
    _choice("train.inputs", config.train.inputs, TRAIN_INPUTS)
    _choice("sophia.critic", config.sophia.critic, SOPHIA_BACKENDS)
    _choice("sophia.refiner", config.sophia.refiner, SOPHIA_BACKENDS)
    _choice("train.schedule", config.train.schedule, SCHEDULES)
    _choice("train.timestep_sampling", config.train.timestep_sampling, TIMESTEP_SAMPLING)
    _choice("train.loss_weighting", config.train.loss_weighting, flow_matching.LOSS_WEIGHTINGS)
    _choice("sample.image_mismatch", config.sample.image_mismatch, IMAGE_MISMATCH)
    _choice("sample.image_resize", config.sample.image_resize, frames.IMAGE_RESIZE)
    sample = config.sample
    schedulers.check_recipe(sample.solver, sample.sigma_grid, sample.timestep_dtype)
    _choice("sample.param_dtype", config.sample.param_dtype, ("",) + DTYPES)
    _choice("model.text.checkpoint_naming", config.model.text.checkpoint_naming, TEXT_NAMINGS)
    _choice("model.text.cache_dtype", config.model.text.cache_dtype, DTYPES)
    _choice("model.clip.activation", config.model.clip.activation, CLIP_ACTIVATIONS)
    _choice("model.clip.checkpoint_naming", config.model.clip.checkpoint_naming, TEXT_NAMINGS)


def _check_model(config: ml_collections.ConfigDict) -> None:
    dit, vae = config.model.dit, config.model.vae
    if dit.dim % dit.num_heads:
        raise ValueError(
            f"config.model.dit.dim ({dit.dim}) must be divisible by num_heads ({dit.num_heads})"
        )
    head_dim = dit.dim // dit.num_heads
    if head_dim % 2 or head_dim < 6:
        raise ValueError(
            f"config.model.dit head width dim/num_heads = {head_dim} must be even and >= 6 for "
            "the 3D rotary embedding; change dim or num_heads"
        )
    # I2V: [noisy latent z | frame mask, one channel per frame of a temporal chunk | cond z].
    t_stride = vae_temporal_stride(vae)
    expected_in = vae.z_dim if dit.variant == "t2v" else 2 * vae.z_dim + t_stride
    if dit.in_channels != expected_in:
        raise ValueError(
            f"config.model.dit.in_channels must be {expected_in} for variant {dit.variant!r} "
            f"with a {vae.z_dim}-channel VAE of temporal stride {t_stride}, "
            f"got {dit.in_channels}"
        )
    if dit.out_channels != vae.z_dim:
        raise ValueError(
            f"config.model.dit.out_channels must equal config.model.vae.z_dim ({vae.z_dim}), "
            f"got {dit.out_channels}"
        )
    _check_dit_text(dit, config.model.text)
    if dit.variant == "i2v" and dit.image_dim != config.model.clip.width:
        raise ValueError(
            f"config.model.dit.image_dim ({dit.image_dim}) must equal config.model.clip.width "
            f"({config.model.clip.width}), the width of the CLIP image tokens"
        )
    clip = config.model.clip
    if clip.image_size % clip.patch_size or clip.num_layers < 2:
        raise ValueError(
            f"config.model.clip.image_size ({clip.image_size}) must be a multiple of patch_size "
            f"({clip.patch_size}) and num_layers ({clip.num_layers}) >= 2 (Wan uses the "
            "penultimate block's tokens)"
        )
    if len(vae.temporal_downsample) != len(vae.dim_mult) - 1:
        raise ValueError(
            f"config.model.vae.temporal_downsample needs one flag per down stage "
            f"({len(vae.dim_mult) - 1}), got {len(vae.temporal_downsample)}"
        )
    for key in ("latents_mean", "latents_std"):
        if len(vae[key]) != vae.z_dim:
            raise ValueError(
                f"config.model.vae.{key} needs z_dim={vae.z_dim} values, got {len(vae[key])}"
            )
    _check_vae(vae)


def _check_dit_text(dit: ml_collections.ConfigDict, text: ml_collections.ConfigDict) -> None:
    """The DiT takes the text encoder's states: same width, at most dit.text_len tokens."""
    if dit.text_dim != text.dim:
        raise ValueError(
            f"config.model.dit.text_dim ({dit.text_dim}) must equal config.model.text.dim "
            f"({text.dim}), the width of the text encoder states"
        )
    if not text.text_len <= dit.text_len:
        raise ValueError(
            f"config.model.dit.text_len ({dit.text_len}) must be >= config.model.text.text_len "
            f"({text.text_len}), the tokens per caption the DiT is given (Wan: 512 for both); "
            "raise config.model.dit.text_len"
        )


def _check_vae(vae: ml_collections.ConfigDict) -> None:
    if tuple(vae.attn_scales):
        raise ValueError(
            "config.model.vae.attn_scales must be () (Wan2.1 has no attention in the down/up "
            f"stages), got {tuple(vae.attn_scales)}"
        )
    stride = vae_spatial_stride(vae)
    if vae.tile_size <= 0 or vae.tile_size % stride or vae.tile_overlap % stride:
        raise ValueError(
            f"config.model.vae.tile_size ({vae.tile_size}) and tile_overlap ({vae.tile_overlap}) "
            f"must be positive multiples of the VAE spatial stride {stride}"
        )
    if not 0 <= vae.tile_overlap < vae.tile_size:
        raise ValueError(
            f"config.model.vae.tile_overlap must be in [0, tile_size={vae.tile_size}), "
            f"got {vae.tile_overlap}"
        )


def _check_geometry(config: ml_collections.ConfigDict) -> None:
    data, vae, dit = config.data, config.model.vae, config.model.dit
    t_stride = vae_temporal_stride(vae)
    if data.num_frames < 1 or (data.num_frames - 1) % t_stride:
        ok = ", ".join(str(1 + t_stride * k) for k in range(4))
        raise ValueError(
            f"config.data.num_frames must be 1+{t_stride}k (e.g. {ok}, 81), got "
            f"{data.num_frames}; set --config.data.num_frames to one of those"
        )
    latent_frames = (data.num_frames - 1) // t_stride + 1
    if latent_frames % dit.patch_size[0]:
        raise ValueError(
            f"config.data.num_frames gives {latent_frames} latent frames, not divisible by "
            f"config.model.dit.patch_size[0]={dit.patch_size[0]}"
        )
    s_stride = vae_spatial_stride(vae)
    for key, patch in (("height", dit.patch_size[1]), ("width", dit.patch_size[2])):
        value, multiple = data[key], s_stride * patch
        if value <= 0 or value % multiple:
            lower = max(multiple, value // multiple * multiple)
            raise ValueError(
                f"config.data.{key} must be a multiple of {multiple} (VAE stride {s_stride} x "
                f"patch {patch}), got {value}; use {lower} or {lower + multiple}"
            )
    grid = (
        latent_frames // dit.patch_size[0],
        data.height // s_stride // dit.patch_size[1],
        data.width // s_stride // dit.patch_size[2],
    )
    if max(grid) > dit.rope_max_len:
        raise ValueError(
            f"the DiT token grid (frames, height, width) = {grid} of a {data.num_frames}x"
            f"{data.height}x{data.width} clip exceeds config.model.dit.rope_max_len="
            f"{dit.rope_max_len}; raise rope_max_len to at least {max(grid)}"
        )


def _at_least(low):
    return f">= {low}", lambda v: v >= low


def _above(low):
    return f"> {low}", lambda v: v > low


_PROBABILITY = "in [0, 1]", lambda v: 0 <= v <= 1
_DECAY = "in [0, 1)", lambda v: 0 <= v < 1

# Numeric keys with a natural range: (key under config, (allowed range, test), what it means);
# validate refuses a value outside it (or NaN / inf) with one line naming the key and the range.
NUMERIC_RANGES = (
    ("train.steps", _at_least(1), "optimizer steps of the run"),
    ("train.learning_rate", _above(0), "the peak learning rate"),
    ("train.warmup_steps", _at_least(0), "linear warmup steps"),
    ("train.weight_decay", _at_least(0), "AdamW decoupled weight decay"),
    ("train.clip_norm", _above(0), "the global gradient norm clip; 0 would zero every update"),
    ("train.grad_accum", _at_least(1), "micro-batches per update"),
    ("train.ema_decay", _DECAY, "0 = no EMA"),
    ("train.shift", _above(0), "1 = no shift"),
    ("train.text_dropout", _PROBABILITY, "a probability"),
    ("train.max_bad_steps", _at_least(1), "non-finite steps in a row before the run halts"),
    ("train.log_every", _at_least(1), "steps between log lines"),
    ("train.eval_every", _at_least(0), "0 = no eval"),
    ("train.eval_batches", _at_least(1), "batches per eval pass"),
    ("train.logit_std", _above(0), "std of the logit-normal timestep density"),
    ("train.final_lr_ratio", _PROBABILITY, "the cosine end as a fraction of learning_rate"),
    ("train.adam_b1", _DECAY, "an Adam moment decay"),
    ("train.adam_b2", _DECAY, "an Adam moment decay"),
    ("train.adam_eps", _above(0), "the Adam denominator epsilon"),
    ("train.kl_weight", _at_least(0), "VAE KL weight"),
    ("train.peak_flops", _at_least(0), "0 = look up the device kind"),
    ("train.lora.rank", _at_least(0), "0 = no LoRA"),
    ("train.lora.alpha", _above(0), "the adapter output is scaled by alpha / rank"),
    ("train.lora.dropout", _DECAY, "dropout on the adapter input"),
    ("checkpoint.save_every", _at_least(1), "steps between saves"),
    (
        "checkpoint.keep",
        _at_least(1),
        "the most recent checkpoints kept; 0 would delete every one, including the one a resume "
        "needs",
    ),
    ("checkpoint.keep_best", _at_least(0), "0 = off"),
    ("data.batch_size", _at_least(1), "the global batch"),
    ("data.frame_stride", _at_least(1), "every n-th recorded frame"),
    ("data.fps", _at_least(0), "0 = use frame_stride"),
    ("data.caption_long_prob", _PROBABILITY, "a probability"),
    ("data.caption_fine_prob", _PROBABILITY, "a probability"),
    ("data.worker_count", _at_least(0), "0 = in-process"),
    ("data.read_threads", _at_least(0), "0 = none"),
    ("data.prefetch_buffer", _at_least(1), "batches read ahead"),
    ("data.episodes_per_task", _at_least(1), "Meta-World episodes per task"),
    ("data.episode_length", _at_least(1), "steps per collected episode"),
    ("data.action_noise", _at_least(0), "a standard deviation"),
    ("data.render_size", _at_least(0), "0 = max(height, width)"),
    ("sample.steps", _at_least(1), "denoising steps"),
    ("sample.guidance", _at_least(1), "1 = no guidance"),
    ("sample.shift", _above(0), "1 = no shift"),
    ("sample.batch_size", _at_least(1), "jobs per batch"),
    ("sample.num_clips", _at_least(1), "clips per rollout"),
    ("sample.fps", _at_least(1), "frame rate of the written files"),
    ("evaluate.episodes_per_task", _at_least(1), "held-out episodes per task"),
    ("evaluate.max_steps", _at_least(0), "0 = data.episode_length"),
    ("evaluate.execute_frames", _at_least(0), "0 = the whole imagined clip"),
    ("evaluate.batch", _at_least(1), "episodes run in lockstep"),
    ("evaluate.gif_episodes", _at_least(0), "gifs per task"),
    ("sophia.candidates", _at_least(1), "clips per round"),
    ("sophia.rounds", _at_least(1), "rounds per start state"),
    ("sophia.threshold", _PROBABILITY, "a normalised critic score"),
    ("sophia.episodes_per_task", _at_least(1), "start states per task"),
    ("sophia.timeout", _above(0), "seconds per HTTP socket operation"),
    ("sophia.retries", _at_least(0), "further attempts"),
    ("sophia.backoff", _at_least(0), "seconds before the first retry"),
    ("sophia.frames", _at_least(1), "frames sent to the chat critic"),
    ("sophia.refiner_temperature", _at_least(0), "a sampling temperature"),
    ("sophia.reward_scale", _above(0), "the reward of a finished task"),
    ("sample.sheet_frames", _at_least(1), "frames in the contact sheet"),
    ("act.pair_batch", _at_least(1), "frame pairs per IDM call"),
    ("idm.baseline_batches", _at_least(1), "training pair batches of the baselines"),
    ("idm.eval_batch", _at_least(1), "frame pairs per IDM call"),
    ("idm.heldout_episodes", _at_least(1), "held-out episodes per task"),
    ("idm.cotrain_lr", _above(0), "the co-trained IDM's learning rate"),
    ("idm.heldout_seed_offset", _at_least(1), "0 would hold out the training episodes"),
    ("demo.clips", _at_least(1), "training clips"),
    ("demo.heldout", _at_least(1), "held-out clips"),
    ("demo.vae_steps", _at_least(1), "steps of the VAE stage"),
    ("demo.vae_lr", _above(0), "the VAE stage's peak learning rate"),
    ("demo.vae_frames", _at_least(0), "0 = whole clip"),
    ("demo.vae_crop", _at_least(0), "0 = whole frames"),
    ("demo.idm_steps", _at_least(1), "steps of the demo's IDM stage"),
    ("demo.idm_lr", _above(0), "the IDM stage's peak learning rate"),
)


def _lookup(config: ml_collections.ConfigDict, key: str):
    for part in key.split("."):
        config = config[part]
    return config


def _check_ranges(config: ml_collections.ConfigDict) -> None:
    for key, (allowed, inside), meaning in NUMERIC_RANGES:
        value = _lookup(config, key)
        if not (math.isfinite(value) and inside(value)):
            raise ValueError(f"config.{key} must be {allowed} ({meaning}), got {value!r}")
    train = config.train
    if train.warmup_steps > train.steps:
        raise ValueError(
            f"config.train.warmup_steps must be <= config.train.steps={train.steps} (a longer "
            f"warmup never reaches learning_rate), got {train.warmup_steps}; lower it"
        )


def _check_batch(config: ml_collections.ConfigDict, num_devices: int, process_count: int) -> None:
    """The global batch (config.data.batch_size) splits over the processes (each loads its
    share) and over the mesh's batch axes data*fsdp (each device takes a slice)."""
    shape = dict(
        zip(sharding.MESH_AXES, sharding.mesh_shape(config.mesh, num_devices), strict=True)
    )
    ways, batch = shape["data"] * shape["fsdp"], config.data.batch_size
    if batch % process_count or batch % ways:
        raise ValueError(
            f"config.data.batch_size ({batch}, the global batch) must be divisible by the "
            f"{process_count} processes and by the mesh's data*fsdp = {shape['data']}x"
            f"{shape['fsdp']} = {ways} ({num_devices} devices); set it to a multiple of "
            f"{math.lcm(process_count, ways)} or change config.mesh"
        )


def _check_convert(config: ml_collections.ConfigDict) -> None:
    convert = config.convert
    _choice("convert.direction", convert.direction, CONVERT_DIRECTIONS)
    _choice("convert.component", convert.component, (*models.CONVERTIBLE_NAMES, "lora"))
    _choice("convert.naming", convert.naming, CONVERT_NAMINGS)
    _choice("convert.dtype", convert.dtype, CONVERT_DTYPES)
    if config.mode == "convert" and not convert.source:
        raise ValueError(
            "config.convert.source is empty; set it to the checkpoint to convert "
            "(--config.convert.source=PATH)"
        )


def _check_act(config: ml_collections.ConfigDict) -> None:
    if config.mode in ("act", "evaluate", "refine") and not config.act.idm_checkpoint:
        raise ValueError(
            "config.act.idm_checkpoint is empty; set it to the IDM's run directory (trained with "
            "--config.train.task=idm): --config.act.idm_checkpoint=PATH"
        )


def _check_sophia(config: ml_collections.ConfigDict) -> None:
    low_high = tuple(config.sophia.psnr_range)
    if len(low_high) != 2 or not low_high[0] < low_high[1]:
        raise ValueError(
            "config.sophia.psnr_range must be (low, high) PSNR in dB with low < high (the offline "
            f"critic's quality maps low..high to scores 1..5), got {low_high}"
        )


def _check_inputs(config: ml_collections.ConfigDict) -> None:
    train = config.train
    if train.inputs == "latents" and train.task != "world_model":
        raise ValueError(
            f"config.train.inputs='latents' feeds the world model only, got config.train.task="
            f"{train.task!r}; set config.train.inputs='pixels'"
        )
    if train.inputs == "latents" and not train.latent_cache:
        raise ValueError(
            "config.train.inputs='latents' needs config.train.latent_cache, got ''; write one "
            "with `python -m scripts.cache_latents --config=... --clips=N --output=DIR`, set it DIR"
        )


def _check_lora(config: ml_collections.ConfigDict) -> None:
    lora = config.train.lora
    _choice("train.lora.init", lora.init, lora_lib.INITS)
    _choice("train.lora.param_dtype", lora.param_dtype, DTYPES)
    _choice("sample.lora_params_key", config.sample.lora_params_key, ("params", "ema_params"))
    try:
        re.compile(lora.targets)
    except re.error as error:
        raise ValueError(
            f"config.train.lora.targets must be a regex on DiT layer paths such as "
            f"'blocks/self_attn/q', got {lora.targets!r} ({error})"
        ) from error
    if lora.rank and config.mode in TRAINING_MODES and config.train.task != "world_model":
        raise ValueError(
            f"config.train.lora.rank={lora.rank} adapts the world model's DiT, but "
            f"config.train.task={config.train.task!r}; set the task to 'world_model' or rank to 0"
        )


def _check_data(config: ml_collections.ConfigDict) -> None:
    data = config.data
    _choice("data.crop", data.crop, ("center", "random", "resize"))
    _choice("data.action_reduce", data.action_reduce, ("first", "mean", "sum"))
    _choice("data.action_norm", data.action_norm, ("mean_std", "q99", "none"))
    _choice("data.on_bad_episode", data.on_bad_episode, ("skip", "raise"))
    probs = tuple(data.caption_robot_probs)
    if len(probs) != 3 or min(probs) < 0 or abs(sum(probs) - 1.0) > 1e-6:
        raise ValueError(
            "config.data.caption_robot_probs must be 3 probabilities (robot model name, "
            f"'the end-effector', 'the robot') summing to 1, got {probs}"
        )


def validate(config: ml_collections.ConfigDict, num_devices: int, process_count: int = 1) -> None:
    """Raises ValueError naming the first offending key; returns None when the config is sound.

    num_devices / process_count: of the run (or the compile target); the batch is checked
    against them for the modes that train (TRAINING_MODES)."""
    _check_choices(config)
    _check_model(config)
    _check_geometry(config)
    _check_ranges(config)
    _check_convert(config)
    _check_act(config)
    _check_data(config)
    _check_inputs(config)
    _check_lora(config)
    _check_sophia(config)
    sharding.mesh_shape(config.mesh, num_devices)
    if config.mode in TRAINING_MODES:
        _check_batch(config, num_devices, process_count)
