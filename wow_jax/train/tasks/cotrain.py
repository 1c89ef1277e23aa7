"""Co-training: the world model and the FM-IDM trained in one run, as WoW trains them together
(config.train.task='world_model' with config.idm.cotrain).

params = the world model's ({'dit', 'vae', 'text'(, 'clip')}, tasks/world_model.py) + {'idm'}
(tasks/idm.py). Batch: the world model's keys + 'idm', the IDM's pair batch of the same clips
(`tasks.cotrain_batches`; N = B (T - k) pairs, module docstring of tasks/idm.py).

Summed steps: loss = world-model loss + IDM loss. The two models share no parameter, so each
gets exactly the gradient of its own loss, and `optimizer_groups` gives the IDM its own AdamW
(config.idm.cotrain_lr on the run's schedule, its own clipping norm and moments;
train/optimizer.py `make_optimizer(groups=...)`): both models take one update per step, through
the one loop, checkpoint (params, both optimisers' states, the data position) and metrics.
"""

import jax
import ml_collections

from wow_jax.train.tasks.idm import IDMTask
from wow_jax.train.tasks.world_model import WorldModelTask

IDM = "idm"  # The IDM's top-level params key and batch key.


class CoTrainTask:
    name = "world_model"  # A world-model run (its action statistics, generation) holding an IDM.

    def __init__(self, config: ml_collections.ConfigDict, world: WorldModelTask):
        self.world, self.idm = world, IDMTask(config)
        patterns = (world.frozen_pattern, self.idm.frozen_pattern)
        self.frozen_pattern = "|".join(p for p in patterns if p)
        idm_train = config.train.copy_and_resolve_references()
        with idm_train.unlocked():
            idm_train.learning_rate = config.idm.cotrain_lr
        self.optimizer_groups = {IDM: idm_train}

    def init_params(self, rng):
        world_rng, idm_rng = jax.random.split(rng)
        return {**self.world.init_params(world_rng), **self.idm.init_params(idm_rng)}

    def pretrained_params(self, rng) -> dict:
        """The IDM's imported DINOv2 frame encoder (tasks/idm.py), drawn as `init_params`."""
        return self.idm.pretrained_params(jax.random.split(rng)[1])

    @staticmethod
    def _world_batch(batch: dict) -> dict:
        return {k: v for k, v in batch.items() if k != IDM}

    def loss(self, params, batch, rng):
        world_rng, idm_rng = jax.random.split(rng)
        world_params = {k: v for k, v in params.items() if k != IDM}
        world_loss, world_aux = self.world.loss(world_params, self._world_batch(batch), world_rng)
        idm_loss, idm_aux = self.idm.loss({IDM: params[IDM]}, batch[IDM], idm_rng)
        metrics = {
            **world_aux,
            "world_model_loss": world_loss,
            "idm_loss": idm_loss,
            **{f"idm_{k}": v for k, v in idm_aux.items()},
        }
        return world_loss + idm_loss, metrics

    def tokens_per_sample(self, batch) -> int:
        """The world model's DiT tokens per clip (the IDM's pairs are not counted)."""
        return self.world.tokens_per_sample(self._world_batch(batch))

    def train_flops(self, batch) -> float:
        """The world model's train FLOPs (wow_jax.flops); the small IDM is not counted."""
        return self.world.train_flops(self._world_batch(batch))
