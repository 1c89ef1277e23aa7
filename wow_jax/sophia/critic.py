"""SOPHIA's critic: `score(frames uint8 [T, h, w, 3], instruction) -> report`, the paper's four
templates (physics, motion, semantics, quality), each scored 1-5 with a rationale, an overall
completed/failed verdict and a normalised score in [0, 1] (the mean of (score - 1) / 4):

    {'templates': {name: {'score', 'rationale'}}, 'verdict': 'completed' | 'failed',
     'verdict_rationale': str, 'score': float}

Backends (config.sophia.critic):
  chat     a vision-language model behind an OpenAI-compatible endpoint (chat.py): config.sophia
           .frames frames sampled evenly from the clip, one request per template in parallel,
           then one for the verdict given the four rationales; answers validated by JSON schema
  offline  the project's own signals, for the demo and tests, from the case's start state: the
           IDM's actions read off the clip, each run `stride` env steps in the simulator
             physics    5 when the task succeeds, else 1 + 3 * best reward / sophia.reward_scale
             semantics  agreement of the IDM's xyz actions with what the instruction implies,
                        the scripted expert's from the same start state (mean per frame step):
                        3 + 2 * cosine of the two action sequences
             motion     temporal consistency of the clip: 1 + 4 * median / max of the mean
                        absolute changes between consecutive frames that move (MOVING_FRACTION);
                        a jump or a flickering frame lowers it
             quality    the clip against the simulator's frames under the IDM's actions: PSNR
                        mapped linearly from sophia.psnr_range to 1..5
           verdict 'completed' exactly when the simulator reports success.
"""

from __future__ import annotations

from concurrent import futures

import numpy as np

from wow_jax.sim import closed_loop, metaworld_collect
from wow_jax.sophia import chat

TEMPLATES = {
    "physics": "PHYSICS: do objects move only when the robot touches them, with no "
    "interpenetration, teleporting, or objects appearing or vanishing?",
    "motion": "MOTION: is the robot's motion smooth and consistent from frame to frame, with no "
    "jumps, flicker or morphing?",
    "semantics": "SEMANTICS: does the video carry out the instruction: the right object, the "
    "right action, the right direction?",
    "quality": "QUALITY: are the frames sharp and stable, free of artifacts, with the scene "
    "layout kept?",
}
VERDICTS = ("completed", "failed")
# Offline motion: frame-to-frame changes above this fraction of the largest count as moving (a
# clip that reaches its goal and then holds still is not inconsistent).
MOVING_FRACTION = 0.05
_RATIONALE = {"type": "string", "minLength": 1}
TEMPLATE_SCHEMA = {
    "type": "object",
    "properties": {
        "score": {"type": "integer", "minimum": 1, "maximum": 5},
        "rationale": _RATIONALE,
    },
    "required": ["score", "rationale"],
    "additionalProperties": False,
}
VERDICT_SCHEMA = {
    "type": "object",
    "properties": {"verdict": {"type": "string", "enum": list(VERDICTS)}, "rationale": _RATIONALE},
    "required": ["verdict", "rationale"],
    "additionalProperties": False,
}
SYSTEM = (
    "You are a strict critic of videos imagined by a robot world model. The user gives frames "
    "of one clip in order and the instruction the robot was given. Answer only with JSON."
)


def make_report(templates: dict, verdict: str, rationale: str) -> dict:
    """The report of the module docstring from {name: {'score', 'rationale'}} of every template."""
    scores = [templates[name]["score"] for name in TEMPLATES]
    normalised = float(np.mean([(s - 1.0) / 4.0 for s in scores]))
    return {
        "templates": {name: templates[name] for name in TEMPLATES},
        "verdict": verdict,
        "verdict_rationale": rationale,
        "score": normalised,
    }


def sample_frames(frames: np.ndarray, count: int) -> np.ndarray:
    """uint8 [T, h, w, 3] -> [min(count, T), h, w, 3] evenly spaced, first and last kept."""
    index = np.unique(np.linspace(0, len(frames) - 1, min(count, len(frames))).round().astype(int))
    return frames[index]


class ChatCritic:
    """The critic behind a chat endpoint (module docstring)."""

    def __init__(self, client: chat.ChatClient, frames: int):
        self.client, self.frames = client, frames

    def _ask(self, images: list, instruction: str, question: str, schema: dict, name: str):
        text = f"Instruction: {instruction!r}. {question}"
        messages = [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": [{"type": "text", "text": text}, *images]},
        ]
        return self.client.ask(messages, schema, name, temperature=0.0)

    def score(self, frames: np.ndarray, instruction: str) -> dict:
        images = [chat.image_part(f) for f in sample_frames(frames, self.frames)]
        ask = "Score it from 1 (very poor) to 5 (excellent) with a one-sentence rationale: "
        with futures.ThreadPoolExecutor(len(TEMPLATES)) as pool:
            jobs = {
                name: pool.submit(
                    self._ask, images, instruction, ask + question, TEMPLATE_SCHEMA, name
                )
                for name, question in TEMPLATES.items()
            }
            templates = {name: job.result() for name, job in jobs.items()}
        notes = "; ".join(f"{n} {t['score']}/5: {t['rationale']}" for n, t in templates.items())
        question = (
            f"Assessments: {notes}. Overall, does the clip show the instruction completed? "
            "Answer 'completed' or 'failed' with a one-sentence rationale."
        )
        verdict = self._ask(images, instruction, question, VERDICT_SCHEMA, "verdict")
        return make_report(templates, verdict["verdict"], verdict["rationale"])


