"""Mode `refine`: SOPHIA (arXiv 2509.22642) in Meta-World. For config.sophia.episodes_per_task
held-out start states of each task (the first of mode evaluate's seeds), the loop of loop.py
refines the prompt the world model imagines from, judged by the critic (config.sophia.critic) and
rewritten by the refiner (config.sophia.refiner); with config.sophia.closed_loop, imagine-then-act
(evaluate.ImagineActPolicy) then runs each start state once with the original instruction and once
with its refined prompt, the same noise seeds, to see whether refinement helps acting.

    python -m wow_jax.main --config=configs/demo.py --config.mode=refine --workdir=W \
        --config.checkpoint.init_from=<world-model run> --config.act.idm_checkpoint=<IDM run> \
        [--config.sophia.critic=chat --config.sophia.base_url=http://127.0.0.1:8000/v1 \
         --config.sophia.model=Qwen/Qwen2.5-VL-7B-Instruct]

(the runs are adopted as for mode act). The demo calls `refine(config, workdir, imagine, read,
models)` with its in-memory models.

Outputs in <workdir>/refine (REFINE_DIR):
    cases/<task>_<seed>/round_<r>/   every round (loop.py); a rerun resumes after the last
                   finished round; a rerun with other settings (settings.json) moves cases/ aside
    closed_loop/<task>.json          original vs refined closed-loop episodes (reused for the
                                     same prompts)
    results.json   per case its rounds and best; 'summary': the mean critic score of round 0's
                   candidates, of round 0's best and of the final best over cases, per round;
                   'closed_loop': success of the original and refined prompts
    report.html    the page to open first (report.py), with scores.png
"""

from __future__ import annotations

import json
import os

import numpy as np

from wow_jax import evaluate
from wow_jax.sim import closed_loop, metaworld_collect
from wow_jax.sophia import chat, critic, loop, refiner, report

REFINE_DIR = "refine"
RESULTS_FILE = "results.json"


def check_config(config) -> None:
    """ValueError unless refinement can run (the backends' names are checked at start-up,
    configuration.py): Meta-World data, an endpoint for a chat backend."""
    if config.data.source != "metaworld":
        raise ValueError(
            "mode refine starts from Meta-World states: config.data.source must be 'metaworld', "
            f"got {config.data.source!r}"
        )
    if "chat" in (config.sophia.critic, config.sophia.refiner):
        chat.Endpoint.from_config(config.sophia)


def refine_tasks(config) -> list[str]:
    return list(config.sophia.tasks or evaluate.eval_tasks(config))


def case_seeds(config, task_index: int) -> list[int]:
    """The task's first config.sophia.episodes_per_task held-out evaluation seeds."""
    return closed_loop.episode_seeds(
        config.data.collect_seed,
        config.evaluate.seed_offset,
        task_index,
        config.sophia.episodes_per_task,
    )


def settings(config, models: dict) -> dict:
    """What the rounds depend on (never the endpoint's key)."""
    sophia = {k: v for k, v in config.sophia.to_dict().items() if k != "api_key"}
    current = {**evaluate.settings(config, models), "sophia": sophia, "tasks": refine_tasks(config)}
    return json.loads(json.dumps(current))  # As settings.json reads back (tuples as lists).


def make_refiner(config, client):
    if config.sophia.refiner == "chat":
        return refiner.ChatRefiner(
            client, config.sophia.candidates, config.sophia.refiner_temperature
        )
    return refiner.CaptionRefiner(metaworld_collect.ROBOT_NAME)  # As Meta-World episodes name it.


def make_critic(config, client, read, env, seed: int, spec):
    if config.sophia.critic == "chat":
        return critic.ChatCritic(client, config.sophia.frames)
    grip = config.model.idm.gripper_index
    translation = [d for d in range(3) if d != grip]
    return critic.OfflineCritic(
        env, seed, read, spec.stride_for(0.0), spec, config.sophia, translation
    )


def summarize(cases: list[dict]) -> dict:
    """Mean critic scores over cases (module docstring) and the verdicts."""

    def candidate_mean(record):
        return float(np.mean([c["report"]["score"] for c in record["candidates"]]))

    rounds = max(len(c["rounds"]) for c in cases)
    return {
        "cases": len(cases),
        "round_0_mean": float(np.mean([candidate_mean(c["rounds"][0]) for c in cases])),
        "round_0_best": float(np.mean([c["rounds"][0]["best_so_far"]["score"] for c in cases])),
        "final_best": float(np.mean([c["best"]["score"] for c in cases])),
        "round_mean": [
            float(np.mean([candidate_mean(c["rounds"][r]) for c in cases if len(c["rounds"]) > r]))
            for r in range(rounds)
        ],
        "completed_round_0": sum(
            c["rounds"][0]["best_so_far"]["verdict"] == "completed" for c in cases
        ),  # fmt: skip
        "completed_final": sum(c["best"]["verdict"] == "completed" for c in cases),
    }


