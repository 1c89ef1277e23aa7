"""Co-training (tasks/cotrain.py) through the shared loop with a toy world model (tests/train/
toy.py) beside the FM-IDM: both optimisers' states are checkpointed, so a resume repeats the
uninterrupted run bit for bit (the real world model: tests/train/test_train_pipeline.py)."""

import shutil

import jax
import numpy as np

from tests.train import toy
from wow_jax import checkpointing
from wow_jax.train import loop, tasks
from wow_jax.train.array_data import ArrayIterator
from wow_jax.train.tasks.cotrain import IDM, CoTrainTask

SIZE, BATCH = 32, 8


class ToyWorld(toy.RegressionTask):
    frozen_pattern = "^frozen"

    def train_flops(self, batch) -> float:
        return 1.0


def data() -> tasks.HostBatches:
    """The toy's regression rows with one IDM pair each under 'idm'."""
    rng = np.random.default_rng(0)
    world = toy.make_data(size=32, global_batch=BATCH).arrays
    frames = rng.uniform(-1, 1, (2, 32, SIZE, SIZE, 3)).astype(np.float32)
    pairs = {
        "frame_t": frames[0],
        "frame_tk": frames[1],
        "target": rng.normal(size=(32, 3)).astype(np.float32),
        "gripper": (rng.random(32) > 0.5).astype(np.float32),
    }
    inner = ArrayIterator({**world, **{f"idm.{k}": v for k, v in pairs.items()}}, BATCH)

    def nest(batch):
        out = {k: v for k, v in batch.items() if not k.startswith("idm.")}
        out[IDM] = {k.removeprefix("idm."): v for k, v in batch.items() if k.startswith("idm.")}
        return out

    return tasks.HostBatches(inner, nest, None)


def _params(workdir):
    restored = checkpointing.restore_subtrees(workdir / "checkpoints", {"mlp": None, IDM: None})
    return jax.tree.leaves(jax.tree.map(np.asarray, restored))


# issue 17: a co-training run (world model + IDM, each with its own optimiser) resumed from a
# checkpoint repeats the uninterrupted run bit for bit, both models' parameters.
def test_cotrain_resume_is_exact(tiny_config, tmp_path):
    cfg = tiny_config
    cfg.train.steps, cfg.checkpoint.save_every, cfg.train.tensorboard = 3, 1, False
    cfg.idm.cotrain, cfg.model.idm.motion = True, "learned"
    task = CoTrainTask(cfg, ToyWorld())
    assert task.frozen_pattern == "^frozen" and set(task.optimizer_groups) == {IDM}
    loop.train(cfg, str(tmp_path / "run"), task, data())
    straight = _params(tmp_path / "run")
    shutil.rmtree(tmp_path / "run" / "checkpoints" / "3")
    shutil.rmtree(tmp_path / "run" / "checkpoints" / "2")
    result = loop.train(cfg, str(tmp_path / "run"), task, data())  # Resumes at step 1.
    assert sorted(result.losses) == [2, 3]
    for a, b in zip(_params(tmp_path / "run"), straight, strict=True):
        np.testing.assert_array_equal(a, b)
