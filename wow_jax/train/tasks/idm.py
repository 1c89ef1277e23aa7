"""IDM task: train the FM-IDM (wow_jax/models/idm.py) on frame pairs of the dataset's clips.

params = {'idm'}. The Grain clip pipeline of wow_jax.data gives clips 'video' [B, T, H, W, 3] and
'actions' [B, T-1, A] (normalised by config.data.action_norm with the dataset's
action_stats.json); `pair_batch` turns every clip into its T-k pairs (t, t+k), k =
config.idm.frame_gap, on the host, with the OpenCV flow between the two frames
(wow_jax/data/flow.py) when the model reads it (config.model.idm.motion='dis'; 'learned' takes
the frames only). Batch (N = B (T - k) pairs):

    frame_t, frame_tk: [N, H, W, 3] in [-1, 1]
    flow:              [N, H, W, 2] pixels, frame_t -> frame_tk (with the flow)
    mask:              [N, H, W, 1] 1 where |flow| > config.idm.mask_threshold pixels (idem)
    target:            [N, C] mean of the k normalised actions between the frames, on the
                       continuous dims (idm.continuous_dims: all but the gripper)
    gripper:           [N] 1.0 where the mean raw gripper action of the k steps exceeds
                       config.idm.gripper_threshold ('closed'); only with a gripper_index

The target is the mean of the k actions (their sum / k), not the chunk [k, A]: two frames show
where the robot went, not how it split the way into k steps; the mean stays in the units of
one action, so `stats.denormalize` and per-dimension errors apply unchanged for any k, and with
'mean_std' normalisation it is exactly the normalised mean raw action.

Loss = sum_c w_c smooth_l1(pred_c - target_c) / sum_c w_c (averaged over pairs; w =
config.idm.action_weights, beta = config.idm.smooth_l1_beta, as the paper's weighted smooth-L1)
+ config.idm.gripper_weight * binary cross-entropy of the gripper logit.

`frame_pairs` and `pair_inputs` (the pairing and the flow of a pair batch) are also how mode act
(wow_jax/act.py) reads the world model's imagined clips.
"""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import linen as nn

from wow_jax import checkpointing, sharding
from wow_jax.data import clips, flow, stats
from wow_jax.models import dinov2, idm


def smooth_l1(error: jax.Array, beta: float) -> jax.Array:
    """Elementwise smooth-L1 (torch.nn.SmoothL1Loss): 0.5 e^2 / beta below beta, |e| - beta/2."""
    size = jnp.abs(error)
    return jnp.where(size < beta, 0.5 * jnp.square(error) / beta, size - 0.5 * beta)


def check_config(config: ml_collections.ConfigDict) -> None:
    """ValueError naming the config.idm key that cannot make pairs or a loss."""
    gap, frames = config.idm.frame_gap, config.data.num_frames
    if not 1 <= gap < frames:
        raise ValueError(
            f"config.idm.frame_gap must be in [1, config.data.num_frames - 1 = {frames - 1}] "
            f"(pairs t, t+k inside a clip), got {gap}"
        )
    weights, dims = tuple(config.idm.action_weights), idm.continuous_dims(config.model.idm)
    if weights and (len(weights) != len(dims) or min(weights) < 0 or sum(weights) <= 0):
        raise ValueError(
            f"config.idm.action_weights must be () or {len(dims)} non-negative weights (one "
            f"per continuous action dim {dims}), not all zero; got {weights}"
        )
    if config.idm.smooth_l1_beta <= 0:
        raise ValueError(f"config.idm.smooth_l1_beta must be > 0, got {config.idm.smooth_l1_beta}")
    flow.check_preset(config.idm.flow_preset)


def dataset_action_stats(data_cfg: ml_collections.ConfigDict, dataset_dir) -> dict | None:
    """The action statistics of the prepared dataset in `dataset_dir` (None without
    normalisation, config.data.action_norm='none')."""
    if data_cfg.action_norm == "none":
        return None
    return stats.load_stats(dataset_dir)


def check_action_dim(model_cfg: ml_collections.ConfigDict, action_stats: dict | None) -> None:
    """ValueError unless the dataset's actions have config.model.idm.action_dim dims."""
    if action_stats is not None and action_stats["action_dim"] != model_cfg.action_dim:
        raise ValueError(
            f"config.model.idm.action_dim={model_cfg.action_dim} but the dataset's actions have "
            f"{action_stats['action_dim']} dims (action_stats.json); set "
            f"--config.model.idm.action_dim={action_stats['action_dim']} (and gripper_index)"
        )


def frame_pairs(video: np.ndarray, gap: int) -> tuple[np.ndarray, np.ndarray]:
    """Clips [B, T, ...] -> their frame pairs (t, t + gap), t = 0 .. T-1-gap, clip-major:
    (first [N, ...], second [N, ...]), N = B (T - gap)."""
    steps = video.shape[1] - gap
    first = video[:, :steps].reshape(-1, *video.shape[2:])
    return first, video[:, gap:].reshape(-1, *video.shape[2:])


def clip_pairs(video: np.ndarray, actions: np.ndarray, gap: int):
    """Clips -> their pairs (t, t + gap), t = 0 .. T-1-gap, clip-major order:
    video [B, T, ...], actions [B, T-1, A] -> (first [N, ...], second [N, ...], the gap's
    actions [N, gap, A]), N = B (T - gap)."""
    first, second = frame_pairs(video, gap)
    steps = video.shape[1] - gap
    windows = np.stack([actions[:, t : t + gap] for t in range(steps)], axis=1)
    return first, second, windows.reshape(-1, gap, actions.shape[-1])


