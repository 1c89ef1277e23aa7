"""Mode `act`: imagine a clip with the world model, then read the robot's actions off it with the
FM-IDM (WoW's imagination -> action step, arXiv 2509.22642).

    python -m wow_jax.main --config=configs/demo.py --workdir=W --config.mode=act \
        --config.checkpoint.init_from=<world-model run> --config.act.idm_checkpoint=<IDM run> \
        --config.sample.image=frame.png --config.sample.prompt="push the block"

The world model's run gives model.{dit,vae,text,clip}, the clip geometry and the tokenizer; the
IDM's run gives model.idm, config.idm (frame_gap k, flow), data.action_norm and its
action_stats.json (`rundir.adopt`, RUN_SOURCES['act']). The clip is mode generate's
(`pipeline.generate`); each video, as written (uint8 frames [T, H, W, 3]), is read by the IDM as
training read clips: pairs (t, t + k) (`tasks.idm.frame_pairs`) with their DIS flow and mask
when the IDM reads them (`tasks.idm.pair_inputs`). A pair's output is the mean normalised
action of the k steps it spans; step s's output is the mean of the outputs of the pairs spanning
it (`per_step`; for k = 1 the pair's own), so there is one action per frame step, T - 1 in
all. They become dataset units with the IDM run's statistics (`evaluation.idm.to_actions`; the
gripper column is the dataset's smallest (open) or largest (closed) gripper action).

Per job, next to <name>.mp4 (sample.output_dir or <workdir>/generate):
    <name>_actions.npz   actions float32 [T-1, A] in dataset units; with a gripper also
                         gripper_prob float32 [T-1] (P closed) and gripper_closed bool [T-1]
    <name>_actions.json  the same as lists, with the IDM checkpoint, statistics, k and the video
    <name>_actions.png   one panel per action dimension over the frame steps

Bad input is one ValueError (wow_jax.main's one line), checked before any model loads: an IDM
checkpoint without 'idm' params (naming what it holds), statistics whose action size disagrees
with model.idm.action_dim, an IDM trained on frames of another size than the world model makes,
no statistics to de-normalise with. The conditioning image (not an image; another size with
sample.image_mismatch='error') is refused by generate before the world model loads.
"""

import json

import jax
import ml_collections
import numpy as np
from flax import linen as nn
from jax.experimental import multihost_utils

from wow_jax import checkpointing, rundir, sharding
from wow_jax import models as registry
from wow_jax.data import clips, stats
from wow_jax.evaluation import action_plot
from wow_jax.evaluation import idm as evaluation
from wow_jax.models import idm
from wow_jax.sampling import pipeline
from wow_jax.train.tasks import idm as idm_task

IDM = "idm"  # The IDM's name in the registry and in a checkpoint's params.


# ----------------------------------------------------------------------------- checks


def check_idm_checkpoint(path: str, key: str) -> None:
    """ValueError unless the checkpoint at `path` holds 'idm' params under `key`."""
    held = checkpointing.subtree_names(path, key)
    if IDM not in held:
        world_model = set(held) & set(registry.WORLD_MODEL_NAMES)
        raise ValueError(
            f"config.act.idm_checkpoint={path!r} holds no IDM: its {key!r} are {held}"
            + (" (a world model)" if world_model else "")
            + "; point it at a run trained with --config.train.task=idm"
        )


def load_action_stats(config: ml_collections.ConfigDict) -> dict | None:
    """The statistics config.act.action_stats names (None when nothing needs them: no
    normalisation and no gripper); ValueError when they are needed and not given."""
    path = config.act.action_stats
    if path:
        return stats.read_stats(path)
    if config.data.action_norm == "none" and config.model.idm.gripper_index < 0:
        return None
    raise ValueError(
        f"no action statistics to turn the IDM's output into dataset units (data.action_norm="
        f"{config.data.action_norm!r}, gripper_index={config.model.idm.gripper_index}): the run "
        f"of config.act.idm_checkpoint={config.act.idm_checkpoint!r} has no "
        f"{rundir.ACTION_STATS_FILE}; set --config.act.action_stats to its training dataset's"
    )


