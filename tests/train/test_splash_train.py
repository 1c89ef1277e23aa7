"""The world-model train loop with the splash kernel (Pallas interpreter) on sharded meshes."""

import numpy as np

from tests.train.test_tasks import cached_batch
from wow_jax import configuration
from wow_jax.train import loop
from wow_jax.train.array_data import ArrayIterator
from wow_jax.train.tasks.world_model import WorldModelTask


def _losses(cfg, kernel: str, workdir) -> list[float]:
    cfg = cfg.copy_and_resolve_references()
    cfg.model.dit.attention = kernel
    configuration.resolve_kernels(cfg, "cpu")  # As main does: splash runs interpreted here.
    task = WorldModelTask(cfg, components=("dit",))
    data = ArrayIterator(cached_batch(cfg, n=4), 4, shuffle=False)
    result = loop.train(cfg, str(workdir), task=task, train_data=data)
    return [result.losses[s] for s in sorted(result.losses)]


# issue 15: mode train with attention=splash starts on fsdp x sequence meshes (init and the shape
# pass used to trace splash on batch-1, one-token inputs: "not evenly divisible") and trains
# like the xla kernel.
def test_splash_trains_like_xla_on_an_fsdp_sequence_mesh(tiny_config, tmp_path):
    cfg = tiny_config
    cfg.mesh.data, cfg.mesh.fsdp, cfg.mesh.tensor, cfg.mesh.sequence = 1, 2, 2, 2
    cfg.data.batch_size, cfg.train.text_dropout, cfg.train.tensorboard = 4, 0.0, False
    cfg.train.steps, cfg.train.warmup_steps, cfg.checkpoint.save_every = 2, 1, 2
    want = _losses(cfg, "xla", tmp_path / "xla")
    got = _losses(cfg, "splash", tmp_path / "splash")
    assert len(got) == 2
    np.testing.assert_allclose(got, want, rtol=1e-4)
