"""AOT-compile, for a TPU topology on any host, the programs `python -m wow_jax.main` runs, and
report per-chip memory, FLOPs and an MFU estimate: checks that a config fits before renting a pod.

Needs libtpu in the environment (`pip install "libtpu==0.0.42.*"` for jax 0.10.2); no TPU is used.

    python -m scripts.aot_compile --config=configs/wow14b.py --topology=v5p:4x4x4 --out=r.json
    python -m scripts.aot_compile --config=configs/wow14b.py --topology=v5p:4x4x4 \
        --search="fsdp=-1;fsdp=-1,sequence=2" --search_remat=full,offload_block_input \
        --search_clips=1,2

Programs (--programs):
  train   the train step of mode train: the loop's own `prepare` (optimizer, EMA, every state
          leaf's sharding from the config's mesh, init traced on the task's abstract params) and
          `compile_step` (train_step jitted with the state/batch shardings, state donated, the
          compile options of the TPU target). --inputs=pixels feeds what mode train's data
          pipeline yields (video, first frame, caption tokens; the frozen VAE, umT5 and CLIP run
          in the step); --inputs=latents what mode train runs with config.train.inputs='latents'
          (tasks.cached_world_model on latent_cache.batch_shapes: the DiT alone).
  sample  the sampler's whole denoising loop (`Generator._denoise_fn`: sample.steps solver
          steps of the guided DiT on the doubled CFG batch of sample.batch_size), params in
          sample.param_dtype.
Reported per program: per-chip bytes (arguments, outputs, temporaries, aliased; peak = args +
outputs + temps - aliased) against the chip's HBM; the analytic model FLOPs (wow_jax.flops);
with --compiler_flops XLA's count and cost-model seconds with the scan multiplier (the same
program with 1 and 2 unscanned layers: F1 + (N-1)(F2-F1)), the FLOPs the splash kernel executes
(invisible to the cost model; wow_jax.flops.attention_kernel_flops) timed at the chip's peak, their
sum as the estimated step time, and an MFU estimate = analytic FLOPs per chip / (estimated step
seconds x peak FLOP/s): an upper bound, as the kernel is timed at peak.
"""

import itertools
import json
import os
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import app, flags
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from ml_collections import config_flags

from wow_jax import compiler, configuration, flops, sharding
from wow_jax.train import latent_cache, loop, metrics

FLAGS = flags.FLAGS
GIB = 2**30
# HBM per chip (bytes) by jax device_kind, for the fits verdict (per device: / cores_per_chip).
HBM_BYTES = {
    "TPU v4": 32 * GIB,
    "TPU v5 lite": 16 * GIB,
    "TPU v5": 95 * GIB,
    "TPU v6 lite": 32 * GIB,
}


def _define_flags() -> None:
    """Registered only when run as a script, so that tests can import this module."""
    config_flags.DEFINE_config_file("config", None, "Config file, e.g. configs/wow14b.py.")
    flags.DEFINE_string("topology", "v5p:4x4x4", "TPU topology, e.g. v5e:2x2, v5p:4x4x4.")
    flags.DEFINE_list("programs", ["train", "sample"], "Programs to compile: train, sample.")
    flags.DEFINE_enum("inputs", "pixels", ["pixels", "latents"], "Train batch (see docstring).")
    flags.DEFINE_bool("compiler_flops", False, "Also compile 1- and 2-layer programs (slow).")
    flags.DEFINE_string(
        "search", "", "';'-separated mesh overrides, e.g. 'fsdp=-1;fsdp=8,sequence=8'."
    )
    flags.DEFINE_list("search_remat", [], "remat policies to try (default: the config's).")
    flags.DEFINE_list("search_clips", [], "train clips per chip to try (default: the config's).")
    flags.DEFINE_string("out", "", "Optional JSON path for the report(s).")
    flags.mark_flag_as_required("config")


def topology_mesh(config: ml_collections.ConfigDict, topology: str) -> Mesh:
    """The ('data', 'fsdp', 'tensor', 'sequence') mesh over the chips of a TPU topology."""
    from jax.experimental import topologies

    # No TPU is touched: let several compiling processes load libtpu at once.
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    devices = topologies.get_topology_desc(topology).devices
    shape = sharding.mesh_shape(config.mesh, len(devices))
    return Mesh(np.asarray(devices).reshape(shape), sharding.MESH_AXES)