def check_frame_size(config: ml_collections.ConfigDict) -> None:
    """ValueError when the IDM's run was trained on frames of another size or frame stride than
    the world model makes (config.data.height/width/frame_stride); a checkpoint outside a run is
    not checked."""
    run = rundir.find_run(config.act.idm_checkpoint)
    if run is None:
        return
    stored = rundir.stored_config(run)
    trained = (stored.get("data.height"), stored.get("data.width"))
    imagined = (config.data.height, config.data.width)
    if trained != imagined:
        raise ValueError(
            f"the IDM of {run} was trained on {trained[0]}x{trained[1]} frames (HxW, its "
            f"data.height/width) but the world model makes {imagined[0]}x{imagined[1]} frames "
            "(config.data.height/width); the IDM reads motion in pixels of its own frame size: "
            "train it at the world model's size"
        )
    stride = stored.get("data.frame_stride", config.data.frame_stride)
    if stride != config.data.frame_stride:
        raise ValueError(
            f"the IDM of {run} was trained on frames {stride} env steps apart (its "
            f"data.frame_stride) but the world model's frames are {config.data.frame_stride} "
            "apart (config.data.frame_stride); an action read between two frames moves the arm "
            "by their spacing: train the IDM at the world model's frame stride"
        )


def check_inputs(config: ml_collections.ConfigDict) -> dict | None:
    """Refuses bad input before any model loads (module docstring); returns the statistics."""
    idm_task.check_config(config)
    check_idm_checkpoint(config.act.idm_checkpoint, config.sample.params_key)
    action_stats = load_action_stats(config)
    idm_task.check_action_dim(config.model.idm, action_stats)
    check_frame_size(config)
    return action_stats


# ----------------------------------------------------------------------------- reading a clip


def per_step(outputs: dict, gap: int) -> dict:
    """Outputs of one clip's pairs (t, t + gap) {key: [P, ...]} -> per frame step {key:
    [P + gap - 1, ...]}: step s the mean over the pairs t <= s < t + gap that span it."""
    count = len(outputs["continuous"])
    cover = np.zeros((count + gap - 1, count), np.float32)
    for t in range(count):
        cover[t : t + gap, t] = 1.0
    cover /= cover.sum(1, keepdims=True)
    return {k: np.einsum("sp,p...->s...", cover, np.asarray(v)) for k, v in outputs.items()}