class OfflineCritic:
    """The simulator's critic of one start state: `env` (a MetaWorldTask or its stand-in) reset
    with `seed`; `read(video) -> actions [T-1, A]` (dataset units), each run `stride` env steps;
    frames compared at the model's size (`spec`); `sophia_cfg` gives reward_scale, psnr_range;
    `translation` the xyz action dimensions (without the gripper)."""

    def __init__(self, env, seed: int, read, stride: int, spec, sophia_cfg, translation):
        self.env, self.seed, self.read, self.stride, self.spec = env, seed, read, stride, spec
        self.reward_scale, self.psnr_range = sophia_cfg.reward_scale, tuple(sophia_cfg.psnr_range)
        self.translation = list(translation)

    def execute(self, actions: np.ndarray) -> dict:
        """Runs actions [S, A] from the start state -> {'success', 'solved_at', 'best_reward',
        'frames': uint8 [S + 1, h, w, 3] after every action's `stride` steps}."""
        self.env.reset(self.seed)
        rendered, best, solved_at = [self.env.render()], -np.inf, None
        for step, action in enumerate(np.repeat(actions, self.stride, axis=0), start=1):
            _, reward, success = self.env.step(metaworld_collect.executable(self.env, action))
            best = max(best, reward)
            if success and solved_at is None:
                solved_at = step
            if step % self.stride == 0:
                rendered.append(self.env.render())
        frames = closed_loop.model_frames(np.stack(rendered), self.spec)
        return {"success": solved_at is not None, "solved_at": solved_at, "best_reward": best,
                "frames": frames}  # fmt: skip

    def expert_actions(self, steps: int) -> np.ndarray:
        """The scripted expert from the start state: [steps, A], each the mean executed action
        of `stride` env steps (as the IDM reads a frame step)."""
        obs, executed = self.env.reset(self.seed), []
        for _ in range(steps * self.stride):
            action = metaworld_collect.executable(self.env, self.env.expert(obs))
            obs, _, _ = self.env.step(action)
            executed.append(action)
        return np.stack(executed).reshape(steps, self.stride, -1).mean(1)

    def score(self, frames: np.ndarray, instruction: str) -> dict:
        actions = np.asarray(self.read(frames), np.float32)
        run = self.execute(actions)
        templates = {
            "physics": self.physics(run),
            "semantics": self.semantics(actions, self.expert_actions(len(actions))),
            "motion": motion(frames),
            "quality": self.quality(frames, run["frames"]),
        }
        if run["success"]:
            rationale = (
                f"the simulator reports '{instruction}' solved at env step {run['solved_at']}"
            )
        else:
            rationale = f"the simulator does not report '{instruction}' solved"
        return make_report(templates, VERDICTS[0] if run["success"] else VERDICTS[1], rationale)

    def physics(self, run: dict) -> dict:
        if run["success"]:
            return {"score": 5.0, "rationale": f"the IDM's actions solve the task at env step "
                                               f"{run['solved_at']}"}  # fmt: skip
        progress = float(np.clip(run["best_reward"] / self.reward_scale, 0.0, 1.0))
        return {
            "score": 1.0 + 3.0 * progress,
            "rationale": f"the IDM's actions do not solve the task; best reward "
            f"{run['best_reward']:.2f} of {self.reward_scale}",
        }

    def semantics(self, actions: np.ndarray, expert: np.ndarray) -> dict:
        a, e = actions[:, self.translation].ravel(), expert[:, self.translation].ravel()
        norm = float(np.linalg.norm(a) * np.linalg.norm(e))
        cosine = float(a @ e) / norm if norm > 0 else 0.0
        return {
            "score": 3.0 + 2.0 * cosine,
            "rationale": f"cosine {cosine:.2f} between the IDM's xyz actions and the expert's "
            "for the instruction from the same start",
        }

    def quality(self, frames: np.ndarray, executed: np.ndarray) -> dict:
        error = np.mean((frames[1:].astype(np.float64) - executed[1:].astype(np.float64)) ** 2)
        psnr = float(10 * np.log10(255.0**2 / max(error, 1e-10)))
        low, high = self.psnr_range
        return {
            "score": 1.0 + 4.0 * float(np.clip((psnr - low) / (high - low), 0.0, 1.0)),
            "rationale": f"PSNR {psnr:.1f} dB of the clip against the simulator's frames under "
            "the IDM's actions",
        }


def motion(frames: np.ndarray) -> dict:
    """The temporal-consistency template of uint8 [T, h, w, 3] (module docstring)."""
    change = np.abs(np.diff(frames.astype(np.float32), axis=0)).mean(axis=(1, 2, 3))
    largest = float(change.max()) if len(change) else 0.0
    if largest <= 1e-6:
        return {"score": 5.0, "rationale": "no frame-to-frame change"}
    moving = change[change > MOVING_FRACTION * largest]
    consistency = float(np.median(moving)) / largest
    return {
        "score": 1.0 + 4.0 * consistency,
        "rationale": f"median / largest frame-to-frame change {consistency:.2f}",
    }
