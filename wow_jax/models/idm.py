"""FM-IDM: the Flow-Mask Inverse Dynamics Model of WoW (arXiv 2509.22642), small and from scratch.

From two frames k steps apart and the motion between them it predicts the robot's action:

    frame_t, frame_tk: [B, H, W, 3] in [-1, 1]
    flow:              [B, H, W, 2] dense motion frame_t -> frame_tk in pixels (dx, dy)
    mask:              [B, H, W, 1] motion mask in {0, 1} (flow magnitude, wow_jax/data/flow.py)
                       (flow and mask only with motion='dis'; `input_names(cfg)`)
      -> {'continuous':    [B, C] float32, the normalised action on the continuous dims
                                  (`continuous_dims(cfg)`, C = action_dim - 1 with a gripper),
          'gripper_logit': [B] float32, logit of 'gripper closed' (only with a gripper_index)}

One conv encoder (stride-2 stages of residual blocks) reads both frames with shared weights; a
motion branch of the same shape reads the motion, chosen by cfg.motion:
  'dis'      [flow / flow_scale, mask]: OpenCV's DIS flow and its magnitude mask, computed on the
             host at data time (wow_jax/data/flow.py)
  'learned'  [frame_t, frame_tk, frame_tk - frame_t]: the branch learns its own motion features
             from the raw pair inside the jitted step (no host flow, no mask; runs on TPU)
The frame encoder is chosen by cfg.encoder: 'conv' (trained from scratch) or 'dinov2'
(wow_jax/models/dinov2.py with cfg.dinov2's sizes; its weights imported through the interop
layer, tasks/idm.py `pretrained_params`, frozen by cfg.freeze_encoder; params 'dinov2', the
conv encoder's are 'frame_encoder'): its patch tokens
[B, H/p, W/p, D] are the frame feature maps. Conv: the three feature maps are concatenated per
cell (frame_t, frame_tk, motion), mixed by a 1x1 conv and average-pooled to a pool_grid x
pool_grid grid (keeping where in the image things move, which a global pool loses); DINOv2: each
map is pooled to that grid first (its patch grid is not the motion branch's), then mixed. The
grid is flattened into an MLP with a continuous head and a gripper classification
head. The paper's branches (SAM-masked frame, CoTracker3 points, DINO features) are replaced by
this encoder and the data-time OpenCV flow or the learned motion branch; the sizes depend only
on the config, not on H and W.

Model contract (wow_jax/models/__init__.py): create(cfg), init_params(cfg, rng) (boxed with
logical axis names), abstract_params(cfg), with cfg = config.model.idm.
"""

import math

import jax
import jax.numpy as jnp
import ml_collections
from einops import rearrange
from flax import linen as nn

from wow_jax import compiler
from wow_jax.models import dinov2, layers
from wow_jax.sharding import CHANNELS, CONV_IN, EMBED, MLP

ENCODERS = ("conv", "dinov2")  # cfg.encoder: the frame encoder.
MOTIONS = ("dis", "learned")  # cfg.motion: host DIS flow + mask, or learned from the frames.
PIXEL_CHANNELS = 3  # RGB frames.
FLOW_CHANNELS = 2  # (dx, dy) in pixels.
MASK_CHANNELS = 1
CONV_KERNEL = (3, 3)
CONV_INIT = nn.initializers.lecun_normal()


def _conv(features: int, stride: int, kernel: tuple[int, int], dtype, param_dtype, name: str):
    """nn.Conv [kh, kw, in, out] with logical axes (-, -, conv_in, channels), 'SAME' padding."""
    return nn.Conv(
        features,
        kernel,
        strides=(stride, stride),
        padding="SAME",
        dtype=dtype,
        param_dtype=param_dtype,
        kernel_init=nn.with_logical_partitioning(CONV_INIT, (None, None, CONV_IN, CHANNELS)),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), (CHANNELS,)),
        name=name,
    )


def _norm(groups: int, dtype, param_dtype, name: str) -> nn.GroupNorm:
    init = nn.initializers
    return nn.GroupNorm(
        num_groups=groups,
        dtype=dtype,
        param_dtype=param_dtype,
        scale_init=nn.with_logical_partitioning(init.ones_init(), (CHANNELS,)),
        bias_init=nn.with_logical_partitioning(init.zeros_init(), (CHANNELS,)),
        name=name,
    )


