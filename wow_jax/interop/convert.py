"""`mode=convert`: PyTorch <-> Orbax checkpoint conversion driven by `config.convert`.

    python -m wow_jax.main --config=configs/wow14b.py --config.mode=convert \\
        --config.convert.component=dit --config.convert.source=/ckpt/WoW-1-Wan-14B \\
        --config.convert.target=/ckpt/wow14b_dit_orbax

import: `source` is a Wan-native file/folder or a diffusers folder; the Orbax checkpoint is laid
out for `config.mesh` and stores params in `config.model.<component>.param_dtype`. `overlay` is a
file loaded over the source's tensors ('auto': a WoW release folder's WoW_video_dit.pt for the
DiT); `trust_pickle` allows .pth files that load only with full unpickling.
export: `source` is an Orbax checkpoint (imported or from training; `params_key` picks the
params or EMA params); the output is a diffusers folder or Wan-native files. Component 'lora'
exports a LoRA run's adapters as one .safetensors file (interop/lora_export.py).
"""

import os
from pathlib import Path

import ml_collections
from etils import epath

from wow_jax import checkpointing, sharding
from wow_jax.interop import exporter, importer, lora_export, registry

LORA = "lora"  # convert.component exporting a LoRA run's adapters (interop/lora_export.py).


def default_target(convert: ml_collections.ConfigDict, workdir: str) -> "epath.Path | Path":
    """The Orbax checkpoint written by an import (an epath: a local folder or a URL such as
    gs://b/x), or the local PyTorch folder written by an export."""
    if convert.direction == "import":
        return checkpointing.as_path(convert.target or f"{workdir}/{convert.component}_orbax")
    if convert.target:
        return Path(convert.target)
    naming = "diffusers" if convert.naming == "auto" else convert.naming
    return Path(workdir) / f"{convert.component}_{naming}"


def convert(config: ml_collections.ConfigDict, workdir: str, progress: bool = True) -> dict:
    """Runs the conversion `config.convert` describes; returns the report dict."""
    c = config.convert
    if c.component == LORA:
        if c.direction != "export":
            raise ValueError("config.convert.component='lora' is export only (direction=export)")
        target = default_target(c, workdir)
        refuse_overlap(c.source, target)
        return lora_export.export_adapter(config, target, progress)
    component = registry.get(c.component)
    model_cfg = config.model[component.name]
    target = default_target(c, workdir)
    refuse_overlap(c.source, target)
    if c.direction == "import":
        mesh = sharding.make_mesh(config.mesh)
        return importer.import_checkpoint(
            c.component,
            c.source,
            target,
            model_cfg,
            mesh,
            naming=c.naming,
            overwrite=c.overwrite,
            overlay=c.overlay,
            trust_pickle=c.trust_pickle,
            progress=progress,
        )
    return exporter.export_checkpoint(
        c.component,
        c.source,
        target,
        model_cfg,
        naming="diffusers" if c.naming == "auto" else c.naming,
        params_key=c.params_key,
        dtype=c.dtype,
        max_shard_size=c.max_shard_size,
        overwrite=c.overwrite,
        progress=progress,
    )


def refuse_overlap(source, target) -> None:
    """Refuses a target that is, is inside or contains the source (paths resolved), which an
    overwrite or the target's own files could damage."""
    if not str(source):
        return  # No source: the reader says so.
    a, b = (_resolved(p) for p in (source, target))
    relation = (
        "is" if a == b else "is inside" if b.startswith(a + "/") else
        "contains" if a.startswith(b + "/") else None
    )  # fmt: skip
    if relation:
        raise ValueError(
            f"config.convert.target {target} {relation} config.convert.source {source}; "
            "choose a target outside the source"
        )


def _resolved(path) -> str:
    """A URL as it is, a local path absolute with its links resolved (no trailing '/')."""
    text = str(path)
    return text.rstrip("/") if "://" in text else os.path.realpath(text)


def run_convert(config: ml_collections.ConfigDict, workdir: str) -> None:
    """Mode convert (wow_jax.main reports bad input in one line)."""
    report = convert(config, workdir)
    print(f"convert {config.convert.direction} {config.convert.component}: {report}")
