"""Closed-loop episodes in Meta-World: a policy acts from the camera frames until the task is
solved or the step limit, re-planning whenever its planned actions run out.

Episodes run in lockstep groups (one env each, `run_group`), so a policy that plans from frames
(imagine-then-act) plans for the whole group in one batched call. A policy is

    policy.start(envs, seeds)              before the resets (e.g. record the expert's video)
    policy.plan(rows, frames, observations) -> [actions [n_r, A]] for the episodes `rows` that
                                           ran out of actions; frames uint8 [R, h, w, 3] at the
                                           world model's frame size (None unless the policy's
                                           `reads_frames`), observations [R, obs]

Policies (POLICIES; the imagine-then-act one lives with the models, wow_jax/evaluate.py):
  expert   the scripted Meta-World expert, one action per step from the state (upper bound)
  random   uniform in the action space, seeded per episode (lower bound)
  zero     no motion, gripper at 0
  idm_replay  the IDM on the expert's REAL frames of the same seed, replayed open loop from the
           start state: the replay upper bound of imagine-then-act (no imagination error)

An episode counts as solved when the env reports success at any step (as collection records the
expert's). `run_group` -> per episode {'seed', 'success', 'steps' (env steps run), 'solved_at'
(first solved step or None), 'plans'} and, for recorded episodes, 'record': the frames at every
plan and stride step plus the plans' imagined clips.
"""

import dataclasses
import math

import numpy as np

from wow_jax.data import clips
from wow_jax.sim import metaworld_collect

POLICIES = ("imagine_act", "idm_replay", "expert", "random", "zero")


def episode_seeds(collect_seed: int, seed_offset: int, task_index: int, count: int) -> list[int]:
    """Reset seeds of `count` evaluation episodes of a task: the collection's seed scheme
    (metaworld_collect.episode_seed) at collect_seed + seed_offset, apart from the training
    episodes' seeds."""
    return [
        metaworld_collect.episode_seed(collect_seed + seed_offset, task_index, episode)
        for episode in range(count)
    ]


def frame_spec(data_cfg) -> clips.ClipSpec:
    """The ClipSpec turning a rendered frame into a model frame (a random crop becomes the
    centre crop: evaluation frames are deterministic)."""
    spec = clips.ClipSpec.from_config(data_cfg)
    return dataclasses.replace(spec, crop="center") if spec.crop == "random" else spec


def model_frames(rendered: np.ndarray, spec: clips.ClipSpec) -> np.ndarray:
    """uint8 [N, H, W, 3] rendered -> uint8 [N, height, width, 3] as the models read frames."""
    return clips.resize_crop(np.asarray(rendered), spec, np.random.default_rng(0))


