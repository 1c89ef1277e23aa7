"""Mode `evaluate`: the WoW loop closed in Meta-World. For held-out seeds of each task, from the
real start state: imagine a clip from the current camera frame and the task instruction (the
world model), read its actions (the FM-IDM), execute them, re-plan from the new frame, until
success or config.evaluate.max_steps. The same seeds run the comparison policies
(wow_jax/sim/closed_loop.py): the IDM on the expert's real video (replay upper bound), the
scripted expert, random and zero actions.

    python -m wow_jax.main --config=configs/demo.py --config.mode=evaluate --workdir=W \
        --config.checkpoint.init_from=<world-model run> --config.act.idm_checkpoint=<IDM run>

(the runs' model, clip geometry, tokenizer and action statistics are adopted as for mode act).
The demo's last stages call `evaluate` with its in-memory models.

Outputs in <workdir>/evaluate (EVAL_DIR):
    episodes/<policy>/<task>/group_<g>.json   finished groups of config.evaluate.batch episodes:
                   a rerun skips them (a kill loses at most the groups then running); a rerun
                   against other models or settings (settings.json) moves the old episodes aside
    gifs/<task>_<seed>.gif   imagined | executed frames of imagine-then-act, plan after plan
    results.json   per task and policy: episodes, successes, success rate, Wilson 95% interval;
                   'mean' over tasks (the mean of the task rates; interval of the pooled episodes)
"""

import json
import os
import time

import imageio.v3 as iio
import ml_collections
import numpy as np
from absl import logging
from tqdm import tqdm

from wow_jax import checkpointing, sharding
from wow_jax.data import clips
from wow_jax.sampling import compare
from wow_jax.sim import closed_loop, metaworld_collect

EVAL_DIR = "evaluate"
RESULTS_FILE = "results.json"
SETTINGS_FILE = "settings.json"
GAP_FILE = "idm_gap.json"  # The demo's IDM on real vs imagined held-out clips (idm_gap).


class ImagineActPolicy:
    """Imagine-then-act: `imagine(frames uint8 [R, h, w, 3], prompts, seeds) -> uint8 [R, T, h,
    w, 3]` and `read(video) -> actions [T-1, A]` (dataset units); `instruction` is the prompt of
    every episode or a list of one per episode (SOPHIA's refined prompts); each plan runs the first
    `execute_frames` actions (0 = all T - 1), each for `stride` env steps. Plans are imagined in
    batches of `batch` rows (short batches padded by repeating a row) so that a row's clip does
    not depend on which other episodes are still running."""

    name, reads_frames = "imagine_act", True

    def __init__(self, imagine, read, instruction, stride, execute_frames, batch):
        self.imagine, self.read, self.instruction = imagine, read, instruction
        self.stride, self.execute_frames, self.batch = stride, execute_frames, batch
        self.seeds, self.plans, self.imagined = [], [], []

    def start(self, envs, seeds) -> None:
        del envs
        self.seeds, self.plans = list(seeds), [0] * len(seeds)

    def plan_seed(self, row: int) -> int:
        """The noise seed of the row's next clip: its episode seed and plan number."""
        return int(np.random.SeedSequence([self.seeds[row], self.plans[row]]).generate_state(1)[0])

    def plan(self, rows, frames, observations) -> list[np.ndarray]:
        del observations
        seeds = [self.plan_seed(r) for r in rows]
        if isinstance(self.instruction, str):
            prompts = [self.instruction] * len(rows)
        else:
            prompts = [self.instruction[r] for r in rows]
        videos = imagine_in_batches(self.imagine, frames, prompts, seeds, self.batch)
        for r in rows:
            self.plans[r] += 1
        self.imagined = videos
        plans = []
        for video in videos:
            actions = self.read(video)
            if self.execute_frames:
                actions = actions[: self.execute_frames]
            plans.append(np.repeat(actions, self.stride, axis=0))
        return plans


def imagine_in_batches(imagine, frames, prompts, seeds, batch: int) -> list[np.ndarray]:
    """`imagine` over rows `batch` at a time, a short batch padded by repeating its last row (one
    compiled shape; a row's clip does not depend on the others) -> [uint8 [T, h, w, 3]]."""
    videos = []
    for i in range(0, len(frames), batch):
        chunk, chunk_prompts, chunk_seeds = (
            frames[i : i + batch],
            list(prompts[i : i + batch]),
            list(seeds[i : i + batch]),
        )
        pad = batch - len(chunk)
        if pad:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], pad, 0)])
            chunk_prompts += chunk_prompts[-1:] * pad
            chunk_seeds += chunk_seeds[-1:] * pad
        videos.extend(imagine(chunk, chunk_prompts, chunk_seeds)[: batch - pad])
    return videos


