"""The SOPHIA loop for one start state (a case: {'name', 'seed', 'frame' uint8 [h, w, 3],
'instruction'}): round 0 imagines config.sophia.candidates clips of the instruction itself (the
baseline), every later round that many of the refiner's rewrites of the best prompt so far, all
of a round in one batch through the sampler; the critic scores each against the instruction; the
best so far (verdict 'completed' first, then score) is kept. It stops after a round whose best so
far is 'completed' or scores >= config.sophia.threshold, or after config.sophia.rounds rounds.

Every round is saved in <folder>/round_<r>/ (the candidates' gifs and videos.npz, uint8
[N, T, h, w, 3]) with round.json written last:
    {'round', 'candidates': [{'prompt', 'seed', 'report', 'gif'}], 'best': the round's best
     candidate, 'best_so_far': {'round', 'candidate', 'prompt', 'score', 'verdict'},
     'stop': None | 'completed' | 'threshold' | 'rounds'}
A rerun reads the finished rounds back and goes on after the last (a killed run loses at most the
round it was in).
"""

from __future__ import annotations

import json
import os

import imageio.v3 as iio
import numpy as np
from absl import logging

from wow_jax import evaluate

ROUND_FILE = "round.json"


def round_dir(folder: str, index: int) -> str:
    return os.path.join(folder, f"round_{index}")


def candidate_seed(case_seed: int, round_index: int, candidate: int) -> int:
    """The noise seed of a candidate: its case, round and index."""
    return int(np.random.SeedSequence([case_seed, round_index, candidate]).generate_state(1)[0])


def load_rounds(folder: str) -> list[dict]:
    """The finished rounds of a case, in order (a round without round.json is unfinished)."""
    rounds = []
    while os.path.exists(path := os.path.join(round_dir(folder, len(rounds)), ROUND_FILE)):
        with open(path) as f:
            rounds.append(json.load(f))
    return rounds


def ranking_key(report: dict) -> tuple:
    """Orders reports best last: a 'completed' verdict first, then the score."""
    return report["verdict"] == "completed", report["score"]


def stop_reason(best: dict, round_index: int, sophia_cfg) -> str | None:
    if best["verdict"] == "completed":
        return "completed"
    if best["score"] >= sophia_cfg.threshold:
        return "threshold"
    return "rounds" if round_index + 1 >= sophia_cfg.rounds else None


def propose(case: dict, rounds: list[dict], refiner, count: int) -> list[str]:
    """The prompts of the next round (module docstring)."""
    if not rounds:
        return [case["instruction"]] * count
    best = rounds[-1]["best_so_far"]
    report = rounds[best["round"]]["candidates"][best["candidate"]]["report"]
    tried = sorted({c["prompt"] for r in rounds for c in r["candidates"]})
    critique = {"prompt": best["prompt"], "report": report, "tried": tried}
    return [refiner.rewrite(case["instruction"], critique, k) for k in range(count)]


def write_round(folder: str, record: dict, videos: list[np.ndarray], fps: int) -> None:
    """round_<r>/: one gif per candidate, videos.npz, then round.json (atomically, last)."""
    os.makedirs(folder, exist_ok=True)
    for k, (candidate, video) in enumerate(zip(record["candidates"], videos, strict=True)):
        candidate["gif"] = os.path.join(folder, f"candidate_{k}.gif")
        iio.imwrite(candidate["gif"], video, duration=1000.0 / fps, loop=0)
    np.savez(os.path.join(folder, "videos.npz"), videos=np.stack(videos))
    evaluate.write_json(os.path.join(folder, ROUND_FILE), record)


def run_round(case, rounds, imagine, critic, refiner, sophia_cfg, folder, fps) -> dict:
    """Imagines, scores and saves round len(rounds) of the case; returns its record."""
    index, count = len(rounds), sophia_cfg.candidates
    prompts = propose(case, rounds, refiner, count)
    seeds = [candidate_seed(case["seed"], index, k) for k in range(count)]
    frames = np.repeat(case["frame"][None], count, axis=0)
    videos = evaluate.imagine_in_batches(imagine, frames, prompts, seeds, count)
    reports = [critic.score(np.asarray(v), case["instruction"]) for v in videos]
    best = max(range(count), key=lambda k: ranking_key(reports[k]))
    candidate = {"round": index, "candidate": best, "prompt": prompts[best]}
    candidate.update(score=reports[best]["score"], verdict=reports[best]["verdict"])
    previous = rounds[-1]["best_so_far"] if rounds else None
    if previous is not None and ranking_key(previous) >= ranking_key(candidate):
        candidate = previous
    record = {
        "round": index,
        "candidates": [
            {"prompt": p, "seed": s, "report": r}
            for p, s, r in zip(prompts, seeds, reports, strict=True)
        ],
        "best": best,
        "best_so_far": candidate,
        "stop": stop_reason(candidate, index, sophia_cfg),
    }
    write_round(round_dir(folder, index), record, videos, fps)
    logging.info(
        "refine %s round %d: scores %s, best so far %.3f (%s), stop %s",
        case["name"], index, [round(r["score"], 3) for r in reports], candidate["score"],
        candidate["verdict"], record["stop"],
    )  # fmt: skip
    return record


def refine_case(case, imagine, critic, refiner, sophia_cfg, folder: str, fps: int) -> dict:
    """Runs (or resumes) the case's rounds (module docstring) -> {'name', 'seed', 'instruction',
    'rounds': [round records], 'best': best_so_far of the last round}."""
    rounds = load_rounds(folder)
    while not rounds or rounds[-1]["stop"] is None:
        rounds.append(run_round(case, rounds, imagine, critic, refiner, sophia_cfg, folder, fps))
    return {
        "name": case["name"],
        "seed": case["seed"],
        "instruction": case["instruction"],
        "rounds": rounds,
        "best": rounds[-1]["best_so_far"],
    }
