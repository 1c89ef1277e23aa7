"""Mode act (wow_jax/act.py, issue 17): a tiny random i2v world model and a tiny random IDM, each
in a run directory written by rundir's own writers (config.json, tokenizer copy,
action_stats.json) with `checkpointing.save_params`, then act through `wow_jax.main`: one action
per imagined frame step, equal to the IDM applied by hand to the written frames and
de-normalised with the IDM run's statistics; each bad input ends in one clear error."""

import json
import os
import pathlib
import subprocess
import sys

import imageio.v3 as iio
import jax
import numpy as np
import pytest
from flax import linen as nn

from tests import multiprocess
from tests.data.test_tokenizer import train_spm
from wow_jax import act, checkpointing, main, rundir
from wow_jax import models as registry
from wow_jax.data import flow, stats
from wow_jax.models import idm
from wow_jax.sampling.models import random_params

ROOT = pathlib.Path(__file__).resolve().parents[1]
MEAN, STD = np.array([0.5, -1.0, 0.3]), np.array([2.0, 0.5, 1.0])  # Visible de-normalisation.
GRIPPER_MIN, GRIPPER_MAX = -1.0, 1.0  # The gripper column: open / closed in dataset units.
IDM_WIDTH = 16  # The IDM run's model.idm.width (tiny's is 8): must come from the IDM run.


def tiny():
    from configs import tiny as tiny_config

    return tiny_config.get_config()


def write_run(run, config, params: dict, dataset_dir=None):
    """A run directory as training leaves it: config.json (+ tokenizer copy), the dataset's
    action_stats.json, and params at checkpoints/1/state."""
    rundir.describe(config, str(run))
    rundir.copy_action_stats(str(run), config.train.task, dataset_dir)
    checkpointing.save_params(run / "checkpoints" / "1" / "state", params)
    return run


def action_stats_dataset(directory):
    """A dataset folder holding only action_stats.json of 3-dim actions (xy + gripper)."""
    directory.mkdir()
    low = np.array([-2.0, -3.0, GRIPPER_MIN])
    high = np.array([3.0, 1.0, GRIPPER_MAX])
    values = {"mean": MEAN, "std": STD, "min": low, "max": high, "q01": low, "q99": high}
    stats.save_stats(
        {**{k: v.tolist() for k, v in values.items()}, "count": 100, "action_dim": 3}, directory
    )
    return directory


def world_model_run(tmp):
    """A run directory of a tiny random i2v world model (with its tokenizer) at tmp/world_model."""
    wm = tiny()
    wm.model.dit.variant, wm.model.dit.in_channels = "i2v", 36
    wm.model.text.tokenizer_path = train_spm(tmp)
    wm_params = {
        name: random_params(registry.load(name).abstract_params(wm.model[name]), seed=i)
        for i, name in enumerate(registry.WORLD_MODEL_NAMES)
    }
    return write_run(tmp / "world_model", wm, wm_params)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """(world-model run, IDM run, IDM run trained on 64x64 frames)."""
    tmp = tmp_path_factory.mktemp("act_runs")
    world_model = world_model_run(tmp)

    cfg = tiny()
    cfg.train.task, cfg.model.idm.width = "idm", IDM_WIDTH
    cfg.model.idm.action_dim, cfg.model.idm.gripper_index = 3, 2
    idm_params = {"idm": nn.meta.unbox(idm.init_params(cfg.model.idm, jax.random.key(0)))}
    dataset = action_stats_dataset(tmp / "dataset")
    idm_run = write_run(tmp / "idm", cfg, idm_params, dataset)
    cfg.data.height = cfg.data.width = 64
    other_size = write_run(tmp / "idm_64", cfg, idm_params, dataset)
    return world_model, idm_run, other_size


def act_config(world_model, idm_run, image, **overrides):
    config = tiny()
    config.mode = "act"
    config.checkpoint.init_from, config.act.idm_checkpoint = str(world_model), str(idm_run)
    config.sample.image, config.sample.prompt = str(image), "push the block"
    config.sample.steps, config.sample.solver, config.sample.sheet_frames = 1, "euler", 16
    config.update_from_flattened_dict(overrides)
    return config


def write_frame(path, height=32, width=32):
    frame = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    iio.imwrite(path, frame)
    return path


def sheet_frames(sheet: np.ndarray, count: int, height: int, width: int) -> np.ndarray:
    """The first `count` frames of a contact sheet holding every frame (media.contact_sheet)."""
    cols = sheet.shape[1] // width
    tiles = sheet.reshape(-1, height, cols, width, 3).transpose(0, 2, 1, 3, 4)
    return tiles.reshape(-1, height, width, 3)[:count]


