"""Trained LoRA adapters applied to a base DiT: read from a LoRA run, merged with a scale, and
mode `merge`, which writes the merged DiT as a full Orbax checkpoint.

    adapters = read(config, mesh)                # the 'lora' subtree of sample.lora_checkpoint
    dit = merged(config, base_dit, mesh)         # base + sample.lora_scale * (alpha/rank) A @ B

A LoRA run (config.train.lora.rank > 0) checkpoints only {'lora': adapters} (and their EMA); its
base is the run's checkpoint.init_from. Generation, act and evaluate merge the adapters into the
DiT they read (`wow_jax.sampling.pipeline.load_for_generation`) when sample.lora_checkpoint is
set; the run's train.lora.* keys come with it (wow_jax.rundir). Mode merge:

    python -m wow_jax.main --config=configs/wow14b.py --workdir=W --config.mode=merge \\
        --config.checkpoint.init_from=/ckpt/wow14b_dit --config.sample.lora_checkpoint=runs/lora \\
        --config.convert.target=/ckpt/wow14b_merged      # then export it with mode convert
"""

import jax
import ml_collections
from absl import logging

from wow_jax import checkpointing, sharding
from wow_jax import models as registry
from wow_jax.models import lora as lora_lib


def spec(config: ml_collections.ConfigDict) -> lora_lib.LoRASpec:
    """The adapters' LoRASpec (config.train.lora, adopted from the LoRA run); refuses rank 0."""
    found = lora_lib.LoRASpec.from_config(config.train.lora)
    if found is None:
        raise ValueError(
            f"config.sample.lora_checkpoint={config.sample.lora_checkpoint!r} is set but "
            "config.train.lora.rank is 0: point it at a LoRA run directory (its train.lora.* keys "
            "are adopted) or give --config.train.lora.rank/alpha/targets as trained"
        )
    return found


def read(config: ml_collections.ConfigDict, mesh) -> dict:
    """The adapters of sample.lora_checkpoint (sample.lora_params_key: 'params' or the EMA
    'ema_params'), placed on `mesh` like their base kernels."""
    dit_cfg = registry.model_config(config, "dit")
    abstract = registry.load("dit").abstract_adapters(dit_cfg, config.train.lora)
    target = sharding.abstract_on_mesh(abstract, mesh, sharding.rules(config.mesh))
    path, key = config.sample.lora_checkpoint, config.sample.lora_params_key
    return checkpointing.restore_subtrees(path, {lora_lib.COLLECTION: target}, key)[
        lora_lib.COLLECTION
    ]


def merged(config: ml_collections.ConfigDict, base_dit: dict, mesh) -> dict:
    """`base_dit` with sample.lora_checkpoint's adapters folded in at sample.lora_scale, on the
    base's shardings and dtypes."""
    lora_spec = spec(config)
    adapters = read(config, mesh)
    scale = config.sample.lora_scale
    out_shardings = jax.tree.map(lambda x: x.sharding, base_dit)
    merge = jax.jit(
        lambda base, a: lora_lib.merge(base, a, lora_spec, scale), out_shardings=out_shardings
    )
    logging.info(
        "LoRA %s: %d adapters of rank %d merged at scale %g",
        config.sample.lora_checkpoint,
        len(lora_lib.adapter_modules(adapters)),
        lora_spec.rank,
        scale,
    )
    return merge(base_dit, adapters)


def read_base(config: ml_collections.ConfigDict, mesh) -> dict:
    """The base DiT of mode merge: sample.dit_checkpoint, else checkpoint.init_from ('params')."""
    path = config.sample.dit_checkpoint or config.checkpoint.init_from
    if not path:
        raise ValueError(
            "mode merge needs the base DiT: set --config.checkpoint.init_from (or "
            "--config.sample.dit_checkpoint) to the checkpoint the adapters were trained on"
        )
    abstract = registry.load("dit").abstract_params(registry.model_config(config, "dit"))
    target = sharding.abstract_on_mesh(abstract, mesh, sharding.rules(config.mesh))
    return checkpointing.restore_subtrees(path, {"dit": target})["dit"]


def default_target(config: ml_collections.ConfigDict, workdir: str) -> str:
    return config.convert.target or f"{workdir}/dit_merged"


def run_merge(config: ml_collections.ConfigDict, workdir: str) -> None:
    """Mode merge: writes {'params': {'dit': base + scale * adapters}} to convert.target
    ('' = <workdir>/dit_merged), a checkpoint generation and mode convert's export read."""
    if not config.sample.lora_checkpoint:
        raise ValueError(
            "mode merge needs the adapters: set --config.sample.lora_checkpoint to the LoRA run"
        )
    target = default_target(config, workdir)
    if checkpointing.as_path(target).exists():
        raise ValueError(f"config.convert.target {target} exists; choose a new folder")
    mesh = sharding.make_mesh(config.mesh)
    dit = merged(config, read_base(config, mesh), mesh)
    checkpointing.save_params(target, {"dit": dit})
    print(f"merged {config.sample.lora_checkpoint} into the base DiT: {target}")
