"""The FM-IDM on Meta-World, end to end: `run_evaluate_idm(config, workdir)` (the logic of
scripts/evaluate_idm.py; docs/idm.md).

  train    the IDM through the shared loop (task 'idm', loop.train) on the episodes of
           config.data, collected into config.data.path or <workdir>/data on first use; a
           finished checkpoint in <workdir>/checkpoints is restored instead
  heldout  config.idm.heldout_episodes episodes per task, collection seed +
           config.idm.heldout_seed_offset, into <workdir>/heldout; each episode whole as one
           clip (replay.episode_clip) and all its pairs (t, t+k), with the IDM's outputs
  errors   per-dimension MAE and gripper accuracy on every held-out pair, the IDM against the
           zero, mean and nearest-flow baselines (wow_jax/evaluation/idm.py), which read
           config.idm.baseline_batches batches of training pairs
  replay   every held-out episode replayed open loop from its start state
           (wow_jax/sim/replay.py): the IDM's actions, the true mean actions of the same pairs
           ('oracle': what the k-step replay itself loses), the mean training action ('mean':
           what a task needs beyond a constant push) and the expert's success on the same seeds
           over the same steps
  write    <workdir>/idm_eval.json (REPORT_FILE, `report` below) and <workdir>/idm_eval_actions.png
           (predicted vs true actions per dimension of the first held-out episode)

    report = {'heldout': {method: {'mae': [C], 'mean_mae', 'translation_mae',
                                   'gripper_accuracy'}},
              'heldout_by_task': {task: the same over that task's held-out pairs},
              'replay': {task: {'episodes', 'env_steps', '<method>_success_rate' and
                                '<method>' (per-episode bools) for method in REPLAY_METHODS}},
              'pairs': {'train', 'heldout'}, 'settings': {...}, 'seconds': {stage: s}, 'plot'}
"""

import collections
import json
import os
import time
from pathlib import Path

import jax
import ml_collections
import numpy as np
from absl import logging
from tqdm import tqdm

from wow_jax.data import prepare, rlds, stats
from wow_jax.evaluation import action_plot
from wow_jax.evaluation import idm as evaluation
from wow_jax.models import idm
from wow_jax.sim import metaworld_collect, replay
from wow_jax.train import loop, tasks
from wow_jax.train.tasks import idm as idm_task

REPORT_FILE = "idm_eval.json"
PLOT_FILE = "idm_eval_actions.png"
HELDOUT_DIR = "heldout"
TRANSLATION_DIMS = (0, 1, 2)  # Action indices of the end-effector's xyz delta (Meta-World, arms).
# Replayed per held-out episode: the IDM's actions, the true mean actions of the same pairs, the
# 'mean' baseline's constant action, and the expert's own success over the same env steps.
REPLAY_METHODS = ("idm", "oracle", "mean", "expert")
ORACLE_LOGIT = 10.0  # Gripper logit the oracle gives the true state (sign: closed / open).


def check_config(config: ml_collections.ConfigDict) -> None:
    """ValueError unless the run can collect and replay Meta-World episodes with an IDM."""
    if config.data.source != "metaworld":
        raise ValueError(
            f"the IDM evaluation replays Meta-World episodes: config.data.source must be "
            f"'metaworld', got {config.data.source!r}"
        )
    if config.train.task != "idm":
        raise ValueError(
            f"the IDM evaluation trains config.train.task='idm', got {config.train.task!r}"
        )


# ----------------------------------------------------------------------------- data


def heldout_data_config(config: ml_collections.ConfigDict, workdir: str):
    """config.data of the held-out collection (made ready on first use), read in dataset units."""
    data_cfg = config.data.copy_and_resolve_references()
    with data_cfg.unlocked():
        data_cfg.collect_seed += config.idm.heldout_seed_offset
        data_cfg.episodes_per_task = config.idm.heldout_episodes
        data_cfg.action_norm = "none"
        data_cfg.path = os.path.join(workdir, HELDOUT_DIR)
        data_cfg.path = str(prepare.prepare_dataset(data_cfg, workdir))
    return data_cfg


def training_pairs(config: ml_collections.ConfigDict, workdir: str) -> tuple[dict, dict]:
    """(config.idm.baseline_batches training pair batches concatenated, the training dataset's
    action statistics)."""
    dataset_dir = prepare.prepare_dataset(config.data, workdir)
    action_stats = stats.load_stats(dataset_dir)
    norm_stats = idm_task.dataset_action_stats(config.data, dataset_dir)
    batches = tasks.HostBatches(
        tasks.clip_iterator(config, dataset_dir),
        lambda batch: idm_task.pair_batch(batch, config, norm_stats, with_flow=True),
        dataset_dir,
    )
    return evaluation.concat_pairs(batches, config.idm.baseline_batches), action_stats


