"""Export of trained LoRA adapters as one .safetensors file that diffusers' Wan LoRA loader
(`WanPipeline.load_lora_weights`, `WanLoraLoaderMixin`) reads; mode convert with
`convert.component='lora'`:

    python -m wow_jax.main --config=configs/wow14b.py --config.mode=convert \\
        --config.convert.direction=export --config.convert.component=lora \\
        --config.convert.source=runs/lora --config.convert.target=/out/lora

Names come from the DiT's name table (wow_jax/interop/dit_table.py): each adapted linear layer
`<module>.weight` gets `<prefix><module>.lora_A.weight` [rank, in] = A^T and
`<prefix><module>.lora_B.weight` [out, rank] = (alpha / rank) B^T. The prefix is
'diffusion_model.' for naming 'wan' (Wan-native names, which diffusers converts, as ComfyUI and
DiffSynth read them) and 'transformer.' for naming 'diffusers' (diffusers' own names). alpha/rank
is folded into B, so the loaders' default scale (peft's lora_alpha = rank) reproduces the model.
The file is `<target>/pytorch_lora_weights.safetensors`, diffusers' default weight name.
"""

from pathlib import Path

import numpy as np
from flax import traverse_util

from wow_jax import checkpointing
from wow_jax.interop import dit_table, exporter, formats
from wow_jax.interop.mapping import Transform
from wow_jax.models import lora as lora_lib

WEIGHTS_NAME = "pytorch_lora_weights.safetensors"  # diffusers' default LoRA weight name.
PREFIXES = {"wan": "diffusion_model.", "diffusers": "transformer."}


def adapter_tensors(adapters: dict, dit_cfg, spec: lora_lib.LoRASpec, naming: str) -> dict:
    """{PyTorch name: array} of the adapters (a plain tree of numpy arrays, the 'lora' subtree)
    in `naming` ('wan' or 'diffusers'); every adapted module must have a linear rule."""
    flat = traverse_util.flatten_dict(adapters)
    modules = set(lora_lib.adapter_modules(adapters))
    out, covered = {}, set()
    for rule in dit_table.rules(dit_cfg, naming):
        module = rule.flax_path[:-1]
        if rule.transform is not Transform.LINEAR or module not in modules:
            continue
        a, b = (np.asarray(flat[(*module, name)], np.float32) for name in (lora_lib.A, lora_lib.B))
        if rule.layer is not None:
            a, b = a[rule.layer], b[rule.layer]
        stem = PREFIXES[naming] + rule.torch_name.removesuffix(".weight")
        out[f"{stem}.lora_A.weight"] = a.T
        out[f"{stem}.lora_B.weight"] = (spec.scaling * b).T
        covered.add(module)
    missing = sorted("/".join(m) for m in modules - covered)
    if missing:
        raise ValueError(
            f"adapters {missing} have no linear layer in the DiT name table; they were trained "
            "for another config.model.dit"
        )
    return out


def export_adapter(config, target: Path, progress: bool = True) -> dict:
    """Writes the adapters of convert.source (convert.params_key: 'params' or 'ema_params') to
    `<target>/pytorch_lora_weights.safetensors` in convert.naming ('auto' = 'wan') and
    convert.dtype. Returns the report."""
    del progress
    c = config.convert
    spec = lora_lib.LoRASpec.from_config(config.train.lora)
    if spec is None:
        raise ValueError(
            f"config.convert.component='lora' exports adapters, but config.train.lora.rank is 0: "
            f"point config.convert.source at the LoRA run directory (its train.lora.* keys are "
            f"adopted), got {c.source!r}"
        )
    naming = "wan" if c.naming == "auto" else c.naming
    if naming not in PREFIXES:
        raise ValueError(
            f"config.convert.naming must be 'wan' or 'diffusers' for LoRA, got {naming!r}"
        )
    restored = checkpointing.restore_subtrees(c.source, {lora_lib.COLLECTION: None}, c.params_key)
    adapters = traverse_util.unflatten_dict(
        {k: np.asarray(v) for k, v in traverse_util.flatten_dict(restored["lora"]).items()}
    )
    tensors = adapter_tensors(adapters, config.model.dit, spec, naming)
    dtype = exporter.DTYPES[c.dtype]
    path = Path(target) / WEIGHTS_NAME
    if path.exists() and not c.overwrite:
        raise ValueError(f"{path} exists; set --config.convert.overwrite=true to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    names = sorted(tensors)
    entries = [(n, tensors[n].shape, dtype) for n in names]
    partial = path.with_name(path.name + ".incomplete")
    formats.write_safetensors(partial, entries, (tensors[n].astype(dtype) for n in names))
    partial.replace(path)
    return {"file": str(path), "tensors": len(names), "naming": naming, "rank": spec.rank}