def _image_tokens(config) -> int:
    clip = config.model.clip
    return 1 + (clip.image_size // clip.patch_size) ** 2


def _placed(shapes: dict, mesh: Mesh, rules) -> dict:
    """{name: (shape, dtype)} -> ShapeDtypeStructs split along the batch axis when it divides
    data*fsdp (else replicated, as the sampler's `_shard` does)."""
    ways = mesh.shape["data"] * mesh.shape["fsdp"]

    def place(shape, dtype):
        s = sharding.batch_sharding(mesh, len(shape), rules)
        if shape[0] % ways:
            s = NamedSharding(mesh, PartitionSpec())
        return jax.ShapeDtypeStruct(shape, dtype, sharding=s)

    return {name: place(*spec) for name, spec in shapes.items()}


def train_shapes(config, inputs: str) -> dict:
    """{name: (global shape, dtype)} of one train batch: what mode train's pipeline yields
    ('pixels', tasks.world_model_batches) or what it reads from a latent cache ('latents',
    config.train.inputs='latents': latent_cache.batch_shapes)."""
    b, data = config.data.batch_size, config.data
    text_len, text_dim = config.model.text.text_len, config.model.text.dim
    if inputs == "latents":
        return latent_cache.batch_shapes(config, b)
    frame = (data.height, data.width, 3)
    shapes = {
        "video": ((b, data.num_frames, *frame), jnp.float32),
        "first_frame": ((b, *frame), jnp.float32),
    }
    if config.model.text.embedding_cache:
        shapes["text_states"] = ((b, text_len, text_dim), jnp.float32)
    else:
        shapes["token_ids"] = ((b, text_len), jnp.int32)
        shapes["text_mask"] = ((b, text_len), jnp.int32)
    return shapes


def train_task(config, inputs: str):
    """The world-model task mode train builds (tasks.build) for `inputs`."""
    from wow_jax.train import tasks
    from wow_jax.train.tasks.world_model import WorldModelTask

    text = config.model.text
    null = np.zeros((text.text_len, text.dim), np.float32)
    if inputs == "latents":
        return tasks.cached_world_model(config, null)
    if text.embedding_cache:
        return WorldModelTask(config, null_text_states=null, components=("dit", "vae", "clip"))
    return WorldModelTask(config)


def compile_train(config, mesh: Mesh, inputs: str):
    """(compiled train step of mode train on `mesh`, analytic FLOPs per chip)."""
    task = train_task(config, inputs)
    run = loop.prepare(config, None, task, mesh)
    batch = _placed(train_shapes(config, inputs), mesh, run.rules)
    compiled = loop.compile_step(run, batch)
    return compiled, task.train_flops(batch) / mesh.devices.size


def compile_sample(config, mesh: Mesh):
    """(compiled denoising loop of the Generator on `mesh`, analytic FLOPs per chip)."""
    from wow_jax import models as registry
    from wow_jax.sampling import generator, models

    config = config.copy_and_resolve_references()
    dtype = config.sample.param_dtype or config.model.dit.param_dtype
    config.model.dit.param_dtype = dtype
    rules = sharding.rules(config.mesh)
    dit_cfg = config.model.dit
    dit_module = registry.load("dit").create(dit_cfg)
    bound = models.Models(
        dit=lambda p, x, t, s, i: dit_module.apply({"params": p}, x, t, s, i),
        encode=lambda p, v: v,
        decode=lambda p, z: z,
        text=None,
        clip=(lambda p, x: x) if dit_cfg.variant == "i2v" else None,
    )
    params = sharding.abstract_on_mesh(registry.load("dit").abstract_params(dit_cfg), mesh, rules)
    names = ("dit", "vae", "text") + (("clip",) if bound.clip else ())
    gen = generator.Generator(config, {n: params for n in names}, bound, mesh)
    b, text = config.sample.batch_size, config.model.text
    grid = configuration.latent_grid(config)
    shapes = {
        "seeds": ((b,), jnp.int32),
        "text": ((b, text.text_len, text.dim), jnp.float32),
        "negative": ((b, text.text_len, text.dim), jnp.float32),
    }
    i2v = dit_cfg.variant == "i2v"
    if i2v:
        channels = dit_cfg.in_channels - config.model.vae.z_dim
        shapes["cond"] = ((b, *grid, channels), jnp.float32)
        shapes["image_tokens"] = ((b, _image_tokens(config), config.model.clip.width), jnp.float32)
    a = _placed(shapes, mesh, rules)
    clip_index = jax.ShapeDtypeStruct((), jnp.int32, sharding=sharding.replicated(mesh))
    args = (
        params,
        a["seeds"],
        clip_index,
        a.get("cond"),
        a["text"],
        a["negative"],
        a.get("image_tokens"),
    )
    with sharding.activate(mesh, rules):
        compiled = jax.jit(gen._denoise_fn).lower(*args).compile(compiler.program_options("tpu"))
    image = _image_tokens(config) if i2v else 0
    forward = flops.dit_forward(dit_cfg, grid, text.text_len, image)
    passes = 2 if config.sample.guidance != 1.0 else 1
    total = forward * passes * b * config.sample.steps
    return compiled, total / mesh.devices.size


def _compile(program: str, config, mesh: Mesh, inputs: str):
    if program == "train":
        return compile_train(config, mesh, inputs)
    return compile_sample(config, mesh)


def memory(compiled) -> dict:
    """Per-chip bytes of a compiled program."""
    m = compiled.memory_analysis()
    out = {
        key: int(getattr(m, key))
        for key in (
            "argument_size_in_bytes",
            "output_size_in_bytes",
            "temp_size_in_bytes",
            "alias_size_in_bytes",
            "host_temp_size_in_bytes",
        )
        if hasattr(m, key)
    }
    out["peak_bytes"] = (
        out["argument_size_in_bytes"]
        + out["output_size_in_bytes"]
        + out["temp_size_in_bytes"]
        - out["alias_size_in_bytes"]
    )
    return out


def _cost(compiled) -> tuple[float, float]:
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list | tuple) else cost
    return float(cost.get("flops", 0.0)), float(cost.get("optimal_seconds", 0.0))


