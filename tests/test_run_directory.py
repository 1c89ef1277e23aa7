"""A run directory describes itself (issue 14): a tiny i2v world model trained by the public
command (`python -m wow_jax.main ... --config.mode=train`) on a tiny RLDS dataset, then read with
no model, tokenizer or latent flags by mode generate (from the run directory) and mode convert
(export to Wan-native and diffusers names from its checkpoints), imported back and compared with
the trained params; a resume that would corrupt the run is refused with the key named."""

import json
import os
import pathlib
import subprocess
import sys

import imageio.v3 as iio
import numpy as np
import pytest

from tests.data.conftest import synthetic_episode, write_dataset
from tests.data.test_tokenizer import train_spm
from tests.train import toy
from wow_jax import checkpointing, rundir, sharding
from wow_jax.models import dit as dit_lib
from wow_jax.train import loop

ROOT = pathlib.Path(__file__).resolve().parents[1]
LATENTS_MEAN = tuple(round(0.1 * i, 1) for i in range(16))  # Not the Wan defaults: must carry.
HEIGHT, WIDTH = 32, 48  # Not tiny's 32 x 32: the clip geometry must carry too.


def wow_jax_main(workdir, **overrides) -> subprocess.CompletedProcess:
    """`python -m wow_jax.main --config=configs/tiny.py --workdir=W --config.k=v ...` on one CPU
    device (compiles faster than 8 simulated); asserts exit 0."""
    cmd = [sys.executable, "-m", "wow_jax.main", "--config=configs/tiny.py", f"--workdir={workdir}"]
    cmd += [f"--config.{k}={v}" for k, v in overrides.items()]
    env = dict(os.environ, XLA_FLAGS="", JAX_PLATFORMS="cpu")
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-3000:]
    return run


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The run directory of 2 train steps (checkpoint at step 2) of the tiny i2v world model on
    32x48 clips of 3 synthetic episodes, with its own tokenizer and latent mean."""
    tmp = tmp_path_factory.mktemp("run_directory")
    data = write_dataset(tmp / "data", [synthetic_episode(e, 8 + e) for e in range(3)])
    workdir = tmp / "run"
    wow_jax_main(
        workdir,
        **{
            "mode": "train",
            "model.dit.variant": "i2v",
            "model.dit.in_channels": 36,
            "model.text.tokenizer_path": train_spm(tmp),
            "model.vae.latents_mean": str(LATENTS_MEAN),
            "data.source": "tfds",
            "data.path": data,
            "data.height": HEIGHT,
            "data.width": WIDTH,
            "train.steps": 2,
            "train.tensorboard": False,
        },
    )
    return workdir, data


def _generate_config(init_from: str):
    from configs import tiny

    config = tiny.get_config()
    config.mode, config.checkpoint.init_from = "generate", init_from
    return config


# issue 14: the workdir stored no config, tokenizer or latent statistics (generate needed flags)
def test_training_writes_the_run_description(run):
    workdir, data = run
    stored = json.loads((workdir / "config.json").read_text())
    assert stored["model"]["dit"]["variant"] == "i2v"
    assert stored["model"]["vae"]["latents_mean"] == list(LATENTS_MEAN)
    assert [stored["data"][k] for k in ("height", "width")] == [HEIGHT, WIDTH]
    tokenizer = workdir / "tokenizer" / "spiece.model"
    assert stored["model"]["text"]["tokenizer_path"] == str(tokenizer)
    assert tokenizer.read_bytes() == (workdir.parent / "spiece.model").read_bytes()
    assert (workdir / "action_stats.json").read_text() == (data / "action_stats.json").read_text()
    assert not (workdir / ".lock").exists()  # Released at the end of the run.


@pytest.mark.parametrize("where", ["", "checkpoints", "checkpoints/2", "checkpoints/2/state"])
def test_adopt_finds_the_run_from_any_of_its_paths(run, where):
    workdir, _ = run
    config = _generate_config(str(workdir / where))
    config.model.dit.attention = "cudnn"  # How the reading mode runs: never taken from the run.
    runs = rundir.adopt(config, overridden=["data.width"])
    assert runs == {"checkpoint.init_from": checkpointing.as_path(workdir)}
    assert config.model.dit.variant == "i2v" and config.model.dit.in_channels == 36
    assert config.model.vae.latents_mean == LATENTS_MEAN
    assert config.model.text.tokenizer_path == str(workdir / "tokenizer" / "spiece.model")
    assert config.data.height == HEIGHT and config.data.width == 32  # The override wins.
    assert config.model.dit.attention == "cudnn"
    assert config.checkpoint.init_from == str(workdir / (where or "checkpoints"))


def test_adopt_leaves_a_plain_checkpoint_alone(run, tmp_path):
    config = _generate_config(str(tmp_path))
    assert rundir.adopt(config, overridden=()) == {}
    assert config.model.dit.variant == "t2v" and config.checkpoint.init_from == str(tmp_path)


# issue 14: generating from a training run needed the tokenizer path and latent mean/std as flags
def test_generate_from_the_run_directory_with_no_model_flags(run, tmp_path):
    workdir, _ = run
    frame = np.random.default_rng(0).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    iio.imwrite(tmp_path / "frame.png", frame)
    wow_jax_main(
        tmp_path,
        **{
            "mode": "generate",
            "checkpoint.init_from": workdir,
            "sample.image": tmp_path / "frame.png",
            "sample.prompt": "push the red block",
            "sample.steps": 1,
            "sample.solver": "euler",
        },
    )
    video = iio.imread(tmp_path / "generate" / "job_0.mp4")
    assert video.shape == (5, HEIGHT, WIDTH, 3)


# issue 14 B2: export from a training checkpoint with the default params key needed model flags
def test_export_from_the_run_and_import_back_equal_the_trained_params(run, tmp_path):
    workdir, _ = run
    trained = checkpointing.restore_subtrees(workdir / "checkpoints", {"dit": None})["dit"]
    config = _generate_config(str(workdir))
    rundir.adopt(config)
    mesh = sharding.make_mesh(config.mesh)
    target = {"dit": sharding.abstract_on_mesh(dit_lib.abstract_params(config.model.dit), mesh)}
    for naming in ("wan", "diffusers"):
        exported, back = tmp_path / f"dit_{naming}", tmp_path / f"dit_{naming}_orbax"
        common = {"mode": "convert", "convert.component": "dit"}
        wow_jax_main(
            tmp_path,
            **common,
            **{
                "convert.direction": "export",
                "convert.source": workdir / "checkpoints",
                "convert.target": exported,
                "convert.naming": naming,
                "convert.dtype": "float32",
            },
        )
        wow_jax_main(
            tmp_path,
            **common,
            **{
                "convert.direction": "import",
                "convert.source": exported,
                "convert.target": back,
                "model.dit.variant": "i2v",  # An import reads no run: the model is given.
                "model.dit.in_channels": 36,
            },
        )
        imported = checkpointing.restore_subtrees(back, target)["dit"]
        flat = dict(zip(*_flat(trained), strict=True))
        for path, leaf in zip(*_flat(imported), strict=True):
            np.testing.assert_array_equal(np.asarray(leaf), np.asarray(flat[path]), err_msg=path)


def _flat(tree):
    import jax

    leaves = jax.tree_util.tree_leaves_with_path(tree)
    return [jax.tree_util.keystr(k) for k, _ in leaves], [v for _, v in leaves]


def _toy_train(workdir, **changes):
    cfg = toy.config(steps=2, save_every=2)
    cfg.update_from_flattened_dict(changes)
    return loop.train(cfg, str(workdir), task=toy.RegressionTask(), train_data=toy.make_data())


# issue 14: a resume with another data.batch_size was accepted silently
def test_a_resume_refuses_an_unsafe_change_and_accepts_a_safe_one(tmp_path):
    _toy_train(tmp_path)
    with pytest.raises(ValueError, match=r"config\.data\.batch_size=8 but this run has 4;.*new"):
        _toy_train(tmp_path, **{"data.batch_size": 4, "train.steps": 3})
    with pytest.raises(ValueError, match=r"config\.seed=0 but this run has 1;"):
        _toy_train(tmp_path, **{"train.steps": 3, "seed": 1})
    result = _toy_train(tmp_path, **{"train.steps": 3, "train.log_every": 1})
    assert int(result.state.step) == 3 and sorted(result.losses) == [3]
    stored = json.loads((tmp_path / "config.json").read_text())
    assert stored["train"]["steps"] == 3 and stored["train"]["log_every"] == 1
