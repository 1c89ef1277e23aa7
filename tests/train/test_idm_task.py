"""Task 'idm' (wow_jax/train/tasks/idm.py) through the shared loop and the Grain pipeline, and
its evaluation (wow_jax/evaluation/idm.py): on episodes of a square moved by the action (its
colour the gripper state), the trained IDM beats the zero, mean and nearest-flow baselines."""

import jax
import numpy as np
import pytest
import torch
from flax import linen as nn

from wow_jax.data import flow as flow_lib
from wow_jax.data import prepare, rlds, stats
from wow_jax.evaluation import idm as evaluation
from wow_jax.train import loop, tasks
from wow_jax.train.tasks import idm as idm_task

SIZE, SIDE, GAIN = 32, 8, 3.0  # Frame side, square side (pixels), pixels moved per unit action.
OPEN, CLOSED = (230, 230, 230), (250, 200, 0)  # Square colour by gripper state (both bright).


def render(center: np.ndarray, closed: int) -> np.ndarray:
    """uint8 [SIZE, SIZE, 3]: a dark grid background and an anti-aliased square at `center`."""
    frame = np.full((SIZE, SIZE, 3), 30.0)
    frame[::6], frame[:, ::6] = 70.0, 70.0
    axis = np.arange(SIZE) + 0.5
    cover_x = np.clip(SIDE / 2 + 0.5 - np.abs(axis - center[0]), 0, 1)
    cover_y = np.clip(SIDE / 2 + 0.5 - np.abs(axis - center[1]), 0, 1)
    cover = (cover_y[:, None] * cover_x[None])[..., None]
    frame = frame * (1 - cover) + cover * np.asarray(CLOSED if closed else OPEN, np.float64)
    return np.rint(frame).astype(np.uint8)


def square_episode(index: int, length: int, seed: int) -> rlds.Episode:
    """The square moves by GAIN * (dx, dy) per step (kept inside the frame; the recorded action
    is the move made) and the gripper action sets the colour of the next frame."""
    rng = np.random.default_rng([seed, index])
    low, high = SIDE / 2 + 1, SIZE - SIDE / 2 - 1
    center, closed = rng.uniform(low, high, 2), int(rng.integers(2))
    frames, actions = [render(center, closed)], []
    for _ in range(length):
        moved = np.clip(center + GAIN * rng.uniform(-1, 1, 2), low, high)
        closed = closed if rng.random() > 0.3 else 1 - closed
        actions.append([*((moved - center) / GAIN), closed])
        center = moved
        frames.append(render(center, closed))
    actions.append([0.0, 0.0, 0.0])
    return rlds.Episode(
        frames=np.stack(frames),
        actions=np.asarray(actions, np.float32),
        instruction="move the square",
        episode_id=f"square{index:03d}",
    )


def write_squares(root, episodes: int, seed: int):
    path = rlds.write_episodes(
        (square_episode(e, 24, seed) for e in range(episodes)), root, "squares", action_dim=3
    )
    stats.save_stats(stats.compute_action_stats(rlds.EpisodeSource(path), False), path)
    return path


@pytest.fixture(scope="module")
def squares(tmp_path_factory):
    """(train dataset: 12 episodes, held-out dataset: 4 episodes of other seeds)."""
    train = write_squares(tmp_path_factory.mktemp("train"), 12, seed=0)
    return train, write_squares(tmp_path_factory.mktemp("heldout"), 4, seed=1)


def _config(tiny_config, path, steps: int):
    cfg = tiny_config
    cfg.mode, cfg.train.task, cfg.train.steps = "train", "idm", steps
    cfg.train.learning_rate, cfg.train.warmup_steps, cfg.train.schedule = 3e-3, 10, "constant"
    cfg.train.tensorboard, cfg.train.log_every, cfg.checkpoint.save_every = False, 50, steps
    cfg.data.source, cfg.data.path, cfg.data.batch_size = "tfds", str(path), 4
    cfg.data.height = cfg.data.width = SIZE
    cfg.model.idm.action_dim, cfg.model.idm.gripper_index = 3, 2
    cfg.mesh.fsdp, cfg.mesh.data = 2, 2  # 8 simulated devices: data 2 x fsdp 2 x tensor 2.
    cfg.mesh.tensor = 2
    return cfg


