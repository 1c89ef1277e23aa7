"""FM-IDM evaluation: per-dimension MAE in the dataset's units and gripper accuracy on held-out
pairs, against the issue's baselines: the zero action, the dataset's mean action (the mean of
the training targets; the majority gripper state) and the nearest neighbour in flow space (the
training pair whose flow, average-pooled to config.idm.baseline_flow_grid cells, is closest in
L2 gives its action).

Pairs are the IDM task's pair batches (wow_jax/train/tasks/idm.py `pair_batch`, with the DIS
flow whatever the IDM's motion input: the nearest-flow baseline reads it) concatenated
(`concat_pairs`): the training pairs as trained on ('target' normalised with the training
dataset's statistics), the held-out pairs read in dataset units (config.data.action_norm='none':
'target' [N, C] is the raw mean action, so no other dataset's normalisation enters). Every
method's prediction is turned into dataset units with the training statistics:

    report = evaluate(idm_outputs, heldout, train, action_stats, config)
      idm_outputs: {'continuous': [N, C] normalised, 'gripper_logit': [N]} (`predict_pairs`)
      -> {method: {'mae': [C] per continuous dim, 'mean_mae': float,
                   'gripper_accuracy': float (with a gripper)}}
         for method in METHODS, JSON-ready

`to_actions` turns the IDM's outputs into whole actions [N, A] in the dataset's units (what a
robot or the simulator executes: mode act, wow_jax/act.py; open-loop replay,
wow_jax/sim/replay.py).
"""

from collections.abc import Callable, Iterator

import ml_collections
import numpy as np
from einops import reduce

from wow_jax.data import stats
from wow_jax.models import idm

METHODS = ("idm", "zero", "mean", "nearest_flow")


def concat_pairs(batches: Iterator[dict], num_batches: int) -> dict:
    """The first `num_batches` pair batches of an iterator, concatenated along the pairs."""
    taken = [next(batches) for _ in range(num_batches)]
    return {key: np.concatenate([b[key] for b in taken]) for key in taken[0]}


def predict_pairs(predict: Callable[[dict], dict], pairs: dict, batch_size: int) -> dict:
    """Model outputs over all pairs, `batch_size` at a time: predict(batch of pairs) -> outputs
    ({'continuous': [n, C], 'gripper_logit': [n]}) -> the same keys over all N pairs."""
    inputs = [k for k in ("frame_t", "frame_tk", "flow", "mask") if k in pairs]
    count = len(pairs["frame_t"])
    outs = [
        predict({k: pairs[k][i : i + batch_size] for k in inputs})
        for i in range(0, count, batch_size)
    ]
    return {key: np.concatenate([np.asarray(o[key]) for o in outs]) for key in outs[0]}


def to_dataset_units(
    continuous: np.ndarray, action_stats: dict | None, norm: str, model_cfg
) -> np.ndarray:
    """Normalised [N, C] on the continuous dims -> [N, C] in the dataset's units."""
    full = np.zeros((len(continuous), model_cfg.action_dim), np.float32)
    dims = list(idm.continuous_dims(model_cfg))
    full[:, dims] = continuous
    return stats.denormalize(full, action_stats, norm)[:, dims]


def to_actions(
    outputs: dict, action_stats: dict | None, config: ml_collections.ConfigDict
) -> np.ndarray:
    """IDM outputs ({'continuous': [N, C] normalised, 'gripper_logit': [N]}) -> [N, A] actions
    in the dataset's units: the continuous dims de-normalised (config.data.action_norm with the
    training dataset's `action_stats`), the gripper the dataset's largest gripper action where
    the logit says 'closed' and its smallest where 'open' (action_stats 'max' / 'min')."""
    model_cfg = config.model.idm
    actions = np.zeros((len(outputs["continuous"]), model_cfg.action_dim), np.float32)
    dims = list(idm.continuous_dims(model_cfg))
    norm = config.data.action_norm
    actions[:, dims] = to_dataset_units(outputs["continuous"], action_stats, norm, model_cfg)
    grip = model_cfg.gripper_index
    if grip >= 0:
        closed = np.asarray(outputs["gripper_logit"]) > 0
        actions[:, grip] = np.where(closed, action_stats["max"][grip], action_stats["min"][grip])
    return actions


def flow_features(flow: np.ndarray, grid: int) -> np.ndarray:
    """[N, H, W, 2] flow -> [N, grid * grid * 2] average-pooled to grid x grid cells."""
    return reduce(flow, "n (g1 p1) (g2 p2) c -> n (g1 g2 c)", "mean", g1=grid, g2=grid)


def nearest_neighbours(query: np.ndarray, keys: np.ndarray, chunk: int = 1024) -> np.ndarray:
    """[Q, F] x [K, F] -> [Q] index of each query's nearest key (L2)."""
    key_norms = np.sum(np.square(keys), axis=1)
    found = []
    for i in range(0, len(query), chunk):
        block = query[i : i + chunk]
        distances = key_norms[None] - 2.0 * block @ keys.T  # + |q|^2, the same for every key
        found.append(np.argmin(distances, axis=1))
    return np.concatenate(found)


def _baselines(heldout: dict, train: dict, action_stats, config) -> dict:
    """{method: (continuous [N, C] in dataset units, gripper closed [N] bool or None)}."""
    model_cfg, norm = config.model.idm, config.data.action_norm
    count, dims = len(heldout["target"]), list(idm.continuous_dims(model_cfg))
    gripper = model_cfg.gripper_index >= 0
    zero = np.zeros((count, len(dims)), np.float32)
    zero_grip_closed = config.idm.gripper_threshold < 0.0  # The zero action's gripper value 0.
    zero_closed = np.full(count, zero_grip_closed) if gripper else None
    train_raw = to_dataset_units(train["target"], action_stats, norm, model_cfg)
    mean = np.broadcast_to(train_raw.mean(0), zero.shape)
    mean_closed = np.full(count, train["gripper"].mean() > 0.5) if gripper else None
    grid = config.idm.baseline_flow_grid
    nearest = nearest_neighbours(
        flow_features(heldout["flow"], grid), flow_features(train["flow"], grid)
    )
    nearest_closed = train["gripper"][nearest] > 0.5 if gripper else None
    return {
        "zero": (zero, zero_closed),
        "mean": (mean, mean_closed),
        "nearest_flow": (train_raw[nearest], nearest_closed),
    }


def scores(continuous: np.ndarray, closed, heldout: dict) -> dict:
    """MAE per continuous dim and its mean (dataset units), and gripper accuracy."""
    mae = np.mean(np.abs(continuous - heldout["target"]), axis=0)
    out = {"mae": [float(x) for x in mae], "mean_mae": float(mae.mean())}
    if closed is not None:
        out["gripper_accuracy"] = float(np.mean(closed == (heldout["gripper"] > 0.5)))
    return out


def evaluate(
    idm_outputs: dict,
    heldout: dict,
    train: dict,
    action_stats: dict | None,
    config: ml_collections.ConfigDict,
) -> dict:
    """The report of the module docstring (held-out pairs in dataset units)."""
    model_cfg, norm = config.model.idm, config.data.action_norm
    continuous = to_dataset_units(idm_outputs["continuous"], action_stats, norm, model_cfg)
    logit = idm_outputs.get("gripper_logit")
    methods = {"idm": (continuous, None if logit is None else logit > 0)}
    methods.update(_baselines(heldout, train, action_stats, config))
    return {name: scores(*methods[name], heldout) for name in METHODS}
