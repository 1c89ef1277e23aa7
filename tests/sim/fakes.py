"""A stand-in for wow_jax.sim.metaworld_collect.MetaWorldTask: the same interface on a 1-D point,
to test collection and replay without MuJoCo."""

import numpy as np

GOAL = 5.0  # The point's goal position; |GOAL - x| < 0.5 is success.


class FakeTask:
    """The expert moves x to GOAL with gain 3 (raw actions up to ~15, as Meta-World's experts
    exceed the action space); the env, like Meta-World's, executes the action clipped to
    [-1, 1] (`executed` records what it ran). Frames show x in the red channel."""

    made = []

    def __init__(self, task, size, camera):
        self.instruction, self.size, self.x = f"solve {task}", size, 0.0
        self.action_low = np.full(4, -1.0, np.float32)
        self.action_high = np.full(4, 1.0, np.float32)
        self.executed = []
        FakeTask.made.append(task)

    def reset(self, seed):
        self.x = float(np.random.default_rng(seed).uniform(0, 1))
        self.executed = []
        return np.array([self.x])

    def step(self, action):
        action = np.clip(np.asarray(action, np.float32), -1.0, 1.0)
        self.executed.append(action)
        self.x += float(action[0])
        return np.array([self.x]), -abs(GOAL - self.x), abs(GOAL - self.x) < 0.5

    def expert(self, obs):
        return np.array([3.0 * (GOAL - obs[0]), 0, 0, 1], np.float32)

    def render(self):
        frame = np.zeros((self.size, self.size, 3), np.uint8)
        frame[..., 0] = int(self.x * 40)
        return frame

    def close(self):
        pass
