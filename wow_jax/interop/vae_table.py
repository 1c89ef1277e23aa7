"""Name table of the Wan2.1 VAE: Flax params <-> PyTorch state-dict names.

Two PyTorch namings exist for the same tensors:
  'wan':       wan/modules/vae.py `WanVAE_` (the published Wan2.1_VAE.pth): encoder.conv1,
               encoder.downsamples.N.residual.{0,2,3,6}, .shortcut, .resample.1, .time_conv,
               encoder.middle.{0,1,2}, encoder.head.{0,2}, conv1 / conv2 (quant convs),
               decoder.upsamples.N (one flat list over all stages), ...
  'diffusers': AutoencoderKLWan: encoder.conv_in, encoder.down_blocks.N.norm1/conv1/...,
               encoder.mid_block.resnets.J / attentions.0, encoder.norm_out / conv_out,
               quant_conv / post_quant_conv, decoder.up_blocks.I.resnets.J / upsamplers.0, ...

The table is data: MODULES maps a Flax module path (regex) to a torch prefix per naming, LEAVES
maps the param inside it to a torch suffix and layout transform. `rules(vae_cfg, naming)` walks the
model's own abstract param tree, so every Flax param gets exactly one rule.

RMS-norm gammas are [C, 1, 1(, 1)] channel-first in PyTorch and [1, 1(, 1), C] channels-last here:
the same axis move as a conv kernel, so they use Transform.CONV.
"""

import re

import ml_collections
from flax import linen as nn
from flax import traverse_util

from wow_jax.interop.mapping import Rule, Transform

NAMINGS = ("wan", "diffusers")

# Flax param path inside a module -> (diffusers suffix, wan suffix, transform).
LEAVES = {
    ("kernel",): ("weight", "weight", Transform.CONV),
    ("bias",): ("bias", "bias", Transform.IDENTITY),
    ("gamma",): ("gamma", "gamma", Transform.CONV),
    ("norm1", "gamma"): ("norm1.gamma", "residual.0.gamma", Transform.CONV),
    ("conv1", "kernel"): ("conv1.weight", "residual.2.weight", Transform.CONV),
    ("conv1", "bias"): ("conv1.bias", "residual.2.bias", Transform.IDENTITY),
    ("norm2", "gamma"): ("norm2.gamma", "residual.3.gamma", Transform.CONV),
    ("conv2", "kernel"): ("conv2.weight", "residual.6.weight", Transform.CONV),
    ("conv2", "bias"): ("conv2.bias", "residual.6.bias", Transform.IDENTITY),
    ("conv_shortcut", "kernel"): ("conv_shortcut.weight", "shortcut.weight", Transform.CONV),
    ("conv_shortcut", "bias"): ("conv_shortcut.bias", "shortcut.bias", Transform.IDENTITY),
    ("resample", "kernel"): ("resample.1.weight", "resample.1.weight", Transform.CONV),
    ("resample", "bias"): ("resample.1.bias", "resample.1.bias", Transform.IDENTITY),
    ("time_conv", "kernel"): ("time_conv.weight", "time_conv.weight", Transform.CONV),
    ("time_conv", "bias"): ("time_conv.bias", "time_conv.bias", Transform.IDENTITY),
    ("norm", "gamma"): ("norm.gamma", "norm.gamma", Transform.CONV),
    ("to_qkv", "kernel"): ("to_qkv.weight", "to_qkv.weight", Transform.CONV),
    ("to_qkv", "bias"): ("to_qkv.bias", "to_qkv.bias", Transform.IDENTITY),
    ("proj", "kernel"): ("proj.weight", "proj.weight", Transform.CONV),
    ("proj", "bias"): ("proj.bias", "proj.bias", Transform.IDENTITY),
}

# Flax module path regex -> (diffusers prefix, wan prefix). `{part}` is encoder/decoder, `{n}`
# the regex group, `{flat_res}` / `{flat_up}` the decoder's flat native index.
MODULES = (
    (r"quant_conv", "quant_conv", "conv1"),
    (r"post_quant_conv", "post_quant_conv", "conv2"),
    (r"(?P<part>encoder|decoder)/conv_in", "{part}.conv_in", "{part}.conv1"),
    (r"(?P<part>encoder|decoder)/norm_out", "{part}.norm_out", "{part}.head.0"),
    (r"(?P<part>encoder|decoder)/conv_out", "{part}.conv_out", "{part}.head.2"),
    (r"(?P<part>encoder|decoder)/mid_res_0", "{part}.mid_block.resnets.0", "{part}.middle.0"),
    (r"(?P<part>encoder|decoder)/mid_attn", "{part}.mid_block.attentions.0", "{part}.middle.1"),
    (r"(?P<part>encoder|decoder)/mid_res_1", "{part}.mid_block.resnets.1", "{part}.middle.2"),
    (r"encoder/down_blocks_(?P<n>\d+)", "encoder.down_blocks.{n}", "encoder.downsamples.{n}"),
    (
        r"decoder/up_blocks_(?P<i>\d+)_res_(?P<j>\d+)",
        "decoder.up_blocks.{i}.resnets.{j}",
        "decoder.upsamples.{flat_res}",
    ),
    (
        r"decoder/up_blocks_(?P<i>\d+)_upsample",
        "decoder.up_blocks.{i}.upsamplers.0",
        "decoder.upsamples.{flat_up}",
    ),
)


def _split(path: tuple[str, ...]) -> tuple[str, tuple[str, ...]]:
    """('encoder', 'down_blocks_0', 'conv1', 'kernel') -> ('encoder/down_blocks_0', leaf)."""
    for cut in range(len(path) - 1, 0, -1):
        if path[cut:] in LEAVES and any(
            re.fullmatch(pattern, "/".join(path[:cut])) for pattern, _, _ in MODULES
        ):
            return "/".join(path[:cut]), path[cut:]
    raise ValueError(f"VAE table: no rule for Flax param {'/'.join(path)}")


def torch_name(path: tuple[str, ...], naming: str, num_res_blocks: int) -> tuple[str, Transform]:
    """PyTorch name and layout transform of one Flax param path."""
    module, leaf = _split(path)
    diffusers_leaf, wan_leaf, transform = LEAVES[leaf]
    for pattern, diffusers_prefix, wan_prefix in MODULES:
        match = re.fullmatch(pattern, module)
        if match:
            groups = match.groupdict()
            per_stage = num_res_blocks + 2  # Native decoder list: res blocks + upsampler.
            if "i" in groups:
                i = int(groups["i"])
                groups["flat_res"] = i * per_stage + int(groups.get("j") or 0)
                groups["flat_up"] = i * per_stage + num_res_blocks + 1
            prefix = diffusers_prefix if naming == "diffusers" else wan_prefix
            suffix = diffusers_leaf if naming == "diffusers" else wan_leaf
            return f"{prefix.format(**groups)}.{suffix}", transform
    raise ValueError(f"VAE table: no module rule for {module}")


def rules(vae_cfg: ml_collections.ConfigDict, naming: str) -> list[Rule]:
    """One Rule per VAE parameter for `naming` in {'wan', 'diffusers'}."""
    if naming not in NAMINGS:
        raise ValueError(f"VAE naming must be one of {NAMINGS}, got {naming!r}")
    from wow_jax.models import vae  # Local import: the model imports interop-free modules only.

    flat = traverse_util.flatten_dict(nn.meta.unbox(vae.abstract_params(vae_cfg)))
    out = []
    for path in sorted(flat):
        name, transform = torch_name(path, naming, vae_cfg.num_res_blocks)
        out.append(Rule(name, path, transform))
    return out
