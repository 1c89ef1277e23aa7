"""The umT5 encoder (Wan2.1's text encoder; google/umt5-xxl, encoder half) as Flax linen.

Pre-norm T5 blocks: RMS norm (no mean, no bias) -> self-attention without 1/sqrt(d) scaling, with
a relative-position bias learned *per layer* (umT5; classic T5 shares one across layers) -> RMS
norm -> gated-GELU feed-forward (tanh GELU on `gate`, times `fc1`, projected by `fc2`); a final
RMS norm. Padded keys are masked out and padded positions of the output are zero, as Wan trims
each caption's states to its real length.

    token_ids [B, L] int32, mask [B, L] (1 = token, 0 = padding) -> states [B, L, dim]

Parameter names follow Wan2.1's `wan/modules/t5.py` (`token_embedding`, `blocks/norm1`,
`blocks/attn/q`, `blocks/pos_embedding`, `blocks/ffn/gate`, `norm`); the blocks are stacked with
`nn.scan` along a leading `layers` axis. `wow_jax/interop/umt5_table.py` maps them to the Wan and
transformers checkpoint names.
"""

import math

import einops
import jax
import jax.numpy as jnp
import ml_collections
from flax import linen as nn

from wow_jax import compiler
from wow_jax.sharding import BATCH, EMBED, HEADS, KV, LAYERS, LENGTH, MLP, VOCAB

NORM_EPS = 1e-6  # T5LayerNorm epsilon in both Wan and transformers.


def relative_position_buckets(length: int, num_buckets: int, max_distance: int) -> jnp.ndarray:
    """Bidirectional T5 buckets of (key - query) offsets: [L, L] int32 in [0, num_buckets).

    Half of the buckets hold positive offsets; within each half, offsets below a quarter of the
    buckets get one bucket each and larger ones share log-spaced buckets up to `max_distance`.
    """
    position = jnp.arange(length)
    relative = position[None, :] - position[:, None]
    half = num_buckets // 2
    buckets = (relative > 0).astype(jnp.int32) * half
    distance = jnp.abs(relative)
    max_exact = half // 2
    # log(0) is masked out by the `where` below; clamp so it stays finite.
    scaled = jnp.log(jnp.maximum(distance, 1).astype(jnp.float32) / max_exact)
    scaled = scaled / math.log(max_distance / max_exact) * (half - max_exact)
    large = jnp.minimum(max_exact + scaled.astype(jnp.int32), half - 1)
    return buckets + jnp.where(distance < max_exact, distance, large)


class RMSNorm(nn.Module):
    """T5LayerNorm: x / sqrt(mean(x^2) + eps) * scale, statistics in float32."""

    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        scale = self.param(
            "scale",
            nn.with_logical_partitioning(nn.initializers.ones, (EMBED,)),
            (x.shape[-1],),
            self.param_dtype,
        )
        x32 = x.astype(jnp.float32)
        x32 = x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + NORM_EPS)
        return x32.astype(self.dtype) * scale.astype(self.dtype)


def _dense(features: int, axes: tuple[str, str], dtype, param_dtype, name: str) -> nn.Dense:
    return nn.Dense(
        features,
        use_bias=False,
        dtype=dtype,
        param_dtype=param_dtype,
        kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(), axes),
        name=name,
    )