def test_clip_pairs_and_targets(tiny_config):
    cfg = tiny_config
    cfg.model.idm.action_dim, cfg.model.idm.gripper_index = 3, 2
    cfg.data.action_norm, cfg.idm.frame_gap = "none", 2
    video = np.stack([render(np.array([12.0 + t, 16.0]), t % 2) for t in range(5)])
    video = np.stack([video, video[:, :, ::-1]]).astype(np.float32) / 127.5 - 1.0
    actions = np.arange(2 * 4 * 3, dtype=np.float32).reshape(2, 4, 3)
    actions[..., 2] = [[0, 1, 1, 0], [1, 1, 0, 0]]
    pairs = idm_task.pair_batch({"video": video, "actions": actions}, cfg, None)
    assert pairs["frame_t"].shape == pairs["frame_tk"].shape == (6, SIZE, SIZE, 3)  # 2 x (5 - 2)
    np.testing.assert_array_equal(pairs["frame_t"][4], video[1, 1])
    np.testing.assert_array_equal(pairs["frame_tk"][4], video[1, 3])
    np.testing.assert_allclose(pairs["target"][4], actions[1, 1:3, :2].mean(0))
    np.testing.assert_array_equal(pairs["gripper"], [0, 1, 0, 1, 0, 0])  # mean > 0.5
    assert pairs["flow"].shape == (6, SIZE, SIZE, 2) and pairs["mask"].shape == (6, SIZE, SIZE, 1)
    assert abs(pairs["flow"][0, 14:18, 10:14, 0].mean() - 2.0) < 0.6  # the square moved 2 px


# issue 17: with motion='learned' the pair batch carries no DIS flow (no OpenCV at data time)
# unless asked for (the nearest-flow baseline), and the task's loss runs on frames alone.
def test_learned_motion_pairs_skip_the_flow(tiny_config, monkeypatch):
    cfg = tiny_config
    cfg.model.idm.action_dim, cfg.model.idm.gripper_index = 3, 2
    cfg.model.idm.motion, cfg.data.action_norm = "learned", "none"
    video = np.stack([render(np.array([12.0 + t, 16.0]), t % 2) for t in range(3)])[None]
    batch = {"video": video.astype(np.float32) / 127.5 - 1.0, "actions": np.zeros((1, 2, 3))}
    with_flow = idm_task.pair_batch(batch, cfg, None, with_flow=True)
    assert with_flow["flow"].shape == (2, SIZE, SIZE, 2)
    monkeypatch.setattr(flow_lib, "pair_motion", None)  # Any call to DIS now fails.
    pairs = idm_task.pair_batch(batch, cfg, None)
    assert set(pairs) == {"frame_t", "frame_tk", "target", "gripper"}
    task = idm_task.IDMTask(cfg)
    params = {"idm": nn.meta.unbox(task.init_params(jax.random.key(0)))["idm"]}
    loss, metrics = task.loss(params, pairs, jax.random.key(1))
    assert np.isfinite(loss) and "gripper_bce" in metrics


def test_smooth_l1_matches_torch():
    error = np.linspace(-3, 3, 13, dtype=np.float32)
    for beta in (0.5, 1.0):
        want = torch.nn.functional.smooth_l1_loss(
            torch.tensor(error), torch.zeros(13), reduction="none", beta=beta
        )
        np.testing.assert_allclose(idm_task.smooth_l1(error, beta), want.numpy(), rtol=1e-6)


