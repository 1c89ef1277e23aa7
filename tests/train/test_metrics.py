"""Metrics: FLOPs from the compiled cost analysis, throughput and MFU, JSONL + TensorBoard."""

import json
import time

import jax
import jax.numpy as jnp
import pytest

from wow_jax.train import metrics


def test_compiled_flops_counts_a_matmul():
    x = jax.ShapeDtypeStruct((64, 32), jnp.float32)
    w = jax.ShapeDtypeStruct((32, 16), jnp.float32)
    compiled = jax.jit(lambda a, b: a @ b).lower(x, w).compile()
    assert metrics.compiled_flops(compiled) == pytest.approx(2 * 64 * 32 * 16, rel=0.05)


def test_throughput_mfu_and_files(tmp_path):
    writer = metrics.MetricsWriter(
        str(tmp_path), samples_per_step=4, tokens_per_sample=10, flops_per_step=1e9, peak_flops=1e12
    )
    writer.start(0)
    time.sleep(0.05)
    out = writer.throughput(5)
    assert out["samples_per_s"] == pytest.approx(4 * out["steps_per_s"])
    assert out["tokens_per_s"] == pytest.approx(40 * out["steps_per_s"])
    assert out["mfu"] == pytest.approx(out["steps_per_s"] * 1e9 / 1e12)
    writer.record(5, {"loss": 0.5})
    writer.write(5, {"loss": 0.5, **out})
    writer.log_line(5, 10, {"loss": 0.5, **out})
    writer.close()
    assert json.loads((tmp_path / "metrics.jsonl").read_text()) == {"step": 5, "train/loss": 0.5}
    assert any(
        p.name.startswith("events.out.tfevents") for p in (tmp_path / "tensorboard").iterdir()
    )


def test_peak_flops_lookup():
    assert metrics.peak_flops_per_device(123.0) == 123.0
    assert metrics.peak_flops_per_device() is None  # CPU: unknown, MFU not reported


# issue 14 B7: after a kill -9 resume metrics.jsonl repeated the rows logged after the checkpoint
def test_a_resume_drops_the_rows_logged_after_its_checkpoint(tmp_path):
    path = tmp_path / "metrics.jsonl"
    rows = [{"step": s, "train/loss": s / 10} for s in range(1, 6)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 6, "tra')  # killed
    writer = metrics.MetricsWriter(
        str(tmp_path), 4, 10, None, None, tensorboard=False, step=3
    )  # Resumed from the checkpoint of step 3.
    writer.record(4, {"loss": 0.7})
    writer.close()
    got = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["step"] for r in got] == [1, 2, 3, 4]
    assert got[:3] == rows[:3] and got[3]["train/loss"] == 0.7