def idm_by_hand(frames: np.ndarray, idm_run, model_cfg, threshold: float, preset: str):
    """The IDM on consecutive pairs of uint8 frames, flow by OpenCV directly, de-normalised with
    MEAN / STD: (actions [T-1, 3], gripper logits [T-1])."""
    params = checkpointing.restore_subtrees(idm_run / "checkpoints", {"idm": None})["idm"]
    unit = frames.astype(np.float32) / 127.5 - 1.0
    pairs = zip(frames[:-1], frames[1:], strict=True)
    motion = np.stack([flow.dense_flow(a, b, preset) for a, b in pairs])
    out = idm.create(model_cfg).apply(
        {"params": params}, unit[:-1], unit[1:], motion, flow.motion_mask(motion, threshold)
    )
    logit = np.asarray(out["gripper_logit"])
    xy = np.asarray(out["continuous"]) * STD[:2] + MEAN[:2]
    gripper = np.where(logit > 0, GRIPPER_MAX, GRIPPER_MIN)
    return np.concatenate([xy, gripper[:, None]], axis=1), logit


# issue 17: a run of task 'idm' carried no action_stats.json (only world-model runs did)
def test_an_idm_run_carries_its_action_stats(runs):
    _, idm_run, _ = runs
    assert stats.read_stats(idm_run / "action_stats.json")["action_dim"] == 3


def test_adopt_takes_the_world_model_and_the_idm_from_their_runs(runs, tmp_path):
    world_model, idm_run, _ = runs
    config = act_config(world_model, idm_run, tmp_path / "frame.png")
    found = rundir.adopt(config, overridden=["sample.steps"])
    as_path = checkpointing.as_path
    assert found == {
        "checkpoint.init_from": as_path(world_model),
        "act.idm_checkpoint": as_path(idm_run),
    }
    assert config.model.dit.variant == "i2v"  # The world model's (the IDM run's is t2v) ...
    assert config.model.text.tokenizer_path == str(world_model / "tokenizer" / "spiece.model")
    assert config.model.idm.width == IDM_WIDTH  # ... and the IDM's (the world model's is 8).
    assert (config.model.idm.action_dim, config.model.idm.gripper_index) == (3, 2)
    assert config.act.action_stats == str(idm_run / "action_stats.json")
    assert config.act.idm_checkpoint == str(idm_run / "checkpoints")


def test_per_step_spreads_each_pair_over_the_steps_it_spans():
    pairs = {"continuous": np.array([[1.0], [3.0], [5.0]]), "gripper_logit": np.array([2, 0, -4])}
    steps = act.per_step(pairs, gap=2)  # Pairs (0, 2), (1, 3), (2, 4): 4 frame steps.
    np.testing.assert_allclose(steps["continuous"][:, 0], [1.0, 2.0, 4.0, 5.0])
    np.testing.assert_allclose(steps["gripper_logit"], [2.0, 1.0, -2.0, -4.0])
    same = act.per_step(pairs, gap=1)
    np.testing.assert_array_equal(same["continuous"], pairs["continuous"])


def test_act_writes_one_action_per_frame_step_as_the_idm_reads_the_written_frames(runs, tmp_path):
    world_model, idm_run, _ = runs
    config = act_config(world_model, idm_run, write_frame(tmp_path / "frame.png"))
    main.start(config, str(tmp_path), frozenset())
    out = tmp_path / "generate"
    saved = np.load(out / "job_0_actions.npz")
    frames_total = config.data.num_frames
    assert saved["actions"].shape == (frames_total - 1, 3)
    sheet = iio.imread(out / "job_0_frames.png")  # Lossless: the frames as written.
    frames = sheet_frames(sheet, frames_total, config.data.height, config.data.width)
    want, logit = idm_by_hand(
        frames, idm_run, config.model.idm, config.idm.mask_threshold, config.idm.flow_preset
    )
    np.testing.assert_allclose(saved["actions"], want, atol=1e-4)
    np.testing.assert_allclose(saved["gripper_prob"], 1 / (1 + np.exp(-logit)), atol=1e-5)
    np.testing.assert_array_equal(saved["gripper_closed"], logit > 0)
    info = json.loads((out / "job_0_actions.json").read_text())
    assert info["steps"] == frames_total - 1 and info["frame_gap"] == 1
    np.testing.assert_allclose(info["actions"], saved["actions"])
    assert info["video"] == str(out / "job_0.mp4") and os.path.exists(info["video"])
    assert iio.imread(out / "job_0_actions.png").ndim == 3


