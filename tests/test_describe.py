"""`describe` sizes every registered component, without allocating it, to the exact parameter."""

import subprocess
import sys

import pytest

from configs import base, wan1_3b, wan_i2v14b, wow14b
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
    assert "\nmesh: data=1, fsdp=8, tensor=1, sequence=1 over 8 cpu device(s)" in out
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
    # issue 16: the command prints WoW's recipe.
    assert result.stdout.startswith(
        "scheduler: DiffSynth FlowMatchScheduler (Euler): solver=euler sigma_grid=diffsynth "
        "steps=50 shift=5.0 timestep_dtype=bfloat16\n"
        "guidance: 5.0, seed 42, conditioning frame 'diffsynth' (sample.image_resize)\n"
        "negative prompt: 'low quality, distorted, ugly, bad anatomy'\n"
        "precision: dit bfloat16 (params float32), vae float32 (params float32), "
        "text bfloat16 (params float32), clip float32 (params float32)\n"
    ), result.stdout
    assert f"dit: {WOW14B_PARAMS['dit']:,} params" in result.stdout


def test_describe_places_params_by_the_config_rules():
    config = wow14b.get_config()
    config.mesh.rules = (("embed", None),)  # Replaces the table: nothing maps to fsdp.
    summaries = describe.run_describe(config, workdir="unused")
    for summary in summaries.values():
        assert summary["bytes_per_device"] == summary["bytes"]


# issue 16: describe prints each config's recipe: scheduler, grid, steps, shift, guidance,
# negative prompt and the component precisions.
@pytest.mark.parametrize(
    "module, scheduler, negative, clip_dtype",
    [
        (wow14b, "DiffSynth FlowMatchScheduler (Euler): solver=euler sigma_grid=diffsynth "
         "steps=50 shift=5.0", base.WOW_NEGATIVE_PROMPT, "float32"),
        (wan_i2v14b, "Wan2.1 FlowUniPCMultistepScheduler (bh2, order 2): solver=unipc "
         "sigma_grid=wan steps=40 shift=3.0", base.WAN_I2V_NEGATIVE_PROMPT, "float16"),
        (wan1_3b, "Wan2.1 FlowUniPCMultistepScheduler (bh2, order 2): solver=unipc "
         "sigma_grid=wan steps=50 shift=5.0", base.WAN_NEGATIVE_PROMPT, "float32"),
    ],
)  # fmt: skip
def test_describe_prints_the_recipe(module, scheduler, negative, clip_dtype):
    scheduler_line, guidance, prompt, precision = describe.recipe_lines(module.get_config())
    assert scheduler_line.startswith(f"scheduler: {scheduler} timestep_dtype=")
    assert guidance.startswith("guidance: 5.0, seed ")
    assert prompt == f"negative prompt: {negative!r}"
    assert "dit bfloat16" in precision and "vae float32" in precision
    assert f"text bfloat16 (params float32), clip {clip_dtype}" in precision
