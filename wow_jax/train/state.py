"""The train state: everything a bitwise-exact resume needs besides the data iterator position.

TrainState is a `flax.struct.dataclass` (a pytree) so it passes through `jax.jit` with one
sharding per leaf and is saved by Orbax as one tree. `create` applied (under jax.eval_shape) to
the boxed abstract params gives the boxed abstract state: params, Adam moments, accumulated
gradients and EMA keep their logical axes, so `sharding.variable_shardings` of it is every leaf's
sharding (counters and rng replicated), as in the flax lm1b example.
"""

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from wow_jax.train import optimizer as opt_lib


@struct.dataclass
class TrainState:
    step: jax.Array  # [] int32: train-step calls done (micro-steps when grad_accum > 1).
    params: Any  # Parameter tree (trainable and frozen leaves; see optimizer.freeze_labels).
    opt_state: Any  # Optax state of make_optimizer(...).
    ema_params: Any  # EMA of the trained params only (None when config.train.ema_decay == 0).
    rng: jax.Array  # [2] uint32 raw key; step i uses fold_in(rng, i), so resume is exact.
    bad_streak: jax.Array  # [] int32: consecutive steps skipped for NaN/Inf loss or grads.
    bad_total: jax.Array  # [] int32: steps skipped over the whole run.


def create(params, tx, rng: jax.Array, ema_decay: float, trainable: dict) -> TrainState:
    """A fresh state at step 0 from boxed or plain `params` (works under jax.eval_shape).

    trainable: tree of bools like params (optimizer.trainable_mask); only those leaves get an EMA.
    """

    def zero():  # distinct buffers, so the state can be donated leaf by leaf
        return jnp.zeros((), jnp.int32)

    return TrainState(
        step=zero(),
        params=params,
        opt_state=tx.init(params),
        ema_params=(
            jax.tree.map(jnp.copy, opt_lib.trainable_subtree(params, trainable))
            if ema_decay > 0
            else None
        ),
        rng=jnp.asarray(rng),
        bad_streak=zero(),
        bad_total=zero(),
    )
