"""The Wan2.1 video diffusion transformer (DiT), text-to-video and image-to-video, in Flax linen.

Reference: Wan2.1 `wan/modules/model.py` (WanModel) and diffusers `WanTransformer3DModel`; the
WoW-1-Wan-14B world model is the image-to-video 14B variant. Flow matching: the network predicts
the velocity (noise - clean latent) of a noisy video latent.

    latents      [B, F, H, W, C_in]  channels-last; C_in = 16 (t2v) or 16 + 4 + 16 = 36 (i2v:
                                     noisy latent, 4-channel frame mask, conditioning latent)
    timesteps    [B]                 float in [0, 1000]
    text_states  [B, Lt, text_dim]   umT5 states, zero past the caption's tokens; Lt <= text_len,
                                     zero-padded here to text_len (Wan pads to 512 before the
                                     text embedding and attends to every padded token)
    image_tokens [B, Li, image_dim]  CLIP ViT-H/14 penultimate tokens (Li = 257), i2v only
    -> velocity  [B, F, H, W, C_out] float32

Inside: a (pt, ph, pw) patch embedding makes L = F/pt * H/ph * W/pw tokens of width `dim`; the
timestep's sinusoid goes through an MLP (`temb` [B, dim]) and a projection to six modulation
vectors per block ([B, 6, dim]: shift/scale/gate for self-attention and feed-forward); each block
is self-attention with q/k RMSNorm and 3D RoPE, cross-attention to the text tokens (and, for i2v,
a second attention to the image tokens whose output is added), and a GELU(tanh) feed-forward; a
modulated head projects back to patches. The residual stream stays float32; matmuls run in
`config.dtype`.

Scale: the blocks are one `nn.scan` (params stacked along a leading 'layers' axis) wrapped in
`nn.remat` with the policy from the config (`REMAT_POLICIES`: generic ones, or named ones that
keep the block's tensors tagged with `checkpoint_name`: QKV, ATTENTION_OUT, FFN_IN); every
parameter and large activation carries logical axis names (`wow_jax.sharding`), video tokens on
LENGTH (the 'sequence' mesh axis: context parallelism over long videos). `cpu_kernels` (resolved
from config.model.cpu_kernels for the compile target) adds the XLA:CPU fusion barriers and
attention backward pass (docs/cpu.md); off, the DiT is plain XLA with no custom_vjp, so
jax.jvp / jax.linearize pass through it.
"""

import dataclasses

import jax
import jax.numpy as jnp
import ml_collections
from einops import rearrange
from flax import linen as nn
from jax.ad_checkpoint import checkpoint_name

from wow_jax import compiler
from wow_jax.models import attention as attention_lib
from wow_jax.models import layers
from wow_jax.models import lora as lora_lib
from wow_jax.sharding import BATCH, CONV_IN, EMBED, HEADS, KV, LAYERS, LENGTH, MLP

MODULATION_VECTORS = 6  # shift, scale, gate of self-attention; shift, scale, gate of the FFN.
HEAD_MODULATION_VECTORS = 2  # shift, scale of the output head.
IMAGE_NORM_EPS = 1e-5  # Epsilon of the image-embedding LayerNorms (torch default).
# Names of the block tensors a named remat policy can keep (jax.ad_checkpoint.checkpoint_name).
QKV = "qkv"  # Self-attention queries, keys, values after projection and q/k norm [B, L, dim].
ATTENTION_OUT = "attention_out"  # Self- and cross-attention outputs after `o` [B, L, dim].
FFN_IN = "ffn_in"  # The modulated, normalised input of the feed-forward [B, L, dim].
BLOCK_INPUT = "block_input"  # The float32 residual stream entering a block [B, L, dim].
_save = jax.checkpoint_policies.save_only_these_names
_offload = jax.checkpoint_policies.save_and_offload_only_these_names
# config.model.dit.remat_policy -> jax.checkpoint policy (None: no rematerialisation).
REMAT_POLICIES = {
    "none": None,
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots_saveable": jax.checkpoint_policies.dots_saveable,
    "dots_no_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    "save_attention_out": _save(ATTENTION_OUT),
    "save_ffn_in": _save(FFN_IN),
    "save_attention_out_ffn_in": _save(ATTENTION_OUT, FFN_IN),
    "save_qkv_attention_out": _save(QKV, ATTENTION_OUT),
    # Recompute the block; keep its input (the per-layer residual the scan saves) in host memory.
    "offload_block_input": _offload(
        names_which_can_be_saved=[],
        names_which_can_be_offloaded=[BLOCK_INPUT],
        offload_src="device",
        offload_dst="pinned_host",
    ),
}


