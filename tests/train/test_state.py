"""Train-state shardings derived from the boxed abstract state: every optimizer-state and EMA leaf
is laid out like its parameter on an 8-device fsdp x tensor mesh; no path matching involved."""

import jax
import optax
from jax.sharding import NamedSharding

from tests.train import toy
from wow_jax import sharding
from wow_jax.train import loop
from wow_jax.train import optimizer as opt_lib
from wow_jax.train.tasks.world_model import WorldModelTask


def _pairs(tree) -> list[tuple]:
    """The (optimizer-state leaf sharding, its parameter's sharding) pairs of a
    `optax.tree_map_params(..., lambda s, p: (s, p), ...)` result."""
    return jax.tree.leaves(
        tree, is_leaf=lambda x: type(x) is tuple and len(x) == 2 and isinstance(x[1], NamedSharding)
    )


def test_optimizer_state_and_ema_are_sharded_like_the_params(tiny_config, tmp_path):
    cfg = tiny_config
    cfg.model.dit.variant, cfg.model.dit.in_channels = "i2v", 36
    cfg.mesh.fsdp, cfg.mesh.tensor = 4, 2
    cfg.train.grad_accum, cfg.train.ema_decay = 2, 0.99  # Accumulated gradients and an EMA too.
    task = WorldModelTask(cfg, components=("dit", "vae", "clip"))
    run = loop.prepare(cfg, str(tmp_path), task)
    mesh, shardings = run.mesh, run.shardings
    assert dict(mesh.shape) == {"data": 1, "fsdp": 4, "tensor": 2, "sequence": 1}

    # Params: each leaf's sharding from its logical axes and the rules.
    boxed = jax.eval_shape(task.init_params, run.init_rng)
    assert shardings.params == sharding.variable_shardings(boxed, mesh)

    # Optimizer state: optax finds every param-shaped tree in it (Adam mu/nu, MultiSteps'
    # accumulated gradients); each leaf there equals its parameter's sharding.
    pairs = optax.tree_map_params(
        run.tx,
        lambda state_sharding, param_sharding: (state_sharding, param_sharding),
        shardings.opt_state,
        shardings.params,
        transform_non_params=lambda s: ("not a param", s),
        is_leaf=lambda x: isinstance(x, optax.MaskedNode),  # Frozen leaves in Adam's moments.
    )
    compared = 0
    for state_sharding, param_sharding in _pairs(pairs):
        if isinstance(state_sharding, optax.MaskedNode):
            continue  # A frozen leaf: no Adam moments.
        if state_sharding == "not a param":  # Counters: replicated.
            assert param_sharding.spec == jax.sharding.PartitionSpec()
            continue
        assert state_sharding == param_sharding
        compared += 1
    n_params = len(jax.tree.leaves(shardings.params))
    n_trained = sum(jax.tree.leaves(run.mask))
    assert 0 < n_trained < n_params
    assert compared == 2 * n_trained + n_params  # mu and nu of the trained, all accumulators.
    assert any({"fsdp", "tensor"} <= set(s.spec) for s in jax.tree.leaves(shardings.opt_state))

    # EMA: the trained leaves only, each sharded like its parameter.
    assert shardings.ema_params == opt_lib.trainable_subtree(shardings.params, run.mask)
    assert sorted(shardings.ema_params) == ["dit"]


def test_config_rules_lay_out_the_whole_state(tmp_path):
    cfg = toy.config(steps=1, save_every=1)
    cfg.mesh.fsdp, cfg.mesh.tensor = 4, 2
    cfg.mesh.rules = (
        (sharding.EMBED, "tensor"),
        (sharding.MLP, "fsdp"),
        (sharding.BATCH, ("data", "fsdp")),
    )
    run = loop.prepare(cfg, str(tmp_path), toy.RegressionTask())
    swapped = jax.sharding.PartitionSpec("tensor", "fsdp")  # The default rules give (fsdp, tensor).
    assert run.shardings.params["mlp"]["w1"].spec == swapped
    assert run.shardings.ema_params["mlp"]["w1"].spec == swapped
    moments = [s for s in jax.tree.leaves(run.shardings.opt_state) if s.spec == swapped]
    assert len(moments) == 2  # Adam's mu and nu of w1.
