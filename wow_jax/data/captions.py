"""Mixture captions (the WoW recipe): one clip, many phrasings of what the robot does.

WoW post-trains on captions mixed along three axes; each clip draws one choice per axis:

  robot naming:  'model' (the episode's robot, e.g. 'the Sawyer arm', 'the Franka Panda arm'),
                 'effector' ('the end-effector') or 'generic' ('the robot')
  length:        'short' (one sentence) or 'long' (scene + motion description)
  granularity:   'coarse' (the episode-level instruction) or 'fine' (the per-segment descriptions
                 of the clip when the data has them, otherwise a templated step-by-step rewrite)

Rendering is deterministic given the choice, so `caption_variants` lists every caption a clip can
get (12 at most) for the text-embedding cache, and the Grain transform is deterministic given its
seed. Instructions are imperative ('reach the goal'); the robot becomes the subject with the verb in
the third person ('the Sawyer arm reaches the goal'); descriptive captions ('The robot arm opens the
drawer') keep their wording with the leading robot subject renamed.
"""

from __future__ import annotations

import dataclasses
import itertools
import re

import numpy as np

ROBOT_KINDS = ("model", "effector", "generic")
LENGTHS = ("short", "long")
GRANULARITIES = ("coarse", "fine")
EFFECTOR_NAME = "the end-effector"
GENERIC_NAME = "the robot"
SCENE = "A fixed camera views a robot workspace on a tabletop."
CLOSING = "The motion is smooth and continuous; the rest of the scene stays still."
_ES_ENDINGS = ("s", "sh", "ch", "x", "z", "o")
# Templated fine steps around the instruction when the data has no segment descriptions.
TEMPLATE_STEPS = ("move into position near the target", "come to rest")
# First words that mark a description ('The robot picks ...'), not an imperative instruction.
_NOT_VERBS = frozenset(
    [
        "the",
        "a",
        "an",
        "this",
        "that",
        "these",
        "those",
        "robot",
        "robotic",
        "it",
        "he",
        "she",
        "they",
        "there",
        "we",
        "i",
        "you",
        "one",
        "two",
        "first",
        "then",
        "in",
        "on",
        "at",
        "after",
        "while",
        "when",
        "gripper",
        "arm",
    ]
)
_SUBJECT = re.compile(
    r"^(?:the|a|an)\s+(?:robot(?:ic)?(?:\s+arm)?|arm|gripper|end-effector)\b", re.IGNORECASE
)


@dataclasses.dataclass(frozen=True)
class CaptionMixture:
    """Probabilities of the three axes (from config.data.caption_*)."""

    long_prob: float = 0.5
    fine_prob: float = 0.3
    robot_probs: tuple[float, float, float] = (0.4, 0.3, 0.3)  # model, effector, generic
    default_robot: str = GENERIC_NAME

    def __post_init__(self):
        for name, p in (("long_prob", self.long_prob), ("fine_prob", self.fine_prob)):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"config.data.caption_{name} must be in [0, 1], got {p}")
        if len(self.robot_probs) != 3 or abs(sum(self.robot_probs) - 1.0) > 1e-6:
            raise ValueError(
                "config.data.caption_robot_probs must be 3 probabilities (model, end-effector, "
                f"generic) summing to 1, got {tuple(self.robot_probs)}"
            )

    @classmethod
    def from_config(cls, data_cfg) -> CaptionMixture:
        return cls(
            long_prob=float(data_cfg.caption_long_prob),
            fine_prob=float(data_cfg.caption_fine_prob),
            robot_probs=tuple(float(p) for p in data_cfg.caption_robot_probs),
            default_robot=data_cfg.robot_name or GENERIC_NAME,
        )

    def sample(self, rng: np.random.Generator) -> tuple[str, str, str]:
        """One (robot_kind, length, granularity) draw."""
        robot = ROBOT_KINDS[int(rng.choice(3, p=np.asarray(self.robot_probs)))]
        length = "long" if rng.random() < self.long_prob else "short"
        granularity = "fine" if rng.random() < self.fine_prob else "coarse"
        return robot, length, granularity


def third_person(phrase: str) -> str:
    """'reach the goal' -> 'reaches the goal' (conjugates the leading imperative verb)."""
    phrase = phrase.strip().rstrip(".")
    if not phrase:
        return phrase
    verb, _, rest = phrase.partition(" ")
    if not verb.isalpha():
        return phrase
    lower = verb.lower()
    if lower.endswith(_ES_ENDINGS):
        verb = lower + "es"
    elif len(lower) > 1 and lower.endswith("y") and lower[-2] not in "aeiou":
        verb = lower[:-1] + "ies"
    else:
        verb = lower + "s"
    return f"{verb} {rest}".strip()


