"""The train state: everything a bitwise-exact resume needs besides the data iterator position.

TrainState is a `flax.struct.dataclass` (a pytree) so it passes through `jax.jit` with one
sharding per leaf and is saved by Orbax as one tree.
"""

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct


@struct.dataclass
class TrainState:
    step: jax.Array  # [] int32: train-step calls done (micro-steps when grad_accum > 1).
    params: Any  # Parameter tree (trainable and frozen leaves; see optimizer.freeze_labels).
    opt_state: Any  # Optax state of make_optimizer(...).
    ema_params: Any  # EMA of params, or None when config.train.ema_decay == 0.
    rng: jax.Array  # [2] uint32 raw key; step i uses fold_in(rng, i), so resume is exact.
    bad_streak: jax.Array  # [] int32: consecutive steps skipped for NaN/Inf loss or grads.
    bad_total: jax.Array  # [] int32: steps skipped over the whole run.


def create(params, tx, rng: jax.Array, ema_decay: float) -> TrainState:
    """A fresh state at step 0 (works under jax.eval_shape for the abstract state)."""

    def zero():  # distinct buffers, so the state can be donated leaf by leaf
        return jnp.zeros((), jnp.int32)

    return TrainState(
        step=zero(),
        params=params,
        opt_state=tx.init(params),
        ema_params=jax.tree.map(jnp.copy, params) if ema_decay > 0 else None,
        rng=jnp.asarray(rng),
        bad_streak=zero(),
        bad_total=zero(),
    )
