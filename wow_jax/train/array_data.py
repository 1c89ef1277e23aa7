"""An in-memory, checkpointable batch iterator over a dict of equal-length arrays.

Used for latent/text caches (the demo) and tests. Every process walks the same seeded
permutation per epoch and takes its own slice of each global batch, so the global batch is the
same for any process count. State is JSON: {'epoch': int, 'index': int}.
"""

import jax
import numpy as np


class ArrayIterator:
    """Yields dicts of [global_batch // process_count, ...] numpy arrays forever (reshuffled per
    epoch; a partial last batch of an epoch is dropped)."""

    def __init__(self, arrays: dict, global_batch: int, seed: int = 0, shuffle: bool = True):
        sizes = {k: len(v) for k, v in arrays.items()}
        if len(set(sizes.values())) != 1:
            raise ValueError(f"all arrays need the same length, got {sizes}")
        self.arrays = {k: np.asarray(v) for k, v in arrays.items()}
        self.size = next(iter(sizes.values()))
        if global_batch > self.size:
            raise ValueError(
                f"global batch {global_batch} exceeds the {self.size} examples; lower "
                "config.data.batch_size or add data"
            )
        procs = jax.process_count()
        if global_batch % procs:
            raise ValueError(
                f"global batch {global_batch} must divide over {procs} processes; "
                "change config.data.batch_size"
            )
        self.global_batch, self.local_batch = global_batch, global_batch // procs
        self.seed, self.shuffle = seed, shuffle
        self.epoch, self.index = 0, 0

    def _order(self) -> np.ndarray:
        if not self.shuffle:
            return np.arange(self.size)
        return np.random.default_rng((self.seed, self.epoch)).permutation(self.size)

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        if self.index + self.global_batch > self.size:
            self.epoch, self.index = self.epoch + 1, 0
        rows = self._order()[self.index : self.index + self.global_batch]
        self.index += self.global_batch
        start = jax.process_index() * self.local_batch
        rows = rows[start : start + self.local_batch]
        return {k: v[rows] for k, v in self.arrays.items()}

    def get_state(self) -> dict:
        return {"epoch": self.epoch, "index": self.index}

    def set_state(self, state: dict) -> None:
        self.epoch, self.index = int(state["epoch"]), int(state["index"])
