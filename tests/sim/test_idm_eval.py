"""The IDM evaluation end to end (wow_jax/sim/idm_eval.py) on a fake env and the tiny IDM, its
training stage (loop.train, tested in tests/train) replaced by a random init to stay fast: the
JSON report and the plot it writes."""

import json

import jax
import numpy as np
import pytest
from flax import linen as nn

from tests.sim.fakes import FakeTask
from wow_jax.data import rlds
from wow_jax.sim import idm_eval, metaworld_collect, replay
from wow_jax.train.tasks import idm as idm_task

pytestmark = pytest.mark.filterwarnings("ignore:Constant.*may be too high:UserWarning")


def _config(tiny_config):
    cfg = tiny_config
    cfg.mode, cfg.train.task, cfg.train.tensorboard = "train", "idm", False
    cfg.train.steps, cfg.checkpoint.save_every = 2, 2
    cfg.data.tasks, cfg.data.episodes_per_task, cfg.data.episode_length = (
        ("reach-v3", "push-v3"),
        2,
        8,
    )
    cfg.model.idm.gripper_index = -1  # The fake's gripper is always 1.
    cfg.idm.heldout_episodes, cfg.idm.baseline_batches = 2, 2
    return cfg


def untrained_idm(config, workdir):
    """idm_eval.train_idm's (predict, step) for the randomly initialised IDM."""
    del workdir
    task = idm_task.IDMTask(config)
    params = nn.meta.unbox(task.init_params(jax.random.key(0)))
    apply = jax.jit(task.predict)
    return (lambda batch: apply(params, batch)), 0


def test_report_has_every_number(tmp_path, tiny_config, monkeypatch):
    monkeypatch.setattr(metaworld_collect, "MetaWorldTask", FakeTask)
    monkeypatch.setattr(idm_eval, "train_idm", untrained_idm)
    cfg = _config(tiny_config)
    report = idm_eval.run_evaluate_idm(cfg, str(tmp_path))
    assert json.loads((tmp_path / idm_eval.REPORT_FILE).read_text()) == report
    assert (tmp_path / idm_eval.PLOT_FILE).read_bytes()[:4] == b"\x89PNG"
    assert set(report["heldout"]) == {"idm", "zero", "mean", "nearest_flow"}
    for scores in report["heldout"].values():
        assert len(scores["mae"]) == 4 and np.isfinite(scores["mean_mae"])  # No gripper head.
        assert scores["translation_mae"] == pytest.approx(np.mean(scores["mae"][:3]))
    # Held-out: 2 tasks x 2 episodes of 9 frames, 8 pairs (t, t+1) each; 2 batches x 2 clips x 4.
    assert report["pairs"] == {"heldout": 32, "train": 16}
    heldout = rlds.EpisodeSource(tmp_path / "heldout")
    expert = [bool(heldout.successes(i)[8]) for i in range(len(heldout))]
    assert set(report["replay"]) == {"reach-v3", "push-v3"}
    replayed = report["replay"]["reach-v3"]["expert"] + report["replay"]["push-v3"]["expert"]
    assert sorted(replayed) == sorted(expert)
    for run in report["replay"].values():
        assert run["episodes"] == 2 and run["env_steps"] == 8
        assert run["oracle_success_rate"] == run["expert_success_rate"] == 1.0
        assert run["idm_success_rate"] == np.mean(run["idm"])
    assert set(report["heldout_by_task"]) == {"reach-v3", "push-v3"}
    assert report["settings"]["collection_version"] == 2

    FakeTask.made.clear()
    again = idm_eval.run_evaluate_idm(cfg, str(tmp_path))
    assert again["heldout"] == report["heldout"] and again["replay"] == report["replay"]
    assert FakeTask.made == ["reach-v3", "push-v3"]  # Replay only: no episode recollected.


def test_the_evaluation_needs_meta_world_and_the_idm_task(tiny_config, tmp_path):
    cfg = _config(tiny_config)
    cfg.data.source = "tfds"
    with pytest.raises(ValueError, match="config.data.source must be 'metaworld', got 'tfds'"):
        idm_eval.run_evaluate_idm(cfg, str(tmp_path))


@pytest.mark.parametrize("variant", [None, "quick"])
def test_the_idm_metaworld_config_is_valid(variant):
    from configs import idm_metaworld
    from wow_jax import configuration

    cfg = idm_metaworld.get_config(variant)
    configuration.validate(cfg, num_devices=8)
    idm_eval.check_config(cfg)
    replay.check_reduce(cfg.data, cfg.data.frame_stride)
