"""Config files load, validate, and refuse bad input with an error naming the key."""

import importlib
import re
import subprocess
import sys

import pytest

from configs import base, demo, tiny, wan1_3b, wan_i2v14b, wow14b
from wow_jax import configuration
from wow_jax.models import dit


@pytest.mark.parametrize("module", [base, tiny, demo, wan1_3b, wan_i2v14b, wow14b])
def test_configs_validate(module):
    # The demo trains on one CPU device (its batch of 2 would not split over 8).
    num_devices = 1 if module is demo else 8
    configuration.validate(module.get_config(), num_devices=num_devices)


# issue 16: each recipe config runs every component at its reference's precision.
@pytest.mark.parametrize(
    "module, clip_dtype", [(wow14b, "float32"), (wan_i2v14b, "float16"), (wan1_3b, "float32")]
)
def test_recipe_configs_use_reference_precisions(module, clip_dtype):
    model = module.get_config().model
    assert (model.dit.dtype, model.text.dtype) == ("bfloat16", "bfloat16")
    assert model.vae.dtype == "float32" and model.clip.dtype == clip_dtype
    assert {model[n].param_dtype for n in ("dit", "vae", "text", "clip")} == {"float32"}


# issue 15: wow14b's default batch divides the v5p pods' chips with the default mesh (fsdp=-1):
# v5p-64 (32 chips, 4 clips per chip), v5p-128 (64 chips, 2 per chip) and 128 chips.
@pytest.mark.parametrize("chips", [32, 64, 128])
def test_wow14b_default_batch_divides_the_chips(chips):
    configuration.validate(wow14b.get_config(), num_devices=chips)


def test_demo_quick_variant_validates():
    configuration.validate(demo.get_config("quick"), num_devices=1)


def test_config_is_locked_against_typos():
    config = tiny.get_config()
    with pytest.raises(AttributeError, match="dim"):
        config.model.dit.dimm = 3


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("data.num_frames", 6, r"config.data.num_frames must be 1\+4k"),
        ("data.height", 33, r"config.data.height must be a multiple of 16"),
        ("data.width", 20, r"config.data.width must be a multiple of 16"),
        ("model.dit.in_channels", 17, r"config.model.dit.in_channels must be 16"),
        ("model.dit.text_dim", 7, r"config.model.dit.text_dim"),
        ("model.dit.attention", "flash", r"config.model.dit.attention must be one of"),
        ("sample.guidance", 0.5, r"config.sample.guidance must be >= 1"),
        # issue 16: the sigma grid must have a reference schedule for the solver.
        ("sample.sigma_grid", "diffsynth", r"sigma_grid must be one of \('diffusers', 'wan'\) for"),
        ("sample.timestep_dtype", "int8", r"config.sample.timestep_dtype must be one of"),
        ("sample.image_resize", "crop", r"config.sample.image_resize must be one of"),
        (
            "mode",
            "dance",
            r"config.mode must be one of \['describe', 'train', 'generate', 'act', 'evaluate', "
            "'refine', 'convert",
        ),
        ("model.cpu_kernels", "yes", r"config.model.cpu_kernels must be one of \['auto', 'on'"),
        ("model.dit.remat_policy", "some", r"config.model.dit.remat_policy must be one of"),
        ("convert.component", "idm", r"config.convert.component must be one of"),
        ("checkpoint.keep", 0, r"config.checkpoint.keep must be >= 1 .*delete every one"),
        ("checkpoint.keep", -1, r"config.checkpoint.keep must be >= 1"),
        ("checkpoint.keep_best", -1, r"config.checkpoint.keep_best must be >= 0"),
        ("checkpoint.save_every", 0, r"config.checkpoint.save_every must be >= 1"),
        # issue 19: SOPHIA's keys are checked at start-up.
        ("sophia.critic", "gpt", r"config.sophia.critic must be one of \['offline', 'chat'\]"),
        ("sophia.refiner", "", r"config.sophia.refiner must be one of"),
        ("sophia.candidates", 0, r"config.sophia.candidates must be >= 1"),
        ("sophia.threshold", 1.5, r"config.sophia.threshold must be in \[0, 1\]"),
        ("sophia.psnr_range", (30.0, 10.0), r"config.sophia.psnr_range must be \(low, high\)"),
        # issue 21: the LoRA keys are checked at start-up.
        ("train.lora.rank", -1, r"config.train.lora.rank must be >= 0"),
        ("train.lora.alpha", 0.0, r"config.train.lora.alpha must be > 0"),
        ("train.lora.init", "xavier", r"config.train.lora.init must be one of"),
        ("train.lora.targets", "q(", r"config.train.lora.targets must be a regex"),
        ("sample.lora_params_key", "opt_state", r"config.sample.lora_params_key must be one of"),
    ],
)
def test_bad_values_name_the_key(tiny_config, key, value, message):
    section, _, name = key.rpartition(".")
    node = tiny_config
    for part in filter(None, section.split(".")):
        node = node[part]
    node[name] = value
    with pytest.raises(ValueError, match=message):
        configuration.validate(tiny_config, num_devices=8)


