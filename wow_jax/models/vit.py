"""The Vision Transformer pieces the image encoders share (CLIP's and DINOv2's towers).

Block: pre-norm ViT block, tokens [B, N, D] -> [B, N, D]
    x += ls1 * attn(LayerNorm(x));  x += ls2 * mlp(LayerNorm(x))
  (ls1, ls2: DINOv2's per-channel layer scale; 1 for CLIP); multi-head self-attention with
  q/k/v/proj biases, MLP fc1 -> activation -> fc2.
bicubic_matrix: PyTorch's bicubic resize along one axis as an [out, in] matrix (CLIP's image
  resize, DINOv2's position-embedding interpolation).
"""

import math

import einops
import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from wow_jax.sharding import BATCH, EMBED, HEADS, KV, LENGTH, MLP

CUBIC_A = -0.75  # PyTorch's bicubic kernel coefficient.
ACTIVATIONS = {
    "gelu": lambda x: nn.gelu(x, approximate=False),  # Wan's ViT-H/14, DINOv2.
    "quick_gelu": lambda x: x * jax.nn.sigmoid(1.702 * x),  # OpenAI CLIP.
}


def _cubic(distance: np.ndarray) -> np.ndarray:
    """Keys cubic convolution kernel with a = CUBIC_A, as in PyTorch's upsample_bicubic2d."""
    d, a = np.abs(distance), np.float32(CUBIC_A)
    near = ((a + 2) * d - (a + 3)) * d * d + 1
    far = ((a * d - 5 * a) * d + 8 * a) * d - 4 * a
    return np.where(d <= 1, near, np.where(d < 2, far, 0.0))


def bicubic_matrix(in_size: int, out_size: int) -> np.ndarray:
    """[out, in] weights of PyTorch's bicubic resize along one axis (align_corners=False,
    no antialiasing, border pixels replicated)."""
    # float32 arithmetic throughout, as PyTorch computes the source positions for float images.
    scale = np.float32(in_size / out_size)
    src = (np.arange(out_size, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5)
    base = np.floor(src)
    frac = src - base
    base = base.astype(np.int64)
    matrix = np.zeros((out_size, in_size), np.float32)
    for tap in range(-1, 3):
        index = np.clip(base + tap, 0, in_size - 1)
        np.add.at(matrix, (np.arange(out_size), index), _cubic(frac - tap))
    return matrix


def dense(features, axes, dtype, param_dtype, name):
    """nn.Dense with a bias, kernel axes `axes` ([in, out]) and bias axis axes[-1]."""
    return nn.Dense(
        features,
        dtype=dtype,
        param_dtype=param_dtype,
        kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(), axes),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, axes[-1:]),
        name=name,
    )


def layer_norm(epsilon, param_dtype, name):
    """float32 LayerNorm over the model width (scale and bias on EMBED)."""
    return nn.LayerNorm(
        epsilon=epsilon,
        dtype=jnp.float32,
        param_dtype=param_dtype,
        scale_init=nn.with_logical_partitioning(nn.initializers.ones, (EMBED,)),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, (EMBED,)),
        name=name,
    )


class Block(nn.Module):
    """Pre-norm ViT block: x [B, N, D] -> [B, N, D] (scan body: returns (x, None))."""

    num_heads: int
    mlp_dim: int
    activation: str
    norm_eps: float
    layer_scale: bool = False  # DINOv2: learned per-channel scales of both residual branches.
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    def _scaled(self, branch: jnp.ndarray, name: str) -> jnp.ndarray:
        if not self.layer_scale:
            return branch
        scale = self.param(
            name,
            nn.with_logical_partitioning(nn.initializers.ones, (EMBED,)),
            (branch.shape[-1],),
            self.param_dtype,
        )
        return branch * scale.astype(self.dtype)

    @nn.compact
    def __call__(self, x, _):
        dim = x.shape[-1]
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        split = lambda t: einops.rearrange(t, "b n (h d) -> b n h d", h=self.num_heads)  # noqa: E731
        h = layer_norm(self.norm_eps, self.param_dtype, "norm1")(x).astype(self.dtype)
        q = split(dense(dim, (EMBED, HEADS), name="q", **kw)(h))
        k = split(dense(dim, (EMBED, HEADS), name="k", **kw)(h))
        v = split(dense(dim, (EMBED, HEADS), name="v", **kw)(h))
        q = nn.with_logical_constraint(q, (BATCH, LENGTH, HEADS, KV))
        logits = jnp.einsum("bqhd,bkhd->bhqk", q, k).astype(jnp.float32)
        weights = jax.nn.softmax(logits / math.sqrt(q.shape[-1]), axis=-1).astype(self.dtype)
        attended = einops.rearrange(
            jnp.einsum("bhqk,bkhd->bqhd", weights, v), "b n h d -> b n (h d)"
        )
        attended = dense(dim, (HEADS, EMBED), name="proj", **kw)(attended)
        x = x + self._scaled(attended, "layer_scale1")
        x = nn.with_logical_constraint(x, (BATCH, LENGTH, EMBED))

        h = layer_norm(self.norm_eps, self.param_dtype, "norm2")(x).astype(self.dtype)
        h = ACTIVATIONS[self.activation](dense(self.mlp_dim, (EMBED, MLP), name="fc1", **kw)(h))
        h = nn.with_logical_constraint(h, (BATCH, LENGTH, MLP))
        x = x + self._scaled(dense(dim, (MLP, EMBED), name="fc2", **kw)(h), "layer_scale2")
        return nn.with_logical_constraint(x, (BATCH, LENGTH, EMBED)), None
