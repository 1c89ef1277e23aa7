"""A tiny MLP regression task and synthetic data implementing the train task interface.

Used by the loop tests (and their subprocess runner) so the loop, checkpoints, guards and
multi-host paths are tested without the video models.
"""

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from wow_jax import sharding
from wow_jax.train.array_data import ArrayIterator

DIM, HIDDEN = 8, 32


class MLP(nn.Module):
    hidden: int

    @nn.compact
    def __call__(self, x):
        init = nn.initializers.lecun_normal()
        w1 = self.param(
            "w1",
            nn.with_logical_partitioning(init, (sharding.EMBED, sharding.MLP)),
            (DIM, self.hidden),
        )
        w2 = self.param(
            "w2",
            nn.with_logical_partitioning(init, (sharding.MLP, sharding.EMBED)),
            (self.hidden, DIM),
        )
        return jnp.tanh(x @ w1) @ w2


class RegressionTask:
    """params {'mlp': trained, 'frozen': a fixed random projection}; y ~ MLP(x + small noise)."""

    name = "regression"

    def __init__(self):
        self.model = MLP(HIDDEN)

    def init_params(self, rng):
        mlp_rng, frozen_rng = jax.random.split(rng)
        frozen = nn.with_logical_partitioning(nn.initializers.normal(1.0), (sharding.EMBED, None))(
            frozen_rng, (DIM, DIM)
        )
        return {"mlp": self.model.init(mlp_rng, jnp.zeros((1, DIM)))["params"], "frozen": frozen}

    def loss(self, params, batch, rng):
        x = batch["x"] + 0.01 * jax.random.normal(rng, batch["x"].shape)
        pred = self.model.apply({"params": params["mlp"]}, x @ params["frozen"])
        loss = jnp.mean(jnp.square(pred - batch["y"])) + jnp.mean(batch["poison"])
        return loss, {"pred_std": jnp.std(pred)}

    def tokens_per_sample(self, batch):
        return 1


def make_data(size=64, global_batch=8, poison_batches=(), seed=0):
    """ArrayIterator of x, y and poison (NaN for rows of the given batch numbers, unshuffled)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(size, DIM)).astype(np.float32)
    y = np.sin(x @ rng.normal(size=(DIM, DIM)).astype(np.float32)).astype(np.float32)
    poison = np.zeros((size,), np.float32)
    for b in poison_batches:
        poison[b * global_batch : (b + 1) * global_batch] = np.nan
    return ArrayIterator(
        {"x": x, "y": y, "poison": poison}, global_batch, seed=seed, shuffle=not poison_batches
    )


def config(steps=20, save_every=5):
    from configs import tiny

    cfg = tiny.get_config()
    cfg.train.steps, cfg.train.warmup_steps, cfg.train.log_every = steps, 2, 5
    cfg.train.learning_rate, cfg.train.freeze, cfg.train.ema_decay = 1e-2, "^frozen", 0.9
    cfg.train.tensorboard = False
    cfg.checkpoint.save_every, cfg.checkpoint.keep = save_every, 2
    cfg.data.batch_size = 8
    return cfg
