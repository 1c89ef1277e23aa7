"""Mode evaluate (wow_jax/evaluate.py, issue 18) through `wow_jax.main`: a tiny random i2v world
model and a tiny random 4-action IDM in run directories, closed-loop episodes in the real
Meta-World simulator (skipped without MuJoCo's EGL), results and gifs written; bad input refused
in one line before any model loads."""

import json

import jax
import pytest
from flax import linen as nn

from tests.test_act import tiny, world_model_run, write_run
from wow_jax import evaluate, main
from wow_jax.data import stats
from wow_jax.models import idm

metaworld_collect = pytest.importorskip("wow_jax.sim.metaworld_collect")


def _mujoco_renders() -> bool:
    try:
        task = metaworld_collect.MetaWorldTask("reach-v3", 16)
    except Exception:  # noqa: BLE001 (no EGL / no MuJoCo: the real-simulator test skips)
        return False
    task.close()
    return True


def metaworld_stats(directory):
    """A dataset folder holding only action_stats.json of Meta-World's 4-dim actions."""
    directory.mkdir()
    low, high = [-1.0, -1.0, -1.0, -1.0], [1.0, 1.0, 1.0, 1.0]
    values = {"mean": [0.1, -0.2, 0.0, 0.0], "std": [0.5, 0.5, 0.5, 1.0]}
    values.update({"min": low, "max": high, "q01": low, "q99": high})
    stats.save_stats({**values, "count": 100, "action_dim": 4}, directory)
    return directory


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("evaluate_runs")
    world_model = world_model_run(tmp)
    cfg = tiny()
    cfg.train.task = "idm"
    idm_params = {"idm": nn.meta.unbox(idm.init_params(cfg.model.idm, jax.random.key(0)))}
    idm_run = write_run(tmp / "idm", cfg, idm_params, metaworld_stats(tmp / "dataset"))
    return world_model, idm_run


def evaluate_config(world_model, idm_run, **overrides):
    config = tiny()
    config.mode = "evaluate"
    config.checkpoint.init_from, config.act.idm_checkpoint = str(world_model), str(idm_run)
    config.sample.steps, config.sample.solver = 1, "euler"
    config.data.tasks = ("reach-v3",)
    config.evaluate.episodes_per_task, config.evaluate.batch = 1, 1
    config.evaluate.max_steps, config.evaluate.gif_episodes = 6, 1
    config.update_from_flattened_dict(overrides)
    return config


@pytest.mark.skipif(not _mujoco_renders(), reason="MuJoCo cannot render here (no EGL)")
def test_evaluate_runs_every_policy_in_meta_world_from_the_runs(runs, tmp_path):
    # issue 18: mode evaluate closes the loop with the runs' world model and IDM.
    world_model, idm_run = runs
    config = evaluate_config(world_model, idm_run)
    main.start(config, str(tmp_path), frozenset())
    results = json.loads((tmp_path / "evaluate" / "results.json").read_text())
    runs_of_task = results["tasks"]["reach-v3"]
    assert list(runs_of_task) == list(config.evaluate.policies)
    assert all(s["episodes"] == 1 for s in runs_of_task.values())
    episodes = json.loads(
        (tmp_path / "evaluate/episodes/imagine_act/reach-v3/group_0.json").read_text()
    )
    frames = config.data.num_frames
    for episode in episodes:
        assert episode["steps"] == 6 or episode["success"]
        # One plan runs the imagined clip's T - 1 frame steps (stride 1): 6 steps need 2 plans.
        assert episode["plans"] == -(-episode["steps"] // (frames - 1))
    gif = results["gifs"][0]
    assert gif.endswith(".gif") and (tmp_path / "evaluate" / "gifs").exists()
    assert results["settings"]["models"]["idm"].startswith(str(idm_run))
    assert len(results["gifs"]) == 1


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"act.idm_checkpoint": ""}, "config.act.idm_checkpoint is empty"),
        ({"data.source": "videos"}, "config.data.source must be 'metaworld'"),
        ({"evaluate.policies": ("imagine_act", "dance")}, "config.evaluate.policies must be"),
        ({"evaluate.batch": 0}, "config.evaluate.batch"),
    ],
)
def test_bad_input_is_one_clear_error(runs, tmp_path, overrides, message):
    # issue 18: bad evaluation settings are refused before any model loads.
    from wow_jax import configuration

    world_model, idm_run = runs
    config = evaluate_config(world_model, idm_run, **overrides)
    with pytest.raises(ValueError, match=message):
        configuration.validate(config, 1)
        evaluate.run_evaluate(config, str(tmp_path))