def compiler_counts(program: str, config, mesh: Mesh, inputs: str) -> dict:
    """XLA's FLOPs and cost-model seconds per device of `program` with the scan multiplied out
    (1- and 2-layer unscanned programs, same attention), plus the splash kernel the cost model
    cannot see (a Pallas call counts zero): its executed FLOPs (`flops.attention_kernel_flops`)
    timed at the chip's peak, a lower bound on its time."""
    counts = []
    for layers in (1, 2):
        small = config.copy_and_resolve_references()
        small.model.dit.num_layers, small.model.dit.scan_layers = layers, False
        counts.append(_cost(_compile(program, small, mesh, inputs)[0]))
    n = config.model.dit.num_layers
    out = {
        "layer_counts": {"flops": [c[0] for c in counts], "seconds": [c[1] for c in counts]},
        "xla_flops_per_chip": flops.extrapolate_layers(counts[0][0], counts[1][0], n),
        "xla_cost_model_seconds": flops.extrapolate_layers(counts[0][1], counts[1][1], n),
        "kernel_flops_per_chip": 0.0,
    }
    if config.model.dit.attention == "splash":
        train = program == "train"
        clips = config.data.batch_size if train else config.sample.batch_size
        clips *= 1 if train or config.sample.guidance == 1.0 else 2  # CFG doubles the batch.
        grid = configuration.latent_grid(config)
        per_clip = flops.attention_kernel_flops(config.model.dit, grid, train)
        steps = 1 if train else config.sample.steps
        out["kernel_flops_per_chip"] = per_clip * clips * steps / mesh.devices.size
    return out


def cores_per_chip(mesh: Mesh) -> int:
    """Devices per chip: 1, or 2 where the topology gives one device per TensorCore (libtpu
    0.0.42's v4 topologies: no megacore), each with half the chip's HBM."""
    first = mesh.devices.flat[0].coords
    return sum(1 for d in mesh.devices.flat if d.coords == first)


def _device_value(table: dict, kind: str):
    return next((v for name, v in table.items() if kind.lower() == name.lower()), None)