def generator_imagine(generator):
    """imagine(frames uint8 [R, h, w, 3], prompts, seeds) -> uint8 [R, T, h, w, 3] of a
    sampling.generator.Generator."""

    def imagine(frames, prompts, seeds):
        video, _ = generator.generate_clip(clips.to_unit_range(frames), prompts, seeds)
        return clips.to_uint8(video)

    return imagine


# ----------------------------------------------------------------------------- imagination gap


def action_scores(predicted: np.ndarray, true: np.ndarray, config) -> dict:
    """Actions [N, A] in dataset units against the true ones: per-dimension 'mae', the
    'translation_mae' (xyz) and, with a gripper, 'gripper_accuracy' (closed = above
    config.idm.gripper_threshold)."""
    model_cfg = config.model.idm
    error = np.abs(predicted - true).mean(0)
    dims = [d for d in range(3) if d != model_cfg.gripper_index]
    scores = {"mae": error.tolist(), "translation_mae": float(error[dims].mean())}
    grip = model_cfg.gripper_index
    if grip >= 0:
        threshold = config.idm.gripper_threshold
        agree = (predicted[:, grip] > threshold) == (true[:, grip] > threshold)
        scores["gripper_accuracy"] = float(agree.mean())
    return scores


def idm_gap(config, imagine, read, data_cfg, action_stats: dict) -> dict:
    """How physically faithful the imagination is, read by the IDM: for the first clip
    (data.num_frames frames) of every episode in `data_cfg`'s held-out dataset, the IDM's
    actions from the REAL frames and from the clip IMAGINED from its first frame and
    instruction, against the episode's true actions (dataset units), with the zero and the
    dataset-mean action as baselines. -> {method: action_scores} and 'clips'."""
    from wow_jax.data import rlds
    from wow_jax.sim import replay
    from wow_jax.sim.instructions import TASK_INSTRUCTIONS

    source = rlds.EpisodeSource(data_cfg.path)
    frames = config.data.num_frames
    real, true, prompts = [], [], []
    for index in range(len(source)):
        clip = replay.episode_clip(source, index, data_cfg)
        if clip["video"].shape[1] < frames:
            continue
        real.append(clips.to_uint8(clip["video"][0, :frames]))
        true.append(clip["actions"][0, : frames - 1])
        prompts.append(TASK_INSTRUCTIONS[clip["episode_id"].split("/")[0]])
    if not real:
        raise ValueError(
            f"no held-out episode in {data_cfg.path} has {frames} frames (data.num_frames) at "
            "the dataset's frame stride; collect longer episodes (data.episode_length)"
        )
    seeds = list(range(len(real)))
    imagined = imagine_in_batches(
        imagine, np.stack([r[0] for r in real]), prompts, seeds, config.evaluate.batch
    )
    true_all = np.concatenate(true)
    predicted = {
        "real": np.concatenate([read(video) for video in real]),
        "imagined": np.concatenate([read(video) for video in imagined]),
        "zero": np.zeros_like(true_all),
        "mean": np.broadcast_to(np.asarray(action_stats["mean"], np.float32), true_all.shape),
    }
    report = {k: action_scores(v, true_all, config) for k, v in predicted.items()}
    report["clips"] = len(real)
    return report


# ----------------------------------------------------------------------------- settings, store


def check_config(config: ml_collections.ConfigDict) -> None:
    """ValueError unless the evaluation can run: Meta-World data, known policies."""
    if config.data.source != "metaworld":
        raise ValueError(
            f"mode evaluate runs Meta-World episodes: config.data.source must be 'metaworld', "
            f"got {config.data.source!r}"
        )
    unknown = [p for p in config.evaluate.policies if p not in closed_loop.POLICIES]
    if unknown or not config.evaluate.policies:
        raise ValueError(
            f"config.evaluate.policies must be a non-empty subset of {closed_loop.POLICIES}, "
            f"got {tuple(config.evaluate.policies)}"
        )


def eval_tasks(config) -> list[str]:
    return list(config.evaluate.tasks or config.data.tasks)


def max_steps(config) -> int:
    return config.evaluate.max_steps or config.data.episode_length


