"""Multi-host start-up: `jax.distributed.initialize` from the environment, before any JAX use.

- Explicit (any cluster, or several local processes): JAX_COORDINATOR_ADDRESS=host:port,
  JAX_NUM_PROCESSES=n, JAX_PROCESS_ID=i (optional JAX_LOCAL_DEVICE_IDS).
- Managed clusters (Cloud TPU pods, SLURM, Open MPI, ...): WOW_JAX_DISTRIBUTED=auto lets JAX
  detect everything itself; on a Cloud TPU pod slice the TPU metadata is detected automatically.
- Otherwise a single process runs and nothing is initialised.
"""

import os

from absl import logging


def _on_tpu_pod() -> bool:
    return bool(os.environ.get("TPU_WORKER_HOSTNAMES", "").count(",")) or bool(
        os.environ.get("MEGASCALE_COORDINATOR_ADDRESS")
    )


def initialize_from_env() -> bool:
    """Calls jax.distributed.initialize when the environment asks for it; returns True if so."""
    import jax

    if jax.distributed.is_initialized():
        return True
    address = os.environ.get("JAX_COORDINATOR_ADDRESS")
    num = os.environ.get("JAX_NUM_PROCESSES")
    pid = os.environ.get("JAX_PROCESS_ID")
    if address and num and pid:
        jax.distributed.initialize(address, num_processes=int(num), process_id=int(pid))
    elif address or num or pid:
        raise ValueError(
            "multi-process start needs JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and "
            f"JAX_PROCESS_ID together; got address={address!r} num={num!r} id={pid!r}"
        )
    elif os.environ.get("WOW_JAX_DISTRIBUTED") == "auto" or _on_tpu_pod():
        jax.distributed.initialize()
    else:
        return False
    logging.info(
        "jax.distributed: process %d of %d, %d local / %d global devices",
        jax.process_index(),
        jax.process_count(),
        jax.local_device_count(),
        jax.device_count(),
    )
    return True
