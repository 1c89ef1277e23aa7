"""Shared building blocks of the transformers: dense layers with logical axes, RMSNorm, LayerNorm,
the sinusoidal timestep embedding and Wan's 3D rotary position embedding.

Every parameter is created with `nn.with_logical_partitioning` and a tuple of logical axis names
from `wow_jax.sharding`; parameters are stored in `param_dtype`, matmuls run in `dtype`, norms and
the rotary rotation always run in float32 (as in the PyTorch references).
"""

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from einops import rearrange
from flax import linen as nn

ROPE_THETA = 10000.0  # Base of the rotary frequencies (Wan2.1, diffusers WanRotaryPosEmbed).
TIMESTEP_MAX_PERIOD = 10000  # Longest period of the sinusoidal timestep embedding.
DEFAULT_KERNEL_INIT = nn.initializers.xavier_uniform()  # Init of dense kernels (as Wan2.1).

Axes = tuple[str | None, ...]


def dtype_of(name: str) -> jnp.dtype:
    """'float32' | 'bfloat16' | 'float16' -> jnp dtype."""
    return jnp.dtype(name)


def dense(
    features: int,
    axes: Axes,
    *,
    dtype,
    param_dtype,
    name: str,
    kernel_init=DEFAULT_KERNEL_INIT,
    module: type[nn.Dense] = nn.Dense,
    **fields,
) -> nn.Dense:
    """`module` (nn.Dense or a subclass given its own `fields`, e.g. lora.LoRADense) whose
    kernel [in, out] carries logical `axes` and whose bias carries `axes[-1]`."""
    return module(
        features,
        dtype=dtype,
        param_dtype=param_dtype,
        kernel_init=nn.with_logical_partitioning(kernel_init, axes),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), (axes[-1],)),
        name=name,
        **fields,
    )


class RMSNorm(nn.Module):
    """x * rsqrt(mean(x^2) + eps) * scale over the last axis, in float32 (torch.nn.RMSNorm).

    x: [..., D] -> [..., D] in `dtype`.
    """

    eps: float
    axis_name: str | None
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        scale = self.param(
            "scale",
            nn.with_logical_partitioning(nn.initializers.ones_init(), (self.axis_name,)),
            (x.shape[-1],),
            self.param_dtype,
        )
        x32 = x.astype(jnp.float32)
        x32 = x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + self.eps)
        return (x32 * scale.astype(jnp.float32)).astype(self.dtype)


class LayerNorm(nn.Module):
    """torch.nn.LayerNorm over the last axis, computed in float32 (exact two-pass variance).

    x: [..., D] -> [..., D] float32. `affine=False` has no parameters (Wan's modulated norms).
    """

    eps: float
    affine: bool
    axis_name: str | None
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x32 = x.astype(jnp.float32)
        mean = jnp.mean(x32, axis=-1, keepdims=True)
        centred = x32 - mean
        var = jnp.mean(jnp.square(centred), axis=-1, keepdims=True)
        y = centred * jax.lax.rsqrt(var + self.eps)
        if self.affine:
            init = nn.initializers
            scale = self.param(
                "scale",
                nn.with_logical_partitioning(init.ones_init(), (self.axis_name,)),
                (x.shape[-1],),
                self.param_dtype,
            )
            bias = self.param(
                "bias",
                nn.with_logical_partitioning(init.zeros_init(), (self.axis_name,)),
                (x.shape[-1],),
                self.param_dtype,
            )
            y = y * scale.astype(jnp.float32) + bias.astype(jnp.float32)
        return y


def _while_barrier(x: jax.Array) -> jax.Array:
    """x, passed through a while loop whose condition is always false (v != v and v == v) but not
    provably so to XLA, which therefore has to compute x into a buffer first."""
    first = x[(0,) * x.ndim]  # A static slice: under a mesh only one shard's element moves.
    never = jnp.logical_and(first != first, first == first)
    return jax.lax.while_loop(lambda value: never, lambda value: value * 2, x)


@jax.custom_vjp
def _cpu_fusion_barrier(x: jax.Array) -> jax.Array:
    return _while_barrier(x)


def _cpu_fusion_barrier_fwd(x):
    return _while_barrier(x), None


def _cpu_fusion_barrier_bwd(_, grad):
    return (_while_barrier(grad),)


_cpu_fusion_barrier.defvjp(_cpu_fusion_barrier_fwd, _cpu_fusion_barrier_bwd)