@pytest.mark.parametrize(
    "case, message",
    [
        ("not_an_image", r"cannot read conditioning image .*junk.png"),
        ("image_size", r"is 40x48 \(HxW\) but the model generates 32x32"),
        ("idm_frame_size", r"trained on 64x64 frames .* the world model makes 32x32 frames"),
        ("action_dim", r"config.model.idm.action_dim=4 but the dataset's actions have 3 dims"),
        ("no_idm", r"holds no IDM: its 'params' are \['clip', 'dit', 'text', 'vae'\] \(a world"),
        ("no_stats", r"no action statistics .* set --config.act.action_stats"),
        ("no_idm_checkpoint", r"config.act.idm_checkpoint is empty; set it to the IDM's run"),
    ],
)
def test_bad_input_is_one_clear_error(runs, tmp_path, case, message):
    world_model, idm_run, other_size = runs
    image = write_frame(tmp_path / "frame.png")
    overrides, overridden = {}, frozenset()
    if case == "not_an_image":
        image = tmp_path / "junk.png"
        image.write_bytes(b"not an image")
    elif case == "image_size":
        image = write_frame(tmp_path / "big.png", 40, 48)
        overrides = {"sample.image_mismatch": "error"}
    elif case == "idm_frame_size":
        idm_run = other_size
    elif case == "action_dim":
        overrides, overridden = {"model.idm.action_dim": 4}, frozenset(["model.idm.action_dim"])
    elif case == "no_idm":
        idm_run = world_model
    elif case == "no_stats":
        overrides, overridden = {"act.action_stats": ""}, frozenset(["act.action_stats"])
    elif case == "no_idm_checkpoint":
        idm_run = ""
    config = act_config(world_model, idm_run, image, **overrides)
    with pytest.raises(ValueError, match=message):
        main.start(config, str(tmp_path), overridden)
    assert not (tmp_path / "generate" / "job_0.mp4").exists()  # Refused before imagining.


def act_command(world_model, idm_run, image) -> list[str]:
    flags = {
        "mode": "act",
        "checkpoint.init_from": world_model,
        "act.idm_checkpoint": idm_run,
        "sample.image": image,
        "sample.prompt": "push the block",
        "sample.steps": 1,
        "sample.solver": "euler",
    }
    cmd = [sys.executable, "-m", "wow_jax.main", "--config=configs/tiny.py"]
    return cmd + [f"--config.{k}={v}" for k, v in flags.items()]


def test_the_command_line_reports_a_bad_image_in_one_line(runs, tmp_path):
    world_model, idm_run, _ = runs
    (tmp_path / "junk.png").write_bytes(b"not an image")
    cmd = act_command(world_model, idm_run, tmp_path / "junk.png") + [f"--workdir={tmp_path}"]
    run = subprocess.run(
        cmd, capture_output=True, text=True, timeout=300, env=multiprocess.cpu_env(1), cwd=ROOT
    )
    assert run.returncode == 1
    assert (
        run.stderr.strip()
        .splitlines()[-1]
        .startswith("wow_jax act: cannot read conditioning image")
    )


@pytest.mark.slow  # ~3 min on 2 cores: two tiny i2v generations of 8 devices, as subprocesses.
def test_act_two_processes_equals_one(runs, tmp_path):
    # 2 processes x 4 CPU devices vs 1 process x 8: the same mesh. The world model's frames may
    # differ by 1 uint8 level (collectives sum in another order); the IDM, replicated, reads the
    # frames as written in both runs.
    world_model, idm_run, _ = runs
    cmd = act_command(world_model, idm_run, write_frame(tmp_path / "frame.png"))
    multiprocess.run_processes(cmd + [f"--workdir={tmp_path / 'one'}"], 1, 8, 600, cwd=ROOT)
    outputs = multiprocess.run_processes(
        cmd + [f"--workdir={tmp_path / 'two'}"], 2, 4, 600, cwd=ROOT
    )
    assert ["actions:" in stdout for stdout, _ in outputs] == [True, False]  # Process 0 writes.
    one, two = (tmp_path / d / "generate" for d in ("one", "two"))
    assert sorted(os.listdir(two)) == sorted(os.listdir(one))
    sheets = [iio.imread(d / "job_0_frames.png").astype(np.int16) for d in (one, two)]
    assert np.abs(sheets[1] - sheets[0]).max() <= 1 and np.mean(sheets[1] != sheets[0]) < 0.01
    saved = [np.load(d / "job_0_actions.npz") for d in (one, two)]
    assert sorted(saved[0]) == sorted(saved[1]) == ["actions", "gripper_closed", "gripper_prob"]
    np.testing.assert_allclose(saved[1]["actions"], saved[0]["actions"], atol=1e-3)
    np.testing.assert_array_equal(saved[1]["gripper_closed"], saved[0]["gripper_closed"])
    config = act_config(world_model, idm_run, tmp_path / "frame.png")
    rundir.adopt(config)  # The IDM run's model.idm and config.idm, as act read them.
    data = config.data
    frames = sheet_frames(sheets[1].astype(np.uint8), data.num_frames, data.height, data.width)
    idm_cfg = config.idm
    want, _ = idm_by_hand(
        frames, idm_run, config.model.idm, idm_cfg.mask_threshold, idm_cfg.flow_preset
    )
    np.testing.assert_allclose(saved[1]["actions"], want, atol=1e-4)
