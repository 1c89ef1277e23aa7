"""Training metrics: a progress bar (tqdm: steps, ETA, loss), a console line every log step,
TensorBoard (tensorboardX) and a JSONL log.

Throughput is measured over the steps between two logs: steps/s, samples/s, tokens/s (video
tokens after patchify, as the task counts them) and MFU = achieved FLOP/s / peak FLOP/s per
device, where the FLOPs of one step per device come from `wow_jax.flops.step_flops_per_device`:
the task's analytic model FLOPs (the DiT's documented formula, attention included) split over the
devices, or for tasks without a formula the compiled step's `cost_analysis()`.
"""

import json
import os
import time

import jax
from absl import logging
from tqdm import tqdm

# Dense bf16 peak FLOP/s per device (vendor datasheets), matched against jax's device_kind.
PEAK_FLOPS = {
    "TPU v4": 275e12,
    "TPU v5 lite": 197e12,
    "TPU v5e": 197e12,
    "TPU v5p": 459e12,
    "TPU v5": 459e12,
    "TPU v6 lite": 918e12,
    "TPU v6e": 918e12,
    "H100": 989e12,
    "H200": 989e12,
    "A100": 312e12,
}


def peak_flops_per_device(configured: float = 0.0) -> float | None:
    """config.train.peak_flops if set, else the table entry for this device kind, else None."""
    if configured > 0:
        return configured
    return peak_flops_of(jax.devices()[0].device_kind)


def peak_flops_of(device_kind: str) -> float | None:
    """The PEAK_FLOPS entry matching a jax device_kind (e.g. 'TPU v5'), else None."""
    for name, flops in PEAK_FLOPS.items():
        if name.lower() in device_kind.lower():
            return flops
    return None


def drop_rows_after(path: str, step: int) -> None:
    """Rewrites the JSONL file `path` keeping only the rows of steps <= `step`: those a killed run
    wrote after the checkpoint a resume starts from (and a half-written last row) go, so the
    file holds each step once."""
    if not os.path.exists(path):
        return
    kept = []
    with open(path) as f:
        for line in f:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if row.get("step", 0) <= step:
                kept.append(line if line.endswith("\n") else line + "\n")
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.writelines(kept)
    os.replace(tmp, path)


class MetricsWriter:
    """Writes scalars to TensorBoard + `<workdir>/metrics.jsonl` (process 0 only) and logs a line.

    `step` is the step the run starts from (its checkpoint's): rows of later steps in an existing
    metrics.jsonl are dropped first. `flops_per_step` and `peak_flops` are per device. With
    `total_steps` > 0 a progress bar of the train steps (from `step`) runs on stderr.
    """

    def __init__(
        self,
        workdir: str,
        samples_per_step: int,
        tokens_per_sample: int,
        flops_per_step: float | None,
        peak_flops: float | None,
        tensorboard: bool = True,
        step: int = 0,
        total_steps: int = 0,
    ):
        self.samples_per_step = samples_per_step
        self.tokens_per_sample = tokens_per_sample
        self.flops_per_step = flops_per_step
        self.peak_flops = peak_flops
        self.primary = jax.process_index() == 0
        self._jsonl = None
        self._tb = None
        if self.primary:
            os.makedirs(workdir, exist_ok=True)
            path = os.path.join(workdir, "metrics.jsonl")
            drop_rows_after(path, step)
            self._jsonl = open(path, "a")  # noqa: SIM115
            if tensorboard:
                from tensorboardX import SummaryWriter

                self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))
        self._last_time = None
        self._last_step = None
        self._bar = None
        if self.primary and total_steps > 0:
            self._bar = tqdm(
                total=total_steps, initial=step, desc="train", unit="step", mininterval=2.0
            )

    def start(self, step: int) -> None:
        """Marks the start of the timed window (call after the first, compiling step)."""
        self._last_time, self._last_step = time.perf_counter(), step

    def throughput(self, step: int) -> dict[str, float]:
        if self._last_time is None or step <= self._last_step:
            return {}
        now = time.perf_counter()
        steps_per_s = (step - self._last_step) / max(now - self._last_time, 1e-9)
        self._last_time, self._last_step = now, step
        out = {
            "steps_per_s": steps_per_s,
            "samples_per_s": steps_per_s * self.samples_per_step,
            "tokens_per_s": steps_per_s * self.samples_per_step * self.tokens_per_sample,
        }
        if self.flops_per_step:
            out["tflops_per_s"] = steps_per_s * self.flops_per_step / 1e12
            if self.peak_flops:
                out["mfu"] = steps_per_s * self.flops_per_step / self.peak_flops
        return out

    def record(self, step: int, scalars: dict[str, float], prefix: str = "train") -> None:
        """Appends one JSONL line (every step: the exact loss sequence of the run)."""
        if not self.primary:
            return
        record = {"step": step, **{f"{prefix}/{k}": float(v) for k, v in scalars.items()}}
        self._jsonl.write(json.dumps(record) + "\n")
        self._jsonl.flush()
        if self._bar is not None and prefix == "train" and step > self._bar.n:
            self._bar.set_postfix(loss=f"{scalars['loss']:.4f}", refresh=False)
            self._bar.update(step - self._bar.n)

    def write(self, step: int, scalars: dict[str, float], prefix: str = "train") -> None:
        """TensorBoard scalars (at log steps)."""
        if self.primary and self._tb is not None:
            for key, value in scalars.items():
                self._tb.add_scalar(f"{prefix}/{key}", float(value), step)

    def log_line(self, step: int, total: int, scalars: dict[str, float]) -> None:
        parts = [f"step {step}/{total}"]
        for key, fmt in (
            ("loss", ".4f"),
            ("grad_norm", ".3f"),
            ("lr", ".2e"),
            ("steps_per_s", ".2f"),
            ("samples_per_s", ".1f"),
            ("tokens_per_s", ".0f"),
            ("mfu", ".1%"),
        ):
            if key in scalars:
                parts.append(f"{key} {scalars[key]:{fmt}}")
        if scalars.get("bad_total"):
            parts.append(f"skipped {int(scalars['bad_total'])}")
        logging.info(" | ".join(parts))

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        if self._jsonl is not None:
            self._jsonl.close()
        if self._tb is not None:
            self._tb.close()
