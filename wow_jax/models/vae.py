"""Wan2.1 causal 3D VAE (wan/modules/vae.py `WanVAE_`, diffusers `AutoencoderKLWan`) in Flax.

Video [B, T, H, W, 3] in [-1, 1], T = 1 + 4k  --encode-->  latents [B, 1 + k, H/8, W/8, z_dim]
(4x temporal, 8x spatial compression for Wan2.1; strides follow the config). Causal in time: the
first frame is encoded alone, then chunks of 4 frames; decoding emits 1 frame for the first latent
frame and 4 for each later one.

Model contract (wow_jax/models/__init__.py): create(vae_cfg), init_params(vae_cfg, rng) (Wan's
init: LeCun-normal kernels, zero biases, unit RMS gammas, zero attention output projection;
boxed), abstract_params(vae_cfg). Public pure functions (params = the 'params' collection):
  encode(params, video, vae_cfg) -> posterior mean [B, t, h, w, z]
  encode_distribution(params, video, vae_cfg) -> (mean, logvar) [B, t, h, w, z] each
  decode(params, latents, vae_cfg) -> video [B, T, H, W, 3], clamped to [-1, 1]
  normalize / denormalize(latents, vae_cfg): (z - mean) / std and back, per channel.

`chunked=True` (default) runs one jitted step per temporal chunk inside `jax.lax.scan`, carrying
the causal context (the reference's feat_cache) as the Flax 'cache' collection, so memory does not
grow with the clip length. `chunked=False` runs the whole clip at once (same numbers, faster for
short training clips). `vae_cfg.tile` adds spatial tiling with linear overlap blending.
"""

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from einops import rearrange
from flax import linen as nn

from wow_jax import compiler
from wow_jax.models import vae_blocks
from wow_jax.models.vae_blocks import CACHE, CausalConv3d, Decoder, Encoder

PIXEL_CHANNELS = vae_blocks.PIXEL_CHANNELS  # RGB.
FIRST_CHUNK_FRAMES = 1  # The first frame is encoded alone.
LOGVAR_RANGE = (-30.0, 20.0)  # Clamp of the posterior log-variance (diffusers/Wan).


class WanVAE(nn.Module):
    """The Wan2.1 VAE: encoder, quant_conv (native conv1), post_quant_conv (conv2), decoder."""

    base_dim: int
    z_dim: int
    dim_mult: tuple[int, ...]
    num_res_blocks: int
    temporal_downsample: tuple[bool, ...]
    dtype: str = "float32"
    param_dtype: str = "float32"
    conv_taps: bool = False  # CPU kernel: 3D convolutions as 2D ones per temporal tap.

    def setup(self):
        dt = dict(dtype=self.dtype, param_dtype=self.param_dtype, conv_taps=self.conv_taps)
        self.encoder = Encoder(
            self.base_dim,
            2 * self.z_dim,
            self.dim_mult,
            self.num_res_blocks,
            self.temporal_downsample,
            **dt,
        )
        self.quant_conv = CausalConv3d(2 * self.z_dim, (1, 1, 1), **dt)
        self.post_quant_conv = CausalConv3d(self.z_dim, (1, 1, 1), **dt)
        self.decoder = Decoder(
            self.base_dim,
            self.dim_mult,
            self.num_res_blocks,
            tuple(self.temporal_downsample)[::-1],
            **dt,
        )

    def encode_frames(self, video: jax.Array) -> jax.Array:
        """[B, T, H, W, 3] -> encoder features [B, t, h, w, 2z] (before quant_conv)."""
        return self.encoder(video)

    def moments(self, features: jax.Array) -> tuple[jax.Array, jax.Array]:
        """[B, t, h, w, 2z] encoder features -> (mean, logvar) [B, t, h, w, z] each."""
        mean, logvar = jnp.split(self.quant_conv(features), 2, axis=-1)
        return mean, jnp.clip(logvar, *LOGVAR_RANGE)

    def post_quant(self, latents: jax.Array) -> jax.Array:
        return self.post_quant_conv(latents)

    def decode_frames(self, z: jax.Array) -> jax.Array:
        """[B, t, h, w, z] (after post_quant_conv) -> [B, 1+4(t-1), H, W, 3] unclamped."""
        return self.decoder(z)

    def __call__(self, video: jax.Array) -> jax.Array:
        """Whole-clip round trip through the posterior mean (used to initialise params)."""
        mean, _ = self.moments(self.encode_frames(video))
        return self.decode_frames(self.post_quant(mean))