def _refused(config, key: str, value, message: str) -> None:
    section, _, name = key.rpartition(".")
    node = config
    for part in section.split("."):
        node = node[part]
    node[name] = value
    with pytest.raises(ValueError, match=message):
        configuration.validate(config, num_devices=8)


# issue 18: Wan's i2v frame mask has one channel per frame of a temporal chunk, but in_channels
# had to be 2z + 4, so the demo's 2x temporal VAE (mask of 2 channels) could not be configured.
def test_i2v_in_channels_follow_the_vae_temporal_stride():
    config = demo.get_config()
    assert configuration.vae_temporal_stride(config.model.vae) == 2
    assert config.model.dit.in_channels == 2 * config.model.vae.z_dim + 2
    configuration.validate(config, num_devices=1)
    _refused(
        config, "model.dit.in_channels", 36, r"in_channels must be 34 .* temporal stride 2, got 36"
    )


# issue 14 B11: train.learning_rate=-1 trained (loss 0.36 -> 249,690) and exited 0.
def test_negative_learning_rate_is_refused(tiny_config):
    _refused(tiny_config, "train.learning_rate", -1.0, r"^config.train.learning_rate must be > 0")


# issue 14 B12: train.steps=-5 exited 0 with "nothing to do".
def test_non_positive_steps_are_refused(tiny_config):
    _refused(tiny_config, "train.steps", -5, r"^config.train.steps must be >= 1 .*got -5$")


# issue 14 B13: train.log_every=0 divided by zero after compilation.
def test_zero_log_every_is_refused(tiny_config):
    _refused(tiny_config, "train.log_every", 0, r"^config.train.log_every must be >= 1")


# issue 14 B15: train.max_bad_steps=0 halted at step 1 on a finite loss.
def test_zero_max_bad_steps_is_refused(tiny_config):
    _refused(tiny_config, "train.max_bad_steps", 0, r"^config.train.max_bad_steps must be >= 1")


# issue 14 B16: train.warmup_steps=-10 was accepted.
@pytest.mark.parametrize(
    "value, message",
    [(-10, r"warmup_steps must be >= 0"), (5, r"warmup_steps must be <= config.train.steps=4")],
)
def test_warmup_outside_the_run_is_refused(tiny_config, value, message):
    _refused(tiny_config, "train.warmup_steps", value, rf"^config.train.{message}")


@pytest.mark.parametrize(
    "key, value, allowed",
    [
        ("train.ema_decay", 1.0, "in [0, 1)"),
        ("train.ema_decay", -0.1, "in [0, 1)"),
        ("train.weight_decay", -0.01, ">= 0"),
        ("train.clip_norm", 0.0, "> 0"),
        ("train.eval_every", -1, ">= 0"),
        ("train.eval_batches", 0, ">= 1"),
        ("train.adam_b1", 1.0, "in [0, 1)"),
        ("train.adam_b2", -0.5, "in [0, 1)"),
        ("train.adam_eps", 0.0, "> 0"),
        ("train.peak_flops", -1.0, ">= 0"),
        ("train.final_lr_ratio", 1.5, "in [0, 1]"),
        ("train.logit_std", 0.0, "> 0"),
        ("train.shift", float("nan"), "> 0"),
        ("train.learning_rate", float("inf"), "> 0"),
        ("data.fps", -1.0, ">= 0"),
        ("data.prefetch_buffer", 0, ">= 1"),
        ("sample.shift", 0.0, "> 0"),
        ("demo.vae_lr", 0.0, "> 0"),
    ],
)
def test_numeric_values_outside_their_range_name_key_and_range(tiny_config, key, value, allowed):
    _refused(tiny_config, key, value, rf"^config.{key} must be {re.escape(allowed)} \(")


