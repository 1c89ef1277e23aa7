"""The Flax Wan2.1 DiT against diffusers' WanTransformer3DModel: outputs, gradients, sharding,
parameter counts and input validation."""

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import torch
from flax import linen as nn
from jax.sharding import PartitionSpec as P

from configs import wan1_3b, wow14b
from tests.models import dit_torch
from wow_jax import configuration, describe, flops, sharding
from wow_jax.interop import dit_table, mapping
from wow_jax.models import attention, dit
from wow_jax.train import metrics

OUTPUT_TOL = 1e-5  # max |jax - torch| / max |torch| on the velocity, fp32.
GRAD_TOL = 1e-4  # same measure per parameter gradient.


@functools.cache
def _reference(variant: str):
    """(dit_cfg, inputs, torch output, torch grads by name, loss weights) for a tiny model."""
    from configs import tiny

    cfg = dit_torch.dit_config(tiny.get_config().model.dit, variant)
    model = dit_torch.torch_model(cfg, seed=0)
    x = dit_torch.inputs(cfg)
    out = dit_torch.torch_forward(model, x)
    weights = np.random.default_rng(2).standard_normal(out.shape).astype(np.float32)
    (out * torch.from_numpy(weights)).sum().backward()
    grads = {name: p.grad.numpy().copy() for name, p in model.named_parameters()}
    return cfg, model, x, out.detach().numpy(), grads, weights


def _loss_and_grads(cfg, params, x, weights):
    module = dit.create(cfg)

    def loss(p):
        out = module.apply({"params": p}, **x)
        return jnp.sum(out * weights), out

    (_, out), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
    return out, grads


@pytest.mark.parametrize("variant", ["t2v", "i2v"])
def test_matches_diffusers_outputs_and_gradients(variant):
    cfg, model, x, want, torch_grads, weights = _reference(variant)
    params = dit_torch.flax_params(cfg, dit_torch.state_dict_numpy(model))
    got, grads = _loss_and_grads(cfg, params, x, weights)
    assert got.shape == want.shape == (*x["latents"].shape[:4], cfg.out_channels)
    assert dit_torch.rel_err(got, want) <= OUTPUT_TOL
    _assert_grads_match_torch(cfg, grads, torch_grads)


def _assert_grads_match_torch(cfg, grads, torch_grads):
    """Every parameter's gradient, mapped to diffusers names through the table, vs autograd."""
    flax_grads = mapping.flax_to_torch(grads, dit_table.rules(cfg, "diffusers"))
    assert flax_grads.keys() == torch_grads.keys()
    errors = {k: dit_torch.rel_err(flax_grads[k], torch_grads[k]) for k in torch_grads}
    worst = max(errors, key=errors.get)
    assert errors[worst] <= GRAD_TOL, (worst, errors[worst])


@pytest.mark.parametrize(
    "scan_layers,remat_policy", [(False, "none"), (True, "full")], ids=["loop", "scan_full"]
)
def test_layer_loop_and_remat_policies_match_diffusers(scan_layers, remat_policy):
    """Unscanned blocks (one subtree per block) and rematerialised blocks give the same
    outputs and gradients."""
    cfg, model, x, want, torch_grads, weights = _reference("t2v")
    cfg = ml_collections.ConfigDict(cfg.to_dict())
    cfg.scan_layers, cfg.remat_policy = scan_layers, remat_policy
    params = dit_torch.flax_params(cfg, dit_torch.state_dict_numpy(model))
    assert ("blocks_1" in params) == (not scan_layers)
    got, grads = _loss_and_grads(cfg, params, x, weights)
    assert dit_torch.rel_err(got, want) <= OUTPUT_TOL
    _assert_grads_match_torch(cfg, grads, torch_grads)


@pytest.mark.parametrize(
    "axes",
    [dict(data=1, fsdp=4, tensor=2, sequence=1), dict(data=1, fsdp=2, tensor=2, sequence=2)],
    ids=["fsdp4_tensor2", "fsdp2_sequence2_tensor2"],
)
def test_sharded_run_matches_one_device(axes):
    cfg, model, _, _, _, _ = _reference("i2v")
    params = dit_torch.flax_params(cfg, dit_torch.state_dict_numpy(model))
    x = dit_torch.inputs(cfg, batch=4, seed=3)
    module = dit.create(cfg)
    want = jax.jit(module.apply)({"params": params}, **x)

    mesh = sharding.make_mesh(ml_collections.ConfigDict(axes))
    param_shardings = sharding.variable_shardings(dit.abstract_params(cfg), mesh)
    sharded_params = jax.device_put(params, param_shardings)
    ffn_kernel = sharded_params["blocks"]["ffn"]["fc1"]["kernel"]
    embed = ("fsdp", "sequence") if axes["sequence"] > 1 else "fsdp"  # issue 15: both axes
    assert ffn_kernel.sharding.spec == P(None, embed, "tensor")
    batch = sharding.shard_batch(x, mesh)
    with sharding.activate(mesh):
        step = jax.jit(module.apply)
        lowered = step.lower({"params": sharded_params}, **batch).as_text()
        got = step({"params": sharded_params}, **batch)
    if axes["sequence"] > 1:
        assert '"sequence"' in lowered  # Video tokens are constrained onto the sequence axis.
    assert dit_torch.rel_err(got, want) <= OUTPUT_TOL