@dataclasses.dataclass(frozen=True)
class DiTSpec:
    """Hashable copy of `config.model.dit` (see configs/base.py for each field)."""

    variant: str
    in_channels: int
    out_channels: int
    dim: int
    ffn_dim: int
    freq_dim: int
    text_dim: int
    text_len: int
    image_dim: int
    num_heads: int
    num_layers: int
    patch_size: tuple[int, int, int]
    qk_norm: bool
    cross_attn_norm: bool
    eps: float
    rope_max_len: int
    param_dtype: str
    dtype: str
    scan_layers: bool
    remat_policy: str
    attention: str
    pallas_interpret: bool
    cpu_kernels: bool
    lora: lora_lib.LoRASpec | None = None  # Adapters the targeted dense layers may carry.

    @classmethod
    def from_config(
        cls, cfg: ml_collections.ConfigDict, lora_cfg: ml_collections.ConfigDict | None = None
    ) -> "DiTSpec":
        """`lora_cfg` (config.train.lora) with rank > 0 adds the LoRA adapters (models/lora.py)."""
        values = {f.name: cfg[f.name] for f in dataclasses.fields(cls) if f.name != "lora"}
        values["patch_size"] = tuple(int(p) for p in cfg.patch_size)
        lora = None if lora_cfg is None else lora_lib.LoRASpec.from_config(lora_cfg)
        return cls(**values, lora=lora)

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    @property
    def has_image(self) -> bool:
        return self.variant == "i2v"

    @property
    def compute_dtype(self):
        return layers.dtype_of(self.dtype)

    @property
    def weight_dtype(self):
        return layers.dtype_of(self.param_dtype)


def _dense(
    spec: DiTSpec, features: int, axes, name: str, kernel_init=layers.DEFAULT_KERNEL_INIT
) -> nn.Dense:
    """A dense layer [in, out] with logical `axes`; a LoRA target when the spec has adapters."""
    return layers.dense(
        features,
        axes,
        dtype=spec.compute_dtype,
        param_dtype=spec.weight_dtype,
        name=name,
        kernel_init=kernel_init,
        module=lora_lib.LoRADense,
        lora=spec.lora,
        kernel_axes=tuple(axes),
    )


def _rms(spec: DiTSpec, name: str) -> layers.RMSNorm:
    return layers.RMSNorm(
        spec.eps, HEADS, dtype=spec.compute_dtype, param_dtype=spec.weight_dtype, name=name
    )


def _split_heads(x: jax.Array, num_heads: int, length_axis: str | None) -> jax.Array:
    """[B, L, N*D] -> [B, L, N, D]; video tokens stay on LENGTH, text/image tokens (None) and
    gathered keys/values are whole on every device."""
    heads = rearrange(x, "b l (n d) -> b l n d", n=num_heads)
    return nn.with_logical_constraint(heads, (BATCH, length_axis, HEADS, KV))


def _attention(spec: DiTSpec, q, k, v) -> jax.Array:
    return attention_lib.dot_product_attention(
        q, k, v, spec.attention, interpret=spec.pallas_interpret, cpu_kernels=spec.cpu_kernels
    )


def _gather_tokens(x: jax.Array) -> jax.Array:
    """Keys/values of self-attention: all video tokens on every device of a 'sequence' group."""
    return nn.with_logical_constraint(x, (BATCH, None, HEADS, KV))


class SelfAttention(nn.Module):
    """x: [B, L, dim], cos/sin: [L, head_dim/2] -> [B, L, dim]."""

    spec: DiTSpec

    @nn.compact
    def __call__(self, x, cos, sin):
        s = self.spec
        q, k, v = (_dense(s, s.dim, (EMBED, HEADS), name)(x) for name in ("q", "k", "v"))
        if s.qk_norm:
            q, k = _rms(s, "norm_q")(q), _rms(s, "norm_k")(k)
        q, k, v = (checkpoint_name(t, QKV) for t in (q, k, v))
        q, k, v = (_split_heads(t, s.num_heads, LENGTH) for t in (q, k, v))
        q, k = layers.apply_rope(q, cos, sin), layers.apply_rope(k, cos, sin)
        k, v = _gather_tokens(k), _gather_tokens(v)
        out = _attention(s, q, k, v)
        out = nn.with_logical_constraint(out, (BATCH, LENGTH, HEADS, KV))
        out = _dense(s, s.dim, (HEADS, EMBED), "o")(rearrange(out, "b l n d -> b l (n d)"))
        return checkpoint_name(out, ATTENTION_OUT)


