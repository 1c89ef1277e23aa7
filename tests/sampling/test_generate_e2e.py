"""End to end: a tiny random Wan I2V checkpoint (DiT, VAE, umT5, CLIP) in the training layout ->
mode generate (via wow_jax.main) -> mp4/gif/png/json that decode."""

import json
import os
import subprocess
import sys

import imageio.v3 as iio
import jax
import numpy as np
import pytest

from tests import multiprocess
from wow_jax import models as registry


def tiny_i2v_checkpoint(config, directory):
    from wow_jax import checkpointing
    from wow_jax.sampling.models import random_params

    params = {}
    for i, name in enumerate(("dit", "vae", "text", "clip")):
        abstract = registry.load(name).abstract_params(config.model[name])
        params[name] = random_params(abstract, seed=i)
    checkpointing.save_params(directory / "checkpoints" / "3" / "state", params)
    return str(directory / "checkpoints")


def generate_command(config, tmp_path) -> list[str]:
    """Writes a tiny random i2v checkpoint, a tokenizer, a 40x48 frame and a jobs file (job 'roll':
    2 clips, 2 steps) under tmp_path; returns the `wow_jax.main` generate command for them (the
    caller adds --workdir; outputs go to <workdir>/generate)."""
    from tests.data.test_tokenizer import train_spm

    config.model.dit.variant, config.model.dit.in_channels = "i2v", 36
    ckpt = tiny_i2v_checkpoint(config, tmp_path)
    spm = train_spm(tmp_path)
    frame = np.random.default_rng(0).integers(0, 256, (40, 48, 3), dtype=np.uint8)
    iio.imwrite(tmp_path / "frame.png", frame)  # Another size: resized with a warning.
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text(
        json.dumps({"image": "frame.png", "prompts": ["reach the cup", ""], "name": "roll"}) + "\n"
    )
    flags = {
        "mode": "generate",
        "checkpoint.init_from": ckpt,
        "model.dit.variant": "i2v",
        "model.dit.in_channels": 36,
        "model.text.tokenizer_path": spm,
        "sample.jobs": str(jobs),
        "sample.steps": 2,
        "sample.guidance": 3.0,
    }
    cmd = [sys.executable, "-m", "wow_jax.main", "--config=configs/tiny.py"]
    return cmd + [f"--config.{k}={v}" for k, v in flags.items()]