def test_every_numeric_range_key_exists_in_the_base_config():
    config = base.get_config()
    for key, (_, inside), _ in configuration.NUMERIC_RANGES:
        node = config
        for part in key.split("."):
            node = node[part]
        assert inside(node), f"the base default of config.{key} is outside its own range"


def test_an_unknown_loss_weighting_is_refused(tiny_config):
    _refused(tiny_config, "train.loss_weighting", "sd3", r"config.train.loss_weighting must be")


# issue 14: a global batch not divisible by the devices was caught only after data loading.
@pytest.mark.parametrize("mode", ["train", "demo"])
def test_a_batch_not_divisible_by_data_times_fsdp_is_refused_for_training(tiny_config, mode):
    tiny_config.mode, tiny_config.data.batch_size = mode, 6
    with pytest.raises(ValueError, match=r"config.data.batch_size \(6.*data\*fsdp = 1x8 = 8"):
        configuration.validate(tiny_config, num_devices=8)
    tiny_config.mesh.fsdp, tiny_config.mesh.tensor = 2, 4  # 6 % (1*2) == 0: fine.
    configuration.validate(tiny_config, num_devices=8)
    with pytest.raises(ValueError, match=r"by the 4 processes"):
        configuration.validate(tiny_config, num_devices=8, process_count=4)


def test_the_batch_is_not_checked_for_modes_that_do_not_train(tiny_config):
    tiny_config.mode, tiny_config.data.batch_size = "generate", 6
    configuration.validate(tiny_config, num_devices=8)


@pytest.mark.parametrize("policy", sorted(dit.REMAT_POLICIES))
def test_every_remat_policy_of_the_dit_validates(tiny_config, policy):
    tiny_config.model.dit.remat_policy = policy
    configuration.validate(tiny_config, num_devices=8)


def test_every_mode_in_the_table_has_its_runner():
    for mode, (module_name, function_name) in configuration.MODE_RUNNERS.items():
        runner = getattr(importlib.import_module(module_name), function_name)
        assert runner.__name__ == f"run_{mode}"


def test_mesh_product_must_match_devices(tiny_config):
    tiny_config.mesh.fsdp = 3
    with pytest.raises(ValueError, match=r"config.mesh.*8 devices"):
        configuration.validate(tiny_config, num_devices=8)


def run_main(*args):
    return subprocess.run(
        [sys.executable, "-m", "wow_jax.main", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={"JAX_PLATFORMS": "cpu", "PATH": "/usr/bin:/bin"},
    )


def last_line(result):
    return result.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize(
    "flag, message",
    [
        ("--config.foo=1", "unknown config key config.foo"),
        ("--config.model.dit.dimm=1", "unknown config key config.model.dit.dimm"),
        ("--config.mesh.fsdp=3", "config.mesh: data*fsdp*tensor*sequence"),
        ("--config.data.height=40", "config.data.height must be a multiple of 16"),
        ("--config.data.height=abc", "config.data.height"),
        ("--config.mode=dance", "config.mode must be one of ['describe', 'train', 'generate'"),
        # issue 14: an unknown nested key printed "unknown config key config.None".
        ("--config.trian.steps=3", 'config key config.trian.steps (Did you mean "train"'),
        ("--config.model.dti.dim=3", "unknown config key config.model.dti.dim;"),
        ("--config.train.nonexistent=1", "unknown config key config.train.nonexistent;"),
    ],
)
def test_cli_bad_input_exits_with_one_line(flag, message):
    result = run_main("--config=configs/tiny.py", "--config.mode=describe", flag)
    assert result.returncode != 0
    assert message in last_line(result)
    assert "Traceback" not in result.stderr


# issue 14: a missing config file plus an override, or a config file with a syntax error,
# ended behind a long traceback.
@pytest.mark.parametrize("override", [[], ["--config.train.steps=3"]])
def test_cli_config_file_problems_end_in_one_line(tmp_path, override):
    broken = tmp_path / "broken.py"
    broken.write_text("def get_config(:\n")
    for config, message in (
        ("configs/nothere.py", "No such file or directory: 'configs/nothere.py'"),
        (str(broken), f"cannot load --config: {broken}, line 1: invalid syntax"),
    ):
        result = run_main(f"--config={config}", *override)
        assert result.returncode == 1
        assert result.stderr.strip().splitlines() == [last_line(result)]
        assert message in last_line(result)