def _dtype(name: str):
    return jnp.dtype(name)


def create(vae_cfg: ml_collections.ConfigDict) -> WanVAE:
    if tuple(vae_cfg.attn_scales):
        raise ValueError(
            f"config.model.vae.attn_scales must be () (Wan2.1 has no attention in the down/up "
            f"stages; diffusers cannot load it either), got {tuple(vae_cfg.attn_scales)}"
        )
    return WanVAE(
        base_dim=vae_cfg.base_dim,
        z_dim=vae_cfg.z_dim,
        dim_mult=tuple(vae_cfg.dim_mult),
        num_res_blocks=vae_cfg.num_res_blocks,
        temporal_downsample=tuple(bool(t) for t in vae_cfg.temporal_downsample),
        dtype=_dtype(vae_cfg.dtype),
        param_dtype=_dtype(vae_cfg.param_dtype),
        conv_taps=bool(vae_cfg.cpu_kernels),
    )


def strides(vae_cfg: ml_collections.ConfigDict) -> tuple[int, int]:
    """(temporal, spatial) compression: (4, 8) for Wan2.1."""
    temporal = 2 ** sum(bool(t) for t in vae_cfg.temporal_downsample)
    return temporal, 2 ** (len(vae_cfg.dim_mult) - 1)


def _dummy_video(vae_cfg) -> jax.ShapeDtypeStruct:
    """The smallest clip that reaches every layer (the time convs need frames after the first)."""
    t, s = strides(vae_cfg)
    return jax.ShapeDtypeStruct((1, 1 + t, s, s, PIXEL_CHANNELS), jnp.float32)


def init_params(vae_cfg: ml_collections.ConfigDict, rng: jax.Array):
    """Random 'params' of `create(vae_cfg)`, boxed with logical axis names (traceable)."""
    video = jnp.zeros(_dummy_video(vae_cfg).shape, jnp.float32)
    return compiler.jit_init(create(vae_cfg).init)(rng, video)["params"]


def abstract_params(vae_cfg: ml_collections.ConfigDict):
    """Tree of ShapeDtypeStruct of the 'params' collection, boxed with logical axis names."""
    return jax.eval_shape(lambda rng: init_params(vae_cfg, rng), jax.random.key(0))


# ----------------------------------------------------------------------------- validation


def check_video(video, vae_cfg: ml_collections.ConfigDict) -> None:
    """ValueError unless video is [B, 1+4k, H, W, 3] with H, W multiples of the spatial stride."""
    t_stride, s_stride = strides(vae_cfg)
    want = f"[B, 1+{t_stride}k, H, W, {PIXEL_CHANNELS}] with H and W multiples of {s_stride}"
    shape = tuple(getattr(video, "shape", ()))
    if len(shape) != 5:
        raise ValueError(f"video must be {want} (channels-last), got shape {shape}")
    _, t, h, w, c = shape
    if c != PIXEL_CHANNELS:
        raise ValueError(
            f"video must be {want}, got {c} channels in {shape}; pass RGB channels-last "
            "(rearrange 'b c t h w -> b t h w c' from PyTorch layout)"
        )
    if t < 1 or (t - 1) % t_stride:
        raise ValueError(
            f"video must be {want}, got {t} frames in {shape}; trim or pad the clip to "
            f"{1 + (max(t, 1) - 1) // t_stride * t_stride} frames"
        )
    if h % s_stride or w % s_stride or h == 0 or w == 0:
        raise ValueError(
            f"video must be {want}, got H x W = {h} x {w}; resize or crop to "
            f"{max(s_stride, h // s_stride * s_stride)} x {max(s_stride, w // s_stride * s_stride)}"
        )


def check_latents(latents, vae_cfg: ml_collections.ConfigDict) -> None:
    """ValueError unless latents are [B, t, h, w, z_dim]."""
    shape = tuple(getattr(latents, "shape", ()))
    want = f"[B, t, h, w, {vae_cfg.z_dim}]"
    if len(shape) != 5 or shape[-1] != vae_cfg.z_dim or 0 in shape:
        raise ValueError(f"latents must be {want} (channels-last), got shape {shape}")


def _check_tiles(vae_cfg) -> None:
    _, s = strides(vae_cfg)
    size, overlap = vae_cfg.tile_size, vae_cfg.tile_overlap
    if size % s or overlap % s or not 0 <= overlap < size:
        raise ValueError(
            f"config.model.vae.tile_size ({size}) and tile_overlap ({overlap}) must be multiples "
            f"of the spatial stride {s} with 0 <= overlap < size"
        )