class CrossAttention(nn.Module):
    """x: [B, L, dim] attends to context [B, Lt, dim] (+ image_context [B, Li, dim] for i2v,
    a separate attention whose output is added) -> [B, L, dim]."""

    spec: DiTSpec

    @nn.compact
    def __call__(self, x, context, image_context):
        s = self.spec
        q = _dense(s, s.dim, (EMBED, HEADS), "q")(x)
        k = _dense(s, s.dim, (EMBED, HEADS), "k")(context)
        v = _dense(s, s.dim, (EMBED, HEADS), "v")(context)
        if s.qk_norm:
            q, k = _rms(s, "norm_q")(q), _rms(s, "norm_k")(k)
        q = _split_heads(q, s.num_heads, LENGTH)
        k, v = (_split_heads(t, s.num_heads, None) for t in (k, v))
        out = _attention(s, q, k, v)
        if s.has_image:
            k_img = _dense(s, s.dim, (EMBED, HEADS), "k_img")(image_context)
            v_img = _dense(s, s.dim, (EMBED, HEADS), "v_img")(image_context)
            if s.qk_norm:
                k_img = _rms(s, "norm_k_img")(k_img)
            k_img, v_img = (_split_heads(t, s.num_heads, None) for t in (k_img, v_img))
            out = out + _attention(s, q, k_img, v_img)
        out = nn.with_logical_constraint(out, (BATCH, LENGTH, HEADS, KV))
        out = _dense(s, s.dim, (HEADS, EMBED), "o")(rearrange(out, "b l n d -> b l (n d)"))
        return checkpoint_name(out, ATTENTION_OUT)


class MLPBlock(nn.Module):
    """Two dense layers with an activation between: [..., in] -> [..., out]."""

    spec: DiTSpec
    hidden: int
    out: int
    approximate_gelu: bool | None  # True: GELU(tanh), False: exact GELU, None: SiLU.
    axes: tuple  # Logical axes of fc1's kernel; fc2's are reversed.
    hidden_axes: tuple  # Logical axes of the hidden activation.

    @nn.compact
    def __call__(self, x):
        h = _dense(self.spec, self.hidden, self.axes, "fc1")(x)
        if self.approximate_gelu is None:
            h = nn.silu(h)
        else:
            h = nn.gelu(h, approximate=self.approximate_gelu)
        h = nn.with_logical_constraint(h, self.hidden_axes)
        return _dense(self.spec, self.out, self.axes[::-1], "fc2")(h)


def _residual(x: jax.Array, spec: DiTSpec) -> jax.Array:
    """The residual stream [B, L, dim] after an addition: sharded, and with cpu_kernels fenced."""
    x = nn.with_logical_constraint(x, (BATCH, LENGTH, EMBED))
    return layers.fusion_barrier(x, spec.cpu_kernels)


class Block(nn.Module):
    """One Wan attention block. x: [B, L, dim] float32 residual stream; e: [B, 6, dim] float32
    timestep modulation; returns (x, None) so that it can be scanned."""

    spec: DiTSpec

    @nn.compact
    def __call__(self, x, context, image_context, e, cos, sin):
        s = self.spec
        dtype = s.compute_dtype
        x = checkpoint_name(x, BLOCK_INPUT)
        table = self.param(
            "modulation",
            nn.with_logical_partitioning(nn.initializers.normal(s.dim**-0.5), (None, None, EMBED)),
            (1, MODULATION_VECTORS, s.dim),
            s.weight_dtype,
        )
        mod = table.astype(jnp.float32) + e
        shift, scale, gate, ffn_shift, ffn_scale, ffn_gate = (
            mod[:, i : i + 1] for i in range(MODULATION_VECTORS)
        )
        norm = layers.LayerNorm(s.eps, affine=False, axis_name=None)

        h = (norm(x) * (1 + scale) + shift).astype(dtype)
        x = x + SelfAttention(s, name="self_attn")(h, cos, sin).astype(jnp.float32) * gate
        x = _residual(x, s)

        if s.cross_attn_norm:
            cross_norm = layers.LayerNorm(
                s.eps, True, EMBED, param_dtype=s.weight_dtype, name="cross_attn_norm"
            )
            h = cross_norm(x)
        else:
            h = x
        x = x + CrossAttention(s, name="cross_attn")(h.astype(dtype), context, image_context)
        x = _residual(x, s)

        h = checkpoint_name((norm(x) * (1 + ffn_scale) + ffn_shift).astype(dtype), FFN_IN)
        ffn = MLPBlock(s, s.ffn_dim, s.dim, True, (EMBED, MLP), (BATCH, LENGTH, MLP), name="ffn")
        x = x + ffn(h).astype(jnp.float32) * ffn_gate
        return _residual(x, s), None


