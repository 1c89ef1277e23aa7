"""FM-IDM (wow_jax/models/idm.py): shapes, heads, logical axes, sharded apply, clear errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from wow_jax import models, sharding
from wow_jax.models import idm
from wow_jax.sampling import pipeline


def _inputs(batch, size, seed=0):
    rng = np.random.default_rng(seed)
    frames = rng.uniform(-1, 1, (2, batch, size, size, 3)).astype(np.float32)
    flow = rng.normal(0, 2, (batch, size, size, 2)).astype(np.float32)
    mask = (np.linalg.norm(flow, axis=-1, keepdims=True) > 1).astype(np.float32)
    return frames[0], frames[1], flow, mask


def test_heads_and_shapes(tiny_config):
    cfg = tiny_config.model.idm
    params = idm.init_params(cfg, jax.random.key(0))
    out = idm.create(cfg).apply({"params": params}, *_inputs(3, 32))
    assert idm.continuous_dims(cfg) == (0, 1, 2)  # Meta-World: xyz continuous, 3 = gripper.
    assert out["continuous"].shape == (3, 3) and out["gripper_logit"].shape == (3,)
    assert out["continuous"].dtype == out["gripper_logit"].dtype == jnp.float32
    assert np.all(np.isfinite(out["continuous"]))
    cfg.gripper_index = -1  # No gripper: every dim continuous, no classifier.
    params = idm.init_params(cfg, jax.random.key(0))
    out = idm.create(cfg).apply({"params": params}, *_inputs(2, 32))
    assert set(out) == {"continuous"} and out["continuous"].shape == (2, 4)
    assert "gripper_head" not in params


def test_every_parameter_has_logical_axes(tiny_config):
    abstract = idm.abstract_params(tiny_config.model.idm)
    boxed = jax.tree.leaves(abstract, is_leaf=lambda x: isinstance(x, nn.Partitioned))
    assert boxed and all(isinstance(leaf, nn.Partitioned) for leaf in boxed)
    assert all(len(leaf.names) == leaf.value.ndim for leaf in boxed)
    names = {leaf.names for leaf in boxed}
    assert (None, None, sharding.CONV_IN, sharding.CHANNELS) in names  # conv kernels
    assert (sharding.EMBED, sharding.MLP) in names and (sharding.MLP, sharding.EMBED) in names
    known = {v for n, v in vars(sharding).items() if n.isupper() and isinstance(v, str)}
    assert {n for leaf in boxed for n in leaf.names} <= known | {None}


def test_sharded_apply_equals_one_device(tiny_config):
    cfg = tiny_config.model.idm
    mesh = sharding.make_mesh(tiny_config.mesh)  # fsdp over the 8 simulated devices
    abstract = idm.abstract_params(cfg)
    shardings = sharding.variable_shardings(abstract, mesh)
    params = nn.meta.unbox(idm.init_params(cfg, jax.random.key(1)))
    inputs = _inputs(8, 32, seed=1)
    want = idm.create(cfg).apply({"params": params}, *inputs)
    placed = jax.device_put(params, shardings)
    assert any(not s.is_fully_replicated for s in jax.tree.leaves(shardings))
    batch = sharding.shard_batch(inputs, mesh)
    with sharding.activate(mesh):
        got = jax.jit(lambda p, x: idm.create(cfg).apply({"params": p}, *x))(placed, batch)
    for key in want:
        np.testing.assert_allclose(got[key], want[key], rtol=1e-5, atol=1e-5)


def test_motion_inputs_reach_the_prediction(tiny_config):
    cfg = tiny_config.model.idm
    params = idm.init_params(cfg, jax.random.key(2))
    frame_t, frame_tk, flow, mask = _inputs(2, 32)
    apply = idm.create(cfg).apply
    base = apply({"params": params}, frame_t, frame_tk, flow, mask)["continuous"]
    moved = apply({"params": params}, frame_t, frame_tk, flow + 3.0, mask)["continuous"]
    assert not np.allclose(base, moved, atol=1e-4)


def test_bad_inputs_are_refused_clearly(tiny_config):
    cfg = tiny_config.model.idm
    params = idm.init_params(cfg, jax.random.key(0))
    apply = idm.create(cfg).apply
    frame_t, frame_tk, flow, mask = _inputs(2, 32)
    with pytest.raises(ValueError, match=r"frame_t and frame_tk must have the same shape"):
        apply({"params": params}, frame_t, frame_tk[:, :16, :16], flow, mask)
    with pytest.raises(ValueError, match=r"flow must be \[2, 32, 32, 2\]"):
        apply({"params": params}, frame_t, frame_tk, flow[..., :1], mask)
    with pytest.raises(ValueError, match=r"multiples of 2\^len\(stage_mult\) x pool_grid = 8"):
        apply({"params": params}, *(x[:, :28, :28] for x in (frame_t, frame_tk, flow, mask)))


# issue 17: motion='learned' reads the raw frame pair only (no host flow), and its motion branch
# sees the difference of the frames: moving frame_tk changes the prediction; host flow is refused.
def test_learned_motion_reads_the_frames_only(tiny_config):
    cfg = tiny_config.model.idm
    cfg.motion = "learned"
    params = idm.init_params(cfg, jax.random.key(2))
    assert idm.input_names(cfg) == ("frame_t", "frame_tk")
    frame_t, frame_tk, flow, mask = _inputs(2, 32)
    apply = idm.create(cfg).apply
    out = apply({"params": params}, frame_t, frame_tk)
    assert out["continuous"].shape == (2, 3) and out["gripper_logit"].shape == (2,)
    moved = apply({"params": params}, frame_t, np.roll(frame_tk, 3, axis=2))["continuous"]
    assert not np.allclose(out["continuous"], moved, atol=1e-4)
    # The motion branch's first conv reads 9 channels: frame_t, frame_tk and their difference.
    assert params["motion_encoder"]["down_0"]["kernel"].value.shape[2] == 9
    with pytest.raises(ValueError, match=r"motion='learned' reads no host flow and mask"):
        apply({"params": params}, frame_t, frame_tk, flow, mask)
    cfg.motion = "dis"
    with pytest.raises(ValueError, match=r"motion='dis' reads a host flow and mask"):
        idm.create(cfg).apply({"params": idm.init_params(cfg, jax.random.key(2))}, frame_t, frame_t)


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("motion", "raft", r"config.model.idm.motion must be one of \('dis', 'learned'\)"),
        ("gripper_index", 4, r"gripper_index must be -1 \(no gripper\) or an action index"),
        ("norm_groups", 3, r"width x stage_mult gives channels \[8, 16\] not divisible"),
        ("flow_scale", 0.0, r"flow_scale must be > 0"),
    ],
)
def test_bad_config_names_the_key(tiny_config, key, value, message):
    cfg = tiny_config.model.idm
    cfg[key] = value
    with pytest.raises(ValueError, match=message):
        idm.create(cfg)


def test_generation_never_loads_the_idm(tiny_config):
    mesh = sharding.make_mesh(tiny_config.mesh)
    assert set(pipeline.param_targets(tiny_config, mesh)) == set(models.WORLD_MODEL_NAMES)
    assert "idm" not in models.WORLD_MODEL_NAMES and "idm" in models.COMPONENT_NAMES