class ResBlock(nn.Module):
    """x + conv(silu(norm(conv(silu(norm(x)))))): [B, h, w, C] -> [B, h, w, C]."""

    groups: int
    dtype: jnp.dtype
    param_dtype: jnp.dtype

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        dt = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        width = x.shape[-1]
        h = _conv(width, 1, CONV_KERNEL, name="conv1", **dt)(
            nn.silu(_norm(self.groups, name="norm1", **dt)(x))
        )
        h = _conv(width, 1, CONV_KERNEL, name="conv2", **dt)(
            nn.silu(_norm(self.groups, name="norm2", **dt)(h))
        )
        return x + h


class ConvEncoder(nn.Module):
    """[B, H, W, C_in] -> [B, H / 2^S, W / 2^S, width * stage_mult[-1]], S = len(stage_mult):
    per stage a stride-2 3x3 conv to width * mult channels, then num_blocks residual blocks."""

    width: int
    stage_mult: tuple[int, ...]
    num_blocks: int
    groups: int
    dtype: jnp.dtype
    param_dtype: jnp.dtype

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        dt = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        for stage, mult in enumerate(self.stage_mult):
            x = _conv(self.width * mult, 2, CONV_KERNEL, name=f"down_{stage}", **dt)(x)
            for block in range(self.num_blocks):
                x = ResBlock(self.groups, name=f"block_{stage}_{block}", **dt)(x)
        return nn.silu(_norm(self.groups, name="norm_out", **dt)(x))


def pool_to_grid(x: jax.Array, grid: int) -> jax.Array:
    """Average pool [B, h, w, C] -> [B, grid, grid, C] (h and w multiples of grid)."""
    return rearrange(x, "b (g1 p1) (g2 p2) c -> b g1 g2 (p1 p2) c", g1=grid, g2=grid).mean(3)


class FlowMaskIDM(nn.Module):
    """The FM-IDM (module docstring): frames, flow and mask -> continuous action and gripper."""

    num_continuous: int
    gripper: bool
    width: int
    motion_width: int
    stage_mult: tuple[int, ...]
    num_blocks: int
    norm_groups: int
    fuse_width: int
    pool_grid: int
    mlp_dim: int
    flow_scale: float
    motion: str
    dinov2: nn.Module | None = None  # The DINOv2 frame encoder (encoder='dinov2'); None: conv.
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    def setup(self):
        dt = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        shape = dict(
            stage_mult=self.stage_mult, num_blocks=self.num_blocks, groups=self.norm_groups
        )
        if self.dinov2 is None:  # Else the DINOv2 field is the frame encoder (params 'dinov2').
            self.frame_encoder = ConvEncoder(self.width, **shape, **dt)
        self.motion_encoder = ConvEncoder(self.motion_width, **shape, **dt)
        self.fuse = _conv(self.fuse_width, 1, (1, 1), name="fuse", **dt)
        self.hidden = layers.dense(self.mlp_dim, (EMBED, MLP), name="hidden", **dt)
        self.out = layers.dense(self.mlp_dim, (MLP, EMBED), name="out", **dt)
        self.continuous_head = layers.dense(
            self.num_continuous, (EMBED, None), name="continuous_head", **dt
        )
        if self.gripper:
            self.gripper_head = layers.dense(1, (EMBED, None), name="gripper_head", **dt)

    def frame_features(self, frames: jax.Array) -> jax.Array:
        """[N, H, W, 3] -> the frame encoder's maps: [N, H/2^S, W/2^S, C] (conv) or the DINOv2
        patch tokens [N, H/p, W/p, D]."""
        if self.dinov2 is None:
            return self.frame_encoder(frames)
        grid = (
            frames.shape[1] // self.dinov2.patch_size,
            frames.shape[2] // self.dinov2.patch_size,
        )
        return dinov2.patch_grid(self.dinov2(frames), grid)

    def __call__(self, frame_t, frame_tk, flow=None, mask=None) -> dict:
        step = self.dinov2.patch_size if self.dinov2 else 1
        check_inputs(
            frame_t, frame_tk, flow, mask, self.motion, len(self.stage_mult), self.pool_grid
        )
        check_patch_grid(frame_t.shape, step, self.pool_grid)
        frames = jnp.concatenate([frame_t, frame_tk], axis=0).astype(self.dtype)
        feat_t, feat_tk = jnp.split(self.frame_features(frames), 2, axis=0)
        if self.motion == "dis":
            motion_in = jnp.concatenate([flow / self.flow_scale, mask], axis=-1)
        else:
            motion_in = jnp.concatenate([frame_t, frame_tk, frame_tk - frame_t], axis=-1)
        motion = self.motion_encoder(motion_in.astype(self.dtype))
        maps = [feat_t, feat_tk, motion]
        if self.dinov2 is None:  # Mixed per cell, then pooled.
            fused = pool_to_grid(nn.silu(self.fuse(jnp.concatenate(maps, axis=-1))), self.pool_grid)
        else:  # Pooled (the patch grid is not the motion grid), then mixed.
            pooled = [pool_to_grid(x, self.pool_grid) for x in maps]
            fused = nn.silu(self.fuse(jnp.concatenate(pooled, axis=-1)))
        h = rearrange(fused, "b g1 g2 c -> b (g1 g2 c)")
        h = nn.silu(self.out(nn.silu(self.hidden(h))))
        out = {"continuous": self.continuous_head(h).astype(jnp.float32)}
        if self.gripper:
            out["gripper_logit"] = self.gripper_head(h)[:, 0].astype(jnp.float32)
        return out