def wilson_interval(successes: int, trials: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval (95% for z = 1.96) of a success rate; (0, 1) for no trials."""
    if trials == 0:
        return 0.0, 1.0
    p = successes / trials
    denominator = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


# ----------------------------------------------------------------------------- policies


class StepPolicy:
    """A policy choosing one action per step from the env's state (no frames): `action(env, obs,
    row)`; `start` keeps the envs and a per-episode generator seeded by the episode's seed."""

    name, reads_frames = "", False

    def __init__(self):
        self.envs, self.rngs = [], []

    def start(self, envs, seeds) -> None:
        self.envs = envs
        self.rngs = [np.random.default_rng([seed, 7]) for seed in seeds]

    def plan(self, rows, frames, observations) -> list[np.ndarray]:
        del frames
        return [
            np.asarray(self.action(self.envs[r], obs, r), np.float32)[None]
            for r, obs in zip(rows, observations, strict=True)
        ]

    def action(self, env, obs, row) -> np.ndarray:
        raise NotImplementedError


class ExpertPolicy(StepPolicy):
    name = "expert"

    def action(self, env, obs, row) -> np.ndarray:
        return env.expert(obs)


class RandomPolicy(StepPolicy):
    """Uniform actions in the action space; episode `seed`'s draws depend on nothing else."""

    name = "random"

    def action(self, env, obs, row) -> np.ndarray:
        return self.rngs[row].uniform(env.action_low, env.action_high)


class ZeroPolicy(StepPolicy):
    name = "zero"

    def action(self, env, obs, row) -> np.ndarray:
        return np.zeros(len(env.action_low), np.float32)


class IDMReplayPolicy:
    """`read(video uint8 [T, h, w, 3]) -> actions [T-1, A]` (dataset units, one per frame step)
    over the expert's real frames of each seed (rendered every `stride` steps for `max_steps`
    steps), each action run for `stride` env steps: the whole episode in one plan."""

    name, reads_frames = "idm_replay", False

    def __init__(self, read, spec: clips.ClipSpec, stride: int, max_steps: int):
        self.read, self.spec, self.stride, self.max_steps = read, spec, stride, max_steps
        self.actions = []

    def expert_video(self, env, seed: int) -> np.ndarray:
        """uint8 [1 + max_steps // stride, h, w, 3]: the expert's frames from the reset."""
        obs = env.reset(seed)
        rendered = [env.render()]
        for step in range(1, self.max_steps + 1):
            obs, _, _ = env.step(metaworld_collect.executable(env, env.expert(obs)))
            if step % self.stride == 0:
                rendered.append(env.render())
        return model_frames(np.stack(rendered), self.spec)

    def start(self, envs, seeds) -> None:
        self.actions = [
            np.repeat(self.read(self.expert_video(env, seed)), self.stride, axis=0)
            for env, seed in zip(envs, seeds, strict=True)
        ]

    def plan(self, rows, frames, observations) -> list[np.ndarray]:
        del frames, observations
        plans = [self.actions[r] for r in rows]
        for r in rows:  # One plan per episode: afterwards it holds still.
            self.actions[r] = np.zeros((1, self.actions[r].shape[1]), np.float32)
        return plans


# ----------------------------------------------------------------------------- episodes


def run_group(
    envs, seeds, policy, max_steps: int, spec: clips.ClipSpec, stride: int, record: int = 0
) -> list[dict]:
    """Runs one episode per (env, seed) in lockstep until each is solved or ran `max_steps`
    steps; the first `record` episodes keep their frames (every `stride` steps, at the model's
    frame size) and their plans' imagined clips (the policy's `imagined` rows, when it has them).
    Returns the per-episode results of the module docstring."""
    policy.start(envs, seeds)
    observations = [env.reset(seed) for env, seed in zip(envs, seeds, strict=True)]
    count = len(envs)
    queue = [np.zeros((0, 1), np.float32)] * count
    steps, plans = [0] * count, [0] * count
    solved_at = [None] * count
    records = [{"frames": [], "imagined": []} for _ in range(min(record, count))]
    for r, entry in enumerate(records):
        entry["frames"].append(model_frames(envs[r].render()[None], spec)[0])

    def active(r):
        return solved_at[r] is None and steps[r] < max_steps

    while any(active(r) for r in range(count)):
        rows = [r for r in range(count) if active(r) and len(queue[r]) == 0]
        if rows:
            frames = None
            if policy.reads_frames:
                frames = model_frames(np.stack([envs[r].render() for r in rows]), spec)
            planned = policy.plan(rows, frames, [observations[r] for r in rows])
            imagined = getattr(policy, "imagined", None)
            for i, r in enumerate(rows):
                queue[r], plans[r] = np.asarray(planned[i], np.float32), plans[r] + 1
                if r < len(records) and imagined is not None:
                    records[r]["imagined"].append(imagined[i])
        for r in range(count):
            if not active(r):
                continue
            action, queue[r] = queue[r][0], queue[r][1:]
            observations[r], _, success = envs[r].step(
                metaworld_collect.executable(envs[r], action)
            )
            steps[r] += 1
            if success:
                solved_at[r] = steps[r]
            if r < len(records) and (steps[r] % stride == 0 or not active(r)):
                records[r]["frames"].append(model_frames(envs[r].render()[None], spec)[0])
    results = []
    for r, seed in enumerate(seeds):
        result = {
            "seed": int(seed),
            "success": solved_at[r] is not None,
            "steps": steps[r],
            "solved_at": solved_at[r],
            "plans": plans[r],
        }
        if r < len(records):
            result["record"] = records[r]
        results.append(result)
    return results


def summarize(successes: list[bool]) -> dict:
    """{'episodes', 'successes', 'success_rate', 'ci95': Wilson [low, high]}."""
    count, hits = len(successes), int(np.sum(successes))
    return {
        "episodes": count,
        "successes": hits,
        "success_rate": hits / count if count else 0.0,
        "ci95": list(wilson_interval(hits, count)),
    }