def test_splash_kernel_matches_xla_under_a_sharded_mesh():
    """The splash path (Pallas interpreter on CPU) with padding, heads over 'tensor' and query
    tokens over 'sequence' through shard_map, forward and gradients."""
    rng = np.random.default_rng(0)
    q = jnp.asarray(rng.standard_normal((2, 48, 2, 16), np.float32))
    kv = [jnp.asarray(rng.standard_normal((2, 20, 2, 16), np.float32)) for _ in range(2)]
    mesh = sharding.make_mesh(ml_collections.ConfigDict(dict(data=1, fsdp=2, tensor=2, sequence=2)))

    def loss(kernel, q, k, v):
        out = attention.dot_product_attention(q, k, v, kernel, interpret=True)
        return jnp.sum(out * jnp.cos(out)), out

    with sharding.activate(mesh):
        (_, got), got_grads = jax.jit(
            jax.value_and_grad(functools.partial(loss, "splash"), (0, 1, 2), has_aux=True)
        )(q, *kv)
    (_, want), want_grads = jax.value_and_grad(
        functools.partial(loss, "xla"), (0, 1, 2), has_aux=True
    )(q, *kv)
    assert dit_torch.rel_err(got, want) <= 1e-5
    for g, w in zip(got_grads, want_grads, strict=True):
        assert dit_torch.rel_err(g, w) <= 1e-5


# issue 15: splash under shard_map on dimensions the mesh axes do not divide (the CFG batch of 2
# on fsdp=4, init's batch-1 one-token inputs) moves the axes to the heads, else replicates.
def test_splash_specs_move_undividing_axes_and_match_xla():
    mesh = sharding.make_mesh(ml_collections.ConfigDict(dict(data=1, fsdp=4, tensor=1, sequence=2)))
    q_spec, kv_spec = attention.splash_specs((2, 48, 4, 16), mesh, sharding.LOGICAL_RULES)
    heads = ("tensor", "fsdp")
    assert q_spec == P("data", "sequence", heads, None) and kv_spec == P("data", None, heads)
    q_spec, _ = attention.splash_specs((1, 1, 2, 16), mesh, sharding.LOGICAL_RULES)
    assert q_spec == P("data", None, "tensor", None)  # size-1 axes divide anything
    rng = np.random.default_rng(1)
    q, k, v = (jnp.asarray(rng.standard_normal((2, 48, 4, 16), np.float32)) for _ in range(3))
    with sharding.activate(mesh):
        splash = functools.partial(attention.dot_product_attention, kernel="splash", interpret=True)
        got = jax.jit(splash)(q, k, v)
    want = attention.dot_product_attention(q, k, v, "xla")
    assert dit_torch.rel_err(got, want) <= 1e-5


def test_cudnn_kernel_refuses_cpu_with_a_clear_error():
    if jax.default_backend() == "gpu":
        pytest.skip("a GPU is present; the cuDNN path runs")
    q = jnp.zeros((1, 4, 2, 8), jnp.bfloat16)
    with pytest.raises(ValueError, match="needs an NVIDIA GPU"):
        attention.dot_product_attention(q, q, q, "cudnn")
    with pytest.raises(ValueError, match="must be one of"):
        attention.dot_product_attention(q, q, q, "flash")


EXPECTED_PARAMS = {  # Counted by diffusers on the meta device.
    "wan1_3b_t2v": 1_418_996_800,
    "wow14b_i2v": 16_394_878_784,
    "wan14b_t2v": 14_288_491_584,
}


@pytest.mark.parametrize("name", sorted(EXPECTED_PARAMS))
def test_parameter_counts_equal_diffusers(name):
    from diffusers import WanTransformer3DModel

    config = (wan1_3b if name.startswith("wan1_3b") else wow14b).get_config()
    if name == "wan14b_t2v":
        config.model.dit.variant, config.model.dit.in_channels = "t2v", 16
    with torch.device("meta"):
        reference = WanTransformer3DModel(**dit_table.diffusers_kwargs(config.model.dit))
    want = sum(p.numel() for p in reference.parameters())
    mesh = sharding.make_mesh(
        ml_collections.ConfigDict(dict(data=1, fsdp=-1, tensor=1, sequence=1))
    )
    summary = describe.component_summary(dit.abstract_params(config.model.dit), mesh)
    assert summary["params"] == want == EXPECTED_PARAMS[name]
    assert summary["bytes_per_device"] < summary["bytes"] / 7  # FSDP over the 8 devices.


