"""Runs one command as several local JAX processes (jax.distributed over 127.0.0.1) on CPU."""

import os
import socket
import subprocess


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_env(devices: int, **extra) -> dict:
    """os.environ with `devices` simulated CPU devices and the `extra` variables."""
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    env["JAX_PLATFORMS"] = "cpu"
    env.update({k: str(v) for k, v in extra.items()})
    return env


def run_processes(cmd: list, processes: int, devices: int, timeout: float, cwd=None) -> list:
    """Starts `cmd` as `processes` JAX processes of `devices` CPU devices each (the environment
    variables wow_jax.train.distributed reads) and waits; asserts every one exits 0.

    Returns each process's (stdout, stderr).
    """
    port = free_port()
    procs = [
        subprocess.Popen(
            [str(c) for c in cmd],
            env=cpu_env(
                devices,
                JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
                JAX_NUM_PROCESSES=processes,
                JAX_PROCESS_ID=pid,
            ),
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for pid in range(processes)
    ]
    outputs = []
    try:
        for proc in procs:
            outputs.append(proc.communicate(timeout=timeout))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    for pid, (proc, (_, stderr)) in enumerate(zip(procs, outputs, strict=True)):
        assert proc.returncode == 0, f"process {pid} exited {proc.returncode}:\n{stderr[-3000:]}"
    return outputs