class PatchEmbedding(nn.Module):
    """Conv3d with kernel = stride = patch, as a matmul over flattened patches.

    x: [B, F, H, W, C] -> [B, F/pt * H/ph * W/pw, dim] tokens ordered (f, h, w).
    """

    spec: DiTSpec

    @nn.compact
    def __call__(self, x):
        s = self.spec
        pt, ph, pw = s.patch_size
        kernel = self.param(
            "kernel",
            nn.with_logical_partitioning(
                nn.initializers.xavier_uniform(in_axis=(0, 1, 2, 3), out_axis=-1),
                (None, None, None, CONV_IN, EMBED),
            ),
            (pt, ph, pw, s.in_channels, s.dim),
            s.weight_dtype,
        )
        bias = self.param(
            "bias",
            nn.with_logical_partitioning(nn.initializers.zeros_init(), (EMBED,)),
            (s.dim,),
            s.weight_dtype,
        )
        patches = rearrange(
            x, "b (f p) (h q) (w r) c -> b (f h w) (p q r c)", p=pt, q=ph, r=pw
        ).astype(s.compute_dtype)
        patches = nn.with_logical_constraint(patches, (BATCH, LENGTH, None))
        weight = rearrange(kernel, "p q r c d -> (p q r c) d").astype(s.compute_dtype)
        return jnp.einsum("blk,kd->bld", patches, weight) + bias.astype(s.compute_dtype)


class Head(nn.Module):
    """Modulated LayerNorm and projection to patches. x: [B, L, dim], temb: [B, dim] ->
    [B, L, pt*ph*pw*C_out]."""

    spec: DiTSpec

    @nn.compact
    def __call__(self, x, temb):
        s = self.spec
        table = self.param(
            "modulation",
            nn.with_logical_partitioning(nn.initializers.normal(s.dim**-0.5), (None, None, EMBED)),
            (1, HEAD_MODULATION_VECTORS, s.dim),
            s.weight_dtype,
        )
        mod = table.astype(jnp.float32) + temb[:, None, :]
        shift, scale = mod[:, 0:1], mod[:, 1:2]
        h = layers.LayerNorm(s.eps, affine=False, axis_name=None)(x) * (1 + scale) + shift
        features = s.out_channels * s.patch_size[0] * s.patch_size[1] * s.patch_size[2]
        proj = _dense(s, features, (EMBED, None), "head", kernel_init=nn.initializers.zeros_init())
        return proj(h.astype(s.compute_dtype))


class ImageEmbedding(nn.Module):
    """CLIP tokens -> context tokens: LayerNorm, Linear, GELU, Linear, LayerNorm (Wan MLPProj).

    x: [B, Li, image_dim] -> [B, Li, dim]."""

    spec: DiTSpec

    @nn.compact
    def __call__(self, x):
        s = self.spec
        w = s.weight_dtype
        h = layers.LayerNorm(IMAGE_NORM_EPS, True, None, param_dtype=w, name="norm_in")(x)
        mlp = MLPBlock(s, s.image_dim, s.dim, False, (MLP, EMBED), (BATCH, None, EMBED), name="mlp")
        h = mlp(h.astype(s.compute_dtype))
        return layers.LayerNorm(IMAGE_NORM_EPS, True, EMBED, param_dtype=w, name="norm_out")(h)


def pad_text(text_states: jax.Array, text_len: int) -> jax.Array:
    """[B, L, D] -> [B, text_len, D]: zeros after the L given tokens (L <= text_len), as Wan pads
    the umT5 states before the text embedding (the padded tokens are then attended to)."""
    return jnp.pad(text_states, ((0, 0), (0, text_len - text_states.shape[1]), (0, 0)))


