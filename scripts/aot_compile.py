"""AOT-compile the DiT forward (+ backward) for a TPU topology on any host, and print per-chip
memory: checks that a config fits before renting the pod.

Needs libtpu in the environment (`pip install "libtpu==0.0.42.*"` for jax 0.10.2); no TPU is used.

    python -m scripts.aot_compile --config=configs/wow14b.py --topology=v5p:4x4x4 \
        --config.mesh.fsdp=8 --config.mesh.sequence=8 --config.data.batch_size=8

Shapes come from the config: latent grid from config.data (num_frames, height, width) through the
VAE strides, text length config.model.text.text_len, 1 + (image_size/patch)^2 CLIP tokens (i2v).
The attention kernel defaults to 'splash' here (--attention to change).
"""

import json
import os
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import app, flags
from jax.sharding import Mesh
from ml_collections import config_flags

from wow_jax import configuration, sharding
from wow_jax.models import dit

FLAGS = flags.FLAGS


def _define_flags() -> None:
    """Registered only when run as a script, so that tests can import this module."""
    config_flags.DEFINE_config_file("config", None, "Config file, e.g. configs/wow14b.py.")
    flags.DEFINE_string("topology", "v5p:4x4x4", "TPU topology, e.g. v5e:2x2, v5p:4x4x4.")
    flags.DEFINE_enum("attention", "splash", ["xla", "splash"], "Attention kernel.")
    flags.DEFINE_bool("forward_only", False, "Compile the forward pass only.")
    flags.DEFINE_string("out", "", "Optional JSON path for the report.")
    flags.mark_flag_as_required("config")


def input_shapes(config: ml_collections.ConfigDict) -> dict[str, tuple[int, ...]]:
    """Global shapes of the DiT inputs for one training batch of `config`."""
    data, dit_cfg = config.data, config.model.dit
    frames = (data.num_frames - 1) // configuration.vae_temporal_stride(config.model.vae) + 1
    stride = configuration.vae_spatial_stride(config.model.vae)
    b = data.batch_size
    shapes = {
        "latents": (b, frames, data.height // stride, data.width // stride, dit_cfg.in_channels),
        "timesteps": (b,),
        "text_states": (b, config.model.text.text_len, dit_cfg.text_dim),
    }
    if dit_cfg.variant == "i2v":
        clip = config.model.clip
        tokens = 1 + (clip.image_size // clip.patch_size) ** 2
        shapes["image_tokens"] = (b, tokens, dit_cfg.image_dim)
    return shapes


def topology_mesh(config: ml_collections.ConfigDict, topology: str) -> Mesh:
    """The ('data', 'fsdp', 'tensor', 'sequence') mesh over the chips of a TPU topology."""
    from jax.experimental import topologies

    # No TPU is touched: let several compiling processes load libtpu at once (its lock file is
    # otherwise held by any process that loaded it, e.g. a plain `import jax` elsewhere).
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    devices = topologies.get_topology_desc(topology).devices
    shape = sharding.mesh_shape(config.mesh, len(devices))
    return Mesh(np.asarray(devices).reshape(shape), sharding.MESH_AXES)


def compile_dit(config: ml_collections.ConfigDict, mesh: Mesh, forward_only: bool = False):
    """Lowers and compiles the DiT step on `mesh`; returns (compiled, seconds)."""
    module = dit.create(config.model.dit)
    abstract = dit.abstract_params(config.model.dit)
    rules = sharding.rules(config.mesh)
    params = sharding.abstract_on_mesh(abstract, mesh, rules)
    param_shardings = jax.tree.map(lambda leaf: leaf.sharding, params)
    inputs = {
        name: jax.ShapeDtypeStruct(
            shape, jnp.float32, sharding=sharding.batch_sharding(mesh, len(shape), rules)
        )
        for name, shape in input_shapes(config).items()
    }

    def loss_fn(p, batch):
        velocity = module.apply({"params": p}, **batch)
        return jnp.mean(jnp.square(velocity - batch["latents"][..., : velocity.shape[-1]]))

    step = loss_fn if forward_only else jax.value_and_grad(loss_fn)
    out_shardings = (
        sharding.replicated(mesh) if forward_only else (sharding.replicated(mesh), param_shardings)
    )
    start = time.perf_counter()
    with sharding.activate(mesh, rules):
        compiled = jax.jit(step, out_shardings=out_shardings).lower(params, inputs).compile()
    return compiled, time.perf_counter() - start


def report(compiled, seconds: float) -> dict:
    """Per-chip memory (bytes) and cost of a compiled program."""
    memory = compiled.memory_analysis()
    out = {"compile_seconds": round(seconds, 1)}
    for key in (
        "argument_size_in_bytes",
        "output_size_in_bytes",
        "temp_size_in_bytes",
        "alias_size_in_bytes",
        "generated_code_size_in_bytes",
    ):
        out[key] = int(getattr(memory, key))
    out["peak_estimate_bytes"] = (
        out["argument_size_in_bytes"]
        + out["output_size_in_bytes"]
        + out["temp_size_in_bytes"]
        - out["alias_size_in_bytes"]
    )
    out["tpu_custom_calls"] = compiled.as_text().count('custom_call_target="tpu_custom_call"')
    return out


def aot_report(config: ml_collections.ConfigDict, topology: str, forward_only: bool) -> dict:
    """Compiles the DiT step of `config` for `topology`; returns the JSON-able report."""
    mesh = topology_mesh(config, topology)
    configuration.validate(config, mesh.devices.size)
    configuration.resolve_kernels(config, "tpu")  # The compile target, not this host's CPU.
    compiled, seconds = compile_dit(config, mesh, forward_only)
    return {
        "topology": topology,
        "mesh": dict(mesh.shape),
        "inputs": input_shapes(config),
        "attention": config.model.dit.attention,
        "remat_policy": config.model.dit.remat_policy,
        "step": "forward" if forward_only else "forward+backward",
        **report(compiled, seconds),
    }


def main(argv):
    del argv
    config = FLAGS.config
    config.model.dit.attention = FLAGS.attention
    result = aot_report(config, FLAGS.topology, FLAGS.forward_only)
    seconds = result["compile_seconds"]
    gib = 2**30
    print(
        f"{result['step']} on {FLAGS.topology} mesh {result['mesh']}: per chip "
        f"args {result['argument_size_in_bytes'] / gib:.2f} GiB, "
        f"outputs {result['output_size_in_bytes'] / gib:.2f} GiB, "
        f"temp {result['temp_size_in_bytes'] / gib:.2f} GiB, "
        f"peak ~{result['peak_estimate_bytes'] / gib:.2f} GiB "
        f"(compiled in {seconds:.0f} s; {result['tpu_custom_calls']} Pallas TPU kernel calls)"
    )
    if FLAGS.out:
        os.makedirs(os.path.dirname(FLAGS.out) or ".", exist_ok=True)
        with open(FLAGS.out, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    _define_flags()
    app.run(main)
