"""The FM-IDM with DINOv2 as its frame encoder (config.model.idm.encoder='dinov2'): a tiny random
transformers Dinov2Model imported through the interop layer (mode convert's importer) becomes
the IDM's frame encoder, its features equal transformers', and the IDM trains a step through the
shared loop with the encoder frozen."""

import jax
import numpy as np
import torch
from flax import linen as nn

from tests.models.test_dinov2 import hf_model, hf_pixels
from wow_jax import sharding
from wow_jax.interop import importer
from wow_jax.models import idm
from wow_jax.train import array_data, loop
from wow_jax.train.tasks import idm as idm_task

SIZE, PAIRS = 32, 8


def pair_arrays(rng) -> dict:
    frames = rng.uniform(-1, 1, (2, PAIRS, SIZE, SIZE, 3)).astype(np.float32)
    return {
        "frame_t": frames[0],
        "frame_tk": frames[1],
        "target": rng.normal(size=(PAIRS, 3)).astype(np.float32),
        "gripper": (rng.random(PAIRS) > 0.5).astype(np.float32),
    }


# issue 17: DINOv2 imported from a transformers Dinov2Model checkpoint through the importer is
# the IDM's frame encoder: its features equal transformers' (<= 1e-5), the IDM trains a step
# with it frozen (the encoder unchanged, the heads moved).
def test_idm_with_an_imported_dinov2_encoder(tiny_config, tmp_path):
    cfg = tiny_config
    cfg.mode, cfg.train.task, cfg.train.steps = "train", "idm", 1
    cfg.train.warmup_steps, cfg.train.learning_rate, cfg.train.schedule = 0, 1e-2, "constant"
    cfg.train.tensorboard, cfg.checkpoint.save_every = False, 1
    cfg.data.batch_size = PAIRS
    model_cfg = cfg.model.idm
    model_cfg.encoder, model_cfg.motion = "dinov2", "learned"
    model_cfg.dinov2.image_size = SIZE
    hf = hf_model(model_cfg.dinov2)
    hf.save_pretrained(tmp_path / "hf")
    mesh = sharding.make_mesh(cfg.mesh)
    importer.import_checkpoint("dinov2", tmp_path / "hf", tmp_path / "dino", model_cfg.dinov2, mesh)
    model_cfg.dinov2_checkpoint = str(tmp_path / "dino")

    task = idm_task.IDMTask(cfg)
    assert task.frozen_pattern == "^idm/dinov2/"
    data = pair_arrays(np.random.default_rng(0))
    result = loop.train(
        cfg, str(tmp_path / "run"), task, array_data.ArrayIterator(data, PAIRS, seed=0)
    )
    params = jax.device_get(result.state.params["idm"])

    frames = data["frame_t"][:2]
    features = idm.create(model_cfg).apply(
        {"params": params}, frames, method=lambda m, x: m.frame_features(x)
    )
    with torch.no_grad():
        want = hf(pixel_values=hf_pixels(frames)).last_hidden_state.numpy()[:, 1:]
    grid = SIZE // model_cfg.dinov2.patch_size
    want = want.reshape(2, grid, grid, -1)
    assert np.abs(np.asarray(features) - want).max() / np.abs(want).max() <= 1e-5

    start = nn.meta.unbox(task.pretrained_params(jax.random.split(jax.random.PRNGKey(cfg.seed))[0]))
    encoder = jax.tree.leaves(start["idm"]["dinov2"])
    for a, b in zip(encoder, jax.tree.leaves(params["dinov2"]), strict=True):
        np.testing.assert_array_equal(a, b)  # Frozen: still the imported weights.
    head = start["idm"]["continuous_head"]["kernel"]
    assert np.abs(params["continuous_head"]["kernel"] - head).max() > 1e-4  # Trained.