def check_inputs(spec: DiTSpec, latents, timesteps, text_states, image_tokens) -> None:
    """Raises ValueError naming the expected shape for any malformed input."""
    pt, ph, pw = spec.patch_size
    if latents.ndim != 5 or latents.shape[-1] != spec.in_channels:
        raise ValueError(
            f"latents must be [B, F, H, W, {spec.in_channels}] (channels-last, in_channels="
            f"{spec.in_channels} for variant {spec.variant!r}), got {tuple(latents.shape)}"
        )
    b, f, h, w, _ = latents.shape
    for axis, size, patch in (("frames", f, pt), ("height", h, ph), ("width", w, pw)):
        if size % patch:
            raise ValueError(
                f"latents {axis} ({size}) must be divisible by the patch size {patch} "
                f"(patch_size={spec.patch_size}); got latents {tuple(latents.shape)}, pad or crop "
                f"to [B, F, H, W, C] with F % {pt} == H % {ph} == W % {pw} == 0"
            )
    if timesteps.shape != (b,):
        raise ValueError(f"timesteps must be [B] = [{b}], got {tuple(timesteps.shape)}")
    if text_states.ndim != 3 or text_states.shape[0] != b or text_states.shape[2] != spec.text_dim:
        raise ValueError(
            f"text_states must be [B, L, text_dim] = [{b}, L, {spec.text_dim}], got "
            f"{tuple(text_states.shape)}; check config.model.dit.text_dim against the text encoder"
        )
    if text_states.shape[1] > spec.text_len:
        raise ValueError(
            f"text_states has {text_states.shape[1]} tokens, more than config.model.dit.text_len "
            f"= {spec.text_len} (the model attends to exactly text_len tokens, zero-padded); "
            "truncate the caption to text_len tokens, as Wan's tokenizer does"
        )
    if spec.has_image:
        if image_tokens is None:
            raise ValueError(
                f"the i2v DiT needs image_tokens [B, 257, image_dim] = [{b}, 257, "
                f"{spec.image_dim}] (CLIP tokens of the conditioning frame), got None"
            )
        if image_tokens.ndim != 3 or image_tokens.shape[0] != b:
            raise ValueError(
                f"image_tokens must be [B, Li, image_dim] = [{b}, 257, {spec.image_dim}], got "
                f"{tuple(image_tokens.shape)}"
            )
        if image_tokens.shape[2] != spec.image_dim:
            raise ValueError(
                f"image_tokens must be [B, Li, {spec.image_dim}] (config.model.dit.image_dim), "
                f"got {tuple(image_tokens.shape)}"
            )
    elif image_tokens is not None:
        raise ValueError(
            "image_tokens were given to a t2v DiT, which has no image cross-attention; pass "
            "image_tokens=None or use an i2v config (variant='i2v', in_channels=36)"
        )


