"""Mesh construction, logical rules, and sharded == unsharded for a small annotated module."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import linen as nn
from jax.sharding import PartitionSpec as P

from wow_jax import sharding


def mesh_config(**sizes):
    c = ml_collections.ConfigDict({"data": 1, "fsdp": 1, "tensor": 1, "sequence": 1})
    c.update(sizes)
    return c


class TinyMLP(nn.Module):
    """x: [B, L, E] -> [B, L, E], params annotated with logical names."""

    hidden: int = 16

    @nn.compact
    def __call__(self, x):
        w_in = self.param(
            "w_in",
            nn.with_logical_partitioning(
                nn.initializers.normal(1.0), (sharding.EMBED, sharding.MLP)
            ),
            (x.shape[-1], self.hidden),
        )
        w_out = self.param(
            "w_out",
            nn.with_logical_partitioning(
                nn.initializers.normal(1.0), (sharding.MLP, sharding.EMBED)
            ),
            (self.hidden, x.shape[-1]),
        )
        h = jnp.einsum("ble,eh->blh", x, w_in)
        h = nn.with_logical_constraint(h, (sharding.BATCH, sharding.LENGTH, sharding.MLP))
        return jnp.einsum("blh,he->ble", jax.nn.gelu(h), w_out)


def test_mesh_shape_fills_and_validates():
    assert sharding.mesh_shape(mesh_config(fsdp=-1, tensor=2), 8) == (1, 4, 2, 1)
    assert sharding.mesh_shape(mesh_config(fsdp=2, tensor=2, sequence=2), 8) == (1, 2, 2, 2)
    with pytest.raises(ValueError, match="config.mesh.*8 devices"):
        sharding.mesh_shape(mesh_config(fsdp=3), 8)
    with pytest.raises(ValueError, match="does not divide"):
        sharding.mesh_shape(mesh_config(fsdp=-1, tensor=3), 8)
    with pytest.raises(ValueError, match="at most one axis"):
        sharding.mesh_shape(mesh_config(fsdp=-1, tensor=-1), 8)


def test_make_mesh_uses_all_devices():
    mesh = sharding.make_mesh(mesh_config(fsdp=-1))
    assert mesh.axis_names == sharding.MESH_AXES
    assert dict(mesh.shape) == {"data": 1, "fsdp": 8, "tensor": 1, "sequence": 1}


def test_sharded_module_matches_unsharded():
    assert jax.device_count() == 8, "conftest must simulate 8 CPU devices"
    mesh = sharding.make_mesh(mesh_config(fsdp=2, tensor=2, sequence=2))
    model = TinyMLP()
    x = jax.random.normal(jax.random.key(1), (4, 8, 8))
    abstract = jax.eval_shape(model.init, jax.random.key(0), x)
    shardings = sharding.variable_shardings(abstract, mesh)
    # issue 15: parameters are sharded over both replica-holding axes, fsdp and sequence.
    assert shardings["params"]["w_in"].spec == P(("fsdp", "sequence"), "tensor")
    assert shardings["params"]["w_out"].spec == P("tensor", ("fsdp", "sequence"))

    with sharding.axis_rules():
        reference_vars = model.init(jax.random.key(0), x)
        reference = model.apply(reference_vars, x)
        init = jax.jit(model.init, out_shardings=shardings)
        variables = init(jax.random.key(0), x)
        x_sharded = sharding.shard_batch(np.asarray(x), mesh)
    with sharding.activate(mesh):
        out = jax.jit(model.apply)(variables, x_sharded)

    w_in = variables["params"]["w_in"].value
    assert w_in.sharding.spec == P(("fsdp", "sequence"), "tensor")
    assert len(w_in.addressable_shards) == 8
    assert w_in.addressable_shards[0].data.shape == (2, 8)
    assert x_sharded.sharding.spec == P(("data", "fsdp"), None, None)
    np.testing.assert_allclose(
        np.asarray(w_in), np.asarray(reference_vars["params"]["w_in"].value), rtol=0, atol=0
    )
    np.testing.assert_allclose(np.asarray(out), np.asarray(reference), rtol=1e-5, atol=1e-6)


def test_batch_sharding_spec():
    mesh = sharding.make_mesh(mesh_config(data=2, fsdp=4))
    assert sharding.batch_sharding(mesh, 3).spec == P(("data", "fsdp"), None, None)


def test_indivisible_dimensions_are_replicated():
    mesh = sharding.make_mesh(mesh_config(fsdp=4, tensor=2))
    model = TinyMLP(hidden=3)
    abstract = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((2, 4, 8)))
    shardings = sharding.variable_shardings(abstract, mesh)
    assert shardings["params"]["w_in"].spec == P("fsdp", None)
    assert shardings["params"]["w_out"].spec == P(None, "fsdp")


def test_rules_from_config_replace_the_table():
    cfg = mesh_config(fsdp=4, tensor=2)
    cfg.rules = ()
    assert sharding.rules(cfg) == sharding.LOGICAL_RULES  # Empty: the default table.
    # Swap the roles of fsdp and tensor for the MLP's weights, batch over data only.
    cfg.rules = ((sharding.EMBED, "tensor"), (sharding.MLP, "fsdp"), (sharding.BATCH, "data"))
    rules = sharding.rules(cfg)
    mesh = sharding.make_mesh(cfg)
    abstract = jax.eval_shape(TinyMLP().init, jax.random.PRNGKey(0), jnp.zeros((2, 4, 8)))
    shardings = sharding.variable_shardings(abstract, mesh, rules)
    assert shardings["params"]["w_in"].spec == P("tensor", "fsdp")
    default = sharding.variable_shardings(abstract, mesh)
    assert default["params"]["w_in"].spec == P("fsdp", "tensor")
    assert sharding.batch_sharding(mesh, 3, rules).spec == P("data", None, None)
    with sharding.activate(mesh, rules):
        assert nn.get_logical_axis_rules() == rules
    cfg.rules = (("embed", "model"),)
    with pytest.raises(ValueError, match="unknown mesh axes \\['model'\\]"):
        sharding.rules(cfg)
    cfg.rules = (("embed",),)
    with pytest.raises(ValueError, match="each rule is \\(logical name, mesh axes\\)"):
        sharding.rules(cfg)


# issue 15: the 14B DiT's parameters on fsdp=2 x sequence=4 are split 8 ways (the sequence axis
# used to hold a full fsdp shard on each of its devices), and a sequence-free mesh keeps plain
# 'fsdp' specs.
def test_wow14b_params_are_sharded_over_fsdp_and_sequence():
    from configs import wow14b
    from wow_jax.models import dit

    boxed = dit.abstract_params(wow14b.get_config().model.dit)
    total = sum(x.size for x in jax.tree.leaves(nn.meta.unbox(boxed)))
    for sizes, ways in (({"fsdp": 2, "sequence": 4}, 8), ({"fsdp": 8}, 8)):
        mesh = sharding.make_mesh(mesh_config(**sizes))
        on_mesh = sharding.abstract_on_mesh(boxed, mesh)
        per_device = sum(np.prod(x.sharding.shard_shape(x.shape)) for x in jax.tree.leaves(on_mesh))
        assert per_device < 1.01 * total / ways, (sizes, per_device * ways / total)
    fc1 = on_mesh["blocks"]["ffn"]["fc1"]["kernel"].sharding.spec
    assert fc1 == P(None, "fsdp", "tensor")