# ----------------------------------------------------------------------------- validation


def check_config(cfg: ml_collections.ConfigDict) -> None:
    """ValueError naming the config.model.idm key that makes no model."""
    if cfg.action_dim < 1:
        raise ValueError(f"config.model.idm.action_dim must be >= 1, got {cfg.action_dim}")
    if not -1 <= cfg.gripper_index < cfg.action_dim:
        raise ValueError(
            f"config.model.idm.gripper_index must be -1 (no gripper) or an action index in "
            f"[0, {cfg.action_dim}), got {cfg.gripper_index}"
        )
    if not continuous_dims(cfg):
        raise ValueError(
            f"config.model.idm: action_dim={cfg.action_dim} leaves no continuous dimension "
            f"beside gripper_index={cfg.gripper_index}; an IDM needs at least one"
        )
    for key in ("width", "motion_width"):
        bad = [cfg[key] * m for m in cfg.stage_mult if (cfg[key] * m) % cfg.norm_groups]
        if bad:
            raise ValueError(
                f"config.model.idm.{key} x stage_mult gives channels {bad} not divisible by "
                f"norm_groups={cfg.norm_groups}; change {key}, stage_mult or norm_groups"
            )
    if cfg.flow_scale <= 0:
        raise ValueError(f"config.model.idm.flow_scale must be > 0 pixels, got {cfg.flow_scale}")
    if cfg.motion not in MOTIONS:
        raise ValueError(f"config.model.idm.motion must be one of {MOTIONS}, got {cfg.motion!r}")
    if cfg.encoder not in ENCODERS:
        raise ValueError(f"config.model.idm.encoder must be one of {ENCODERS}, got {cfg.encoder!r}")


def check_patch_grid(shape: tuple, patch: int, grid: int) -> None:
    """ValueError unless H and W of frames `shape` are multiples of patch x grid (the DINOv2
    frame encoder's patch grid pooled to pool_grid cells; patch 1: the conv encoder)."""
    step = patch * grid
    if shape[1] % step or shape[2] % step:
        raise ValueError(
            f"frames of {shape[1]}x{shape[2]} pixels: the DINOv2 frame encoder needs height and "
            f"width multiples of config.model.idm.dinov2.patch_size x pool_grid = {step}; resize "
            "the frames (config.data.height / width) or change the patch size or pool_grid"
        )


