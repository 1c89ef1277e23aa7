"""Meta-World (MuJoCo, Sawyer arm) episode collection with the scripted expert policies.

Each episode: a task (v3 name, e.g. 'reach-v3') with goal/object positions drawn from a per-episode
seed (`episode_seed`), the expert policy's actions (optionally + Gaussian noise) clipped to the
env's action space, so the stored action is the one executed, for `episode_length` steps, the
camera frame before every action and after the last one, per-step success flags, and the task's
language instruction. Episodes are stored in the RLDS ArrayRecord format (wow_jax/data/rlds.py)
with the action statistics; a rerun with the same settings and COLLECTION_VERSION reuses the
stored dataset. Importing this module registers the data source 'metaworld'
(`collect_from_config`) in wow_jax.data.prepare's table.

Rendering is offscreen on the CPU: MUJOCO_GL=egl (Mesa libEGL; set here when unset). Shadows and
multisampling are turned off in the loaded model (vis.quality.shadowsize = offsamples = 0): on
Meta-World's 46k-vertex scene that is ~2.3x faster at 64x64 than the defaults.

    frames: uint8 [episode_length + 1, size, size, 3]; actions: float32 [episode_length + 1, 4]
    (xyz end-effector delta + gripper, last row zeros as in RLDS)
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
from absl import logging
from tqdm import tqdm

from wow_jax.data import prepare, rlds, stats
from wow_jax.sim.instructions import TASK_INSTRUCTIONS

os.environ.setdefault("MUJOCO_GL", "egl")

ROBOT_NAME = "the Sawyer arm"
DATASET_NAME = "metaworld"
SPEC_FILE = "collection.json"
# What a stored collection means; part of collection.json, a stored one of another version is
# refused. 1: the expert's raw actions were stored (up to ~12) while the env executed them
# clipped to [-1, 1]; 2: the executed (clipped) actions are stored.
COLLECTION_VERSION = 2


class MetaWorldTask:
    """One Meta-World v3 task: seeded resets, expert actions, offscreen camera frames."""

    def __init__(self, task: str, size: int, camera: str = "corner"):
        import metaworld.policies
        import mujoco
        from metaworld.env_dict import ALL_V3_ENVIRONMENTS

        if task not in ALL_V3_ENVIRONMENTS:
            raise ValueError(
                f"unknown Meta-World task {task!r}; expected a v3 name such as 'reach-v3' (one "
                f"of {sorted(ALL_V3_ENVIRONMENTS)})"
            )
        self.instruction = TASK_INSTRUCTIONS[task]
        self.env = ALL_V3_ENVIRONMENTS[task]()
        self.env._partially_observable = False  # The experts read the goal from the observation.
        if "sawyer_observation_space" in vars(self.env):
            del self.env.sawyer_observation_space  # Cached bounds would clip the goal to zero.
        self.env._freeze_rand_vec = False
        self.env.seeded_rand_vec = True  # Goal/object positions from the env's seeded np_random.
        self.env._set_task_called = True
        model = self.env.model
        model.vis.quality.shadowsize = 0
        model.vis.quality.offsamples = 0
        self.action_low = np.asarray(self.env.action_space.low, np.float32)
        self.action_high = np.asarray(self.env.action_space.high, np.float32)
        self.policy = metaworld.policies.ENV_POLICY_MAP[task]()
        self.renderer = mujoco.Renderer(model, size, size)
        self.camera = camera

    def reset(self, seed: int) -> np.ndarray:
        self.env.seed(seed)
        obs, _ = self.env.reset()
        return obs

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool]:
        obs, reward, _, _, info = self.env.step(action)
        return obs, float(reward), bool(info["success"])

    def expert(self, obs: np.ndarray) -> np.ndarray:
        return np.asarray(self.policy.get_action(obs), np.float32)

    def render(self) -> np.ndarray:
        self.renderer.update_scene(self.env.data, camera=self.camera)
        # Meta-World's 'corner' cameras are mounted rolled by 180 degrees: turn frames upright.
        return np.ascontiguousarray(self.renderer.render()[::-1, ::-1])

    def close(self) -> None:
        self.renderer.close()
        self.env.close()


def episode_seed(collect_seed: int, task_index: int, episode: int) -> int:
    """The reset seed of episode `episode` of the `task_index`-th task of a collection."""
    return int(np.random.SeedSequence([collect_seed, task_index, episode]).generate_state(1)[0])


def executable(task, action: np.ndarray) -> np.ndarray:
    """float32 [4]: `action` clipped to the task's action space, as the env executes it."""
    return np.clip(action, task.action_low, task.action_high).astype(np.float32)


def collect_episode(
    task, seed: int, length: int, noise: float, episode_id: str, fps: float = 0.0
) -> rlds.Episode:
    """Roll the expert for `length` steps from a `seed`-ed reset, recording frames and the
    executed actions (expert + noise, clipped to the action space)."""
    rng = np.random.default_rng([seed, 1])
    obs = task.reset(seed)
    frames, actions, rewards, success = [task.render()], [], [0.0], [False]
    for _ in range(length):
        action = task.expert(obs)
        if noise > 0:
            action = action + rng.normal(0.0, noise, action.shape)
        action = executable(task, action)
        obs, reward, solved = task.step(action)
        actions.append(action)
        frames.append(task.render())
        rewards.append(reward)
        success.append(success[-1] or solved)
    actions.append(np.zeros_like(actions[0]))
    return rlds.Episode(
        frames=np.stack(frames),
        actions=np.stack(actions),
        instruction=task.instruction,
        episode_id=episode_id,
        robot=ROBOT_NAME,
        fps=fps,
        source="metaworld",
        rewards=np.asarray(rewards, np.float32),
        success=np.asarray(success),
    )


