"""Multi-head dot-product attention behind one function; the kernel is chosen by a config string.

  'xla':    einsum + float32 softmax; runs on every backend and under any sharding (GSPMD splits
            the query tokens over the 'sequence' mesh axis and gathers keys/values).
  'cudnn':  jax.nn.dot_product_attention(implementation='cudnn'), the fused flash kernel on NVIDIA
            GPUs (bfloat16/float16 only).
  'splash': the TPU Pallas splash-attention kernel, run per device under `jax.shard_map`: batch
            over ('data', 'fsdp'), heads over 'tensor', query tokens over 'sequence', keys and
            values gathered whole. A mesh axis that does not divide its dimension (the batch of
            1 of parameter init, the guidance batch of 2 on fsdp=4) moves on to the heads, then
            to the query tokens, else that dimension is computed whole on each device
            (`splash_specs`). Sequences are zero-padded to the block size and padded keys masked
            out with segment ids.
  'auto':   resolved for the compile target by `resolve_kernel` (config.model.dit.attention):
            'splash' on TPU, 'cudnn' on GPU, 'xla' on CPU.

All take q: [B, Lq, N, D], k, v: [B, Lk, N, D] and return [B, Lq, N, D] in q.dtype, with the
softmax scale 1/sqrt(D) (torch scaled_dot_product_attention).

'xla' with `cpu_kernels=True` (config.model.cpu_kernels resolved for a CPU compile target) uses
a hand-written backward pass that XLA:CPU runs faster than autodiff; otherwise it is the plain
formula with no custom_vjp, so forward-mode autodiff (jax.jvp, jax.linearize) passes through.
"""

import functools

import jax
import jax.numpy as jnp
from einops import rearrange
from flax import linen as nn
from jax.sharding import PartitionSpec

from wow_jax import sharding

KERNELS = ("xla", "cudnn", "splash")
AUTO_KERNELS = {"tpu": "splash", "gpu": "cudnn", "cpu": "xla"}  # 'auto' per compile target.
SPLASH_BLOCK = 512  # Largest splash block along queries and keys.
SPLASH_MIN_BLOCK = 128  # Splash blocks are multiples of the TPU lane width.


def resolve_kernel(kernel: str, backend: str) -> str:
    """config.model.dit.attention for a compile target ('cpu', 'gpu', 'tpu'): 'auto' becomes
    AUTO_KERNELS[backend]; any other kernel is kept."""
    if kernel != "auto":
        return kernel
    if backend not in AUTO_KERNELS:
        raise ValueError(
            f"config.model.dit.attention='auto' knows backends {sorted(AUTO_KERNELS)}, got "
            f"{backend!r}; set the kernel explicitly ({list(KERNELS)})"
        )
    return AUTO_KERNELS[backend]


def _check_shapes(q: jax.Array, k: jax.Array, v: jax.Array) -> None:
    if q.ndim != 4 or k.shape != v.shape or k.ndim != 4 or q.shape[::2] != k.shape[::2]:
        raise ValueError(
            "attention expects q [B, Lq, N, D] and k, v [B, Lk, N, D] with equal B, N, D; got "
            f"q {q.shape}, k {k.shape}, v {v.shape}"
        )


def xla_attention(q: jax.Array, k: jax.Array, v: jax.Array, cpu_kernels: bool) -> jax.Array:
    """Plain attention: logits and softmax in float32, matmuls in the input dtype.

    The queries are scaled before the logits matmul (a [Lq, D] multiply instead of [Lq, Lk]);
    heads go in front ([B, N, L, D]) for the batched matmuls. With `cpu_kernels` the backward
    pass is written out (softmax gradient from the saved probabilities), which XLA:CPU runs
    faster than the autodiff of the same formula.
    """
    if cpu_kernels:
        return _cpu_attention(q, k, v)
    return _xla_attention_fwd(q, k, v)[0]


