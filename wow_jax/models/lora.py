"""LoRA (Hu et al. 2021) on the DiT's dense layers: y = x W + b + (alpha / rank) (x A) B.

The adapters are a Flax variable collection 'lora' beside 'params', declared by the targeted
dense layers themselves (`LoRADense`), so they follow the DiT's structure: inside the scanned
blocks they are stacked along the leading 'layers' axis, remat recomputes them with the block,
and they carry logical axis names (A: [in, rank] with the kernel's input axis, B: [rank, out]
with its output axis, rank unsharded), so they shard like their base kernel.

    lora_a [..., in, rank]   init 'kaiming' (peft's default, kaiming-uniform a=sqrt(5)) or
                             'gaussian' (normal, std 1/rank)
    lora_b [..., rank, out]  zeros: a fresh adapter leaves the model unchanged

`dit.apply({'params': base, 'lora': adapters}, ...)` runs base + adapter; without the 'lora'
collection the same module is the base model. `merge` folds adapters (times a scale) into the
base kernels: W + scale (alpha / rank) A B, the full merged parameters generation and export use.
A layer is targeted when its module path ('blocks/self_attn/q', 'blocks_3/ffn/fc1') matches
`config.train.lora.targets` (re.search).
"""

import dataclasses
import math
import re

import jax
import jax.numpy as jnp
import ml_collections
from flax import linen as nn
from flax import traverse_util

COLLECTION = "lora"  # Variable collection of the adapters (and top-level key in train params).
A, B = "lora_a", "lora_b"  # Adapter leaves of a targeted dense layer.
KERNEL = "kernel"  # The base weight an adapter is added to.
INITS = ("kaiming", "gaussian")  # config.train.lora.init choices.


@dataclasses.dataclass(frozen=True)
class LoRASpec:
    """Hashable copy of `config.train.lora` (configs/base.py documents each field)."""

    rank: int
    alpha: float
    targets: str
    dropout: float
    init: str
    param_dtype: str

    @classmethod
    def from_config(cls, cfg: ml_collections.ConfigDict) -> "LoRASpec | None":
        """None when `cfg.rank` is 0 (LoRA off)."""
        if cfg.rank == 0:
            return None
        return cls(**{f.name: cfg[f.name] for f in dataclasses.fields(cls)})

    @property
    def scaling(self) -> float:
        return self.alpha / self.rank

    def targets_path(self, path: tuple[str, ...]) -> bool:
        return re.search(self.targets, "/".join(path)) is not None


def _a_init(init: str, rank: int):
    if init == "kaiming":  # torch.nn.init.kaiming_uniform_(a=sqrt(5)) on A [rank, in]: fan_in=in.
        return nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform", in_axis=-2)
    return nn.initializers.normal(1.0 / rank)


class LoRADense(nn.Dense):
    """nn.Dense (same 'kernel'/'bias' params) plus, when `lora` is set and the layer's path is a
    target, the adapter in the 'lora' collection. x: [..., in] -> [..., features].

    `kernel_axes`: logical axes of the kernel [in, out] (built by `layers.dense(...,
    module=LoRADense)`); the adapter output is added only when the 'lora' collection holds this
    layer's adapter (or at init), so without it this is nn.Dense."""

    lora: "LoRASpec | None" = None
    kernel_axes: tuple = (None, None)

    @nn.compact
    def __call__(self, inputs):
        y = nn.Dense.__call__(self, inputs)
        spec = self.lora
        if spec is None or not spec.targets_path(self.path):
            return y
        if not (self.is_initializing() or self.has_variable(COLLECTION, A)):
            return y
        dtype = jnp.dtype(spec.param_dtype)
        axis_in, axis_out = self.kernel_axes
        a = self.variable(
            COLLECTION,
            A,
            nn.with_logical_partitioning(_a_init(spec.init, spec.rank), (axis_in, None)),
            self.make_rng("params") if self.is_initializing() else None,
            (inputs.shape[-1], spec.rank),
            dtype,
        ).value
        b = self.variable(
            COLLECTION,
            B,
            nn.with_logical_partitioning(nn.initializers.zeros_init(), (None, axis_out)),
            None,
            (spec.rank, self.features),
            dtype,
        ).value
        x = inputs
        if spec.dropout > 0:
            x = nn.Dropout(spec.dropout)(x, deterministic=not self.has_rng("dropout"))
        x, a, b = nn.dtypes.promote_dtype(x, nn.meta.unbox(a), nn.meta.unbox(b), dtype=self.dtype)
        return y + (spec.scaling * ((x @ a) @ b)).astype(y.dtype)


def merge(params: dict, adapters: dict, spec: LoRASpec, scale: float = 1.0) -> dict:
    """Base params with every adapter folded in: kernel + scale * (alpha / rank) * A @ B,
    computed in float32 and stored in the kernel's dtype. A: [..., in, r], B: [..., r, out]
    (the '...' is the stacked layers axis of scanned blocks). Other leaves are returned as is."""
    flat, pairs = traverse_util.flatten_dict(params), traverse_util.flatten_dict(adapters)
    for module in adapter_modules(adapters):
        kernel_path = (*module, KERNEL)
        if kernel_path not in flat:
            raise ValueError(
                f"adapter {'/'.join(module)} has no base kernel {'/'.join(kernel_path)}; the "
                "adapters were trained for another DiT config (config.model.dit)"
            )
        a, b = (pairs[(*module, name)].astype(jnp.float32) for name in (A, B))
        delta = jnp.einsum("...ir,...ro->...io", a, b)
        kernel = flat[kernel_path]
        merged = kernel.astype(jnp.float32) + (scale * spec.scaling) * delta
        flat[kernel_path] = merged.astype(kernel.dtype)
    return traverse_util.unflatten_dict(flat)


def adapter_modules(adapters: dict) -> list[tuple[str, ...]]:
    """Module paths ('blocks', 'self_attn', 'q') holding an adapter, sorted."""
    return sorted({path[:-1] for path in traverse_util.flatten_dict(adapters)})


def count(adapters) -> int:
    """Adapter values (boxed or plain, arrays or ShapeDtypeStructs)."""
    leaves = jax.tree.leaves(nn.meta.unbox(adapters))
    return sum(math.prod(leaf.shape) for leaf in leaves)