def test_every_parameter_has_logical_axes(tiny_config):
    abstract = dit.abstract_params(tiny_config.model.dit)
    boxed = jax.tree.leaves(abstract, is_leaf=lambda x: isinstance(x, nn.Partitioned))
    assert all(isinstance(leaf, nn.Partitioned) for leaf in boxed)
    for leaf in boxed:
        assert leaf.names[0] == sharding.LAYERS or len(leaf.names) == leaf.value.ndim
    stacked = abstract["blocks"]["self_attn"]["q"]["kernel"]
    assert stacked.names == (sharding.LAYERS, sharding.EMBED, sharding.HEADS)
    assert stacked.value.shape[0] == tiny_config.model.dit.num_layers


@pytest.mark.parametrize(
    "variant,change,message",
    [
        ("t2v", dict(latents=(1, 3, 4, 8, 17)), r"latents must be \[B, F, H, W, 16\]"),
        ("t2v", dict(latents=(1, 3, 5, 8, 16)), r"height \(5\) must be divisible by .* 2"),
        ("t2v", dict(latents=(1, 3, 4, 7, 16)), r"width \(7\) must be divisible"),
        ("t2v", dict(text_states=(1, 16, 31)), r"text_states must be \[B, L, text_dim\] = \[1, L, 32"),  # noqa: E501
        ("t2v", dict(text_states=(1, 17, 32)), r"17 tokens, more than config.model.dit.text_len = 16"),  # noqa: E501
        ("t2v", dict(image_tokens=(1, 257, 32)), "t2v DiT"),
        ("i2v", dict(image_tokens=None), r"needs image_tokens \[B, 257, image_dim\]"),
        ("i2v", dict(image_tokens=(1, 257, 16)), r"image_tokens must be \[B, Li, 32\]"),
        ("i2v", dict(latents=(1, 3, 4, 8, 16)), r"latents must be \[B, F, H, W, 36\]"),
    ],
)  # fmt: skip
def test_bad_inputs_raise_value_error_naming_the_shape(tiny_config, variant, change, message):
    cfg = dit_torch.dit_config(tiny_config.model.dit, variant)
    shapes = {"latents": (1, 3, 4, 8, cfg.in_channels), "timesteps": (1,),
              "text_states": (1, 16, cfg.text_dim), "image_tokens": None}  # fmt: skip
    if variant == "i2v":
        shapes["image_tokens"] = (1, 257, cfg.image_dim)
    shapes.update(change)
    args = {
        k: None if s is None else jax.ShapeDtypeStruct(s, jnp.float32) for k, s in shapes.items()
    }
    module = dit.create(cfg)
    params = nn.meta.unbox(dit.abstract_params(cfg))
    with pytest.raises(ValueError, match=message):
        jax.eval_shape(lambda p, a: module.apply({"params": p}, **a), params, args)


# issue 16: the public DiT call zero-pads short text to text_len as Wan does: unpadded text
# gives exactly the padded output, which is the reference's (diffusers fed the padded states),
# and differs from attending to the unpadded tokens only.
@pytest.mark.parametrize("variant", ["t2v", "i2v"])
def test_short_text_is_zero_padded_to_text_len(variant):
    cfg, model, _, _, _, _ = _reference(variant)
    params = dit_torch.flax_params(cfg, dit_torch.state_dict_numpy(model))
    x = dit_torch.inputs(cfg, batch=1, seed=5)
    short = dict(x, text_states=x["text_states"][:, :5])
    pad = ((0, 0), (0, cfg.text_len - 5), (0, 0))
    padded = dict(x, text_states=np.pad(short["text_states"], pad))
    got = np.asarray(jax.jit(dit.create(cfg).apply)({"params": params}, **short))
    np.testing.assert_array_equal(got, jax.jit(dit.create(cfg).apply)({"params": params}, **padded))
    with torch.no_grad():
        assert dit_torch.rel_err(got, dit_torch.torch_forward(model, padded)) <= OUTPUT_TOL
    unpadded = ml_collections.ConfigDict(cfg.to_dict())
    unpadded.text_len = 5  # Attends to the 5 given tokens only: another model's semantics.
    other = jax.jit(dit.create(unpadded).apply)({"params": params}, **short)
    assert dit_torch.rel_err(other, got) > 1e-2