@jax.custom_vjp
def _cpu_attention(q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
    return _xla_attention_fwd(q, k, v)[0]


def _xla_attention_fwd(q, k, v):
    scale = q.shape[-1] ** -0.5
    qh, kh, vh = (rearrange(t, "b l n d -> b n l d") for t in (q, k, v))
    qh = (qh.astype(jnp.float32) * scale).astype(q.dtype)
    logits = jnp.einsum("bnqd,bnkd->bnqk", qh, kh, preferred_element_type=jnp.float32)
    probs = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
    out = jnp.einsum("bnqk,bnkd->bnqd", probs, vh)
    return rearrange(out, "b n l d -> b l n d").astype(q.dtype), (qh, kh, vh, probs, out)


def _xla_attention_bwd(res, grad):
    qh, kh, vh, probs, out = res  # qh: the scaled queries.
    scale = qh.shape[-1] ** -0.5
    gh = rearrange(grad, "b l n d -> b n l d").astype(vh.dtype)
    dv = jnp.einsum("bnqk,bnqd->bnkd", probs, gh)
    dprobs = jnp.einsum("bnqd,bnkd->bnqk", gh, vh, preferred_element_type=jnp.float32)
    delta = jnp.sum(gh.astype(jnp.float32) * out.astype(jnp.float32), axis=-1, keepdims=True)
    dlogits = (probs.astype(jnp.float32) * (dprobs - delta)).astype(qh.dtype)
    dq = jnp.einsum("bnqk,bnkd->bnqd", dlogits, kh, preferred_element_type=jnp.float32) * scale
    dk = jnp.einsum("bnqk,bnqd->bnkd", dlogits, qh)
    return tuple(
        rearrange(t, "b n l d -> b l n d").astype(dtype)
        for t, dtype in ((dq, qh.dtype), (dk, kh.dtype), (dv, vh.dtype))
    )


_cpu_attention.defvjp(_xla_attention_fwd, _xla_attention_bwd)


def cudnn_attention(q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
    """cuDNN fused flash attention (NVIDIA GPU, bfloat16/float16)."""
    backend = jax.default_backend()
    if backend != "gpu":
        raise ValueError(
            f"config.model.dit.attention='cudnn' needs an NVIDIA GPU, but JAX runs on {backend!r}; "
            "use attention='xla' (any backend) or 'splash' (TPU)"
        )
    if q.dtype not in (jnp.bfloat16, jnp.float16):
        raise ValueError(
            f"config.model.dit.attention='cudnn' computes in bfloat16/float16, got {q.dtype}; "
            "set config.model.dit.dtype='bfloat16' or use attention='xla'"
        )
    return jax.nn.dot_product_attention(q, k, v, implementation="cudnn")


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def _splash_block(length: int) -> int:
    return min(SPLASH_BLOCK, _round_up(length, SPLASH_MIN_BLOCK))


def _splash_local(q: jax.Array, k: jax.Array, v: jax.Array, interpret: bool) -> jax.Array:
    """Splash attention on one device's shard. q: [b, lq, n, d], k, v: [b, lk, n, d]."""
    from jax.experimental.pallas.ops.tpu.splash_attention import (
        splash_attention_kernel as splash,
    )
    from jax.experimental.pallas.ops.tpu.splash_attention import (
        splash_attention_mask as masks,
    )

    _, lq, n, d = q.shape
    lk = k.shape[1]
    block_q, block_kv = _splash_block(lq), _splash_block(lk)
    lq_pad, lk_pad = _round_up(lq, block_q), _round_up(lk, block_kv)
    q = (q.astype(jnp.float32) * d**-0.5).astype(q.dtype)  # The kernel does not scale.
    q, k, v = (rearrange(x, "b l n d -> b n l d") for x in (q, k, v))
    q = jnp.pad(q, ((0, 0), (0, 0), (0, lq_pad - lq), (0, 0)))
    k = jnp.pad(k, ((0, 0), (0, 0), (0, lk_pad - lk), (0, 0)))
    v = jnp.pad(v, ((0, 0), (0, 0), (0, lk_pad - lk), (0, 0)))
    # Padded keys get segment 0 and are never attended; every query (padded ones too, whose
    # outputs are dropped) sees segment 1, so no row is fully masked.
    segments = splash.SegmentIds(
        q=jnp.ones((lq_pad,), jnp.int32), kv=(jnp.arange(lk_pad) < lk).astype(jnp.int32)
    )
    blocks = splash.BlockSizes(
        block_q=block_q,
        block_kv=block_kv,
        block_kv_compute=block_kv,
        block_q_dkv=block_q,
        block_kv_dkv=block_kv,
        block_kv_dkv_compute=block_kv,
        block_q_dq=block_q,
        block_kv_dq=block_kv,
    )
    mask = masks.MultiHeadMask([masks.FullMask((lq_pad, lk_pad))] * n)
    kernel = splash.make_splash_mha(
        mask, block_sizes=blocks, head_shards=1, q_seq_shards=1, interpret=interpret
    )
    out = jax.vmap(kernel, in_axes=(0, 0, 0, None))(q, k, v, segments)
    return rearrange(out[:, :, :lq], "b n l d -> b l n d").astype(q.dtype)


def _axes(entry) -> tuple[str, ...]:
    return (entry,) if isinstance(entry, str) else tuple(entry or ())


def _fit(axes: tuple[str, ...], size: int, mesh) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(kept, spilled): the longest prefix of `axes` whose mesh sizes multiply to a divisor of
    `size`, and the axes after it."""
    ways = 1
    for i, axis in enumerate(axes):
        if size % (ways * mesh.shape[axis]):
            return axes[:i], axes[i:]
        ways *= mesh.shape[axis]
    return axes, ()


def splash_specs(q_shape: tuple[int, ...], mesh, rules) -> tuple[PartitionSpec, PartitionSpec]:
    """(q/out spec, k/v spec) of the splash shard_map for q: [B, Lq, N, D] on `mesh`.

    The logical rules place B, Lq and N ((BATCH, LENGTH, HEADS)); each dimension keeps the mesh
    axes that divide it, and the axes the batch cannot take move on to the heads, those the heads
    cannot take to the query tokens (keys and values are whole on every device). Axes nothing
    takes leave that work replicated: correct, only slower.
    """
    b, lq, n, _ = q_shape
    batch, length, heads, _ = (
        _axes(e)
        for e in nn.logical_to_mesh_axes(
            (sharding.BATCH, sharding.LENGTH, sharding.HEADS, sharding.KV), rules
        )
    )
    batch, spilled = _fit(batch, b, mesh)
    heads, spilled = _fit(heads + spilled, n, mesh)
    length, _ = _fit(length + spilled, lq, mesh)
    spec = [axes[0] if len(axes) == 1 else axes or None for axes in (batch, length, heads)]
    return PartitionSpec(spec[0], spec[1], spec[2], None), PartitionSpec(spec[0], None, spec[2])


def splash_attention(
    q: jax.Array, k: jax.Array, v: jax.Array, interpret: bool = False
) -> jax.Array:
    """TPU splash attention; under a mesh it runs per shard through `jax.shard_map`
    (`splash_specs`).

    `interpret=True` runs the Pallas kernel in the interpreter (any backend; slow, for tests).
    """
    local = functools.partial(_splash_local, interpret=interpret)
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty:
        return local(q, k, v)
    rules = nn.get_logical_axis_rules() or sharding.LOGICAL_RULES
    q_spec, kv_spec = splash_specs(q.shape, mesh, rules)
    return jax.shard_map(
        local, mesh=mesh, in_specs=(q_spec, kv_spec, kv_spec), out_specs=q_spec, check_vma=False
    )(q, k, v)


def dot_product_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    kernel: str = "xla",
    interpret: bool = False,
    cpu_kernels: bool = False,
) -> jax.Array:
    """q: [B, Lq, N, D], k, v: [B, Lk, N, D] -> [B, Lq, N, D] with the chosen `kernel`
    (`cpu_kernels`: the 'xla' kernel's CPU backward pass). An unresolved 'auto' (a module
    called outside wow_jax.main, which resolves it for the compile target) is the kernel of the
    default backend."""
    _check_shapes(q, k, v)
    kernel = resolve_kernel(kernel, jax.default_backend())
    if kernel == "xla":
        return xla_attention(q, k, v, cpu_kernels)
    if kernel == "cudnn":
        return cudnn_attention(q, k, v)
    if kernel == "splash":
        return splash_attention(q, k, v, interpret=interpret)
    raise ValueError(f"config.model.dit.attention must be one of {list(KERNELS)}, got {kernel!r}")
