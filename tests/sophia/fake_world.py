"""A stand-in world for the SOPHIA tests, on tests/sim/fakes.FakeTask (a point x moving to GOAL,
frames showing x * 40 in the red channel): `imagine` moves x towards GOAL by SLOW per frame step,
or by FAST when the prompt spells the motion out step by step ('then' in it, as the fine mixture
captions do); `read` turns the red channel's steps back into actions. A clip of the fast kind
solves the task within its 8 steps from any start; a slow one does not."""

import re

import numpy as np

from tests.sim.fakes import GOAL, FakeTask

SLOW, FAST = 0.2, 1.0
SCALE = 40.0  # Red value per unit of x (FakeTask.render).
STEPWISE = re.compile(r"\bthen\b", re.IGNORECASE)


def position(frame: np.ndarray) -> float:
    return float(frame[..., 0].mean()) / SCALE


def imagine_fn(num_frames: int, calls: list | None = None):
    """imagine(frames uint8 [R, h, w, 3], prompts, seeds) -> uint8 [R, T, h, w, 3]; `calls`
    gets every call's prompts."""

    def imagine(frames, prompts, seeds):
        del seeds
        if calls is not None:
            calls.append(list(prompts))
        videos = []
        for frame, prompt in zip(frames, prompts, strict=True):
            speed = FAST if STEPWISE.search(prompt) else SLOW
            x, clip = position(frame), []
            for _ in range(num_frames):
                image = np.zeros_like(frame)
                image[..., 0] = int(x * SCALE)
                clip.append(image)
                x = min(x + speed, GOAL + 0.2)
            videos.append(np.stack(clip))
        return np.stack(videos)

    return imagine


def read(video: np.ndarray) -> np.ndarray:
    """uint8 [T, h, w, 3] -> actions [T-1, 4]: the x steps, gripper 1."""
    x = np.array([position(f) for f in video])
    actions = np.zeros((len(x) - 1, 4), np.float32)
    actions[:, 0], actions[:, 3] = np.diff(x), 1.0
    return actions


def make_task(task, size, camera):
    return FakeTask(task, size, camera)


def refine_config(**overrides):
    """A Meta-World-like config at 16x16, one task with one start state, 2 candidates x 3 rounds."""
    from configs import base

    config = base.get_config()
    config.mode = "refine"
    config.data.source = "metaworld"
    config.data.num_frames, config.data.height, config.data.width = 9, 16, 16
    config.data.tasks = ("reach-v3",)
    config.evaluate.max_steps, config.evaluate.batch = 16, 2
    config.sophia.candidates, config.sophia.rounds, config.sophia.episodes_per_task = 2, 3, 1
    config.sophia.timeout, config.sophia.retries, config.sophia.backoff = 0.5, 2, 0.01
    config.update_from_flattened_dict(overrides)
    return config
