"""Generation plumbing with stand-in models: I2V conditioning, CFG, rollout, files, errors."""

import dataclasses
import json
import os
import subprocess
import sys

import imageio.v3 as iio
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
import torch
from flax import linen as nn

from tests.sampling import fakes
from wow_jax import checkpointing, models, sharding
from wow_jax.sampling import conditioning, guidance, media, pipeline
from wow_jax.sampling.generator import Generator


@pytest.fixture
def i2v_config(tiny_config, tmp_path):
    c = tiny_config
    c.model.dit.variant, c.model.dit.in_channels = "i2v", 36
    c.sample.steps, c.sample.guidance = 3, 4.0
    c.sample.output_dir = str(tmp_path / "out")
    return c


def write_image(path, height, width, seed=0):
    image = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    iio.imwrite(path, image)
    return str(path)


def diffusers_mask(num_frames, latent_h, latent_w, stride=4):
    """WanImageToVideoPipeline.prepare_latents' mask (no last image), in torch, [B, 4, t, h, w]."""
    mask = torch.ones(1, 1, num_frames, latent_h, latent_w)
    mask[:, :, list(range(1, num_frames))] = 0
    first = torch.repeat_interleave(mask[:, :, 0:1], dim=2, repeats=stride)
    mask = torch.concat([first, mask[:, :, 1:, :]], dim=2)
    mask = mask.view(1, -1, stride, latent_h, latent_w)
    return mask.transpose(1, 2)


