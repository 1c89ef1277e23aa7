"""End to end: mode 'demo' (`python -m wow_jax.main --config=configs/demo.py:quick`) on one CPU
device, then a second run in the same workdir that reuses every stage's outputs."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("metaworld")

from wow_jax import checkpointing  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run_demo(workdir) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)  # one CPU device, as a user's laptop
    env.update(JAX_PLATFORMS="cpu", MUJOCO_GL=env.get("MUJOCO_GL", "egl"))
    cmd = [
        sys.executable,
        "-m",
        "wow_jax.main",
        "--config=configs/demo.py:quick",
        f"--workdir={workdir}",
    ]
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-4000:]
    return out


def _outputs(workdir) -> dict:
    """Modification times of every file a stage writes besides its checkpoints."""
    names = ["clips/train.npz", "clips/heldout.npz", "cache/train.npz", "cache/heldout.npz"]
    names += ["latent_stats.json", "tokenizer/spiece.model", "imagined/metrics.json"]
    names += [f"imagined/compare_{i}.gif" for i in range(2)]
    return {name: os.stat(workdir / name).st_mtime_ns for name in names}


def test_quick_demo_trains_checkpoints_imagines_and_resumes(tmp_path):
    out = _run_demo(tmp_path)
    summary = json.loads((tmp_path / "demo_summary.json").read_text())

    for stage, steps in (("vae", 10), ("world_model", 20)):
        records = [
            json.loads(line)
            for line in (tmp_path / stage / "metrics.jsonl").read_text().split("\n")
            if line
        ]
        assert [r["step"] for r in records if "train/loss" in r] == list(range(1, steps + 1))
        assert os.path.isdir(tmp_path / stage / "checkpoints" / str(steps))
        assert os.listdir(tmp_path / stage / "tensorboard")
    records = (tmp_path / "world_model" / "metrics.jsonl").read_text().split("\n")
    evals = [json.loads(r)["step"] for r in records if "eval/loss" in r]
    assert evals == [10, 20]  # held-out eval loss every train.eval_every steps
    assert checkpointing.subtree_names(tmp_path / "world_model" / "checkpoints") == [
        "clip",
        "dit",
        "text",
        "vae",
    ]
    stats = json.loads((tmp_path / "latent_stats.json").read_text())
    assert len(stats["latents_mean"]) == len(stats["latents_std"]) == 16
    assert (tmp_path / "tokenizer" / "spiece.model").exists()
    # The world model's run directory describes itself (generate needs no model flags).
    run = json.loads((tmp_path / "world_model" / "config.json").read_text())
    vae = run["model"]["vae"]
    assert (vae["latents_mean"], vae["latents_std"]) == (
        stats["latents_mean"],
        stats["latents_std"],
    )
    copy = tmp_path / "world_model" / "tokenizer" / "spiece.model"
    assert run["model"]["text"]["tokenizer_path"] == str(copy)
    assert copy.read_bytes() == (tmp_path / "tokenizer" / "spiece.model").read_bytes()
    imagined = summary["imagined"]
    assert len(imagined["clips"]) == 2
    for clip in imagined["clips"]:
        assert os.path.getsize(clip["gif"]) > 0
        assert np.isfinite(clip["psnr"]) and -1.0 <= clip["ssim"] <= 1.0
    assert "PSNR dB" in out.stdout and f"{imagined['mean_psnr']:.2f}" in out.stdout

    # A second run reuses every stage: no collection, training, encoding or imagining again.
    written = _outputs(tmp_path)
    again = _run_demo(tmp_path)
    assert _outputs(tmp_path) == written
    assert again.stderr.count("nothing to do: checkpoint step") == 2
    assert "Meta-World episodes" not in again.stderr
    assert json.loads((tmp_path / "demo_summary.json").read_text()) == summary
    assert f"{imagined['mean_psnr']:.2f}" in again.stdout