def fusion_barrier(x: jax.Array, cpu_kernels: bool) -> jax.Array:
    """Identity; with `cpu_kernels` it makes XLA:CPU compute `x` once, and in the backward pass
    its gradient once.

    XLA:CPU fuses cheap elementwise producers into every consumer and drops
    `lax.optimization_barrier`; on the DiT's residual stream that recomputes the whole chain of
    residual additions (and, in the backward pass, the accumulated gradient of every later block)
    inside each consumer. Placed after each residual addition, it cuts the small benchmark DiT's
    forward+backward on one CPU core from 196 to 158 ms (scripts/benchmark_dit.py; docs/cpu.md).
    Other backends fuse well on their own: with `cpu_kernels=False` (resolved from
    config.model.cpu_kernels for the compile target) it is the plain identity, with no custom_vjp,
    so forward-mode autodiff (jax.jvp, jax.linearize) passes through. x: any array -> the same.
    """
    return _cpu_fusion_barrier(x) if cpu_kernels else x


def timestep_embedding(timesteps: jax.Array, dim: int) -> jax.Array:
    """Sinusoidal embedding [cos | sin] of float timesteps (diffusers Timesteps with
    flip_sin_to_cos=True, downscale_freq_shift=0; Wan2.1 sinusoidal_embedding_1d).

    timesteps: [B] -> [B, dim] float32.
    """
    half = dim // 2
    freqs = jnp.exp(-math.log(TIMESTEP_MAX_PERIOD) * jnp.arange(half, dtype=jnp.float32) / half)
    args = timesteps.astype(jnp.float32)[:, None] * freqs[None, :]
    emb = jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)
    if dim % 2:
        emb = jnp.pad(emb, ((0, 0), (0, 1)))
    return emb


def rope_split(head_dim: int) -> tuple[int, int, int]:
    """Channels of one head given to the (frames, height, width) rotations: h = w = 2*(d//6)."""
    hw = 2 * (head_dim // 6)
    return head_dim - 2 * hw, hw, hw


def _axis_angles(length: int, dim: int) -> np.ndarray:
    """Rotation angles [length, dim/2] of one axis, in float64 (as the references)."""
    inv_freq = 1.0 / (ROPE_THETA ** (np.arange(0, dim, 2, dtype=np.float64) / dim))
    return np.outer(np.arange(length, dtype=np.float64), inv_freq)


def rope_tables(grid: Sequence[int], head_dim: int, max_len: int) -> tuple[jax.Array, jax.Array]:
    """cos and sin of Wan's 3D rotary embedding for a (frames, height, width) token grid.

    The head width is split into frame/height/width parts (`rope_split`); each part rotates by
    its token's position along that axis. Per-axis tables are exact (float64, then float32) and
    broadcast on device. Returns (cos, sin), each [F*H*W, head_dim/2] float32, tokens ordered
    frame-major (f, h, w) like the patch sequence.
    """
    if max(grid) > max_len:
        raise ValueError(
            f"token grid (frames, height, width) = {tuple(grid)} exceeds the rotary table length "
            f"config.model.dit.rope_max_len={max_len}; raise rope_max_len or use a smaller video"
        )
    f, h, w = grid
    parts = rope_split(head_dim)
    angles = [_axis_angles(n, d) for n, d in zip(grid, parts, strict=True)]
    shapes = ((f, 1, 1, -1), (1, h, 1, -1), (1, 1, w, -1))
    out = []
    for fn in (np.cos, np.sin):
        tables = [
            jnp.broadcast_to(jnp.asarray(fn(a), jnp.float32).reshape(s), (f, h, w, a.shape[-1]))
            for a, s in zip(angles, shapes, strict=True)
        ]
        out.append(rearrange(jnp.concatenate(tables, axis=-1), "f h w d -> (f h w) d"))
    return out[0], out[1]


def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """Rotates interleaved channel pairs (x[2i], x[2i+1]) by the angles (complex multiply).

    x: [B, L, N, D]; cos, sin: [L, D/2] -> [B, L, N, D] in x.dtype (rotation in float32).
    """
    pairs = rearrange(x.astype(jnp.float32), "b l n (d two) -> b l n d two", two=2)
    x1, x2 = pairs[..., 0], pairs[..., 1]
    c, s = cos[None, :, None, :], sin[None, :, None, :]
    rotated = jnp.stack([x1 * c - x2 * s, x1 * s + x2 * c], axis=-1)
    return rearrange(rotated, "b l n d two -> b l n (d two)").astype(x.dtype)
