"""`describe` sizes every registered component, without allocating it, to the exact parameter."""

import subprocess
import sys

from configs import wow14b
from wow_jax import describe, models

# WoW-1-Wan-14B parameter counts of the PyTorch references, built on the meta device:
WOW14B_PARAMS = {
    "dit": 16_394_878_784,  # diffusers WanTransformer3DModel (I2V-14B config).
    "vae": 126_892_531,  # diffusers AutoencoderKLWan (Wan2.1 VAE).
    "text": 5_680_910_336,  # transformers UMT5EncoderModel (umT5-XXL encoder).
    "clip": 611_086_080,  # transformers CLIPVisionModel ViT-H/14 (630,766,080) without the
    # last block and post-layernorm, which Wan never uses (it reads the penultimate block).
}


def test_describe_counts_every_component_of_wow14b_exactly(capsys):
    summaries = describe.run_describe(wow14b.get_config(), workdir="unused")
    out = capsys.readouterr().out
    assert out.startswith("mesh: data=1, fsdp=8, tensor=1, sequence=1 over 8 cpu device(s)")
    assert set(summaries) == set(models.COMPONENT_NAMES)
    assert set(models.WORLD_MODEL_NAMES) == set(WOW14B_PARAMS)
    assert summaries["idm"]["params"] > 0  # Trained from scratch: no reference count.
    for name, want in WOW14B_PARAMS.items():
        summary = summaries[name]
        assert summary["params"] == want, name
        assert f"{name:>5}: {want:,} params" in out
        assert summary["bytes"] >= 2 * want  # bfloat16 or float32 storage.
        assert summary["bytes_per_device"] <= summary["bytes"]
    assert summaries["dit"]["bytes_per_device"] < summaries["dit"]["bytes"] / 7  # fsdp=8.


def test_describe_wow14b_runs_on_cpu():
    result = subprocess.run(
        [sys.executable, "-m", "wow_jax.main", "--config=configs/wow14b.py",
         "--config.mode=describe"],
        capture_output=True, text=True, timeout=120, env={"JAX_PLATFORMS": "cpu"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "mesh: data=1, fsdp=1" in result.stdout
    assert f"dit: {WOW14B_PARAMS['dit']:,} params" in result.stdout


def test_describe_places_params_by_the_config_rules():
    config = wow14b.get_config()
    config.mesh.rules = (("embed", None),)  # Replaces the table: nothing maps to fsdp.
    summaries = describe.run_describe(config, workdir="unused")
    for summary in summaries.values():
        assert summary["bytes_per_device"] == summary["bytes"]