class Block(nn.Module):
    """One umT5 encoder block: x [B, L, D] -> [B, L, D] (scan body: returns (x, None))."""

    num_heads: int
    head_dim: int
    ffn_dim: int
    num_buckets: int
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, buckets, key_mask):
        """buckets [L, L] int32 relative-position buckets; key_mask [B, 1, 1, L] bool."""
        dim, inner = x.shape[-1], self.num_heads * self.head_dim
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        table = self.param(
            "pos_embedding",
            nn.with_logical_partitioning(nn.initializers.normal(1.0), (None, HEADS)),
            (self.num_buckets, self.num_heads),
            self.param_dtype,
        )
        bias = einops.rearrange(jnp.take(table, buckets, axis=0), "q k h -> 1 h q k")

        h = RMSNorm(name="norm1", **kw)(x)
        split = lambda t: einops.rearrange(t, "b l (h d) -> b l h d", h=self.num_heads)  # noqa: E731
        q = split(_dense(inner, (EMBED, HEADS), name="q", **kw)(h))
        k = split(_dense(inner, (EMBED, HEADS), name="k", **kw)(h))
        v = split(_dense(inner, (EMBED, HEADS), name="v", **kw)(h))
        q = nn.with_logical_constraint(q, (BATCH, LENGTH, HEADS, KV))
        # T5 does not scale the logits by 1/sqrt(head_dim); the bias carries positions.
        logits = jnp.einsum("bqhd,bkhd->bhqk", q, k).astype(jnp.float32)
        logits = logits + bias.astype(jnp.float32)
        logits = jnp.where(key_mask, logits, jnp.finfo(jnp.float32).min)
        weights = jax.nn.softmax(logits, axis=-1).astype(self.dtype)
        attended = einops.rearrange(
            jnp.einsum("bhqk,bkhd->bqhd", weights, v), "b l h d -> b l (h d)"
        )
        x = x + _dense(dim, (HEADS, EMBED), name="o", **kw)(attended)
        x = nn.with_logical_constraint(x, (BATCH, LENGTH, EMBED))

        h = RMSNorm(name="norm2", **kw)(x)
        gate = nn.gelu(_dense(self.ffn_dim, (EMBED, MLP), name="gate", **kw)(h), approximate=True)
        hidden = _dense(self.ffn_dim, (EMBED, MLP), name="fc1", **kw)(h) * gate
        hidden = nn.with_logical_constraint(hidden, (BATCH, LENGTH, MLP))
        x = x + _dense(dim, (MLP, EMBED), name="fc2", **kw)(hidden)
        return nn.with_logical_constraint(x, (BATCH, LENGTH, EMBED)), None


class UMT5Encoder(nn.Module):
    """token_ids [B, L] int32, mask [B, L] -> states [B, L, dim], zero where mask == 0."""

    vocab_size: int
    dim: int
    ffn_dim: int
    num_heads: int
    head_dim: int
    num_layers: int
    num_buckets: int
    max_distance: int
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, token_ids: jnp.ndarray, mask: jnp.ndarray) -> jnp.ndarray:
        if token_ids.ndim != 2 or mask.shape != token_ids.shape:
            raise ValueError(
                f"umT5 expects token_ids [B, L] and mask [B, L] of the same shape, got "
                f"{token_ids.shape} and {mask.shape}; tokenize with wow_jax.data.tokenizer"
            )
        x = nn.Embed(
            self.vocab_size,
            self.dim,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            embedding_init=nn.with_logical_partitioning(
                nn.initializers.normal(1.0), (VOCAB, EMBED)
            ),
            name="token_embedding",
        )(token_ids.astype(jnp.int32))
        x = nn.with_logical_constraint(x, (BATCH, LENGTH, EMBED))
        buckets = relative_position_buckets(token_ids.shape[1], self.num_buckets, self.max_distance)
        key_mask = (mask > 0)[:, None, None, :]
        blocks = nn.scan(
            Block,
            variable_axes={"params": 0},
            split_rngs={"params": True},
            in_axes=(nn.broadcast, nn.broadcast),
            length=self.num_layers,
            metadata_params={nn.PARTITION_NAME: LAYERS},
        )(
            num_heads=self.num_heads,
            head_dim=self.head_dim,
            ffn_dim=self.ffn_dim,
            num_buckets=self.num_buckets,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="blocks",
        )
        x, _ = blocks(x, buckets, key_mask)
        x = RMSNorm(dtype=self.dtype, param_dtype=self.param_dtype, name="norm")(x)
        return x * (mask > 0)[..., None].astype(x.dtype)


def create(text_cfg: ml_collections.ConfigDict) -> UMT5Encoder:
    """The encoder described by `config.model.text`."""
    return UMT5Encoder(
        vocab_size=text_cfg.vocab_size,
        dim=text_cfg.dim,
        ffn_dim=text_cfg.ffn_dim,
        num_heads=text_cfg.num_heads,
        head_dim=text_cfg.head_dim,
        num_layers=text_cfg.num_layers,
        num_buckets=text_cfg.num_buckets,
        max_distance=text_cfg.max_distance,
        dtype=jnp.dtype(text_cfg.dtype),
        param_dtype=jnp.dtype(text_cfg.param_dtype),
    )


def abstract_params(text_cfg: ml_collections.ConfigDict):
    """The boxed 'params' tree as ShapeDtypeStructs (nothing allocated)."""
    return jax.eval_shape(lambda rng: init_params(text_cfg, rng), jax.random.key(0))


def init_params(text_cfg: ml_collections.ConfigDict, rng: jax.Array):
    """Random 'params', boxed with logical axis names (traceable; `nn.meta.unbox` for arrays)."""
    ids = jnp.zeros((1, 1), jnp.int32)
    return compiler.jit_init(create(text_cfg).init)(rng, ids, ids)["params"]