def refine_cases(config, out_dir, imagine, read, make_task, client) -> list[dict]:
    """Every case's rounds (loop.refine_case), task by task on one env each."""
    spec = closed_loop.frame_spec(config.data)
    text_refiner = make_refiner(config, client)
    render = config.data.render_size or max(config.data.height, config.data.width)
    cases = []
    for task_index, task in enumerate(refine_tasks(config)):
        env = make_task(task, render, config.data.camera)
        try:
            for seed in case_seeds(config, task_index):
                env.reset(seed)
                case = {
                    "name": f"{task}_{seed}",
                    "seed": seed,
                    "frame": closed_loop.model_frames(env.render()[None], spec)[0],
                    "instruction": env.instruction,
                }
                judge = make_critic(config, client, read, env, seed, spec)
                folder = os.path.join(out_dir, "cases", case["name"])
                done = loop.refine_case(
                    case, imagine, judge, text_refiner, config.sophia, folder, config.sample.fps
                )
                cases.append({**done, "task": task})
        finally:
            env.close()
    return cases


def compare_closed_loop(config, out_dir, cases, imagine, read, make_task) -> dict:
    """Imagine-then-act with each case's original instruction and its refined prompt on its
    seed -> {'cases': {name: {'original', 'refined'}}, 'original'/'refined': summaries}."""
    spec = closed_loop.frame_spec(config.data)
    stride, ev = spec.stride_for(0.0), config.evaluate
    render = config.data.render_size or max(config.data.height, config.data.width)
    folder = os.path.join(out_dir, "closed_loop")
    os.makedirs(folder, exist_ok=True)
    outcome = {}
    for task in refine_tasks(config):
        group = [c for c in cases if c["task"] == task]
        prompts = {
            "original": [c["instruction"] for c in group],
            "refined": [c["best"]["prompt"] for c in group],
        }
        path = os.path.join(folder, f"{task}.json")
        stored = None
        if os.path.exists(path):
            with open(path) as f:
                stored = json.load(f)
        if stored is None or stored["prompts"] != prompts:
            stored = {"prompts": prompts}
            envs = [make_task(task, render, config.data.camera) for _ in group]
            try:
                for kind, instructions in prompts.items():
                    policy = evaluate.ImagineActPolicy(
                        imagine, read, instructions, stride, ev.execute_frames, ev.batch
                    )
                    episodes = closed_loop.run_group(
                        envs,
                        [c["seed"] for c in group],
                        policy,
                        evaluate.max_steps(config),
                        spec,
                        stride,
                    )
                    stored[kind] = [e["success"] for e in episodes]
            finally:
                for env in envs:
                    env.close()
            evaluate.write_json(path, stored)
        for i, case in enumerate(group):
            outcome[case["name"]] = {k: stored[k][i] for k in ("original", "refined")}
    return {
        "cases": outcome,
        **{
            k: closed_loop.summarize([o[k] for o in outcome.values()])
            for k in ("original", "refined")
        },
    }


def refine(config, workdir: str, imagine, read, models: dict, make_task=None) -> dict:
    """Mode refine's work (module docstring) with `imagine`/`read` as evaluate.ImagineActPolicy's;
    `models` names the world model and IDM (a change moves earlier rounds aside). Writes and
    returns results.json's content."""
    check_config(config)
    make_task = make_task or metaworld_collect.MetaWorldTask
    out_dir = os.path.join(workdir, REFINE_DIR)
    current = settings(config, models)
    evaluate.prepare_store(out_dir, current, kept="cases")
    client = None
    if "chat" in (config.sophia.critic, config.sophia.refiner):
        client = chat.ChatClient(chat.Endpoint.from_config(config.sophia))
    cases = refine_cases(config, out_dir, imagine, read, make_task, client)
    results = {
        "text": (
            f"{len(cases)} start states; critic {config.sophia.critic}, refiner "
            f"{config.sophia.refiner}; {config.sophia.candidates} candidates per round, up to "
            f"{config.sophia.rounds} rounds, stop at a 'completed' verdict or score >= "
            f"{config.sophia.threshold}. Round 0 imagines the original instruction."
        ),
        "cases": cases,
        "summary": summarize(cases),
        "settings": current,
    }
    if config.sophia.closed_loop:
        results["closed_loop"] = compare_closed_loop(
            config, out_dir, cases, imagine, read, make_task
        )
    evaluate.write_json(os.path.join(out_dir, RESULTS_FILE), results)
    page = report.write_page(out_dir, results, config.sophia.threshold)
    print(format_summary(results))
    print(f"refine done: open {page}")
    return results


def format_summary(results: dict) -> str:
    s = results["summary"]
    lines = [
        f"critic score over {s['cases']} start states: round 0 mean {s['round_0_mean']:.3f}, "
        f"round 0 best {s['round_0_best']:.3f}, final best {s['final_best']:.3f}; completed "
        f"{s['completed_round_0']} -> {s['completed_final']}"
    ]
    if "closed_loop" in results:
        loop_results = results["closed_loop"]
        lines.append(
            "closed-loop success original -> refined: "
            f"{loop_results['original']['success_rate']:.2f} -> "
            f"{loop_results['refined']['success_rate']:.2f}"
        )
    return "\n".join(lines)


def run_refine(config, workdir: str) -> dict:
    """Mode refine with the runs' world model and IDM (evaluate.load_models)."""
    check_config(config)
    return refine(config, workdir, *evaluate.load_models(config))