def check_inputs(frame_t, frame_tk, flow, mask, motion: str, num_stages: int, grid: int) -> None:
    """ValueError unless the inputs are the module docstring's shapes (flow and mask given
    exactly with motion='dis'), with H and W multiples of 2^num_stages * grid."""
    shape = tuple(frame_t.shape)
    if len(shape) != 4 or shape[-1] != PIXEL_CHANNELS:
        raise ValueError(f"frame_t must be [B, H, W, {PIXEL_CHANNELS}], got shape {shape}")
    if tuple(frame_tk.shape) != shape:
        raise ValueError(
            f"frame_t and frame_tk must have the same shape, got {shape} and "
            f"{tuple(frame_tk.shape)}; resize both frames to the dataset's height x width"
        )
    learned = motion == "learned"
    if (flow is None) != learned or (mask is None) != learned:
        raise ValueError(
            f"config.model.idm.motion={motion!r} reads {'no' if learned else 'a'} host flow and "
            f"mask (input_names), got flow {flow is not None} and mask {mask is not None}; pass "
            "the pair batch's inputs through model_inputs(cfg, pairs)"
        )
    for name, x, channels in (("flow", flow, FLOW_CHANNELS), ("mask", mask, MASK_CHANNELS)):
        if x is not None and tuple(x.shape) != shape[:3] + (channels,):
            raise ValueError(
                f"{name} must be {list(shape[:3]) + [channels]} for frames {shape}, got "
                f"{tuple(x.shape)}"
            )
    step = 2**num_stages * grid
    if shape[1] % step or shape[2] % step:
        raise ValueError(
            f"frames of {shape[1]}x{shape[2]} pixels: the IDM needs height and width multiples "
            f"of 2^len(stage_mult) x pool_grid = {step} (config.model.idm); resize the frames "
            "or change config.model.idm.stage_mult / pool_grid"
        )


# ----------------------------------------------------------------------------- contract


def continuous_dims(cfg: ml_collections.ConfigDict) -> tuple[int, ...]:
    """Action indices predicted by the continuous head: all but gripper_index, in order."""
    return tuple(i for i in range(cfg.action_dim) if i != cfg.gripper_index)


def create(cfg: ml_collections.ConfigDict) -> FlowMaskIDM:
    check_config(cfg)
    return FlowMaskIDM(
        num_continuous=len(continuous_dims(cfg)),
        gripper=cfg.gripper_index >= 0,
        width=cfg.width,
        motion_width=cfg.motion_width,
        stage_mult=tuple(cfg.stage_mult),
        num_blocks=cfg.num_blocks,
        norm_groups=cfg.norm_groups,
        fuse_width=cfg.fuse_width,
        pool_grid=cfg.pool_grid,
        mlp_dim=cfg.mlp_dim,
        flow_scale=float(cfg.flow_scale),
        motion=cfg.motion,
        dinov2=dinov2.create(cfg.dinov2) if cfg.encoder == "dinov2" else None,
        dtype=layers.dtype_of(cfg.dtype),
        param_dtype=layers.dtype_of(cfg.param_dtype),
    )


def input_names(cfg: ml_collections.ConfigDict) -> tuple[str, ...]:
    """The pair-batch keys the model reads, in call order: the frames, and with motion='dis'
    the host flow and mask."""
    return ("frame_t", "frame_tk") + (("flow", "mask") if cfg.motion == "dis" else ())


def model_inputs(cfg: ml_collections.ConfigDict, pairs: dict) -> tuple:
    """The positional inputs of `create(cfg)` taken from a pair batch (`input_names`)."""
    return tuple(pairs[name] for name in input_names(cfg))


def dummy_inputs(cfg: ml_collections.ConfigDict, batch: int = 1) -> tuple[jax.Array, ...]:
    """Zero inputs (`input_names`) of the smallest size the model takes."""
    side = 2 ** len(cfg.stage_mult) * cfg.pool_grid
    if cfg.encoder == "dinov2":
        side = math.lcm(side, cfg.dinov2.patch_size * cfg.pool_grid)
    channels = {"flow": FLOW_CHANNELS, "mask": MASK_CHANNELS}
    return tuple(
        jnp.zeros((batch, side, side, channels.get(name, PIXEL_CHANNELS)), jnp.float32)
        for name in input_names(cfg)
    )


def init_params(cfg: ml_collections.ConfigDict, rng: jax.Array):
    """Random 'params' of `create(cfg)`, boxed with logical axis names (traceable)."""
    return compiler.jit_init(create(cfg).init)(rng, *dummy_inputs(cfg))["params"]


def abstract_params(cfg: ml_collections.ConfigDict):
    """Tree of ShapeDtypeStruct of the 'params' collection, boxed with logical axis names."""
    return jax.eval_shape(lambda rng: init_params(cfg, rng), jax.random.key(0))
