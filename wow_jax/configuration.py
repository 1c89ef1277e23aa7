"""Start-up validation of a wow_jax config (every problem is one ValueError naming the key and
fix), the table of modes, and the resolution of backend-dependent choices for a compile target.

Unknown keys and wrong types are already refused by the locked ConfigDict (configs/base.py) and by
ml_collections' flag parsing; this module checks the relations between keys.
"""

import ml_collections

from wow_jax import models, sharding
from wow_jax.models import dit

# config.mode -> (module, function `run_<mode>(config, workdir)`); wow_jax.main dispatches on it.
MODE_RUNNERS = {
    "describe": ("wow_jax.describe", "run_describe"),
    "train": ("wow_jax.train.loop", "run_train"),
    "generate": ("wow_jax.sampling.pipeline", "run_generate"),
    "convert": ("wow_jax.interop.convert", "run_convert"),
    "demo": ("wow_jax.demo", "run_demo"),
}
DTYPES = ("float32", "bfloat16", "float16")
CPU_KERNELS = ("auto", "on", "off")
ATTENTION_KERNELS = ("xla", "cudnn", "splash")
DIT_VARIANTS = ("t2v", "i2v")
SOLVERS = ("unipc", "euler")
IMAGE_MISMATCH = ("resize", "error")
TIMESTEP_SAMPLING = ("uniform", "logit_normal")
SCHEDULES = ("cosine", "constant")
TRAIN_TASKS = ("world_model", "vae", "idm")
CONVERT_DIRECTIONS = ("import", "export")
CONVERT_NAMINGS = ("auto", "wan", "diffusers", "hf")
CONVERT_DTYPES = ("bfloat16", "float32")
TEXT_NAMINGS = ("wan", "hf")  # Checkpoint layouts the umT5 and CLIP importers read.
CLIP_ACTIVATIONS = ("gelu", "quick_gelu")
I2V_MASK_CHANNELS = 4  # Frame-mask channels (one per frame of a 4-frame temporal chunk).


def vae_spatial_stride(vae: ml_collections.ConfigDict) -> int:
    """Pixels per latent cell along height and width (8 for Wan2.1)."""
    return 2 ** (len(vae.dim_mult) - 1)


def vae_temporal_stride(vae: ml_collections.ConfigDict) -> int:
    """Frames per latent frame after the first (4 for Wan2.1)."""
    return 2 ** sum(bool(t) for t in vae.temporal_downsample)


def _choice(key: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"config.{key} must be one of {list(choices)}, got {value!r}")


def resolve_kernels(config: ml_collections.ConfigDict, backend: str) -> None:
    """Writes config.model.cpu_kernels ('auto' | 'on' | 'off'), resolved for the backend the
    programs are compiled for ('cpu', 'gpu', 'tpu'), into model.dit/vae.cpu_kernels: 'auto' is on
    exactly for 'cpu'. Called once where programs are built (main, AOT compilation, benchmarks);
    the models read only the resolved booleans (docs/cpu.md)."""
    choice = config.model.cpu_kernels
    _choice("model.cpu_kernels", choice, CPU_KERNELS)
    enabled = choice == "on" or (choice == "auto" and backend == "cpu")
    config.model.dit.cpu_kernels = enabled
    config.model.vae.cpu_kernels = enabled


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
    _choice("train.schedule", config.train.schedule, SCHEDULES)
    _choice("train.timestep_sampling", config.train.timestep_sampling, TIMESTEP_SAMPLING)
    _choice("sample.solver", config.sample.solver, SOLVERS)
    _choice("sample.image_mismatch", config.sample.image_mismatch, IMAGE_MISMATCH)
    _choice("sample.sigma_grid", config.sample.sigma_grid, ("diffusers", "wan"))
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
    expected_in = vae.z_dim if dit.variant == "t2v" else 2 * vae.z_dim + I2V_MASK_CHANNELS
    if dit.in_channels != expected_in:
        raise ValueError(
            f"config.model.dit.in_channels must be {expected_in} for variant {dit.variant!r} "
            f"with a {vae.z_dim}-channel VAE, got {dit.in_channels}"
        )
    if dit.out_channels != vae.z_dim:
        raise ValueError(
            f"config.model.dit.out_channels must equal config.model.vae.z_dim ({vae.z_dim}), "
            f"got {dit.out_channels}"
        )
    if dit.text_dim != config.model.text.dim:
        raise ValueError(
            f"config.model.dit.text_dim ({dit.text_dim}) must equal config.model.text.dim "
            f"({config.model.text.dim}), the width of the text encoder states"
        )
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


