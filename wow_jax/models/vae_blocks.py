"""Building blocks of the Wan2.1 causal 3D VAE (wan/modules/vae.py), channels-last.

Every tensor is [B, T, H, W, C]. Convolutions are causal in time: a frame only sees itself and
earlier frames. The temporal context that the PyTorch reference keeps in its `feat_cache` list is
an explicit Flax variable collection here, 'cache':

* applied without a mutable 'cache' collection, a block processes a whole clip from its first
  frame (zero context before it): the training path;
* applied with `mutable=['cache']`, a block reads the context left by the previous chunk (zeros
  and "first chunk" behaviour when no cache exists yet) and writes the context for the next one.
  `vae.encode` / `vae.decode` carry that collection through `jax.lax.scan`, one chunk per step.

Both paths compute the same function of the clip; chunking only bounds memory.

`conv_taps` (config.model.vae.cpu_kernels, resolved for the compile target) computes each causal
3D convolution as a sum of 2D convolutions over its temporal taps, which XLA:CPU runs 2-5x faster
than its 3D convolution (docs/cpu.md); off, it is XLA's native 3D convolution.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
from einops import rearrange
from flax import linen as nn

from wow_jax.sharding import BATCH, CONV_IN, FRAMES, HEIGHT, WIDTH

CACHE = "cache"  # Flax collection holding the temporal context between chunks.
PIXEL_CHANNELS = 3  # RGB.
CONTEXT_FRAMES = 2  # Frames of context a temporal kernel of 3 needs (reference CACHE_T).
NORM_EPS = 1e-12  # F.normalize's epsilon.
ACTIVATION_AXES = (BATCH, FRAMES, HEIGHT, WIDTH, None)  # Logical axes of [B, T, H, W, C].
# Logical axis of parameter output channels. None = replicated: the VAE is small (127M params)
# and its channel counts (3, 96, 192, 384) do not divide typical fsdp sizes. Set to CHANNELS to
# shard weights over 'fsdp' when they do.
PARAM_CHANNELS = None


def constrain(x: jax.Array) -> jax.Array:
    """Shards a [B, T, H, W, C] activation over batch (and height: spatial sharding)."""
    return nn.with_logical_constraint(x, ACTIVATION_AXES)


def conv(features, kernel, name, dtype, param_dtype, **kwargs) -> nn.Conv:
    """nn.Conv whose kernel [*kernel, in, out] and bias [out] carry logical axis names."""
    kernel_axes = (None,) * len(kernel) + (CONV_IN, PARAM_CHANNELS)
    return nn.Conv(
        features,
        tuple(kernel),
        name=name,
        dtype=dtype,
        param_dtype=param_dtype,
        kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(), kernel_axes),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), (PARAM_CHANNELS,)),
        **kwargs,
    )


def _context(module: nn.Module, name: str, like: jax.Array, frames: int):
    """(previous context [B, frames, H, W, C], cache variable or None, whether it existed).

    Without a mutable 'cache' collection (whole-clip path) the context is zeros and nothing is
    stored. With one, a missing variable means this is the first chunk: it starts as zeros.
    """
    shape = (like.shape[0], frames) + like.shape[2:]
    if not module.is_mutable_collection(CACHE):
        return jnp.zeros(shape, like.dtype), None, False
    existed = module.has_variable(CACHE, name)
    var = module.variable(CACHE, name, jnp.zeros, shape, like.dtype)
    return var.value, var, existed


class RMSNorm(nn.Module):
    """Wan RMS_norm: x / max(||x||_2 over channels, 1e-12) * sqrt(C) * gamma.

    gamma is stored as [1, ..., 1, C] (`param_ndim` dims), the channels-last image of the
    reference's channel-first [C, 1, 1(, 1)] so checkpoints map one-to-one.
    """

    param_ndim: int = 4
    dtype: str = "float32"
    param_dtype: str = "float32"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        channels = x.shape[-1]
        gamma = self.param(
            "gamma",
            nn.with_logical_partitioning(
                nn.initializers.ones_init(), (None,) * (self.param_ndim - 1) + (PARAM_CHANNELS,)
            ),
            (1,) * (self.param_ndim - 1) + (channels,),
            self.param_dtype,
        )
        xf = x.astype(jnp.float32)
        norm = jnp.sqrt(jnp.sum(xf * xf, axis=-1, keepdims=True))
        y = (xf / jnp.maximum(norm, NORM_EPS)).astype(self.dtype)
        return y * jnp.asarray(math.sqrt(channels), self.dtype) * gamma.astype(self.dtype)


class CausalConv3d(nn.Module):
    """Wan CausalConv3d: zero padding of kt-1 frames before the clip, k//2 around H and W.

    x: [B, T, H, W, Cin] -> [B, T, H, W, features]. Kernel [kt, kh, kw, Cin, features].
    """

    features: int
    kernel: tuple[int, int, int] = (3, 3, 3)
    dtype: str = "float32"
    param_dtype: str = "float32"
    conv_taps: bool = False  # The 3D convolution as 2D convolutions per temporal tap (CPU).

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kt, kh, kw = self.kernel
        if kt > 1:
            prev, var, _ = _context(self, "context", x, kt - 1)
            x = jnp.concatenate([prev.astype(x.dtype), x], axis=1)
            if var is not None:
                var.value = x[:, -(kt - 1) :]
        cin = x.shape[-1]
        kernel = self.param(
            "kernel",
            nn.with_logical_partitioning(
                nn.initializers.lecun_normal(), (None, None, None, CONV_IN, PARAM_CHANNELS)
            ),
            (kt, kh, kw, cin, self.features),
            self.param_dtype,
        )
        bias = self.param(
            "bias",
            nn.with_logical_partitioning(nn.initializers.zeros_init(), (PARAM_CHANNELS,)),
            (self.features,),
            self.param_dtype,
        )
        x, kernel = x.astype(self.dtype), kernel.astype(self.dtype)
        spatial = ((kh // 2, kh // 2), (kw // 2, kw // 2))
        if self.conv_taps:
            y = _conv3d_as_2d_taps(x, kernel, spatial)
        else:
            y = jax.lax.conv_general_dilated(
                x,
                kernel,
                (1, 1, 1),
                ((0, 0), *spatial),
                dimension_numbers=("NDHWC", "DHWIO", "NDHWC"),
            )
        return y + bias.astype(self.dtype)


def _conv3d_as_2d_taps(x: jax.Array, kernel: jax.Array, spatial) -> jax.Array:
    """Valid-in-time 3D convolution as a sum of 2D convolutions, one per temporal tap.

    x: [B, T, H, W, Cin], kernel: [kt, kh, kw, Cin, Cout] -> [B, T - kt + 1, H', W', Cout].
    XLA:CPU runs 3D convolutions 2-5x slower than the same work as 2D ones (and slower than
    PyTorch's oneDNN conv3d); as taps it is faster than both (scripts/benchmark_vae.py).
    """
    kt = kernel.shape[0]
    frames = x.shape[1] - kt + 1
    y = 0
    for t in range(kt):
        window = rearrange(x[:, t : t + frames], "b t h w c -> (b t) h w c")
        y = y + jax.lax.conv_general_dilated(
            window, kernel[t], (1, 1), spatial, dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
    return rearrange(y, "(b t) h w c -> b t h w c", t=frames)


class ResidualBlock(nn.Module):
    """Wan ResidualBlock: shortcut(x) + conv2(silu(norm2(conv1(silu(norm1(x)))))).

    x: [B, T, H, W, Cin] -> [B, T, H, W, features]; shortcut is a 1x1x1 conv when Cin != out.
    """

    features: int
    dtype: str = "float32"
    param_dtype: str = "float32"
    conv_taps: bool = False  # See CausalConv3d.

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        dt = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        cv = dict(conv_taps=self.conv_taps, **dt)
        h = x
        if x.shape[-1] != self.features:
            h = CausalConv3d(self.features, (1, 1, 1), name="conv_shortcut", **cv)(x)
        y = jax.nn.silu(RMSNorm(name="norm1", **dt)(x))
        y = CausalConv3d(self.features, name="conv1", **cv)(y)
        y = jax.nn.silu(RMSNorm(name="norm2", **dt)(y))
        y = CausalConv3d(self.features, name="conv2", **cv)(y)
        return constrain(y + h)


class AttentionBlock(nn.Module):
    """Wan AttentionBlock: single-head self-attention over the H*W positions of each frame.

    x: [B, T, H, W, C] -> [B, T, H, W, C] (residual).
    """

    dtype: str = "float32"
    param_dtype: str = "float32"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        dt = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        b, t, h, w, c = x.shape
        y = RMSNorm(param_ndim=3, name="norm", **dt)(x)
        qkv = conv(3 * c, (1, 1), "to_qkv", **dt)(y)
        q, k, v = (
            rearrange(part, "b t h w c -> (b t) (h w) c") for part in jnp.split(qkv, 3, axis=-1)
        )
        logits = jnp.einsum("nqc,nkc->nqk", q, k).astype(jnp.float32) / math.sqrt(c)
        weights = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
        y = jnp.einsum("nqk,nkc->nqc", weights, v)
        y = rearrange(y, "(b t) (h w) c -> b t h w c", b=b, h=h)
        proj = nn.Conv(
            c,
            (1, 1),
            name="proj",
            kernel_init=nn.with_logical_partitioning(  # Zero as in Wan: starts as identity.
                nn.initializers.zeros_init(), (None, None, CONV_IN, PARAM_CHANNELS)
            ),
            bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), (PARAM_CHANNELS,)),
            **dt,
        )
        return constrain(x + proj(y))


class Resample(nn.Module):
    """Wan Resample: 2x spatial down/up-sampling per frame, optionally with 2x in time.

    modes (x: [B, T, H, W, C]):
      downsample2d: pad right/bottom by 1, 3x3 conv stride 2 -> [B, T, H/2, W/2, C].
      downsample3d: the same, then a (3,1,1) stride-2 time conv; the first frame passes alone
                    -> [B, 1 + (T-1)/2, H/2, W/2, C].
      upsample2d:   nearest 2x, 3x3 conv to C/2 -> [B, T, 2H, 2W, C/2].
      upsample3d:   a causal (3,1,1) time conv to 2C split into 2 frames per frame (the first
                    frame of the clip passes alone), then as upsample2d -> [B, 1+2(T-1), ...].
    """

    mode: str
    dtype: str = "float32"
    param_dtype: str = "float32"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        dt = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        c = x.shape[-1]
        if self.mode == "upsample3d":
            x = self._time_upsample(x)
        if self.mode.startswith("upsample"):
            x = jnp.repeat(jnp.repeat(x, 2, axis=2), 2, axis=3)
            x = conv(c // 2, (3, 3), "resample", padding=((1, 1), (1, 1)), **dt)(x)
        else:
            x = conv(c, (3, 3), "resample", strides=(2, 2), padding=((0, 1), (0, 1)), **dt)(x)
        if self.mode == "downsample3d":
            x = self._time_downsample(x)
        return constrain(x)

    def _time_conv(self, features: int, stride: int) -> nn.Conv:
        return conv(
            features,
            (3, 1, 1),
            "time_conv",
            self.dtype,
            self.param_dtype,
            strides=(stride, 1, 1),
            padding="VALID",
        )

    def _time_downsample(self, x: jax.Array) -> jax.Array:
        """First chunk/clip: frame 0 alone, then stride-2 windows over all frames; later chunks:
        windows over (last frame of the previous chunk, this chunk)."""
        prev, var, started = _context(self, "last", x, 1)
        time_conv = self._time_conv(x.shape[-1], 2)
        if started:
            out = time_conv(jnp.concatenate([prev, x], axis=1))
        else:
            out = x[:, :1]
            if x.shape[1] >= 3:
                out = jnp.concatenate([out, time_conv(x)], axis=1)
        if var is not None:
            var.value = x[:, -1:]
        return out

    def _time_upsample(self, x: jax.Array) -> jax.Array:
        """Frame 0 of the clip passes alone; every later frame becomes two through a causal time
        conv whose context before frame 1 is zeros (the reference's 'Rep' cache)."""
        prev, var, started = _context(self, "context", x, CONTEXT_FRAMES)
        head, rest = (None, x) if started else (x[:, :1], x[:, 1:])
        parts = [] if head is None else [head]
        if rest.shape[1]:
            rest = jnp.concatenate([prev, rest], axis=1)
            if var is not None:
                var.value = rest[:, -CONTEXT_FRAMES:]
            doubled = self._time_conv(2 * x.shape[-1], 1)(rest)
            parts.append(rearrange(doubled, "b t h w (two c) -> b (t two) h w c", two=2))
        return jnp.concatenate(parts, axis=1)


class Encoder(nn.Module):
    """Wan Encoder3d: x [B, T, H, W, 3] -> [B, 1+(T-1)/4, H/8, W/8, 2*z_dim] (mean ++ logvar).

    Submodules are numbered like the reference's flat `downsamples` list: `down_blocks_N`.
    """

    base_dim: int
    out_dim: int
    dim_mult: tuple[int, ...]
    num_res_blocks: int
    temporal_downsample: tuple[bool, ...]
    dtype: str = "float32"
    param_dtype: str = "float32"
    conv_taps: bool = False  # See CausalConv3d.

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        dt = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        cv = dict(conv_taps=self.conv_taps, **dt)
        dims = [self.base_dim * m for m in (1,) + tuple(self.dim_mult)]
        x = CausalConv3d(dims[0], name="conv_in", **cv)(x)
        index = 0
        for stage, out_dim in enumerate(dims[1:]):
            for _ in range(self.num_res_blocks):
                x = ResidualBlock(out_dim, name=f"down_blocks_{index}", **cv)(x)
                index += 1
            if stage != len(self.dim_mult) - 1:
                mode = "downsample3d" if self.temporal_downsample[stage] else "downsample2d"
                x = Resample(mode, name=f"down_blocks_{index}", **dt)(x)
                index += 1
        x = ResidualBlock(dims[-1], name="mid_res_0", **cv)(x)
        x = AttentionBlock(name="mid_attn", **dt)(x)
        x = ResidualBlock(dims[-1], name="mid_res_1", **cv)(x)
        x = jax.nn.silu(RMSNorm(name="norm_out", **dt)(x))
        return CausalConv3d(self.out_dim, name="conv_out", **cv)(x)


class Decoder(nn.Module):
    """Wan Decoder3d: z [B, t, h, w, z_dim] -> [B, 1+4(t-1), 8h, 8w, 3] (unclamped).

    Stage i has num_res_blocks+1 residual blocks `up_blocks_{i}_res_{j}` and, except the last,
    an upsampler `up_blocks_{i}_upsample` (3D where the mirrored temporal flag is set).
    """

    base_dim: int
    dim_mult: tuple[int, ...]
    num_res_blocks: int
    temporal_upsample: tuple[bool, ...]
    dtype: str = "float32"
    param_dtype: str = "float32"
    conv_taps: bool = False  # See CausalConv3d.

    @nn.compact
    def __call__(self, z: jax.Array) -> jax.Array:
        dt = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        cv = dict(conv_taps=self.conv_taps, **dt)
        mult = tuple(self.dim_mult)
        dims = [self.base_dim * m for m in (mult[-1],) + mult[::-1]]
        x = CausalConv3d(dims[0], name="conv_in", **cv)(z)
        x = ResidualBlock(dims[0], name="mid_res_0", **cv)(x)
        x = AttentionBlock(name="mid_attn", **dt)(x)
        x = ResidualBlock(dims[0], name="mid_res_1", **cv)(x)
        for stage, out_dim in enumerate(dims[1:]):
            for j in range(self.num_res_blocks + 1):
                x = ResidualBlock(out_dim, name=f"up_blocks_{stage}_res_{j}", **cv)(x)
            if stage != len(mult) - 1:
                mode = "upsample3d" if self.temporal_upsample[stage] else "upsample2d"
                x = Resample(mode, name=f"up_blocks_{stage}_upsample", **dt)(x)
        x = jax.nn.silu(RMSNorm(name="norm_out", **dt)(x))
        return CausalConv3d(PIXEL_CHANNELS, name="conv_out", **cv)(x)


def spatial_ramp(size: int, overlap: int, lead: bool, trail: bool) -> np.ndarray:
    """[size] blend weights of one tile axis: linear ramps over `overlap` cells at the edges that
    meet a neighbour (lead = one before, trail = one after), 1 elsewhere."""
    w = np.ones(size, np.float32)
    if overlap > 0:
        ramp = (np.arange(overlap, dtype=np.float32) + 1.0) / (overlap + 1.0)
        if lead:
            w[:overlap] = np.minimum(w[:overlap], ramp)
        if trail:
            w[-overlap:] = np.minimum(w[-overlap:], ramp[::-1])
    return w