def settings(config, models: dict) -> dict:
    """What the episodes depend on; `models` names the world model and IDM used."""
    ev, data = config.evaluate, config.data
    return {
        "models": models,
        "tasks": eval_tasks(config),
        "episodes_per_task": ev.episodes_per_task,
        "seed": data.collect_seed + ev.seed_offset,
        "max_steps": max_steps(config),
        "execute_frames": ev.execute_frames,
        "batch": ev.batch,
        "frames": [data.num_frames, data.height, data.width],
        "frame_stride": data.frame_stride,
        "camera": data.camera,
        "render_size": data.render_size or max(data.height, data.width),
        "sample": {k: config.sample[k] for k in ("steps", "guidance", "shift", "solver")},
    }


def write_json(path: str, value) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(value, f, indent=1)
    os.replace(tmp, path)


def read_json(path: str):
    """The JSON value stored at `path`, or None when there is no such file."""
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def prepare_store(out_dir: str, current: dict, kept: str = "episodes") -> None:
    """Keeps the finished work in <out_dir>/<kept> of a run with the same settings; moves it
    aside otherwise."""
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, SETTINGS_FILE)
    episodes = os.path.join(out_dir, kept)
    if os.path.exists(path) and read_json(path) != current and os.path.isdir(episodes):
        aside = f"{episodes}.stale-{time.strftime('%Y%m%d-%H%M%S')}"
        os.replace(episodes, aside)
        logging.warning("settings or models changed; earlier %s moved to %s", kept, aside)
    write_json(path, current)


# ----------------------------------------------------------------------------- running


def write_gif(path: str, record: dict, fps: int) -> str:
    """imagined | executed frames, plan after plan (executed frames padded with the last)."""
    imagined = np.concatenate(record["imagined"]) if record["imagined"] else None
    executed = np.stack(record["frames"])
    if imagined is None:
        frames = executed
    else:
        length = max(len(imagined), len(executed))
        imagined = np.concatenate([imagined, np.repeat(imagined[-1:], length - len(imagined), 0)])
        executed = np.concatenate([executed, np.repeat(executed[-1:], length - len(executed), 0)])
        frames = compare.side_by_side(imagined, executed)
    iio.imwrite(path, frames, duration=1000.0 / fps, loop=0)
    return path


def run_task_policy(config, policy, name: str, task_index: int, out_dir: str, envs: list) -> list:
    """Every episode of one (policy, task) on `envs` (config.evaluate.batch of the task's env),
    group by group; finished groups are read back."""
    ev = config.evaluate
    seeds = closed_loop.episode_seeds(
        config.data.collect_seed, ev.seed_offset, task_index, ev.episodes_per_task
    )
    spec = closed_loop.frame_spec(config.data)
    folder = os.path.join(out_dir, "episodes", policy.name, name)
    os.makedirs(folder, exist_ok=True)
    results = []
    for g, first in enumerate(range(0, len(seeds), ev.batch)):
        path = os.path.join(folder, f"group_{g}.json")
        if os.path.exists(path):
            results.extend(read_json(path))
            continue
        group = seeds[first : first + ev.batch]
        record = max(0, ev.gif_episodes - first) if policy.name == "imagine_act" else 0
        episodes = closed_loop.run_group(
            envs[: len(group)], group, policy, max_steps(config), spec, spec.stride_for(0.0), record
        )
        for episode in episodes:
            if "record" in episode:
                gif = os.path.join(out_dir, "gifs", f"{name}_{episode['seed']}.gif")
                os.makedirs(os.path.dirname(gif), exist_ok=True)
                episode["gif"] = write_gif(gif, episode.pop("record"), config.sample.fps)
        write_json(path, episodes)
        results.extend(episodes)
    return results


def summarize(per_task: dict) -> dict:
    """{'tasks': {task: {policy: summary}}, 'mean': {policy: summary with the mean task rate}}."""
    tasks = {
        task: {p: closed_loop.summarize([e["success"] for e in eps]) for p, eps in runs.items()}
        for task, runs in per_task.items()
    }
    policies = next(iter(per_task.values())).keys()
    mean = {}
    for policy in policies:
        pooled = [e["success"] for runs in per_task.values() for e in runs[policy]]
        mean[policy] = closed_loop.summarize(pooled)
        mean[policy]["success_rate"] = float(
            np.mean([tasks[t][policy]["success_rate"] for t in tasks])
        )
    return {"tasks": tasks, "mean": mean}