class ActionReader:
    """The IDM replicated on `mesh` (params from config.act.idm_checkpoint through the one
    checkpoint reader): `read(frames)` gives a video's actions; calling it is pipeline.generate's
    after_video (reads, then writes next to the video on process 0)."""

    def __init__(self, config: ml_collections.ConfigDict, mesh, action_stats: dict | None):
        self.config, self.mesh, self.action_stats = config, mesh, action_stats
        self.rules = sharding.rules(config.mesh)
        # The IDM is small: replicated on every device (no collectives; the same numbers on any
        # mesh or process count). Shapes are checked against config.model.idm.
        replicated = sharding.replicated(mesh)
        target = jax.tree.map(
            lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=replicated),
            nn.meta.unbox(idm.abstract_params(config.model.idm)),
        )
        self.params = checkpointing.restore_subtrees(
            config.act.idm_checkpoint, {IDM: target}, config.sample.params_key
        )[IDM]
        model = idm.create(config.model.idm)

        def apply(params, pairs):
            return model.apply({"params": params}, *idm.model_inputs(config.model.idm, pairs))

        self._apply = jax.jit(apply)

    def predict(self, pairs: dict) -> dict:
        """Model outputs (numpy, on every process) of a batch of pair inputs."""
        placed = jax.device_put(pairs, sharding.replicated(self.mesh))
        with sharding.activate(self.mesh, self.rules):
            out = self._apply(self.params, placed)
        return {
            k: np.asarray(multihost_utils.process_allgather(v, tiled=True)) for k, v in out.items()
        }

    def read(self, frames: np.ndarray) -> dict:
        """uint8 [T, H, W, 3] -> {'actions': [T-1, A] dataset units, and with a gripper
        'gripper_prob': [T-1], 'gripper_closed': [T-1] bool}."""
        gap = self.config.idm.frame_gap
        first, second = idm_task.frame_pairs(clips.to_unit_range(frames)[None], gap)
        with_flow = idm_task.reads_flow(self.config.model.idm)
        pairs = idm_task.pair_inputs(first, second, self.config.idm, with_flow)
        outputs = evaluation.predict_pairs(self.predict, pairs, self.config.act.pair_batch)
        steps = per_step(outputs, gap)
        result = {"actions": evaluation.to_actions(steps, self.action_stats, self.config)}
        if "gripper_logit" in steps:
            logit = steps["gripper_logit"]
            result["gripper_prob"] = (1.0 / (1.0 + np.exp(-logit))).astype(np.float32)
            result["gripper_closed"] = logit > 0
        return result

    def __call__(self, stem: str, frames: np.ndarray, info: dict) -> dict:
        result = self.read(frames)
        if jax.process_index() != 0:  # Every process ran the IDM; one writes.
            return {}
        return write_actions(stem, result, self.describe(stem, info))

    def describe(self, stem: str, info: dict) -> dict:
        """What the actions json says besides the arrays."""
        cfg = self.config
        return {
            "name": info["name"],
            "video": f"{stem}.mp4",
            "prompts": info["prompts"],
            "seed": info["seed"],
            "idm_checkpoint": cfg.act.idm_checkpoint,
            "action_stats": cfg.act.action_stats,
            "action_norm": cfg.data.action_norm,
            "frame_gap": cfg.idm.frame_gap,
            "action_dim": cfg.model.idm.action_dim,
            "gripper_index": cfg.model.idm.gripper_index,
        }


def dimension_names(action_dim: int, gripper_index: int) -> list[str]:
    """Plot labels of the action dimensions: 'a<i>', the gripper's 'gripper'."""
    return ["gripper" if i == gripper_index else f"a{i}" for i in range(action_dim)]


def write_actions(stem: str, result: dict, info: dict) -> dict:
    """Writes <stem>_actions.npz, .json and .png (module docstring); returns {kind: path}."""
    paths = {
        "actions_npz": f"{stem}_actions.npz",
        "actions_json": f"{stem}_actions.json",
        "actions_png": f"{stem}_actions.png",
    }
    np.savez(paths["actions_npz"], **result)
    arrays = {k: np.asarray(v).tolist() for k, v in result.items()}
    steps = len(result["actions"])
    with open(paths["actions_json"], "w") as f:
        json.dump({**info, "steps": steps, **arrays, "files": paths}, f, indent=1)
    names = dimension_names(info["action_dim"], info["gripper_index"])
    title = f"{info['name']}: actions read by the IDM (k={info['frame_gap']}), dataset units"
    action_plot.plot_actions(
        paths["actions_png"], {"IDM": result["actions"]}, names, title, xlabel="frame step"
    )
    return paths


# ----------------------------------------------------------------------------- the mode


def act(config: ml_collections.ConfigDict, workdir: str, models=None, params=None) -> list[dict]:
    """Mode act (module docstring); `models`/`params` override the world model's (tests).
    Returns [{kind: path}] per job (generate's files and the actions'), on process 0."""
    action_stats = check_inputs(config)
    reader = ActionReader(config, sharding.make_mesh(config.mesh), action_stats)
    results = pipeline.generate(config, workdir, models, params, after_video=reader)
    for paths in results:
        print(f"actions: {paths['actions_npz']} {paths['actions_json']} {paths['actions_png']}")
    return results


def run_act(config: ml_collections.ConfigDict, workdir: str) -> list[dict]:
    """Mode act (wow_jax.main reports bad input in one line)."""
    return act(config, workdir)