# ----------------------------------------------------------------------------- chunked apply


def _apply_chunked(module, params, x, method, first: int, chunk: int, chunked: bool):
    """Runs `method` over time chunks of x [B, T, ...]: `first` frames alone, then `chunk` at a
    time inside lax.scan with the 'cache' collection as carry. Returns outputs joined in time."""
    variables = {"params": params}
    if not chunked:
        return module.apply(variables, x, method=method)
    head, state = module.apply(variables, x[:, :first], method=method, mutable=[CACHE])
    rest = x[:, first:]
    if rest.shape[1] == 0:
        return head
    chunks = rearrange(rest, "b (n t) ... -> n b t ...", t=chunk)

    def step(cache, piece):
        out, new = module.apply(
            {"params": params, CACHE: cache}, piece, method=method, mutable=[CACHE]
        )
        return new[CACHE], out

    _, outs = jax.lax.scan(step, state[CACHE], chunks)
    return jnp.concatenate([head, rearrange(outs, "n b t ... -> b (n t) ...")], axis=1)


def _encode_untiled(params, video, vae_cfg, chunked):
    module = create(vae_cfg)
    t_stride, _ = strides(vae_cfg)
    features = _apply_chunked(
        module, params, video, WanVAE.encode_frames, FIRST_CHUNK_FRAMES, t_stride, chunked
    )
    return module.apply({"params": params}, features, method=WanVAE.moments)


def _decode_untiled(params, latents, vae_cfg, chunked):
    module = create(vae_cfg)
    z = module.apply({"params": params}, latents, method=WanVAE.post_quant)
    return _apply_chunked(module, params, z, WanVAE.decode_frames, 1, 1, chunked)


# ----------------------------------------------------------------------------- spatial tiling


def _tile_starts(size: int, tile: int, stride: int) -> list[int]:
    """Starts of equal tiles covering [0, size): every `stride`, the last flush with the end."""
    if size <= tile:
        return [0]
    starts = list(range(0, size - tile, stride))
    return starts + [size - tile]


def _tiled(fn, x, tile_in: int, overlap_in: int, scale_num: int, scale_den: int):
    """Applies fn to equal spatial tiles of x [B, T, H, W, C] (tile_in cells, overlapping by
    overlap_in) one after another (lax.map) and blends the outputs, whose H, W are the input's
    times scale_num/scale_den, with linear ramps over the overlaps."""
    h, w = x.shape[2], x.shape[3]
    th, tw = min(tile_in, h), min(tile_in, w)
    stride = tile_in - overlap_in
    rows, cols = _tile_starts(h, th, stride), _tile_starts(w, tw, stride)
    tiles = jnp.stack(
        [x[:, :, i : i + th, j : j + tw] for i in rows for j in cols]
    )  # [n, B, T, th, tw, C]
    outs = jax.lax.map(fn, tiles)  # [n, B, T', th', tw', C']

    def scaled(v):
        return v * scale_num // scale_den

    oh, ow = scaled(th), scaled(tw)
    canvas = jnp.zeros(outs.shape[1:3] + (scaled(h), scaled(w)) + outs.shape[-1:], outs.dtype)
    total = jnp.zeros((scaled(h), scaled(w), 1), outs.dtype)
    n = 0
    for ri, i in enumerate(rows):
        for ci, j in enumerate(cols):
            ov_h = scaled(min(overlap_in, th))
            ov_w = scaled(min(overlap_in, tw))
            # Overlap with the neighbour is at least the nominal overlap (the last tile can
            # overlap more); ramps span the nominal overlap.
            wy = vae_blocks.spatial_ramp(oh, ov_h, ri > 0, ri < len(rows) - 1)
            wx = vae_blocks.spatial_ramp(ow, ov_w, ci > 0, ci < len(cols) - 1)
            weight = jnp.asarray(np.outer(wy, wx)[:, :, None], outs.dtype)
            y0, x0 = scaled(i), scaled(j)
            canvas = canvas.at[:, :, y0 : y0 + oh, x0 : x0 + ow].add(outs[n] * weight)
            total = total.at[y0 : y0 + oh, x0 : x0 + ow].add(weight)
            n += 1
    return canvas / total


# ----------------------------------------------------------------------------- public API