def _check_training(config: ml_collections.ConfigDict) -> None:
    if config.sample.guidance < 1.0:
        raise ValueError(
            f"config.sample.guidance must be >= 1 (1 = no guidance), got {config.sample.guidance}"
        )
    if config.data.batch_size < 1:
        raise ValueError(f"config.data.batch_size must be >= 1, got {config.data.batch_size}")
    if not 0.0 <= config.train.text_dropout <= 1.0:
        raise ValueError(
            f"config.train.text_dropout is a probability in [0, 1], got {config.train.text_dropout}"
        )
    if config.train.grad_accum < 1:
        raise ValueError(f"config.train.grad_accum must be >= 1, got {config.train.grad_accum}")
    ckpt = config.checkpoint
    if ckpt.keep < 1:
        raise ValueError(
            f"config.checkpoint.keep must be >= 1 (the most recent checkpoints kept; 0 would "
            f"delete every one, including the one a resume needs), got {ckpt.keep}"
        )
    if ckpt.keep_best < 0:
        raise ValueError(
            f"config.checkpoint.keep_best must be >= 0 (0 = off), got {ckpt.keep_best}"
        )
    if ckpt.save_every < 1:
        raise ValueError(f"config.checkpoint.save_every must be >= 1, got {ckpt.save_every}")


def _check_sample(config: ml_collections.ConfigDict) -> None:
    sample = config.sample
    for key in ("steps", "batch_size", "num_clips", "fps", "sheet_frames"):
        if sample[key] < 1:
            raise ValueError(f"config.sample.{key} must be >= 1, got {sample[key]}")
    if sample.shift <= 0:
        raise ValueError(f"config.sample.shift must be > 0 (1 = no shift), got {sample.shift}")


def _check_convert(config: ml_collections.ConfigDict) -> None:
    convert = config.convert
    _choice("convert.direction", convert.direction, CONVERT_DIRECTIONS)
    _choice("convert.component", convert.component, models.CONVERTIBLE_NAMES)
    _choice("convert.naming", convert.naming, CONVERT_NAMINGS)
    _choice("convert.dtype", convert.dtype, CONVERT_DTYPES)
    if config.mode == "convert" and not convert.source:
        raise ValueError(
            "config.convert.source is empty; set it to the checkpoint to convert "
            "(--config.convert.source=PATH)"
        )


def _check_data(config: ml_collections.ConfigDict) -> None:
    data = config.data
    _choice("data.crop", data.crop, ("center", "random", "resize"))
    _choice("data.action_reduce", data.action_reduce, ("first", "mean", "sum"))
    _choice("data.action_norm", data.action_norm, ("mean_std", "q99", "none"))
    _choice("data.on_bad_episode", data.on_bad_episode, ("skip", "raise"))
    for key in ("caption_long_prob", "caption_fine_prob"):
        if not 0.0 <= data[key] <= 1.0:
            raise ValueError(f"config.data.{key} is a probability in [0, 1], got {data[key]}")
    probs = tuple(data.caption_robot_probs)
    if len(probs) != 3 or min(probs) < 0 or abs(sum(probs) - 1.0) > 1e-6:
        raise ValueError(
            "config.data.caption_robot_probs must be 3 probabilities (robot model name, "
            f"'the end-effector', 'the robot') summing to 1, got {probs}"
        )
    for key in ("frame_stride", "episodes_per_task", "episode_length"):
        if data[key] < 1:
            raise ValueError(f"config.data.{key} must be >= 1, got {data[key]}")
    if data.worker_count < 0 or data.read_threads < 0 or data.prefetch_buffer < 1:
        raise ValueError(
            "config.data.worker_count and read_threads must be >= 0 and prefetch_buffer >= 1, "
            f"got {data.worker_count}, {data.read_threads}, {data.prefetch_buffer}"
        )


def validate(config: ml_collections.ConfigDict, num_devices: int) -> None:
    """Raises ValueError naming the first offending key; returns None when the config is sound."""
    _check_choices(config)
    _check_model(config)
    _check_geometry(config)
    _check_training(config)
    _check_sample(config)
    _check_convert(config)
    _check_data(config)
    sharding.mesh_shape(config.mesh, num_devices)
