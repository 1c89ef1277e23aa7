"""The SOPHIA loop (wow_jax/sophia/loop.py): round 0 imagines the instruction, later rounds the
refiner's rewrites of the best so far; the best is kept; it stops at the threshold, at a
'completed' verdict or after the rounds; every round is saved; a kill -9 loses at most one round."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np

from tests.sophia import fake_world
from wow_jax.sophia import critic, loop

ROOT = Path(__file__).resolve().parents[2]
INSTRUCTION = "reach the goal"


class DistanceCritic:
    """Scores a clip by how far its point got (last frame's x / GOAL); 'completed' at or above
    `complete_at` (never by default)."""

    def __init__(self, complete_at=2.0):
        self.complete_at, self.instructions = complete_at, []

    def score(self, frames, instruction):
        self.instructions.append(instruction)
        reached = min(fake_world.position(frames[-1]) / 5.0, 1.0)
        templates = {n: {"score": 1 + 4 * reached, "rationale": n} for n in critic.TEMPLATES}
        verdict = "completed" if reached >= self.complete_at else "failed"
        return critic.make_report(templates, verdict, f"x reached {reached:.2f} of the goal")


class ListRefiner:
    """Round r's candidate k gets prompts[r - 1][k]; records each critique."""

    def __init__(self, prompts):
        self.prompts, self.critiques = prompts, []

    def rewrite(self, instruction, critique, candidate):
        assert instruction == INSTRUCTION
        if candidate == 0:
            self.critiques.append(critique)
        return self.prompts[len(self.critiques) - 1][candidate]


def case():
    frame = np.zeros((16, 16, 3), np.uint8)
    frame[..., 0] = 20  # x = 0.5
    return {"name": "reach-v3_1", "seed": 1, "frame": frame, "instruction": INSTRUCTION}


def run(tmp_path, refiner, judge=None, **overrides):
    config = fake_world.refine_config(**overrides)
    calls = []
    result = loop.refine_case(
        case(),
        fake_world.imagine_fn(9, calls),
        judge or DistanceCritic(),
        refiner,
        config.sophia,
        str(tmp_path / "case"),
        8,
    )
    return result, calls


def test_the_loop_keeps_the_best_rewrite_and_stops_at_the_threshold(tmp_path):
    # issue 19: N candidates per round in one sampler batch; round 0 is the instruction itself;
    # the best (by score) is kept; a score >= sophia.threshold stops the loop.
    refiner = ListRefiner([["go slowly", "approach, then reach the goal"], ["unused", "unused"]])
    result, calls = run(tmp_path, refiner)
    assert calls == [[INSTRUCTION] * 2, ["go slowly", "approach, then reach the goal"]]
    first, second = result["rounds"]
    assert [r["stop"] for r in result["rounds"]] == [None, "threshold"]
    assert second["best"] == 1 and result["best"]["prompt"] == "approach, then reach the goal"
    assert result["best"]["round"] == 1 and result["best"]["score"] >= 0.9
    # The refiner saw the best of round 0 and every prompt tried.
    critique = refiner.critiques[0]
    assert critique["prompt"] == INSTRUCTION and critique["tried"] == [INSTRUCTION]
    assert critique["report"] == first["candidates"][first["best"]]["report"]
    # Two distinct noise seeds per round, different between rounds.
    seeds = [c["seed"] for r in result["rounds"] for c in r["candidates"]]
    assert len(set(seeds)) == 4
    # Every round saved: gifs, videos, round.json.
    for r in range(2):
        folder = tmp_path / "case" / f"round_{r}"
        assert sorted(os.listdir(folder)) == [
            "candidate_0.gif",
            "candidate_1.gif",
            "round.json",
            "videos.npz",
        ]
        assert np.load(folder / "videos.npz")["videos"].shape == (2, 9, 16, 16, 3)


def test_a_completed_verdict_stops_before_the_threshold(tmp_path):
    # issue 19: the critic's 'completed' verdict stops the loop whatever the score.
    refiner = ListRefiner([["approach, then reach the goal"] * 2] * 2)
    judge = DistanceCritic(complete_at=0.5)
    result, _ = run(tmp_path, refiner, judge, **{"sophia.threshold": 1.0})
    assert [r["stop"] for r in result["rounds"]] == [None, "completed"]
    assert result["best"]["verdict"] == "completed"
    assert set(judge.instructions) == {INSTRUCTION}  # Judged against the task, not the prompt.


def test_a_worse_round_keeps_the_earlier_best_and_the_loop_ends_after_the_rounds(tmp_path):
    # issue 19: up to sophia.rounds rounds; a round worse than the best so far does not replace it.
    refiner = ListRefiner([["stand still", "stand still"], ["stand still", "stand still"]])
    calls_still = []

    def imagine(frames, prompts, seeds):
        calls_still.append(prompts)
        videos = fake_world.imagine_fn(9)(frames, prompts, seeds)
        if prompts[0] == "stand still":
            videos = np.repeat(videos[:, :1], 9, axis=1)
        return videos

    config = fake_world.refine_config()
    folder = str(tmp_path / "case")
    result = loop.refine_case(case(), imagine, DistanceCritic(), refiner, config.sophia, folder, 8)
    assert [r["stop"] for r in result["rounds"]] == [None, None, "rounds"]
    assert len(calls_still) == 3
    assert result["best"]["round"] == 0 and result["best"]["prompt"] == INSTRUCTION
    round_2 = result["rounds"][2]["candidates"][0]["report"]["score"]
    assert round_2 < result["best"]["score"]


KILL_SCRIPT = """
import os, signal, sys
sys.path.insert(0, {root!r})
from tests.sophia import fake_world, test_loop
from wow_jax.sophia import loop

imagine = fake_world.imagine_fn(9)
calls = []

def dying_imagine(frames, prompts, seeds):
    calls.append(prompts)
    if len(calls) == 2:  # Round 1, after round 0 was saved.
        os.kill(os.getpid(), signal.SIGKILL)
    return imagine(frames, prompts, seeds)

refiner = test_loop.ListRefiner([["go slowly", "slow again"], ["still slow", "slower"]])
config = fake_world.refine_config()
loop.refine_case(test_loop.case(), dying_imagine, test_loop.DistanceCritic(), refiner,
                 config.sophia, {folder!r}, 8)
"""


def test_a_killed_run_resumes_after_its_last_finished_round(tmp_path):
    # issue 19: a kill -9 during round 1 keeps round 0 (read back, not imagined again); the
    # rerun's rounds equal an uninterrupted run's.
    killed = tmp_path / "killed" / "case"
    script = KILL_SCRIPT.format(root=str(ROOT), folder=str(killed))
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, timeout=120)
    assert proc.returncode == -signal.SIGKILL
    assert [p.name for p in sorted(killed.iterdir())] == ["round_0"]
    kept = (killed / "round_0" / "round.json").stat().st_mtime_ns
    prompts = [["go slowly", "slow again"], ["still slow", "slower"]]
    config = fake_world.refine_config()
    calls = []
    resumed = loop.refine_case(
        case(), fake_world.imagine_fn(9, calls), DistanceCritic(), ListRefiner(prompts),
        config.sophia, str(killed), 8,
    )  # fmt: skip
    assert calls == prompts  # Rounds 1 and 2 only.
    assert (killed / "round_0" / "round.json").stat().st_mtime_ns == kept
    whole, _ = run(tmp_path / "whole", ListRefiner(prompts))
    for result in (resumed, whole):
        for record in result["rounds"]:
            for candidate in record["candidates"]:
                candidate.pop("gif")
    assert json.dumps(resumed) == json.dumps(whole)
    assert [r["stop"] for r in resumed["rounds"]] == [None, None, "rounds"]