class WanDiT(nn.Module):
    """The Wan2.1 DiT; see the module docstring for shapes."""

    spec: DiTSpec

    def _blocks(self, x, context, image_context, e, cos, sin):
        s = self.spec
        block = Block
        if s.remat_policy != "none":
            block = nn.remat(
                Block, policy=REMAT_POLICIES[s.remat_policy], prevent_cse=not s.scan_layers
            )
        if s.scan_layers:
            stack = nn.scan(
                block,
                variable_axes={"params": 0, lora_lib.COLLECTION: 0},
                split_rngs={"params": True, "dropout": True},
                in_axes=(nn.broadcast,) * 5,
                length=s.num_layers,
                metadata_params={nn.PARTITION_NAME: LAYERS},
            )
            x, _ = stack(s, name="blocks")(x, context, image_context, e, cos, sin)
            return x
        for i in range(s.num_layers):
            x, _ = block(s, name=f"blocks_{i}")(x, context, image_context, e, cos, sin)
        return x

    @nn.compact
    def __call__(self, latents, timesteps, text_states, image_tokens=None):
        s = self.spec
        check_inputs(s, latents, timesteps, text_states, image_tokens)
        b, f, h, w, _ = latents.shape
        pt, ph, pw = s.patch_size
        grid = (f // pt, h // ph, w // pw)
        cos, sin = layers.rope_tables(grid, s.head_dim, s.rope_max_len)
        cos = nn.with_logical_constraint(cos, (LENGTH, None))
        sin = nn.with_logical_constraint(sin, (LENGTH, None))

        x = PatchEmbedding(s, name="patch_embedding")(latents).astype(jnp.float32)
        x = nn.with_logical_constraint(x, (BATCH, LENGTH, EMBED))

        sinusoid = layers.timestep_embedding(timesteps, s.freq_dim).astype(s.compute_dtype)
        time_mlp = MLPBlock(
            s, s.dim, s.dim, None, (None, EMBED), (BATCH, EMBED), name="time_embedding"
        )
        temb = time_mlp(sinusoid).astype(jnp.float32)
        proj = _dense(s, MODULATION_VECTORS * s.dim, (EMBED, MLP), "time_projection")
        e = proj(nn.silu(temb).astype(s.compute_dtype)).astype(jnp.float32)
        e = rearrange(e, "b (six d) -> b six d", six=MODULATION_VECTORS)

        text_mlp = MLPBlock(
            s, s.dim, s.dim, True, (MLP, EMBED), (BATCH, None, EMBED), name="text_embedding"
        )
        context = text_mlp(pad_text(text_states, s.text_len).astype(s.compute_dtype))
        context = nn.with_logical_constraint(context, (BATCH, None, EMBED))
        image_context = None
        if s.has_image:
            image_context = ImageEmbedding(s, name="img_emb")(image_tokens).astype(s.compute_dtype)
            image_context = nn.with_logical_constraint(image_context, (BATCH, None, EMBED))

        x = self._blocks(x, context, image_context, e, cos, sin)
        out = Head(s, name="head")(x, temb).astype(jnp.float32)
        return rearrange(
            out,
            "b (f h w) (p q r c) -> b (f p) (h q) (w r) c",
            f=grid[0],
            h=grid[1],
            w=grid[2],
            p=pt,
            q=ph,
            r=pw,
        )


def create(
    dit_cfg: ml_collections.ConfigDict, lora_cfg: ml_collections.ConfigDict | None = None
) -> WanDiT:
    """The DiT module for `config.model.dit`; with `lora_cfg` (config.train.lora, rank > 0) its
    targeted dense layers may carry adapters ('lora' collection, models/lora.py)."""
    return WanDiT(DiTSpec.from_config(dit_cfg, lora_cfg))


def dummy_inputs(dit_cfg: ml_collections.ConfigDict, batch: int = 1) -> dict:
    """Smallest valid inputs (one patch, one text and image token), for init and eval_shape."""
    spec = DiTSpec.from_config(dit_cfg)
    inputs = {
        "latents": jnp.zeros((batch, *spec.patch_size, spec.in_channels), jnp.float32),
        "timesteps": jnp.zeros((batch,), jnp.float32),
        "text_states": jnp.zeros((batch, 1, spec.text_dim), jnp.float32),
    }
    if spec.has_image:
        inputs["image_tokens"] = jnp.zeros((batch, 1, spec.image_dim), jnp.float32)
    return inputs


def init_params(dit_cfg: ml_collections.ConfigDict, rng: jax.Array):
    """Random parameters (boxed with logical axis names; `nn.meta.unbox` for plain arrays)."""
    return compiler.jit_init(create(dit_cfg).init)(rng, **dummy_inputs(dit_cfg))["params"]


def abstract_params(dit_cfg: ml_collections.ConfigDict):
    """The 'params' tree as ShapeDtypeStructs boxed with logical axis names (no allocation)."""
    return jax.eval_shape(lambda rng: init_params(dit_cfg, rng), jax.random.key(0))


def init_adapters(dit_cfg: ml_collections.ConfigDict, lora_cfg, rng: jax.Array):
    """Fresh LoRA adapters (the 'lora' collection, boxed with logical axis names) of the DiT for
    `config.train.lora` (rank > 0); the base init is traced but not returned (XLA drops it)."""
    module = create(dit_cfg, lora_cfg)
    variables = compiler.jit_init(module.init)(rng, **dummy_inputs(dit_cfg))
    return variables[lora_lib.COLLECTION]


def abstract_adapters(dit_cfg: ml_collections.ConfigDict, lora_cfg):
    """`init_adapters` as boxed ShapeDtypeStructs (no allocation)."""
    return jax.eval_shape(lambda rng: init_adapters(dit_cfg, lora_cfg, rng), jax.random.key(0))
