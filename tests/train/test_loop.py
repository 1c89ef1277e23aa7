"""The generic loop on a toy task: overfit, compile once, freezing, EMA, NaN guard, mesh restore."""

import jax
import numpy as np
import pytest
from jax import monitoring

from tests.train import toy
from wow_jax import checkpointing, sharding
from wow_jax.train import loop

BACKEND_COMPILE = "/jax/core/compile/backend_compile_duration"


class CompileCounter:
    def __init__(self):
        self.count = 0

    def __call__(self, event, duration, **kwargs):
        if event == BACKEND_COMPILE:
            self.count += 1


class Snapshot:
    """Data wrapper that records the compile count when the batch for step 2 is requested."""

    def __init__(self, inner, counter):
        self.inner, self.counter, self.calls, self.after_step1 = inner, counter, 0, None

    def __next__(self):
        self.calls += 1
        if self.calls == 2:
            self.after_step1 = self.counter.count
        return next(self.inner)

    def __iter__(self):
        return self

    def get_state(self):
        return self.inner.get_state()

    def set_state(self, state):
        self.inner.set_state(state)


def test_overfit_compiles_once_freezes_and_tracks_ema(tmp_path):
    cfg = toy.config(steps=30, save_every=10)
    counter = CompileCounter()
    monitoring.register_event_duration_secs_listener(counter)
    try:
        data = Snapshot(toy.make_data(size=16), counter)
        result = loop.train(cfg, str(tmp_path), task=toy.RegressionTask(), train_data=data)
    finally:
        monitoring.unregister_event_duration_listener(counter)
    # Steps 2..30 plus three async checkpoint saves compiled nothing.
    assert data.after_step1 is not None and counter.count == data.after_step1
    losses = [result.losses[s] for s in sorted(result.losses)]
    assert len(losses) == 30 and np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])
    fresh = toy.RegressionTask().init_params(jax.random.split(jax.random.PRNGKey(cfg.seed))[0])
    # Frozen: equal to a fresh init (up to the init program's compiler options, ~1 ulp).
    np.testing.assert_allclose(result.state.params["frozen"], fresh["frozen"].unbox(), rtol=1e-6)
    assert not np.allclose(result.state.params["mlp"]["w1"], fresh["mlp"]["w1"].unbox())
    assert set(result.state.ema_params) == {"mlp"}  # No EMA of the frozen projection.
    ema = result.state.ema_params["mlp"]["w1"]
    assert not np.allclose(ema, result.state.params["mlp"]["w1"])
    assert int(result.state.step) == 30 and int(result.state.bad_total) == 0
    # The state is laid out by the logical rules: w1 [embed, mlp] over fsdp (8 devices).
    assert result.state.params["mlp"]["w1"].sharding.spec == jax.sharding.PartitionSpec(
        "fsdp", "tensor"
    )


def test_nan_steps_are_skipped_then_halt(tmp_path):
    cfg = toy.config(steps=12, save_every=2)
    cfg.train.max_bad_steps = 3
    # Batch 2 (step 3) is poisoned once; batches 5, 6, 7 (steps 6-8) in a row halt the run.
    data = toy.make_data(size=96, poison_batches=(2,))
    result = loop.train(cfg, str(tmp_path / "one"), task=toy.RegressionTask(), train_data=data)
    assert np.isnan(result.losses[3]) and int(result.state.bad_total) == 1
    assert all(np.isfinite(result.losses[s]) for s in result.losses if s != 3)
    assert np.all(np.isfinite(np.asarray(result.state.params["mlp"]["w1"])))

    data = toy.make_data(size=96, poison_batches=(5, 6, 7))
    with pytest.raises(loop.TrainingHalted, match="3 train steps in a row had a NaN/Inf"):
        loop.train(cfg, str(tmp_path / "run"), task=toy.RegressionTask(), train_data=data)
    manager = checkpointing.make_manager(tmp_path / "run" / "checkpoints", cfg.checkpoint)
    assert manager.latest_step() == 6  # saved every 2 steps; the halt at step 8 saved nothing
    mesh = sharding.make_mesh(cfg.mesh)
    params = checkpointing.restore_subtrees(
        tmp_path / "run" / "checkpoints", _abstract_params(mesh)
    )
    assert checkpointing.subtree_names(tmp_path / "run" / "checkpoints") == ["frozen", "mlp"]
    assert all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(params))


def _abstract_params(mesh):
    boxed = jax.eval_shape(toy.RegressionTask().init_params, jax.random.PRNGKey(0))
    return sharding.abstract_on_mesh(boxed, mesh)


def test_restore_onto_a_different_mesh(tmp_path):
    cfg = toy.config(steps=3, save_every=3)
    cfg.mesh.fsdp, cfg.mesh.tensor = 8, 1
    saved = loop.train(cfg, str(tmp_path), task=toy.RegressionTask(), train_data=toy.make_data())
    assert saved.state.params["mlp"]["w1"].sharding.mesh.shape["fsdp"] == 8

    cfg.mesh.fsdp, cfg.mesh.tensor = 2, 4
    run = loop.prepare(cfg, str(tmp_path), toy.RegressionTask())
    restored, meta = checkpointing.restore(run.manager, 3, run.abstract_state, toy.make_data())
    assert meta["step"] == 3
    w1 = restored.params["mlp"]["w1"]
    assert w1.sharding.spec == jax.sharding.PartitionSpec("fsdp", "tensor")
    assert dict(w1.sharding.mesh.shape) == {"data": 1, "fsdp": 2, "tensor": 4, "sequence": 1}
    for name in ("params", "opt_state", "ema_params"):
        for a, b in zip(
            jax.tree.leaves(getattr(saved.state, name)),
            jax.tree.leaves(getattr(restored, name)),
            strict=True,
        ):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # Adam moments of w1 follow the parameter's new layout.
    mu = [x for x in jax.tree.leaves(restored.opt_state) if x.shape == w1.shape]
    assert mu and all(x.sharding.spec == w1.sharding.spec for x in mu)