def frozen(vae_cfg) -> ml_collections.FrozenConfigDict:
    """The config as a hashable FrozenConfigDict (a static argument of the jitted bodies)."""
    if isinstance(vae_cfg, ml_collections.FrozenConfigDict):
        return vae_cfg
    return ml_collections.FrozenConfigDict(vae_cfg)


@functools.partial(jax.jit, static_argnames=("vae_cfg", "chunked"))
def _encode_jit(params, video, vae_cfg, chunked):
    _, s = strides(vae_cfg)
    if vae_cfg.tile and max(video.shape[2:4]) > vae_cfg.tile_size:
        z = vae_cfg.z_dim

        def fn(tile):
            return jnp.concatenate(_encode_untiled(params, tile, vae_cfg, chunked), axis=-1)

        moments = _tiled(fn, video, vae_cfg.tile_size, vae_cfg.tile_overlap, 1, s)
        return moments[..., :z], moments[..., z:]
    return _encode_untiled(params, video, vae_cfg, chunked)


@functools.partial(jax.jit, static_argnames=("vae_cfg", "chunked", "clamp"))
def _decode_jit(params, latents, vae_cfg, chunked, clamp):
    _, s = strides(vae_cfg)
    if vae_cfg.tile and max(latents.shape[2:4]) * s > vae_cfg.tile_size:
        fn = functools.partial(_decode_untiled, params, vae_cfg=vae_cfg, chunked=chunked)
        video = _tiled(fn, latents, vae_cfg.tile_size // s, vae_cfg.tile_overlap // s, s, 1)
    else:
        video = _decode_untiled(params, latents, vae_cfg, chunked)
    return jnp.clip(video, -1.0, 1.0) if clamp else video


def encode_distribution(params, video, vae_cfg, chunked: bool = True):
    """video [B, 1+4k, H, W, 3] in [-1, 1] -> (mean, logvar), each [B, 1+k, H/8, W/8, z_dim].

    Jitted per (config, shape); callable inside a user's jit or grad.
    """
    check_video(video, vae_cfg)
    if vae_cfg.tile:
        _check_tiles(vae_cfg)
    return _encode_jit(params, jnp.asarray(video), frozen(vae_cfg), bool(chunked))


def encode(params, video, vae_cfg, chunked: bool = True) -> jax.Array:
    """video [B, 1+4k, H, W, 3] in [-1, 1] -> posterior mean [B, 1+k, H/8, W/8, z_dim]."""
    return encode_distribution(params, video, vae_cfg, chunked)[0]


def sample_latents(rng, mean, logvar) -> jax.Array:
    """Reparameterised posterior sample mean + exp(logvar/2) * eps."""
    return mean + jnp.exp(0.5 * logvar) * jax.random.normal(rng, mean.shape, mean.dtype)


def kl_divergence(mean, logvar) -> jax.Array:
    """KL(N(mean, exp(logvar)) || N(0, 1)) summed over latent cells, per batch element [B]."""
    kl = 0.5 * (jnp.square(mean) + jnp.exp(logvar) - 1.0 - logvar)
    return jnp.sum(kl, axis=tuple(range(1, kl.ndim)))


def decode(params, latents, vae_cfg, chunked: bool = True, clamp: bool = True) -> jax.Array:
    """latents [B, t, h, w, z_dim] (raw, not normalised) -> video [B, 1+4(t-1), 8h, 8w, 3]."""
    check_latents(latents, vae_cfg)
    if vae_cfg.tile:
        _check_tiles(vae_cfg)
    return _decode_jit(params, jnp.asarray(latents), frozen(vae_cfg), bool(chunked), bool(clamp))


def _stats(latents, vae_cfg):
    if jnp.shape(latents)[-1:] != (vae_cfg.z_dim,):
        raise ValueError(
            f"latents must end in z_dim={vae_cfg.z_dim} channels, got shape {jnp.shape(latents)}"
        )
    mean = jnp.asarray(vae_cfg.latents_mean, latents.dtype)
    std = jnp.asarray(vae_cfg.latents_std, latents.dtype)
    return mean, std


def normalize(latents, vae_cfg) -> jax.Array:
    """Raw VAE latents [..., z] -> (latents - mean) / std, the scale the DiT works in."""
    mean, std = _stats(latents, vae_cfg)
    return (latents - mean) / std


def denormalize(latents, vae_cfg) -> jax.Array:
    """DiT-scale latents [..., z] -> raw VAE latents latents * std + mean (decode's input)."""
    mean, std = _stats(latents, vae_cfg)
    return latents * std + mean