@pytest.mark.parametrize("num_frames", [1, 5, 9, 81])
def test_frame_mask_matches_diffusers_layout(num_frames):
    cond_latents = jnp.zeros((1, (num_frames - 1) // 4 + 1, 2, 3, 16))
    ours = conditioning.i2v_condition(cond_latents, num_frames, 4)[..., :4]
    expected = diffusers_mask(num_frames, 2, 3).permute(0, 2, 3, 4, 1).numpy()  # -> [B,t,h,w,4]
    np.testing.assert_array_equal(np.asarray(ours), expected)
    assert ours[0, 0].min() == 1 and (ours[0, 1:].max() if num_frames > 1 else 0) == 0


def test_guidance_equals_two_separate_calls():
    rng = np.random.default_rng(0)
    w = jnp.asarray(rng.normal(size=(4, 4)), jnp.float32)

    def model_fn(x, t, states):
        return jnp.tanh(x @ w + t / 1000.0 + states.mean(axis=(1, 2))[:, None, None])

    x = jnp.asarray(rng.normal(size=(2, 3, 4)), jnp.float32)
    text, neg = jnp.ones((2, 5, 6)), -jnp.ones((2, 5, 6))
    got = guidance.guided_velocity(model_fn, text, neg, 5.0)(x, 500.0)
    cond, uncond = model_fn(x, 500.0, text), model_fn(x, 500.0, neg)
    np.testing.assert_allclose(got, uncond + 5.0 * (cond - uncond), atol=1e-6)
    np.testing.assert_allclose(guidance.guided_velocity(model_fn, text, neg, 1.0)(x, 5.0),
                               model_fn(x, 5.0, text), atol=0)  # fmt: skip
    with pytest.raises(ValueError, match="guidance scale must be >= 1"):
        guidance.guided_velocity(model_fn, text, neg, 0.5)


def make_generator(config, devices=None, with_clip=True):
    mesh = sharding.make_mesh(config.mesh, devices)
    return Generator(config, fakes.fake_params(config), fakes.fake_models(config, with_clip), mesh)


def test_generate_is_deterministic_batch_invariant_and_mesh_invariant(i2v_config):
    c = i2v_config
    images = np.random.default_rng(0).uniform(-1, 1, (8, c.data.height, c.data.width, 3))
    prompts, seeds = [f"push block {i}" for i in range(8)], list(range(8))
    eight = make_generator(c)  # Batch of 8 sharded over the 8 simulated devices.
    video, timings = eight.generate_clip(images, prompts, seeds)
    assert video.shape == (8, c.data.num_frames, c.data.height, c.data.width, 3)
    assert timings["denoise_s"] > 0
    one = make_generator(c, devices=jax.devices()[:1])
    np.testing.assert_allclose(one.generate_clip(images, prompts, seeds)[0], video, atol=1e-6)
    np.testing.assert_array_equal(eight.generate_clip(images, prompts, seeds)[0], video)
    # A job's output does not depend on its batch neighbours or position; its seed matters.
    order = [3, 0, 1, 2, 7, 6, 5, 4]
    shuffled = eight.generate_clip(images[order], [prompts[i] for i in order], order)[0]
    np.testing.assert_allclose(shuffled, video[order], atol=1e-6)
    with pytest.raises(ValueError, match="images must be float in"):
        eight.generate_clip(images.astype(np.uint8), prompts, seeds)
    reseeded = eight.generate_clip(images, prompts, seeds[:7] + [99])[0]
    np.testing.assert_allclose(reseeded[:7], video[:7], atol=1e-6)
    assert np.abs(reseeded[7] - video[7]).max() > 1e-3


def read_outputs(paths):
    frames_mp4 = iio.imread(paths["mp4"])
    frames_gif = iio.imread(paths["gif"])
    sheet = iio.imread(paths["sheet"])
    with open(paths["json"]) as f:
        info = json.load(f)
    return frames_mp4, frames_gif, sheet, info


def test_run_generate_writes_decodable_files_and_chains_clips(i2v_config, tmp_path):
    c = i2v_config
    c.sample.image = write_image(tmp_path / "frame.png", c.data.height, c.data.width)
    c.sample.prompt = ""  # The empty prompt is valid.
    c.sample.num_clips, c.sample.seed = 2, 7
    results = pipeline.generate(
        c, str(tmp_path), models=fakes.fake_models(c), params=fakes.fake_params(c)
    )
    frames_mp4, frames_gif, sheet, info = read_outputs(results[0])
    total = c.data.num_frames + (c.data.num_frames - 1)  # Second clip drops its first frame.
    assert frames_mp4.shape == (total, c.data.height, c.data.width, 3)
    assert frames_gif.shape[:3] == (total, c.data.height, c.data.width)
    assert sheet.ndim == 3 and sheet.shape[0] >= c.data.height
    assert info["seed"] == 7 and info["steps"] == 3 and info["guidance"] == 4.0
    assert info["prompts"] == ["", ""] and len(info["timings"]["clips"]) == 2
    assert os.path.dirname(results[0]["mp4"]) == c.sample.output_dir


def test_jobs_file_batches_and_per_clip_prompts(i2v_config, tmp_path):
    c = i2v_config
    image = write_image(tmp_path / "a.png", c.data.height, c.data.width)
    lines = [
        {"image": "a.png", "prompt": "open drawer", "seed": 3, "name": "solo"},
        {"image": image, "prompts": ["reach", "push"], "seed": 3, "name": "chain"},
        {"image": "a.png", "prompts": ["reach", "pull"], "seed": 3, "name": "chain2"},
    ]
    (tmp_path / "jobs.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    c.sample.jobs, c.sample.batch_size = str(tmp_path / "jobs.jsonl"), 2
    models, params = fakes.fake_models(c), fakes.fake_params(c)
    results = pipeline.generate(c, str(tmp_path), models=models, params=params)
    solo, chain, chain2 = (read_outputs(r)[3] for r in results)
    assert chain["prompts"] == ["reach", "push"] and chain["batch_size"] == 2
    assert solo["frames"] == c.data.num_frames and chain["frames"] == 2 * c.data.num_frames - 1
    a, b = iio.imread(results[1]["mp4"]), iio.imread(results[2]["mp4"])
    first = c.data.num_frames
    # Same image, seed and first prompt: the first clips agree; new instructions then diverge.
    assert np.abs(a[:first].astype(int) - b[:first]).max() <= 8  # (mp4 compression)
    assert np.abs(a[first:].astype(int) - b[first:]).mean() > 1


def test_bad_inputs_have_clear_errors(i2v_config, tmp_path):
    c = i2v_config
    models, params = fakes.fake_models(c), fakes.fake_params(c)

    def run():
        return pipeline.generate(c, str(tmp_path), models=models, params=params)

    c.sample.image = str(tmp_path / "missing.png")
    with pytest.raises(ValueError, match="does not exist"):
        run()
    (tmp_path / "junk.png").write_bytes(b"not an image")
    c.sample.image = str(tmp_path / "junk.png")
    with pytest.raises(ValueError, match="cannot read conditioning image"):
        run()
    c.sample.image = write_image(tmp_path / "big.png", 48, 40)
    c.sample.image_mismatch = "error"
    with pytest.raises(ValueError, match=r"is 48x40 \(HxW\) but the model generates 32x32"):
        run()
    c.sample.image_mismatch = "resize"
    assert os.path.exists(run()[0]["mp4"])  # Resized with a warning.
    c.sample.image = ""
    with pytest.raises(ValueError, match="needs a conditioning image"):
        run()
    c.sample.image, c.sample.guidance = str(tmp_path / "big.png"), 0.5
    with pytest.raises(ValueError, match="guidance scale must be >= 1"):
        run()
    c.sample.guidance = 5.0
    (tmp_path / "bad.jsonl").write_text('{"prompt": "x", "colour": 1}\n')
    c.sample.jobs = str(tmp_path / "bad.jsonl")
    with pytest.raises(ValueError, match="unknown keys \\['colour'\\]"):
        run()


# issue 16: image_resize='wan' sizes the clip by Wan2.1's max-area rule and shows CLIP the whole
# frame; 'diffsynth' stretches the frame to the configured size and shows CLIP that.
def test_image_resize_modes_set_clip_size_and_clip_input(i2v_config, tmp_path):
    c = i2v_config
    c.sample.image = write_image(tmp_path / "tall.png", 48, 32)
    models, params = fakes.fake_models(c), fakes.fake_params(c)
    seen = []
    clip = models.clip
    models = dataclasses.replace(models, clip=lambda p, x: seen.append(x.shape) or clip(p, x))
    c.sample.image_resize = "wan"  # 48x32 in 32x32 = 1024 pixels: 32x16 keeps the aspect.
    mp4, _, _, info = read_outputs(pipeline.generate(c, str(tmp_path), models, params)[0])
    assert mp4.shape[1:3] == (32, 16) and (info["height"], info["width"]) == (32, 16)
    assert seen == [(1, 28, 28, 3)] and info["image_resize"] == "wan"  # CLIP's own size.
    c.sample.image_resize, seen[:] = "diffsynth", []
    mp4, _, _, info = read_outputs(pipeline.generate(c, str(tmp_path), models, params)[0])
    assert mp4.shape[1:3] == (32, 32) and seen == [(1, 32, 32, 3)]
    c.sample.image_resize, c.sample.image_mismatch = "wan", "error"
    with pytest.raises(ValueError, match=r"is 48x32 \(HxW\) but the model generates 32x32"):
        pipeline.generate(c, str(tmp_path), models, params)


# issue 14 B10: a non-folder or read-only output_dir failed only after all denoising.
@pytest.mark.parametrize("where", ["a_file", "a_file/below"])
def test_an_unwritable_output_dir_fails_before_any_model_loads(
    i2v_config, tmp_path, monkeypatch, where
):
    (tmp_path / "a_file").write_text("")
    i2v_config.sample.output_dir = str(tmp_path / where)
    i2v_config.sample.image = write_image(tmp_path / "frame.png", 32, 32)

    def no_loading(*args):
        raise AssertionError("models loaded before the output folder was checked")

    monkeypatch.setattr(pipeline, "load_for_generation", no_loading)
    with pytest.raises(ValueError, match=r"config.sample.output_dir .* must be a folder"):
        pipeline.generate(i2v_config, str(tmp_path))


# issue 14: a 14000x14000 image raised an uncaught PIL DecompressionBombError.
def test_a_decompression_bomb_image_is_a_value_error_naming_file_and_limit(tmp_path):
    from PIL import Image

    path = tmp_path / "huge.png"
    Image.new("1", (14000, 14000)).save(path)  # 196 Mpixel, a 24 kB file.
    with pytest.raises(ValueError, match=r"huge.png.*196000000 pixels.*exceeds limit of \d+"):
        media.read_image(str(path))


def test_checkpoint_layouts(i2v_config, tmp_path):
    params = fakes.fake_params(i2v_config)
    # Training layout: CheckpointManager root / step / state with params (+ other items).
    root = tmp_path / "train_ckpt"
    checkpointing.save_params(root / "100" / "state", params)
    checkpointing.save_params(root / "20" / "state", fakes.fake_params(i2v_config, seed=1))
    # The newest step of the manager root is read.
    restored = checkpointing.restore_subtrees(root, dict.fromkeys(models.WORLD_MODEL_NAMES))
    assert set(restored) == {"dit", "vae", "text", "clip"}
    jax.tree.map(np.testing.assert_array_equal, restored, params)
    # Importer layout: one component under state/{'params': ...}, overriding the combined one.
    other = fakes.fake_params(i2v_config, seed=2)["dit"]
    ocp_dir = tmp_path / "dit_orbax" / "state"
    writer = ocp.StandardCheckpointer()
    writer.save(str(ocp_dir), {"params": other})
    writer.wait_until_finished()
    mesh = sharding.make_mesh(i2v_config.mesh)
    on_mesh = {"dit": jax.tree.map(
        lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding.replicated(mesh)), other
    )}  # fmt: skip
    alone = checkpointing.restore_subtrees(tmp_path / "dit_orbax", on_mesh)
    jax.tree.map(np.testing.assert_array_equal, alone["dit"], other)
    with pytest.raises(ValueError, match="has no 'dit' params"):  # Needs a target to check.
        checkpointing.restore_subtrees(tmp_path / "dit_orbax", {"dit": None})
    # Targets: shapes are checked and arrays land on the target sharding.
    target = jax.tree.map(
        lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding.replicated(mesh)),
        params["vae"],
    )
    placed = checkpointing.restore_subtrees(root, {"vae": target})["vae"]
    assert len(placed["enc"].sharding.device_set) == 8
    bad = dict(target, enc=jax.ShapeDtypeStruct((5, 16), np.float32))
    with pytest.raises(ValueError, match=r"has shape \(3, 16\) but the config needs \(5, 16\)"):
        checkpointing.restore_subtrees(root, {"vae": bad})
    with pytest.raises(ValueError, match="does not exist"):
        checkpointing.restore_subtrees(tmp_path / "nope", {"vae": None})
    with pytest.raises(ValueError, match="has no 'idm' params under 'params'"):
        checkpointing.restore_subtrees(root, {"idm": None})


def test_mode_generate_reports_bad_input_in_one_line(tmp_path):
    cmd = [sys.executable, "-m", "wow_jax.main", "--config=configs/tiny.py"]
    cmd += [f"--workdir={tmp_path}", "--config.mode=generate", "--config.model.dit.variant=i2v"]
    cmd += ["--config.model.dit.in_channels=36", f"--config.sample.image={tmp_path}/no.png"]
    env = dict(os.environ, XLA_FLAGS="")
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert run.returncode == 1
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("wow_jax generate: conditioning image") and "does not exist" in last
    assert "Traceback" not in run.stderr


# issue 15: generation can hold the params in bf16 (sample.param_dtype): the targets a checkpoint
# is read onto are bf16, and the fp32 checkpoint is cast as it is read.
def test_sample_param_dtype_reads_checkpoints_in_bf16(i2v_config, tmp_path):
    i2v_config.sample.param_dtype = "bfloat16"
    mesh = sharding.make_mesh(i2v_config.mesh)
    targets = pipeline.param_targets(i2v_config, mesh)
    for name, tree in targets.items():  # The VAE and CLIP keep their reference precision.
        want = jnp.bfloat16 if name in ("dit", "text") else jnp.float32
        assert {a.dtype for a in jax.tree.leaves(tree)} == {jnp.dtype(want)}, name
    dit = nn.meta.unbox(models.load("dit").init_params(i2v_config.model.dit, jax.random.key(0)))
    checkpointing.save_params(tmp_path / "ckpt" / "1" / "state", {"dit": dit})
    read = checkpointing.restore_subtrees(tmp_path / "ckpt", {"dit": targets["dit"]})["dit"]
    for got, want in zip(jax.tree.leaves(read), jax.tree.leaves(dit), strict=True):
        assert got.dtype == jnp.bfloat16
        np.testing.assert_array_equal(got, want.astype(jnp.bfloat16))