def check_version(stored: dict, dataset_dir: Path) -> None:
    """ValueError unless a stored collection.json is of COLLECTION_VERSION."""
    version = stored.get("version", 1)
    if version != COLLECTION_VERSION:
        raise ValueError(
            f"{dataset_dir} holds a Meta-World collection of version {version} (version 1 stored "
            f"the expert's unclipped actions), this code reads version {COLLECTION_VERSION}; "
            "delete that folder to recollect it"
        )


def collect(
    out_dir: str | Path,
    tasks,
    episodes_per_task: int,
    episode_length: int,
    *,
    seed: int = 0,
    action_noise: float = 0.0,
    size: int = 64,
    camera: str = "corner",
    make_task=None,
) -> Path:
    """Collects (or reuses) `out_dir/metaworld/1.0.0`, or `out_dir` itself when it already is a
    collection (prepare_dataset's result given back as config.data.path); returns that dataset dir.

    make_task(task_name, size, camera) builds the environment wrapper (default MetaWorldTask;
    a fake in tests).
    """
    make_task = make_task or MetaWorldTask
    spec = {
        "version": COLLECTION_VERSION,
        "tasks": list(tasks),
        "episodes_per_task": int(episodes_per_task),
        "episode_length": int(episode_length),
        "seed": int(seed),
        "action_noise": float(action_noise),
        "size": int(size),
        "camera": camera,
    }
    dataset_dir = Path(out_dir) / DATASET_NAME / "1.0.0"
    if (Path(out_dir) / SPEC_FILE).exists():
        dataset_dir = Path(out_dir)
    if (dataset_dir / SPEC_FILE).exists():
        stored = json.loads((dataset_dir / SPEC_FILE).read_text())
        check_version(stored, dataset_dir)
        if stored == spec:
            logging.info("Meta-World dataset %s already collected; reusing it", dataset_dir)
            return dataset_dir
        raise ValueError(
            f"{dataset_dir} holds a collection with other settings {stored}, not {spec}; "
            "choose another config.data.path or delete that folder"
        )
    for name in spec["tasks"]:
        if name not in TASK_INSTRUCTIONS:
            raise ValueError(f"unknown Meta-World task {name!r}; expected e.g. 'reach-v3'")
    total = len(spec["tasks"]) * episodes_per_task
    timing = {"frames": 0, "seconds": 0.0}

    def episodes():
        bar = tqdm(total=total, desc="Meta-World episodes", unit="ep")
        for task_index, name in enumerate(spec["tasks"]):
            task = make_task(name, size, camera)
            try:
                for ep in range(episodes_per_task):
                    ep_seed = episode_seed(seed, task_index, ep)
                    start = time.perf_counter()
                    episode = collect_episode(
                        task, ep_seed, episode_length, action_noise, f"{name}/{ep:05d}"
                    )
                    timing["seconds"] += time.perf_counter() - start
                    timing["frames"] += len(episode.frames)
                    bar.update(1)
                    bar.set_postfix(fps=f"{timing['frames'] / timing['seconds']:.0f}")
                    yield episode
            finally:
                task.close()
        bar.close()

    path = rlds.write_episodes(
        episodes(),
        out_dir,
        DATASET_NAME,
        action_dim=4,
        image_shape=(size, size),
        description=f"Meta-World expert episodes {spec}",
    )
    stats.save_stats(stats.compute_action_stats(rlds.EpisodeSource(path), progress=False), path)
    (path / SPEC_FILE).write_text(json.dumps(spec, indent=1))
    logging.info(
        "collected %d Meta-World episodes: %d frames in %.1f s (%.1f frames/s incl. physics)",
        total,
        timing["frames"],
        timing["seconds"],
        timing["frames"] / max(timing["seconds"], 1e-9),
    )
    return path


def collect_from_config(data_cfg, out_dir: str | Path, make_task=None) -> Path:
    """`collect` with the config.data keys (tasks, episodes_per_task, episode_length, ...)."""
    unknown = [t for t in data_cfg.tasks if t not in TASK_INSTRUCTIONS]
    if unknown:
        raise ValueError(
            f"config.data.tasks has unknown Meta-World tasks {unknown}; use v3 names such as "
            f"'reach-v3' (all: {sorted(TASK_INSTRUCTIONS)})"
        )
    return collect(
        out_dir,
        data_cfg.tasks,
        data_cfg.episodes_per_task,
        data_cfg.episode_length,
        seed=data_cfg.collect_seed,
        action_noise=data_cfg.action_noise,
        size=data_cfg.render_size or max(data_cfg.height, data_cfg.width),
        camera=data_cfg.camera,
        make_task=make_task,
    )


prepare.register_source("metaworld", collect_from_config)