def test_frames_not_divisible_by_temporal_patch_raise(tiny_config):
    cfg = dit_torch.dit_config(tiny_config.model.dit, "t2v", patch_size=(2, 2, 2))
    module = dit.create(cfg)
    params = nn.meta.unbox(dit.abstract_params(cfg))
    latents = jax.ShapeDtypeStruct((1, 3, 4, 8, 16), jnp.float32)
    with pytest.raises(ValueError, match=r"frames \(3\) must be divisible by the patch size 2"):
        jax.eval_shape(
            lambda p, x: module.apply({"params": p}, x, jnp.zeros(1), jnp.zeros((1, 4, 32))),
            params,
            latents,
        )


# issue 15: the AOT tool compiles mode train's own step (loop.prepare + compile_step: optimizer,
# state shardings, init on the mesh) and the sampler's denoising loop for a TPU topology.
def test_aot_compile_of_the_train_step_and_sampler_for_a_tpu_topology(tiny_config):
    """Compiled for a 2x2 TPU v5e on this CPU host (libtpu, no TPU): splash kernels (attention
    'auto' resolved for TPU) under shard_map, per-chip memory and analytic FLOPs reported."""
    pytest.importorskip("libtpu")
    from scripts import aot_compile

    config = tiny_config
    config.model.dit.dim, config.model.dit.num_heads = 256, 2  # TPU kernels want head_dim 128.
    config.model.dit.attention = "auto"
    config.mesh.fsdp, config.mesh.sequence = 2, 2
    config.model.dit.remat_policy = "offload_block_input"
    for program in ("train", "sample"):
        train = program == "train"
        result = aot_compile.aot_report(config, "v5e:2x2", program, "latents", counts=train)
        if train:  # The blocks' inputs wait in host memory for the backward pass.
            assert result["host_temp_size_in_bytes"] > 0
            # The step-time estimate: XLA's cost model (splash counts zero in it) plus what the
            # splash kernels execute, timed at the chip's peak.
            grid = configuration.latent_grid(config)
            kernel = flops.attention_kernel_flops(config.model.dit, grid, train=True)
            assert result["kernel_flops_per_chip"] == kernel * config.data.batch_size / 4
            peak = metrics.peak_flops_of(result["device_kind"])
            seconds = result["xla_cost_model_seconds"] + result["kernel_flops_per_chip"] / peak
            assert result["xla_cost_model_seconds"] > 0 and result["xla_flops_per_chip"] > 0
            assert result["estimated_step_seconds"] == pytest.approx(seconds)
            mfu = result["analytic_flops_per_chip"] / (seconds * peak)
            assert result["mfu_estimate"] == pytest.approx(mfu)
        assert result["mesh"] == {"data": 1, "fsdp": 2, "tensor": 1, "sequence": 2}
        assert result["attention"] == "splash" and result["tpu_custom_calls"] > 0
        assert 0 < result["argument_size_in_bytes"] < result["peak_bytes"] and result["fits"]
        assert result["analytic_flops_per_chip"] > 0


@pytest.mark.slow  # ~10 s of compiles; the same calls are covered by the tests above.
def test_docs_snippets_run():
    """The Python blocks of docs/dit.md run as written."""
    import pathlib
    import re

    text = (pathlib.Path(__file__).parents[2] / "docs" / "dit.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(blocks) == 2
    exec(compile("\n".join(blocks), "docs/dit.md", "exec"), {})


def test_config_validation_refuses_a_grid_longer_than_the_rotary_tables(tiny_config):
    from wow_jax import configuration

    configuration.validate(tiny_config, 8)
    tiny_config.model.dit.rope_max_len = 1  # tiny clips have a (2, 2, 2) token grid
    with pytest.raises(ValueError, match="raise rope_max_len to at least 2"):
        configuration.validate(tiny_config, 8)


def test_bfloat16_compute_and_params(tiny_config):
    """dtype='bfloat16' runs the matmuls in bf16 (output close to fp32, returned as float32);
    param_dtype='bfloat16' stores every parameter in bf16."""
    cfg, model, x, want, _, _ = _reference("i2v")
    params = dit_torch.flax_params(cfg, dit_torch.state_dict_numpy(model))
    bf16 = ml_collections.ConfigDict(cfg.to_dict())
    bf16.dtype = "bfloat16"
    got = jax.jit(dit.create(bf16).apply)({"params": params}, **x)
    assert got.dtype == jnp.float32
    assert 1e-4 < dit_torch.rel_err(got, want) < 3e-2
    bf16.param_dtype = "bfloat16"
    dtypes = {leaf.dtype for leaf in jax.tree.leaves(nn.meta.unbox(dit.abstract_params(bf16)))}
    assert dtypes == {jnp.dtype(jnp.bfloat16)}
