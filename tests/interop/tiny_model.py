"""A test-local model that exercises every kind of rule: a conv, linears and an nn.scan stack.

`Tiny` (Flax) and `TorchTiny` (PyTorch) compute the same function; `rules(naming)` maps their
parameters under two namings ('wan' and 'diffusers'), like the real per-model tables.
x: [B, H, W, C_IN] -> [B, H/2 * W/2, OUT].
"""

import jax
import numpy as np
from flax import linen as nn

from wow_jax import sharding as shd
from wow_jax.interop.mapping import Rule, Transform

DIM, LAYERS, C_IN, OUT = 16, 3, 3, 4


def _init(axes):
    return nn.with_logical_partitioning(nn.initializers.normal(0.5), axes)


class Block(nn.Module):
    @nn.compact
    def __call__(self, x, _):
        h = nn.Dense(2 * DIM, kernel_init=_init((shd.EMBED, shd.MLP)), name="fc1")(x)
        h = nn.Dense(
            DIM,
            kernel_init=_init((shd.MLP, shd.EMBED)),
            bias_init=_init((shd.EMBED,)),
            name="fc2",
        )(nn.gelu(h, approximate=True))
        scale = self.param("scale", _init((shd.EMBED,)), (DIM,))
        return (x + h) * scale, None


class Tiny(nn.Module):
    @nn.compact
    def __call__(self, x):
        kernel_axes = (None, None, shd.CONV_IN, shd.EMBED)
        x = nn.Conv(
            DIM, (2, 2), strides=(2, 2), padding="VALID", kernel_init=_init(kernel_axes),
            bias_init=_init((shd.EMBED,)), name="patch",
        )(x)  # fmt: skip
        x = x.reshape(x.shape[0], -1, DIM)
        stack = nn.scan(
            Block,
            variable_axes={"params": 0},
            split_rngs={"params": True},
            length=LAYERS,
            metadata_params={nn.PARTITION_NAME: shd.LAYERS},
        )
        x, _ = stack(name="blocks")(x, None)
        return nn.Dense(OUT, use_bias=False, kernel_init=_init((shd.EMBED, None)), name="head")(x)


def abstract_params():
    x = jax.ShapeDtypeStruct((1, 4, 4, C_IN), np.float32)
    return jax.eval_shape(Tiny().init, jax.random.key(0), x)["params"]


NAMES = {
    "wan": {
        "patch.w": "patch_embedding.weight",
        "patch.b": "patch_embedding.bias",
        "fc1.w": "blocks.{i}.ffn.0.weight",
        "fc1.b": "blocks.{i}.ffn.0.bias",
        "fc2.w": "blocks.{i}.ffn.2.weight",
        "fc2.b": "blocks.{i}.ffn.2.bias",
        "scale": "blocks.{i}.norm.weight",
        "head.w": "head.head.weight",
    },
    "diffusers": {
        "patch.w": "patch_embedding.proj.weight",
        "patch.b": "patch_embedding.proj.bias",
        "fc1.w": "blocks.{i}.ff.net.0.proj.weight",
        "fc1.b": "blocks.{i}.ff.net.0.proj.bias",
        "fc2.w": "blocks.{i}.ff.net.2.weight",
        "fc2.b": "blocks.{i}.ff.net.2.bias",
        "scale": "blocks.{i}.norm_out.weight",
        "head.w": "proj_out.weight",
    },
}


def rules(naming: str) -> list[Rule]:
    n = NAMES[naming]
    out = [
        Rule(n["patch.w"], ("patch", "kernel"), Transform.CONV),
        Rule(n["patch.b"], ("patch", "bias")),
        Rule(n["head.w"], ("head", "kernel"), Transform.LINEAR),
    ]
    for i in range(LAYERS):
        out += [
            Rule(n["fc1.w"].format(i=i), ("blocks", "fc1", "kernel"), Transform.LINEAR, i),
            Rule(n["fc1.b"].format(i=i), ("blocks", "fc1", "bias"), layer=i),
            Rule(n["fc2.w"].format(i=i), ("blocks", "fc2", "kernel"), Transform.LINEAR, i),
            Rule(n["fc2.b"].format(i=i), ("blocks", "fc2", "bias"), layer=i),
            Rule(n["scale"].format(i=i), ("blocks", "scale"), layer=i),
        ]
    return out


def rules_by_naming() -> dict[str, list[Rule]]:
    return {naming: rules(naming) for naming in NAMES}


def random_state_dict(naming: str, seed: int = 0) -> dict[str, np.ndarray]:
    """PyTorch-layout float32 tensors under `naming`."""
    rng = np.random.default_rng(seed)
    n = NAMES[naming]
    shapes = {
        n["patch.w"]: (DIM, C_IN, 2, 2),
        n["patch.b"]: (DIM,),
        n["head.w"]: (OUT, DIM),
    }
    for i in range(LAYERS):
        shapes[n["fc1.w"].format(i=i)] = (2 * DIM, DIM)
        shapes[n["fc1.b"].format(i=i)] = (2 * DIM,)
        shapes[n["fc2.w"].format(i=i)] = (DIM, 2 * DIM)
        shapes[n["fc2.b"].format(i=i)] = (DIM,)
        shapes[n["scale"].format(i=i)] = (DIM,)
    return {k: rng.normal(0, 0.5, s).astype(np.float32) for k, s in shapes.items()}


def torch_forward(state: dict[str, np.ndarray], naming: str, x: np.ndarray) -> np.ndarray:
    """The reference computation in PyTorch (NCHW conv, [out, in] linears)."""
    import torch  # noqa: PLC0415
    import torch.nn.functional as F  # noqa: PLC0415, N812

    n, t = NAMES[naming], {k: torch.from_numpy(v) for k, v in state.items()}
    h = F.conv2d(torch.from_numpy(x).permute(0, 3, 1, 2), t[n["patch.w"]], t[n["patch.b"]], 2)
    h = h.flatten(2).transpose(1, 2)
    for i in range(LAYERS):
        name = {k: v.format(i=i) for k, v in n.items()}
        f = F.gelu(F.linear(h, t[name["fc1.w"]], t[name["fc1.b"]]), approximate="tanh")
        h = (h + F.linear(f, t[name["fc2.w"]], t[name["fc2.b"]])) * t[name["scale"]]
    return F.linear(h, t[n["head.w"]]).numpy()