def format_table(results: dict) -> str:
    """Success rate [95% interval] per task and policy, and the mean row."""
    policies = list(results["mean"])
    width = max(len(t) for t in [*results["tasks"], "mean"])
    lines = [" | ".join([f"{'task':<{width}}"] + [f"{p:>20}" for p in policies])]
    rows = [*results["tasks"].items(), ("mean", results["mean"])]
    for task, runs in rows:
        cells = []
        for policy in policies:
            s = runs[policy]
            low, high = s["ci95"]
            cells.append(f"{s['success_rate']:5.2f} [{low:.2f},{high:.2f}] n={s['episodes']}")
        lines.append(" | ".join([f"{task:<{width}}"] + [f"{c:>20}" for c in cells]))
    return "\n".join(lines)


def evaluate(config, workdir: str, imagine, read, models: dict, make_task=None) -> dict:
    """Runs config.evaluate.policies on the held-out seeds of every task; writes and returns
    results.json's content (module docstring). `imagine`/`read` as ImagineActPolicy's (None when
    no policy needs them)."""
    check_config(config)
    make_task = make_task or metaworld_collect.MetaWorldTask
    ev, out_dir = config.evaluate, os.path.join(workdir, EVAL_DIR)
    current = settings(config, models)
    prepare_store(out_dir, current)
    spec = closed_loop.frame_spec(config.data)
    stride = spec.stride_for(0.0)
    per_task = {}
    render = config.data.render_size or max(config.data.height, config.data.width)
    count = min(ev.batch, ev.episodes_per_task)
    bar = tqdm(total=len(eval_tasks(config)) * len(ev.policies), desc="evaluate", unit="run")
    for task_index, name in enumerate(eval_tasks(config)):
        per_task[name] = {}
        envs = [make_task(name, render, config.data.camera) for _ in range(count)]
        try:
            for policy_name in ev.policies:
                policy = make_policy(policy_name, config, imagine, read, name, stride, spec)
                bar.set_postfix(task=name, policy=policy_name)
                per_task[name][policy_name] = run_task_policy(
                    config, policy, name, task_index, out_dir, envs
                )
                bar.update(1)
        finally:
            for env in envs:
                env.close()
    bar.close()
    results = {**summarize(per_task), "settings": current}
    results["gifs"] = sorted(
        e["gif"] for runs in per_task.values() for e in runs.get("imagine_act", []) if "gif" in e
    )
    write_json(os.path.join(out_dir, RESULTS_FILE), results)
    print("closed-loop success rate [Wilson 95% interval], per task and policy:")
    print(format_table(results))
    return results


def make_policy(name: str, config, imagine, read, task: str, stride: int, spec):
    if name == "imagine_act":
        ev = config.evaluate
        from wow_jax.sim.instructions import TASK_INSTRUCTIONS

        return ImagineActPolicy(
            imagine, read, TASK_INSTRUCTIONS[task], stride, ev.execute_frames, ev.batch
        )
    if name == "idm_replay":
        return closed_loop.IDMReplayPolicy(read, spec, stride, max_steps(config))
    return {
        "expert": closed_loop.ExpertPolicy,
        "random": closed_loop.RandomPolicy,
        "zero": closed_loop.ZeroPolicy,
    }[name]()


# ----------------------------------------------------------------------------- the mode


def load_models(config: ml_collections.ConfigDict):
    """(imagine, read, names) of the world model of checkpoint.init_from and the IDM of
    act.idm_checkpoint, for ImagineActPolicy (bad input refused before any model loads, as mode
    act); names: the checkpoint items read, for the settings that episodes depend on."""
    from wow_jax import act
    from wow_jax.sampling import generator, models, pipeline

    action_stats = act.check_inputs(config)
    mesh = sharding.make_mesh(config.mesh)
    reader = act.ActionReader(config, mesh, action_stats)
    params = pipeline.load_for_generation(config, mesh)
    gen = generator.Generator(config, params, models.from_config(config), mesh)
    names = {
        "world_model": str(checkpointing.item_directory(config.checkpoint.init_from)),
        "idm": str(checkpointing.item_directory(config.act.idm_checkpoint)),
    }
    return generator_imagine(gen), lambda video: reader.read(video)["actions"], names


def run_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Mode evaluate with the runs' world model and IDM (`load_models`)."""
    check_config(config)
    return evaluate(config, workdir, *load_models(config))