def test_loss_is_the_weighted_smooth_l1_plus_the_gripper_bce(tiny_config):
    cfg = tiny_config
    cfg.idm.action_weights, cfg.idm.gripper_weight, cfg.idm.smooth_l1_beta = (
        (2.0, 0.0, 1.0),
        0.5,
        0.5,
    )
    task = idm_task.IDMTask(cfg)
    params = {"idm": nn.meta.unbox(task.init_params(jax.random.key(0)))["idm"]}
    rng = np.random.default_rng(0)
    batch = {
        "frame_t": rng.uniform(-1, 1, (3, SIZE, SIZE, 3)).astype(np.float32),
        "frame_tk": rng.uniform(-1, 1, (3, SIZE, SIZE, 3)).astype(np.float32),
        "flow": rng.normal(size=(3, SIZE, SIZE, 2)).astype(np.float32),
        "mask": np.ones((3, SIZE, SIZE, 1), np.float32),
        "target": rng.normal(size=(3, 3)).astype(np.float32),
        "gripper": np.array([0.0, 1.0, 1.0], np.float32),
    }
    out = task.predict(params, batch)
    error = np.asarray(out["continuous"]) - batch["target"]
    per_dim = np.where(np.abs(error) < 0.5, error**2, np.abs(error) - 0.25)  # beta 0.5
    action = np.mean(per_dim @ np.array([2.0, 0.0, 1.0])) / 3.0
    logit = np.asarray(out["gripper_logit"], np.float64)
    bce = np.mean(np.logaddexp(0, logit) - batch["gripper"] * logit)
    loss, metrics = task.loss(params, batch, jax.random.key(1))
    np.testing.assert_allclose(loss, action + 0.5 * bce, rtol=1e-5)
    np.testing.assert_allclose(metrics["gripper_bce"], bce, rtol=1e-5)


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("frame_gap", 5, r"config.idm.frame_gap must be in \[1, config.data.num_frames - 1 = 4\]"),
        ("action_weights", (1.0, 1.0), r"config.idm.action_weights must be \(\) or 3 non-neg"),
        ("flow_preset", "slow", r"config.idm.flow_preset must be one of"),
    ],
)
def test_bad_task_config_names_the_key(tiny_config, key, value, message):
    tiny_config.idm[key] = value
    with pytest.raises(ValueError, match=message):
        idm_task.IDMTask(tiny_config)


def test_action_dim_that_disagrees_with_the_dataset_is_refused(tiny_config, squares, tmp_path):
    cfg = _config(tiny_config, squares[0], 1)
    cfg.model.idm.action_dim = 4  # The dataset's actions have 3 dims.
    with pytest.raises(ValueError, match=r"action_dim=4 but the dataset's actions have 3 dims"):
        tasks.build(cfg, str(tmp_path))


def _pairs(cfg, workdir, num_batches: int, offset: int = 0) -> dict:
    dataset_dir = prepare.prepare_dataset(cfg.data, workdir)
    inner = tasks.clip_iterator(cfg, dataset_dir, offset)
    stats_ = idm_task.dataset_action_stats(cfg.data, dataset_dir)
    batches = tasks.HostBatches(inner, lambda b: idm_task.pair_batch(b, cfg, stats_), dataset_dir)
    return evaluation.concat_pairs(batches, num_batches)


def test_idm_learns_the_action_from_motion_and_beats_the_baselines(tiny_config, squares, tmp_path):
    train_path, heldout_path = squares
    cfg = _config(tiny_config, train_path, steps=150)
    result = loop.train(cfg, str(tmp_path))
    losses = [result.losses[s] for s in sorted(result.losses)]
    assert np.mean(losses[-10:]) < 0.3 * np.mean(losses[:5]), losses[:5] + losses[-10:]

    task = idm_task.IDMTask(cfg)
    train = _pairs(cfg, str(tmp_path), num_batches=12)
    heldout_cfg = cfg.copy_and_resolve_references()
    heldout_cfg.data.path, heldout_cfg.data.action_norm = str(heldout_path), "none"
    heldout = _pairs(heldout_cfg, str(tmp_path), num_batches=6, offset=7)
    params = jax.device_get(result.state.params)
    predict = jax.jit(lambda batch: task.predict(params, batch))
    outputs = evaluation.predict_pairs(predict, heldout, batch_size=32)
    action_stats = stats.load_stats(train_path)
    report = evaluation.evaluate(outputs, heldout, train, action_stats, cfg)
    assert set(report) == set(evaluation.METHODS)
    ours = report["idm"]
    for name in ("zero", "mean", "nearest_flow"):
        baseline = report[name]
        assert ours["mean_mae"] < 0.7 * baseline["mean_mae"], report  # ~0.11 vs >= 0.2
        assert ours["gripper_accuracy"] > baseline["gripper_accuracy"] + 0.15, report  # 1 vs 0.55
    # The zero action is 0 in dataset units: its MAE is the mean |action|, E|U(-1, 1)| ~ 0.5.
    np.testing.assert_allclose(report["zero"]["mae"], np.abs(heldout["target"]).mean(0), rtol=1e-5)
