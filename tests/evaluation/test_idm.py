"""FM-IDM evaluation functions (wow_jax/evaluation/idm.py) on hand-made numbers."""

import numpy as np

from wow_jax.data import stats
from wow_jax.evaluation import idm as evaluation


def test_nearest_neighbours_and_flow_features():
    rng = np.random.default_rng(0)
    keys = rng.normal(size=(50, 6)).astype(np.float32)
    query = keys[[7, 3, 41]] + 1e-3
    np.testing.assert_array_equal(evaluation.nearest_neighbours(query, keys, chunk=2), [7, 3, 41])
    flow = np.zeros((1, 4, 4, 2), np.float32)
    flow[0, :2, 2:, 0] = 4.0  # top-right cell moves right
    features = evaluation.flow_features(flow, 2).reshape(2, 2, 2)
    np.testing.assert_array_equal(features[..., 0], [[0, 4], [0, 0]])


def test_evaluate_scores_every_method_in_dataset_units(tiny_config):
    cfg = tiny_config  # 4-dim actions, gripper 3, 'mean_std' normalisation
    action_stats = {"mean": np.array([1, 2, 3, 0.5], np.float32), "std": np.full(4, 2, np.float32)}
    raw_train = np.array([[1, 2, 3], [3, 2, 1]], np.float32)
    train = {
        "target": (raw_train - action_stats["mean"][:3]) / 2,
        "gripper": np.array([1.0, 1.0]),
        "flow": np.stack([np.full((8, 8, 2), -1.0), np.full((8, 8, 2), 1.0)]).astype(np.float32),
    }
    heldout = {
        "target": np.array([[3, 2, 2]], np.float32),
        "gripper": np.array([0.0]),
        "flow": np.full((1, 8, 8, 2), 0.9, np.float32),  # nearest: the second training pair
    }
    normalised = stats.normalize(np.array([[3, 3, 2, 0]], np.float32), action_stats, "mean_std")
    outputs = {"continuous": normalised[:, :3], "gripper_logit": np.array([-2.0])}
    report = evaluation.evaluate(outputs, heldout, train, action_stats, cfg)
    assert set(report) == set(evaluation.METHODS)
    np.testing.assert_allclose(report["idm"]["mae"], [0, 1, 0], atol=1e-6)
    assert report["idm"]["gripper_accuracy"] == 1.0
    np.testing.assert_allclose(report["zero"]["mae"], [3, 2, 2])
    assert report["zero"]["gripper_accuracy"] == 1.0  # 0 is 'open' (threshold 0.5)
    np.testing.assert_allclose(report["mean"]["mae"], [1, 0, 0], atol=1e-6)
    assert report["mean"]["gripper_accuracy"] == 0.0  # majority 'closed'
    np.testing.assert_allclose(report["nearest_flow"]["mae"], [0, 0, 1], atol=1e-6)
    np.testing.assert_allclose(report["nearest_flow"]["mean_mae"], 1 / 3, rtol=1e-6)


def test_to_actions_denormalises_and_sets_the_gripper_to_the_datasets_extremes(tiny_config):
    cfg = tiny_config  # 4-dim actions, gripper 3, 'mean_std' normalisation
    action_stats = {
        "mean": np.array([1, 2, 3, 0.5], np.float32),
        "std": np.full(4, 2, np.float32),
        "min": np.array([-1, -1, -1, -0.5], np.float32),
        "max": np.array([1, 1, 1, 0.75], np.float32),
    }
    outputs = {
        "continuous": np.array([[0, 1, -1], [0.5, 0, 0]], np.float32),
        "gripper_logit": np.array([3.0, -0.1]),
    }
    actions = evaluation.to_actions(outputs, action_stats, cfg)
    np.testing.assert_allclose(actions, [[1, 4, 1, 0.75], [2, 2, 3, -0.5]])
