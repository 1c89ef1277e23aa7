"""Mode `describe`: the sampling recipe of the config (scheduler, grid, steps, shift, guidance,
negative prompt, component precisions), then parameter count and bytes of every model component
and the mesh, without allocating device memory (shapes come from `jax.eval_shape`)."""

import jax
import ml_collections
import numpy as np
from flax import linen as nn

from wow_jax import models, sharding
from wow_jax.sampling import schedulers


def component_summary(
    abstract_params, mesh: jax.sharding.Mesh, rules: sharding.Rules = sharding.LOGICAL_RULES
) -> dict:
    """Counts parameters and bytes, in total and on the most loaded device of `mesh` (params
    placed by the logical-axis `rules`)."""
    shardings = sharding.variable_shardings(abstract_params, mesh, rules)
    leaves = jax.tree.leaves(nn.meta.unbox(abstract_params))
    count = sum(int(np.prod(leaf.shape)) for leaf in leaves)
    total_bytes = sum(int(np.prod(leaf.shape)) * leaf.dtype.itemsize for leaf in leaves)
    per_device = sum(
        int(np.prod(s.shard_shape(leaf.shape))) * leaf.dtype.itemsize
        for leaf, s in zip(leaves, jax.tree.leaves(shardings), strict=True)
    )
    return {"params": count, "bytes": total_bytes, "bytes_per_device": per_device}


def _gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB"


def recipe_lines(config: ml_collections.ConfigDict) -> list[str]:
    """The generation recipe of `config` (config.sample and each world-model component's compute
    and parameter dtypes), one line per aspect."""
    sample = config.sample
    precisions = ", ".join(
        f"{n} {config.model[n].dtype} (params {config.model[n].param_dtype})"
        for n in models.WORLD_MODEL_NAMES
    )
    return [
        f"scheduler: {schedulers.describe(sample)}",
        f"guidance: {sample.guidance}, seed {sample.seed}, conditioning frame "
        f"{sample.image_resize!r} (sample.image_resize)",
        f"negative prompt: {sample.negative_prompt!r}",
        f"precision: {precisions}",
    ]


def run_describe(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Prints the recipe, then prints and returns {component: summary} for every component of the
    model registry."""
    del workdir
    print("\n".join(recipe_lines(config)))
    mesh, rules = sharding.make_mesh(config.mesh), sharding.rules(config.mesh)
    axes = ", ".join(f"{n}={s}" for n, s in mesh.shape.items())
    print(f"mesh: {axes} over {mesh.devices.size} {jax.devices()[0].platform} device(s)")
    summaries = {}
    for name in models.COMPONENT_NAMES:
        abstract = models.load(name).abstract_params(models.model_config(config, name))
        summary = component_summary(abstract, mesh, rules)
        summaries[name] = summary
        print(
            f"{name:>5}: {summary['params']:,} params, {_gib(summary['bytes'])}, "
            f"{_gib(summary['bytes_per_device'])} per device"
        )
    return summaries
