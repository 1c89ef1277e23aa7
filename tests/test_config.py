"""Config files load, validate, and refuse bad input with an error naming the key."""

import importlib
import subprocess
import sys

import pytest

from configs import base, demo, tiny, wan1_3b, wow14b
from wow_jax import configuration
from wow_jax.models import dit


@pytest.mark.parametrize("module", [base, tiny, demo, wan1_3b, wow14b])
def test_configs_validate(module):
    configuration.validate(module.get_config(), num_devices=8)


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
        ("mode", "dance", r"config.mode must be one of"),
        ("mode", "act", r"config.mode must be one of \['describe', 'train', 'generate', 'convert"),
        ("model.cpu_kernels", "yes", r"config.model.cpu_kernels must be one of \['auto', 'on'"),
        ("model.dit.remat_policy", "some", r"config.model.dit.remat_policy must be one of"),
        ("convert.component", "idm", r"config.convert.component must be one of"),
        ("checkpoint.keep", 0, r"config.checkpoint.keep must be >= 1 .*delete every one"),
        ("checkpoint.keep", -1, r"config.checkpoint.keep must be >= 1"),
        ("checkpoint.keep_best", -1, r"config.checkpoint.keep_best must be >= 0"),
        ("checkpoint.save_every", 0, r"config.checkpoint.save_every must be >= 1"),
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
        ("--config.mode=act", "config.mode must be one of ['describe', 'train', 'generate'"),
    ],
)
def test_cli_bad_input_exits_with_one_line(flag, message):
    result = run_main("--config=configs/tiny.py", "--config.mode=describe", flag)
    assert result.returncode != 0
    assert message in last_line(result)
    assert "Traceback" not in result.stderr


def test_cli_missing_config_file():
    result = run_main("--config=configs/nothere.py")
    assert result.returncode != 0
    assert "configs/nothere.py" in last_line(result)
