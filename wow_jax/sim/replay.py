"""Open-loop replay of an IDM's actions in Meta-World: the analogue of WoW's replay upper bound
(arXiv 2509.22642). The IDM reads a held-out episode's REAL expert frames; its actions are run in
the simulator from the episode's start state (same task, same reset seed) without looking at what
the simulator does, and the episode counts as solved when the env's info['success'] is set at any
step (as the collection records the expert's success).

    episode_clip(source, index, data_cfg)  a stored episode, whole, as one clip at the dataset's
        frame stride s (config.data: size, crop, action_reduce):
        {'video': [1, T, H, W, 3] in [-1, 1], 'actions': [1, T-1, A] in dataset units,
         'stride': s, 'start_frame': uint8 [h, w, 3] as stored, 'success': bool [N] the
         expert's per-step flags, 'episode_id'}
    replay_pairs(num_pairs, k)       indices t = 0, k, 2k, ... of the clip's pairs (t, t+k) that
                                     tile it: one prediction per k frames
    env_actions(actions [P, A], ...) -> [P k s, A]: each prediction run for k s env steps
    replay_episode(task, seed, start_frame, actions) -> bool [S + 1] solved-so-far per step

A pair's target is the mean of the k clip actions between its frames (wow_jax/train/tasks/idm.py),
and a clip action is the mean of its s env steps (config.data.action_reduce='mean'; any reduce
with stride 1): the predicted mean action repeated k s times moves the arm as far as the expert's
k s actions did. `read_collection(dataset_dir)` and `episode_seeds(spec)` recover each stored
episode's task and reset seed from its collection.json (wow_jax/sim/metaworld_collect.py), whose
size and camera the replay's env renders with.
"""

import dataclasses
import json
from pathlib import Path

import numpy as np

from wow_jax.data import clips, rlds
from wow_jax.sim import metaworld_collect

START_FRAME_TOLERANCE = 1.0  # Mean |difference| (uint8 levels) of a reproduced start frame.


def check_reduce(data_cfg, stride: int) -> None:
    """ValueError unless a clip action is the mean of its env steps (stride 1 or 'mean')."""
    if stride > 1 and data_cfg.action_reduce != "mean":
        raise ValueError(
            f"replay runs each predicted action for every env step between its frames, which "
            f"is the expert's only when a clip action is the mean of its steps; got "
            f"config.data.frame_stride={stride} with config.data.action_reduce="
            f"{data_cfg.action_reduce!r}; set action_reduce='mean' or frame_stride=1"
        )


def episode_clip(source: rlds.EpisodeSource, index: int, data_cfg) -> dict:
    """Stored episode `index`, whole, as the clip of the module docstring."""
    num_steps, fps = source.episode_info(index)
    whole = clips.ClipSpec.from_config(data_cfg)
    stride = whole.stride_for(fps)
    check_reduce(data_cfg, stride)
    frame_steps = np.arange(0, num_steps, stride)
    whole = dataclasses.replace(whole, num_frames=len(frame_steps))
    if whole.action_reduce == "first":
        action_steps = frame_steps[:-1].tolist()
    else:
        action_steps = list(range(int(frame_steps[-1])))
    size = (whole.height, whole.width)
    episode = source.read(index, frame_steps, action_steps, min_size=size)
    actions = clips.reduce_actions(episode["actions"], whole, stride)
    video = clips.resize_crop(episode["frames"], whole, np.random.default_rng(0))
    return {
        "video": clips.to_unit_range(video)[None],
        "actions": actions[None],
        "stride": stride,
        "start_frame": episode["frames"][0],
        "success": source.successes(index),
        "episode_id": episode["episode_id"],
    }


def replay_pairs(num_pairs: int, gap: int) -> np.ndarray:
    """Indices of the pairs (t, t + gap) with t = 0, gap, 2 gap, ... among a clip's `num_pairs`
    pairs (t = 0 .. num_pairs - 1): consecutive predictions that tile the clip."""
    return np.arange(0, num_pairs, gap)


def env_actions(actions: np.ndarray, gap: int, stride: int) -> np.ndarray:
    """[P, A] one action per replayed pair -> [P gap stride, A]: each run for its env steps."""
    return np.repeat(actions, gap * stride, axis=0)


def read_collection(dataset_dir: str | Path) -> dict:
    """The collection.json of a Meta-World collection (tasks, seed, size, camera, ...)."""
    dataset_dir = Path(dataset_dir)
    spec_file = dataset_dir / metaworld_collect.SPEC_FILE
    if not spec_file.exists():
        raise ValueError(
            f"replay needs a Meta-World collection: {dataset_dir} has no "
            f"{metaworld_collect.SPEC_FILE}; collect it with config.data.source='metaworld'"
        )
    spec = json.loads(spec_file.read_text())
    metaworld_collect.check_version(spec, dataset_dir)
    return spec


def episode_seeds(spec: dict) -> dict:
    """{episode_id: (task name, reset seed)} of every episode of a collection.json `spec`."""
    return {
        f"{name}/{ep:05d}": (name, metaworld_collect.episode_seed(spec["seed"], index, ep))
        for index, name in enumerate(spec["tasks"])
        for ep in range(spec["episodes_per_task"])
    }


def check_start(task, start_frame: np.ndarray, seed: int, episode_id: str) -> None:
    """ValueError unless the env's frame after the reset is the stored episode's first frame."""
    rendered = task.render().astype(np.float32)
    same_shape = rendered.shape == start_frame.shape
    difference = float(np.abs(rendered - start_frame).mean()) if same_shape else np.inf
    if difference > START_FRAME_TOLERANCE:
        raise ValueError(
            f"replay: the env reset with seed {seed} does not reproduce the first frame of "
            f"{episode_id} (mean |difference| {difference:.2f} > {START_FRAME_TOLERANCE} levels, "
            f"frames {rendered.shape} vs {start_frame.shape}); the collection was made with "
            "another Meta-World version or camera: recollect it"
        )


def replay_episode(
    task, seed: int, start_frame: np.ndarray, actions: np.ndarray, episode_id: str
) -> np.ndarray:
    """Resets `task` (a metaworld_collect.MetaWorldTask) with `seed`, checks the start frame
    (uint8 [H, W, 3], as stored) and runs `actions` [S, A] clipped to the action space, open loop
    -> bool [S + 1]: solved at or before each step (index 0: the reset)."""
    task.reset(seed)
    check_start(task, np.asarray(start_frame, np.float32), seed, episode_id)
    solved = [False]
    for action in actions:
        _, _, success = task.step(metaworld_collect.executable(task, action))
        solved.append(solved[-1] or success)
    return np.asarray(solved)
