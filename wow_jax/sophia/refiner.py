"""SOPHIA's refiner: `rewrite(instruction, critique, candidate) -> prompt`, the prompt the world
model imagines the next round's candidate `candidate` from. `instruction` is the task's own
instruction (what the critic judges against); `critique` is {'prompt': the best prompt so far,
'report': its critic report (critic.py), 'tried': every prompt imagined so far}.

Backends (config.sophia.refiner):
  chat     the chat endpoint (chat.py) asked for one rewrite per candidate, answering
           {'instruction': str}, at config.sophia.refiner_temperature
  offline  the mixture-caption vocabulary the world model was trained on (data/captions.py):
           robot naming (model / end-effector / generic) x length (short / long with the scene
           and the 'smooth and continuous' closing) x granularity (coarse / fine step-by-step),
           the choices ranked by how they address the weakest templates of the report
           (PREFERENCES), those already tried last; candidate k takes the k-th
"""

from __future__ import annotations

import itertools

from wow_jax.data import captions
from wow_jax.sophia import chat

SCHEMA = {
    "type": "object",
    "properties": {"instruction": {"type": "string", "minLength": 1}},
    "required": ["instruction"],
    "additionalProperties": False,
}
SYSTEM = (
    "You rewrite instructions for a video world model of a robot arm so that the video it "
    "imagines carries the task out faithfully. Keep the task; make the wording clearer: name the "
    "robot, the object, the motion and its steps. Answer only with JSON."
)
# Template -> the caption axes' values that address its weakness, with their weights.
PREFERENCES = {
    "semantics": {"fine": 1.0, "model": 0.5},
    "physics": {"fine": 0.5, "effector": 0.5},
    "motion": {"long": 1.0},
    "quality": {"long": 0.5, "coarse": 0.5},
}


class ChatRefiner:
    """The refiner behind a chat endpoint (module docstring)."""

    def __init__(self, client: chat.ChatClient, candidates: int, temperature: float):
        self.client, self.candidates, self.temperature = client, candidates, temperature

    def rewrite(self, instruction: str, critique: dict, candidate: int) -> str:
        report = critique["report"]
        notes = "; ".join(
            f"{name} {t['score']:.1f}/5: {t['rationale']}"
            for name, t in report["templates"].items()
        )
        text = (
            f"Task instruction: {instruction!r}. Best prompt so far: {critique['prompt']!r}. "
            f"The critic's verdict on its video: {report['verdict']} "
            f"({report['verdict_rationale']}); scores: {notes}. Prompts already tried: "
            f"{critique['tried']}. Write rewrite {candidate + 1} of {self.candidates}, different "
            "from the others."
        )
        messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": text}]
        answer = self.client.ask(messages, SCHEMA, "rewrite", temperature=self.temperature)
        return answer["instruction"].strip()


class CaptionRefiner:
    """The offline refiner over the mixture-caption vocabulary; `robot_name` names the robot
    (the episodes' robot, e.g. 'the Sawyer arm')."""

    def __init__(self, robot_name: str):
        self.robot_name = robot_name

    def ranked(self, instruction: str, critique: dict) -> list[str]:
        """Every caption of the instruction, best first for the report's weak templates, the
        tried ones last (ties keep the vocabulary's order)."""
        templates = critique["report"]["templates"]
        weakness = {name: 5.0 - float(t["score"]) for name, t in templates.items()}
        choices = itertools.product(captions.ROBOT_KINDS, captions.LENGTHS, captions.GRANULARITIES)
        scored = []
        for order, choice in enumerate(choices):
            gain = sum(
                weakness[name] * sum(weights.get(axis, 0.0) for axis in choice)
                for name, weights in PREFERENCES.items()
            )
            text = captions.render(instruction, [], self.robot_name, choice)
            scored.append((text in critique["tried"], -gain, order, text))
        ranked, seen = [], set()
        for *_, text in sorted(scored):
            if text not in seen:
                ranked.append(text)
                seen.add(text)
        return ranked

    def rewrite(self, instruction: str, critique: dict, candidate: int) -> str:
        ranked = self.ranked(instruction, critique)
        return ranked[candidate % len(ranked)]