def pair_inputs(
    first: np.ndarray, second: np.ndarray, task_cfg: ml_collections.ConfigDict, with_flow: bool
):
    """Frame pairs [N, H, W, 3] in [-1, 1] x2 -> {'frame_t', 'frame_tk'} and, `with_flow`,
    'flow' and 'mask' (module docstring) from config.idm (flow_preset, mask_threshold)."""
    out = {"frame_t": first.astype(np.float32), "frame_tk": second.astype(np.float32)}
    if with_flow:
        out["flow"], out["mask"] = flow.pair_motion(
            clips.to_uint8(first),
            clips.to_uint8(second),
            task_cfg.flow_preset,
            task_cfg.mask_threshold,
        )
    return out


def reads_flow(model_cfg: ml_collections.ConfigDict) -> bool:
    """True when the model reads the host DIS flow and mask (config.model.idm.motion='dis')."""
    return "flow" in idm.input_names(model_cfg)


def pair_batch(
    batch: dict,
    config: ml_collections.ConfigDict,
    action_stats: dict | None,
    with_flow: bool | None = None,
) -> dict:
    """A clip batch of the Grain pipeline -> the pair batch of the module docstring; the DIS
    flow and mask are computed `with_flow` (None: when the model reads them, `reads_flow`; the
    evaluation's nearest-flow baseline asks for them always)."""
    model_cfg, task_cfg = config.model.idm, config.idm
    with_flow = reads_flow(model_cfg) if with_flow is None else with_flow
    actions = np.asarray(batch["actions"], np.float32)
    if actions.shape[-1] != model_cfg.action_dim:
        raise ValueError(
            f"clips carry {actions.shape[-1]}-dim actions, config.model.idm.action_dim is "
            f"{model_cfg.action_dim}; set it to the dataset's action size"
        )
    first, second, windows = clip_pairs(np.asarray(batch["video"]), actions, task_cfg.frame_gap)
    out = pair_inputs(first, second, task_cfg, with_flow)
    out["target"] = windows.mean(1)[:, list(idm.continuous_dims(model_cfg))]
    if model_cfg.gripper_index >= 0:
        raw = stats.denormalize(windows, action_stats, config.data.action_norm)
        grip = raw[..., model_cfg.gripper_index].mean(1)
        out["gripper"] = (grip > task_cfg.gripper_threshold).astype(np.float32)
    return out


FROZEN_ENCODER = "^idm/dinov2/"  # The imported DINOv2 with config.model.idm.freeze_encoder.


def imported_encoder(model_cfg: ml_collections.ConfigDict):
    """The DINOv2 params of config.model.idm.dinov2_checkpoint (mode convert's output, written by
    the interop importer), shapes checked against config.model.idm.dinov2."""
    target = {"dinov2": sharding.abstract_on_mesh(dinov2.abstract_params(model_cfg.dinov2), None)}
    return checkpointing.restore_subtrees(model_cfg.dinov2_checkpoint, target)["dinov2"]


class IDMTask:
    name = "idm"

    def __init__(self, config: ml_collections.ConfigDict):
        check_config(config)
        self.cfg = config.model.idm
        self.model = idm.create(self.cfg)
        # config.train.freeze='auto': everything trains but a frozen imported DINOv2.
        frozen = self.cfg.encoder == "dinov2" and self.cfg.freeze_encoder
        self.frozen_pattern = FROZEN_ENCODER if frozen else ""
        task_cfg = config.idm
        dims = idm.continuous_dims(self.cfg)
        self.weights = np.asarray(task_cfg.action_weights or (1.0,) * len(dims), np.float32)
        self.beta, self.gripper_weight = task_cfg.smooth_l1_beta, task_cfg.gripper_weight

    def init_params(self, rng):
        return {"idm": idm.init_params(self.cfg, rng)}

    def pretrained_params(self, rng) -> dict:
        """{'idm': init_params(rng)'s IDM with the imported DINOv2 as its frame encoder
        ('dinov2')} (host arrays; a fresh state takes it), or {} without a dinov2_checkpoint."""
        if self.cfg.encoder != "dinov2" or not self.cfg.dinov2_checkpoint:
            return {}
        params = nn.meta.unbox(idm.init_params(self.cfg, rng))
        return {"idm": {**params, "dinov2": imported_encoder(self.cfg)}}

    def predict(self, params, batch) -> dict:
        """The model's outputs (idm module docstring) for a pair batch; params unboxed."""
        return self.model.apply({"params": params["idm"]}, *idm.model_inputs(self.cfg, batch))

    def loss(self, params, batch, rng):
        del rng  # Deterministic: no dropout or noise.
        out = self.predict(params, batch)
        error = out["continuous"] - batch["target"]
        weights = jnp.asarray(self.weights)
        action = jnp.mean(smooth_l1(error, self.beta) @ weights) / jnp.sum(weights)
        metrics = {"action_loss": action, "action_l1": jnp.mean(jnp.abs(error))}
        loss = action
        if "gripper_logit" in out:
            logit, label = out["gripper_logit"], batch["gripper"]
            bce = jnp.mean(optax.sigmoid_binary_cross_entropy(logit, label))
            metrics["gripper_bce"] = bce
            metrics["gripper_accuracy"] = jnp.mean((logit > 0) == (label > 0.5))
            loss = loss + self.gripper_weight * bce
        return loss, metrics

    def tokens_per_sample(self, batch) -> int:
        """Pixels per frame pair (height x width)."""
        h, w = batch["frame_t"].shape[1:3]
        return int(h * w)