def _sentence(text: str) -> str:
    text = text.strip()
    return (text[:1].upper() + text[1:]).rstrip(".") + "."


def distinct_segments(segments) -> list[str]:
    """Per-frame fine descriptions -> the distinct consecutive non-empty ones, in order."""
    out: list[str] = []
    for text in segments:
        text = text.strip()
        if text and (not out or out[-1] != text):
            out.append(text)
    return out


def is_imperative(phrase: str) -> bool:
    """'pick up the cup' -> True; 'The robot picks up the cup' -> False (a description)."""
    words = phrase.split()
    return bool(words) and words[0].isalpha() and words[0].lower() not in _NOT_VERBS


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:] if text[1:2].islower() else text


def _clause(robot: str, phrase: str) -> str:
    """A clause with the robot as subject. Imperatives get the robot + third person; descriptions
    keep their wording with a leading robot subject ('the robot arm ...') renamed."""
    phrase = phrase.strip().rstrip(".")
    if is_imperative(phrase):
        return f"{robot} {third_person(phrase)}"
    return _lower_first(_SUBJECT.sub(robot, phrase, count=1))


def _then(robot: str, phrase: str, pronoun: str = "") -> str:
    """A continuation: 'pushes it left' / 'it pushes it left', or a description's own clause."""
    if is_imperative(phrase):
        return f"{pronoun}{third_person(phrase)}"
    return _clause(robot, phrase)


def render(
    instruction: str, segments: list[str], robot_name: str, choice: tuple[str, str, str]
) -> str:
    """The caption for one (robot_kind, length, granularity) choice."""
    kind, length, granularity = choice
    robot = {"model": robot_name, "effector": EFFECTOR_NAME, "generic": GENERIC_NAME}[kind]
    if granularity == "coarse":
        sentence = _sentence(_clause(robot, instruction))
        return sentence if length == "short" else " ".join([SCENE, sentence, CLOSING])
    parts = list(segments) or list(TEMPLATE_STEPS[:1]) + [instruction] + list(TEMPLATE_STEPS[1:])
    if length == "short":
        rest = [_then(robot, p) for p in parts[1:]]
        return _sentence(", then ".join([_clause(robot, parts[0]), *rest]))
    steps = [_sentence("first, " + _clause(robot, parts[0]))]
    steps += [_sentence("then " + _then(robot, p, "it ")) for p in parts[1:-1]]
    if len(parts) > 1:
        steps.append(_sentence("finally " + _then(robot, parts[-1], "it ")))
    return " ".join([SCENE, *steps, CLOSING])


def caption_variants(instruction: str, segments, robot_name: str) -> list[str]:
    """Every caption the mixture can give a clip (sorted, unique), for the text-embedding cache."""
    fine = distinct_segments(segments)
    choices = itertools.product(ROBOT_KINDS, LENGTHS, GRANULARITIES)
    return sorted({render(instruction, fine, robot_name, c) for c in choices})


def dataset_caption_variants(source, data_cfg, progress: bool = True) -> list[str]:
    """Every caption the pipeline can give any clip of `source` (sorted), for the text cache.

    Fine captions depend on which segments a clip window covers, so every window start of
    `num_frames` frames at `frame_stride` is enumerated. Bad episodes are skipped.
    """
    from tqdm import tqdm

    mixture = CaptionMixture.from_config(data_cfg)
    span = (data_cfg.num_frames - 1) * data_cfg.frame_stride + 1
    out: set[str] = set()
    for index in tqdm(range(len(source)), "caption variants", disable=not progress):
        try:
            texts = source.step_texts(index)
        except ValueError:
            continue
        robot = texts["robot"] or mixture.default_robot
        windows = {
            tuple(distinct_segments(texts["segments"][s : s + span : data_cfg.frame_stride]))
            for s in range(max(len(texts["segments"]) - span + 1, 0))
        }
        for window in windows:
            if texts["instruction"]:
                out.update(caption_variants(texts["instruction"], list(window), robot))
    return sorted(out)


class MixtureCaptionTransform:
    """Grain random map: element with 'instruction', 'segments', 'robot' -> adds 'caption'.

    Deterministic given the Grain seed (the rng passed in). The drawn choice is kept as
    'caption_kind' ('model/long/fine', ...) so the mixture can be monitored.
    """

    def __init__(self, mixture: CaptionMixture):
        self.mixture = mixture

    def __call__(self, element: dict, rng: np.random.Generator) -> dict:
        if "_bad" in element:
            return element
        choice = self.mixture.sample(rng)
        robot = element.get("robot") or self.mixture.default_robot
        fine = distinct_segments(element["segments"])
        element = dict(element)
        element["caption"] = render(element["instruction"], fine, robot, choice)
        element["caption_kind"] = "/".join(choice)
        del element["segments"], element["robot"]
        return element
