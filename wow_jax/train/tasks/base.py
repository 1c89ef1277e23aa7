"""The task interface: what the one training loop needs from a model.

A task owns its model(s) and objective; the loop owns the optimizer, shardings, checkpoints,
guards and logging. A task implements

    init_params(rng) -> params tree, leaves boxed with logical axis names
                       (nn.with_logical_partitioning), e.g. {'dit': ..., 'vae': ...}
    loss(params, batch, rng) -> (scalar float32 loss, dict of scalar metrics)
                       params unboxed; batch: dict of global jax.Arrays [B, ...]; pure, jittable
    tokens_per_sample(batch) -> int   tokens the model processes per sample (for tokens/s)
    train_flops(batch) -> float       optional: analytic model FLOPs of one step of the global
                       batch (for MFU; wow_jax.flops); without it the compiler's count is used

and data iterators yield per-process numpy batches (dicts of [B_local, ...]) with
`get_state()` / `set_state(state)` so checkpoints can store their position.
"""

from typing import Any, Protocol

import jax


class Task(Protocol):
    name: str

    def init_params(self, rng: jax.Array) -> Any: ...

    def loss(self, params: Any, batch: dict, rng: jax.Array) -> tuple[jax.Array, dict]: ...

    def tokens_per_sample(self, batch: dict) -> int: ...


class DataIterator(Protocol):
    def __iter__(self): ...

    def __next__(self) -> dict: ...

    def get_state(self) -> Any: ...

    def set_state(self, state: Any) -> None: ...
