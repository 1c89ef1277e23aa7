"""Mode refine through `wow_jax.main` (issue 19): the tiny random world model and IDM runs of
tests/test_evaluate.py adopted as for mode act, the offline critic in the real Meta-World
simulator (skipped without MuJoCo's EGL); bad input refused in one line before any model loads."""

import json

import pytest

from tests.test_evaluate import _mujoco_renders, evaluate_config, runs  # noqa: F401 (fixture)
from wow_jax import configuration, main
from wow_jax.sophia import refine


def refine_config(world_model, idm_run, **overrides):
    config = evaluate_config(world_model, idm_run)
    config.mode = "refine"
    config.sophia.candidates, config.sophia.rounds, config.sophia.episodes_per_task = 2, 2, 1
    config.sophia.threshold, config.sophia.closed_loop = 1.0, False
    config.update_from_flattened_dict(overrides)
    return config


@pytest.mark.skipif(not _mujoco_renders(), reason="MuJoCo cannot render here (no EGL)")
def test_mode_refine_runs_rounds_from_the_runs_in_meta_world(runs, tmp_path):  # noqa: F811
    # issue 19: mode refine is registered, adopts the runs and writes its rounds and report.
    config = refine_config(*runs)
    main.start(config, str(tmp_path), frozenset())
    results = json.loads((tmp_path / "refine" / refine.RESULTS_FILE).read_text())
    (case,) = results["cases"]
    assert case["name"].startswith("reach-v3_") and case["instruction"] == "reach the goal position"
    assert len(case["rounds"][0]["candidates"]) == 2
    assert case["rounds"][-1]["stop"] in ("completed", "rounds")
    assert results["settings"]["models"]["idm"].startswith(str(runs[1]))
    assert (tmp_path / "refine" / "report.html").exists()


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"act.idm_checkpoint": ""}, "config.act.idm_checkpoint is empty"),
        ({"data.source": "videos"}, "config.data.source must be 'metaworld'"),
        ({"sophia.refiner": "chat"}, "config.sophia.base_url is empty"),
        ({"sophia.rounds": 0}, "config.sophia.rounds must be >= 1"),
    ],
)
def test_bad_input_is_one_clear_error(runs, tmp_path, monkeypatch, overrides, message):  # noqa: F811
    # issue 19: bad refine settings are refused before any model loads.
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    config = refine_config(*runs, **overrides)
    with pytest.raises(ValueError, match=message):
        configuration.validate(config, 1)
        refine.run_refine(config, str(tmp_path))
    assert not (tmp_path / "refine").exists()