def generate_one_device(cmd, workdir) -> subprocess.CompletedProcess:
    """Runs `cmd` as one process on one CPU device (compiles faster than 8 simulated)."""
    env = dict(os.environ, XLA_FLAGS="")
    run = subprocess.run(
        cmd + [f"--workdir={workdir}"], capture_output=True, text=True, timeout=600, env=env
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return run


def test_generate_from_training_checkpoint(tiny_config, tmp_path):
    c = tiny_config
    run = generate_one_device(generate_command(c, tmp_path), tmp_path)
    out = tmp_path / "generate"
    frames = iio.imread(out / "roll.mp4")
    total = 2 * c.data.num_frames - 1
    assert frames.shape == (total, c.data.height, c.data.width, 3)
    assert iio.imread(out / "roll.gif").shape[0] >= 2
    assert iio.imread(out / "roll_frames.png").ndim == 3
    info = json.loads((out / "roll.json").read_text())
    assert info["prompts"] == ["reach the cup", ""] and info["steps"] == 2
    assert info["timings"]["clips"][0]["step_s"] > 0
    assert "resizing to 32x32" in run.stderr


def test_generate_two_processes_equals_one(tiny_config, tmp_path):
    # 2 processes x 4 CPU devices: the default mesh (fsdp=-1) spans the 8 devices of both.
    cmd = generate_command(tiny_config, tmp_path)
    generate_one_device(cmd, tmp_path / "one")
    outputs = multiprocess.run_processes(
        cmd + [f"--workdir={tmp_path / 'two'}"], processes=2, devices=4, timeout=300
    )
    for pid, (stdout, stderr) in enumerate(outputs):
        assert f"process {pid} of 2, 4 local / 8 global devices" in stderr
        assert ("roll:" in stdout) == (pid == 0), stdout  # Only process 0 writes and reports.
    one, two = tmp_path / "one" / "generate", tmp_path / "two" / "generate"
    assert sorted(os.listdir(two)) == sorted(os.listdir(one))  # One set, nothing partial.
    assert sorted(os.listdir(one)) == ["roll.gif", "roll.json", "roll.mp4", "roll_frames.png"]
    # The contact sheet holds all 9 frames (3 x 3 grid), lossless. 1 device vs 8 sums in another
    # order (float differences ~1e-5): at most 1 uint8 level on under 1% of values. (1 process
    # of 8 devices writes byte-identical files to these 2 x 4.)
    sheets = [iio.imread(d / "roll_frames.png").astype(np.int16) for d in (one, two)]
    assert sheets[0].shape == (3 * 32, 3 * 32, 3)
    np.testing.assert_allclose(sheets[1], sheets[0], atol=1)
    assert np.mean(sheets[1] != sheets[0]) < 0.01
    assert iio.imread(two / "roll.mp4").shape == iio.imread(one / "roll.mp4").shape
    infos = [json.loads((d / "roll.json").read_text()) for d in (one, two)]
    for info in infos:
        del info["timings"], info["files"]
    assert infos[1] == infos[0]


def test_importer_dit_overrides_training_checkpoint(tiny_config, tmp_path):
    from tests.models import dit_torch
    from wow_jax import sharding
    from wow_jax.interop import importer
    from wow_jax.sampling import pipeline

    c = tiny_config
    c.model.dit.variant, c.model.dit.in_channels = "i2v", 36
    model = dit_torch.torch_model(c.model.dit)
    model.save_pretrained(tmp_path / "hf")
    mesh = sharding.make_mesh(c.mesh)
    importer.import_checkpoint("dit", tmp_path / "hf", tmp_path / "dit_orbax", c.model.dit, mesh)
    c.checkpoint.init_from = tiny_i2v_checkpoint(c, tmp_path)
    c.sample.dit_checkpoint = str(tmp_path / "dit_orbax")
    params = pipeline.load_for_generation(c, mesh)
    assert set(params) == {"dit", "vae", "text", "clip"}
    want = dit_torch.flax_params(c.model.dit, dit_torch.state_dict_numpy(model))
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(np.asarray(a), b, atol=0), params["dit"], want
    )
    qkv = params["dit"]["blocks"]["self_attn"]["q"]["kernel"]
    assert len(qkv.sharding.device_set) == 8  # Restored onto the mesh.


@pytest.mark.slow  # ~25 s; the generator's mesh invariance is also tested with stand-in models.
def test_real_models_on_8_devices_equal_1_device(tiny_config, tmp_path):
    from tests.data.test_tokenizer import train_spm
    from wow_jax import sharding
    from wow_jax.sampling import models as models_lib
    from wow_jax.sampling.generator import Generator

    c = tiny_config
    c.model.dit.variant, c.model.dit.in_channels = "i2v", 36
    c.model.text.tokenizer_path, c.sample.steps = train_spm(tmp_path), 2
    names = ("dit", "vae", "text", "clip")
    params = {
        n: models_lib.random_params(registry.load(n).abstract_params(c.model[n]), i)
        for i, n in enumerate(names)
    }
    image = np.random.default_rng(0).uniform(-1, 1, (1, c.data.height, c.data.width, 3))
    videos = []
    for devices in (jax.devices(), jax.devices()[:1]):  # Batch 1 (+ CFG) on 8 devices, then 1.
        mesh = sharding.make_mesh(c.mesh, devices)
        generator = Generator(c, params, models_lib.from_config(c), mesh)
        videos.append(generator.generate_clip(image.astype(np.float32), ["reach"], [0])[0])
    np.testing.assert_allclose(videos[0], videos[1], atol=2e-5)
    assert np.abs(videos[0]).max() > 0.01
