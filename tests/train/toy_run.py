"""Subprocess runner for the loop tests: trains the toy task in --workdir.

python tests/train/toy_run.py WORKDIR STEPS [--sleep S] [--mesh fsdp,tensor] [--out params.npz]
    [--sigterm-at N]  (SIGTERM to itself when batch N is requested)
Multi-process: set JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID.
"""

import argparse
import os
import signal
import sys
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from wow_jax.train import distributed  # noqa: E402

distributed.initialize_from_env()

import jax  # noqa: E402
import numpy as np  # noqa: E402

from tests.train import toy  # noqa: E402
from wow_jax.train import loop  # noqa: E402


class SlowData:
    """Sleeps per batch; with `sigterm_at`, sends itself SIGTERM when asked for that batch."""

    def __init__(self, inner, sleep, sigterm_at=0):
        self.inner, self.sleep, self.sigterm_at, self.calls = inner, sleep, sigterm_at, 0

    def __iter__(self):
        return self

    def __next__(self):
        self.calls += 1
        if self.calls == self.sigterm_at:
            os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(self.sleep)
        return next(self.inner)

    def get_state(self):
        return self.inner.get_state()

    def set_state(self, state):
        self.inner.set_state(state)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("workdir")
    parser.add_argument("steps", type=int)
    parser.add_argument("--sleep", type=float, default=0.0)
    parser.add_argument("--mesh", default="")
    parser.add_argument("--out", default="")
    parser.add_argument("--sigterm-at", type=int, default=0)
    args = parser.parse_args()
    cfg = toy.config(steps=args.steps)
    if args.mesh:
        cfg.mesh.fsdp, cfg.mesh.tensor = (int(v) for v in args.mesh.split(","))
    data = SlowData(toy.make_data(), args.sleep, args.sigterm_at)
    result = loop.train(cfg, args.workdir, task=toy.RegressionTask(), train_data=data)
    if args.out:
        params = jax.tree.map(
            lambda x: np.asarray(jax.experimental.multihost_utils.process_allgather(x, tiled=True)),
            result.state.params,
        )
        if jax.process_index() == 0:
            flat = {
                jax.tree_util.keystr(k): v for k, v in jax.tree_util.tree_leaves_with_path(params)
            }
            np.savez(args.out, **flat)
    print(f"done preempted={result.preempted} step={int(result.state.step)}", flush=True)


if __name__ == "__main__":
    main()