def aot_report(config, topology: str, program: str, inputs: str = "pixels", counts: bool = False):
    """Compiles `program` ('train' | 'sample') of `config` for `topology`; the JSON-able report."""
    config = config.copy_and_resolve_references()
    mesh = topology_mesh(config, topology)
    configuration.validate(config, mesh.devices.size)
    configuration.resolve_kernels(config, "tpu")  # The compile target, not this host's CPU.
    start = time.perf_counter()
    compiled, analytic = _compile(program, config, mesh, inputs)
    kind = mesh.devices.flat[0].device_kind
    batch = config.data.batch_size if program == "train" else config.sample.batch_size
    report = {
        "program": program,
        "topology": topology,
        "devices": int(mesh.devices.size),
        "cores_per_chip": cores_per_chip(mesh),
        "chips": int(mesh.devices.size) // cores_per_chip(mesh),
        "device_kind": kind,
        "mesh": dict(mesh.shape),
        "inputs": inputs if program == "train" else "sampler",
        "batch": batch,
        "clips_per_chip": batch * cores_per_chip(mesh) / mesh.devices.size,
        "frames_height_width": [config.data.num_frames, config.data.height, config.data.width],
        "attention": config.model.dit.attention,
        "remat_policy": config.model.dit.remat_policy,
        "lora_rank": config.train.lora.rank,  # > 0: only adapters train (docs/lora.md).
        "param_dtype": config.model.dit.param_dtype
        if program == "train"
        else (config.sample.param_dtype or config.model.dit.param_dtype),
        "compile_seconds": round(time.perf_counter() - start, 1),
        "analytic_flops_per_chip": analytic,
        "tpu_custom_calls": compiled.as_text().count('custom_call_target="tpu_custom_call"'),
        **memory(compiled),
    }
    hbm = _device_value(HBM_BYTES, kind)
    hbm = hbm and hbm // report["cores_per_chip"]
    report["hbm_bytes"], report["fits"] = hbm, hbm is not None and report["peak_bytes"] <= hbm
    if counts:
        report.update(compiler_counts(program, config, mesh, inputs))
        peak = metrics.peak_flops_of(kind)
        peak = peak and peak / report["cores_per_chip"]
        seconds = report["layer_counts"]["seconds"]
        if not seconds[1] > seconds[0] > 0:  # Seen on libtpu 0.0.42's per-core v4 topologies.
            report["estimate_error"] = (
                f"the cost model's seconds do not grow with the layers (1 layer {seconds[0]:.4g}"
                f" s, 2 layers {seconds[1]:.4g} s): no step-time estimate"
            )
        elif peak:
            kernel = report["kernel_flops_per_chip"] / peak
            report["kernel_seconds_at_peak"] = kernel
            report["estimated_step_seconds"] = report["xla_cost_model_seconds"] + kernel
            report["mfu_estimate"] = analytic / (report["estimated_step_seconds"] * peak)
    return report


def _override(config, mesh: str, remat: str | None, clips: str | None, chips: int):
    c = config.copy_and_resolve_references()
    if mesh:
        c.mesh.fsdp = 1  # The search's axes are given in full: unspecified ones are 1.
        for part in mesh.split(","):
            axis, size = part.split("=")
            c.mesh[axis.strip()] = int(size)
    if remat:
        c.model.dit.remat_policy = remat
    if clips:
        c.data.batch_size = int(float(clips) * chips)
    return c


def search(config, topology: str, meshes, remats, clips, inputs: str):
    """Reports of every (mesh, remat policy, clips per chip) combination for the train step."""
    from jax.experimental import topologies

    chips = len(topologies.get_topology_desc(topology).devices)
    reports = []
    for mesh, remat, clip in itertools.product(meshes or [""], remats or [None], clips or [None]):
        try:
            report = aot_report(
                _override(config, mesh, remat, clip, chips), topology, "train", inputs
            )
        except Exception as error:  # noqa: BLE001 (a candidate that does not compile is a result)
            report = {
                "mesh_override": mesh,
                "remat_policy": remat,
                "clips": clip,
                "error": str(error)[:300],
            }
        reports.append(report)
        _print(report)
    return reports


def _print(r: dict) -> None:
    if "error" in r:
        print(f"FAILED {r}")
        return
    print(
        f"{r['program']} on {r['topology']} mesh {r['mesh']} batch {r['batch']} "
        f"({r['clips_per_chip']:g}/chip) remat {r['remat_policy']}: peak "
        f"{r['peak_bytes'] / GIB:.1f} GiB per chip (args {r['argument_size_in_bytes'] / GIB:.1f}, "
        f"temps {r['temp_size_in_bytes'] / GIB:.1f}) of {(r['hbm_bytes'] or 0) / GIB:.0f} -> "
        f"{'fits' if r['fits'] else 'DOES NOT FIT'}; analytic {r['analytic_flops_per_chip']:.3e} "
        f"FLOPs/chip; compiled in {r['compile_seconds']:.0f} s"
        + (
            f"; estimated step {r['estimated_step_seconds']:.3g} s, MFU estimate "
            f"{r['mfu_estimate']:.1%}"
            if "mfu_estimate" in r
            else ""
        )
        + (f"; {r['estimate_error']}" if "estimate_error" in r else "")
    )


def main(argv):
    del argv
    config = FLAGS.config
    if FLAGS.search:
        reports = search(
            config,
            FLAGS.topology,
            FLAGS.search.split(";"),
            FLAGS.search_remat,
            FLAGS.search_clips,
            FLAGS.inputs,
        )
    else:
        reports = []
        for program in FLAGS.programs:
            reports.append(
                aot_report(config, FLAGS.topology, program, FLAGS.inputs, FLAGS.compiler_flops)
            )
            _print(reports[-1])
    if FLAGS.out:
        os.makedirs(os.path.dirname(FLAGS.out) or ".", exist_ok=True)
        with open(FLAGS.out, "w") as f:
            json.dump(reports, f, indent=2)


if __name__ == "__main__":
    _define_flags()
    app.run(main)