def in_dataset_units(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """A copy of config whose pairs carry raw targets (config.data.action_norm='none')."""
    raw = config.copy_and_resolve_references()
    with raw.unlocked():
        raw.data.action_norm = "none"
    return raw


def heldout_episode(clip: dict, config, predict) -> dict:
    """One held-out clip -> {'pairs' (raw targets), 'outputs' (the IDM's), 'true' [P, A] the
    mean raw action of each pair's k steps}."""
    pairs = idm_task.pair_batch(clip, in_dataset_units(config), None, with_flow=True)
    _, _, windows = idm_task.clip_pairs(clip["video"], clip["actions"], config.idm.frame_gap)
    outputs = evaluation.predict_pairs(predict, pairs, config.idm.eval_batch)
    return {"pairs": pairs, "outputs": outputs, "true": windows.mean(1)}


# ----------------------------------------------------------------------------- scores


def heldout_scores(episodes: list, train: dict, action_stats: dict, config) -> dict:
    """evaluation.evaluate over every held-out pair, with each method's translation MAE."""
    heldout = {k: np.concatenate([e["pairs"][k] for e in episodes]) for k in episodes[0]["pairs"]}
    outputs = {
        k: np.concatenate([e["outputs"][k] for e in episodes]) for k in episodes[0]["outputs"]
    }
    report = evaluation.evaluate(outputs, heldout, train, action_stats, config)
    dims = idm.continuous_dims(config.model.idm)
    columns = [dims.index(d) for d in TRANSLATION_DIMS if d in dims]
    for scores in report.values():
        scores["translation_mae"] = float(np.mean([scores["mae"][c] for c in columns]))
    return report


def episodes_by_task(clips: list) -> dict:
    """{task name: indices of its clips}, the task read from the episode id '<task>/<index>'."""
    groups = collections.defaultdict(list)
    for index, clip in enumerate(clips):
        groups[clip["episode_id"].split("/")[0]].append(index)
    return dict(groups)


def mean_outputs(train: dict, count: int, config) -> dict:
    """The outputs of the 'mean' baseline for `count` pairs: the mean normalised training target
    and the majority training gripper state."""
    out = {"continuous": np.repeat(train["target"].mean(0, keepdims=True), count, axis=0)}
    if config.model.idm.gripper_index >= 0:
        closed = train["gripper"].mean() > 0.5
        out["gripper_logit"] = np.full(count, ORACLE_LOGIT if closed else -ORACLE_LOGIT)
    return out


def oracle_outputs(true: np.ndarray, action_stats: dict, config) -> dict:
    """The outputs an IDM that knew the true mean actions [P, A] would give (normalised)."""
    model_cfg = config.model.idm
    normalised = stats.normalize(true, action_stats, config.data.action_norm)
    out = {"continuous": normalised[:, list(idm.continuous_dims(model_cfg))]}
    if model_cfg.gripper_index >= 0:
        closed = true[:, model_cfg.gripper_index] > config.idm.gripper_threshold
        out["gripper_logit"] = np.where(closed, ORACLE_LOGIT, -ORACLE_LOGIT)
    return out


# ----------------------------------------------------------------------------- replay


def replay_heldout(
    episodes: list, clips: list, spec: dict, train: dict, action_stats: dict, config
) -> dict:
    """Every held-out episode replayed with the actions of REPLAY_METHODS -> the report's
    'replay' entry, per task."""
    seeds, gap = replay.episode_seeds(spec), config.idm.frame_gap
    runs = collections.defaultdict(lambda: collections.defaultdict(list))
    envs = {}
    try:
        for episode, clip in tqdm(list(zip(episodes, clips, strict=True)), "replay", unit="ep"):
            name, seed = seeds[clip["episode_id"]]
            if name not in envs:
                envs[name] = metaworld_collect.MetaWorldTask(name, spec["size"], spec["camera"])
            chosen = replay.replay_pairs(len(episode["true"]), gap)
            methods = {
                "idm": episode["outputs"],
                "oracle": oracle_outputs(episode["true"], action_stats, config),
                "mean": mean_outputs(train, len(episode["true"]), config),
            }
            for method, outputs in methods.items():
                actions = evaluation.to_actions(outputs, action_stats, config)[chosen]
                steps = replay.env_actions(actions, gap, clip["stride"])
                solved = replay.replay_episode(
                    envs[name], seed, clip["start_frame"], steps, clip["episode_id"]
                )
                runs[name][method].append(bool(solved[-1]))
            runs[name]["expert"].append(bool(clip["success"][len(steps)]))
            runs[name]["env_steps"].append(len(steps))
    finally:
        for env in envs.values():
            env.close()
    return {name: _replay_summary(run) for name, run in runs.items()}


def _replay_summary(run: dict) -> dict:
    summary = {"episodes": len(run["expert"]), "env_steps": max(run["env_steps"])}
    for method in REPLAY_METHODS:
        summary[f"{method}_success_rate"] = float(np.mean(run[method]))
    for method in REPLAY_METHODS:
        summary[method] = run[method]
    return summary


# ----------------------------------------------------------------------------- outputs


def dimension_names(model_cfg) -> list[str]:
    """'x', 'y', 'z' for TRANSLATION_DIMS, 'gripper', else 'dim <i>'."""
    names = [f"dim {i}" for i in range(model_cfg.action_dim)]
    for axis, index in zip("xyz", TRANSLATION_DIMS, strict=True):
        if index < model_cfg.action_dim and index != model_cfg.gripper_index:
            names[index] = axis
    if model_cfg.gripper_index >= 0:
        names[model_cfg.gripper_index] = "gripper"
    return names


def write_report(path: str | Path, report: dict) -> Path:
    """Writes `report` as indented JSON, whole or not at all (a temporary file renamed)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(report, indent=1))
    os.replace(tmp, path)
    return path


def plot_episode(path: str, episode: dict, clip: dict, action_stats: dict, config) -> Path:
    predicted = evaluation.to_actions(episode["outputs"], action_stats, config)
    return action_plot.plot_actions(
        path,
        {"true (mean of k steps)": episode["true"], "IDM": predicted},
        dimension_names(config.model.idm),
        f"held-out {clip['episode_id']}: actions per pair (t, t+{config.idm.frame_gap}), "
        "dataset units",
        xlabel="pair (frame t -> t + k)",
    )


# ----------------------------------------------------------------------------- entry point


def train_idm(config: ml_collections.ConfigDict, workdir: str):
    """(predict(batch) -> outputs, trained step) of the IDM trained (or restored) in workdir."""
    result = loop.train(config, workdir)
    task = idm_task.IDMTask(config)
    params = jax.device_get(result.state.params)
    apply = jax.jit(task.predict)
    return (lambda batch: apply(params, batch)), int(jax.device_get(result.state.step))


def settings(config, spec: dict, trained_step: int) -> dict:
    data = config.data
    return {
        "tasks": list(data.tasks),
        "train_episodes_per_task": data.episodes_per_task,
        "heldout_episodes_per_task": config.idm.heldout_episodes,
        "episode_length": data.episode_length,
        "frame_size": [data.height, data.width],
        "camera": spec["camera"],
        "render_size": spec["size"],
        "frame_stride": data.frame_stride,
        "frame_gap": config.idm.frame_gap,
        "action_norm": data.action_norm,
        "train_steps": trained_step,
        "collection_version": spec["version"],
    }


def run_evaluate_idm(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Trains (or restores) the IDM and writes the report and the plot; returns the report."""
    check_config(config)
    seconds, start = {}, time.perf_counter()
    predict, trained_step = train_idm(config, workdir)
    seconds["train"] = time.perf_counter() - start
    start = time.perf_counter()
    train, action_stats = training_pairs(config, workdir)
    heldout_cfg = heldout_data_config(config, workdir)
    source = rlds.EpisodeSource(heldout_cfg.path)
    clips = [replay.episode_clip(source, i, heldout_cfg) for i in range(len(source))]
    episodes = [
        heldout_episode(clip, config, predict) for clip in tqdm(clips, "held-out pairs", unit="ep")
    ]
    report = {"heldout": heldout_scores(episodes, train, action_stats, config)}
    report["heldout_by_task"] = {
        name: heldout_scores([episodes[i] for i in members], train, action_stats, config)
        for name, members in episodes_by_task(clips).items()
    }
    seconds["heldout"] = time.perf_counter() - start
    start = time.perf_counter()
    spec = replay.read_collection(heldout_cfg.path)
    report["replay"] = replay_heldout(episodes, clips, spec, train, action_stats, config)
    seconds["replay"] = time.perf_counter() - start
    report["pairs"] = {
        "train": len(train["target"]),
        "heldout": int(sum(len(e["true"]) for e in episodes)),
    }
    report["settings"] = settings(config, spec, trained_step)
    report["seconds"] = seconds
    plot = plot_episode(
        os.path.join(workdir, PLOT_FILE), episodes[0], clips[0], action_stats, config
    )
    report["plot"] = str(plot)
    path = write_report(os.path.join(workdir, REPORT_FILE), report)
    logging.info("IDM evaluation written to %s", path)
    return report
