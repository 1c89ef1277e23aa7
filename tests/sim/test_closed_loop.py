"""Closed-loop episodes (wow_jax/sim/closed_loop.py) and the evaluation around them
(wow_jax/evaluate.py) on the 1-D fake task: a policy that plans from frames re-plans until the
goal, the comparison policies behave as bounds, results survive a kill -9 (issue 18)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.sim.fakes import GOAL, FakeTask
from wow_jax import evaluate
from wow_jax.data import clips
from wow_jax.sim import closed_loop

ROOT = Path(__file__).resolve().parents[2]
SIZE = 8  # Fake frames are SIZE x SIZE; the red channel shows 40 x.
SPEC = clips.ClipSpec(num_frames=5, height=SIZE, width=SIZE)


def imagine_towards_goal(frames, prompts, seeds, num_frames=5, speed=0.5):
    """A fake world model: from each frame's x (red / 40), a clip moving `speed` per frame
    towards GOAL, with a seed-dependent jitter of one level (as sampled noise would)."""
    videos = []
    for frame, seed in zip(frames, seeds, strict=True):
        x = frame[0, 0, 0] / 40.0
        path = [x + np.sign(GOAL - x) * min(speed * i, abs(GOAL - x)) for i in range(num_frames)]
        levels = np.clip(np.round(np.asarray(path) * 40) + seed % 2, 0, 255).astype(np.uint8)
        videos.append(np.broadcast_to(levels[:, None, None, None], (num_frames, SIZE, SIZE, 3)))
    del prompts
    return np.stack(videos).copy()


def read_motion(video, stride=2):
    """A fake IDM: the x motion between consecutive frames, per env step of the `stride` steps
    between them, as the action."""
    x = video[:, 0, 0, 0].astype(np.float32) / 40.0
    actions = np.zeros((len(x) - 1, 4), np.float32)
    actions[:, 0] = np.diff(x) / stride
    return actions


def test_wilson_interval_matches_known_values():
    # issue 18: success rates come with 95% intervals (values of the Wilson score interval).
    assert closed_loop.wilson_interval(0, 4) == pytest.approx((0.0, 0.48990), abs=1e-4)
    assert closed_loop.wilson_interval(4, 4) == pytest.approx((0.51010, 1.0), abs=1e-4)
    assert closed_loop.wilson_interval(5, 10) == pytest.approx((0.23659, 0.76341), abs=1e-4)


def test_expert_solves_zero_and_random_do_not():
    # issue 18: the bounds the imagined policy is compared with behave as bounds.
    envs = [FakeTask("t", SIZE, "c") for _ in range(3)]
    seeds = [1, 2, 3]
    results = {}
    for policy in (closed_loop.ExpertPolicy(), closed_loop.ZeroPolicy()):
        results[policy.name] = closed_loop.run_group(envs, seeds, policy, 20, SPEC, 1)
    assert all(r["success"] for r in results["expert"])
    assert all(r["solved_at"] <= 5 for r in results["expert"])  # |x - GOAL| <= 5, 1 a step.
    assert not any(r["success"] for r in results["zero"])
    assert all(r["steps"] == 20 for r in results["zero"])
    random_runs = [closed_loop.run_group(envs, seeds, closed_loop.RandomPolicy(), 20, SPEC, 1)]
    again = closed_loop.run_group(envs, seeds, closed_loop.RandomPolicy(), 20, SPEC, 1)
    assert random_runs[0] == again  # Seeded per episode.


def test_imagine_then_act_replans_from_new_frames_until_solved():
    # issue 18: imagine -> IDM -> execute -> re-plan from the new frame, until success.
    envs = [FakeTask("t", SIZE, "c") for _ in range(2)]
    policy = evaluate.ImagineActPolicy(
        imagine_towards_goal, read_motion, "reach", stride=2, execute_frames=2, batch=2
    )
    results = closed_loop.run_group(envs, [5, 6], policy, 40, SPEC, 2, record=1)
    # 2 frames x stride 2 = 4 steps a plan of 0.25 per step: ~4.5 to go needs several plans.
    assert all(r["success"] for r in results)
    assert all(r["plans"] >= 4 for r in results)
    record = results[0]["record"]
    assert len(record["imagined"]) == results[0]["plans"]
    assert record["imagined"][0].shape == (5, SIZE, SIZE, 3)
    # Each plan starts from the frame the env shows then, not from the first one.
    starts = [clip[0, 0, 0, 0] for clip in record["imagined"]]
    assert starts == sorted(starts) and starts[-1] > starts[0]


def test_a_plan_does_not_depend_on_the_other_episodes_of_its_group():
    # issue 18: an episode's imagined clips depend on its seed and plan number only.
    def run(seeds):
        envs = [FakeTask("t", SIZE, "c") for _ in seeds]
        policy = evaluate.ImagineActPolicy(
            imagine_towards_goal, read_motion, "reach", stride=1, execute_frames=0, batch=2
        )
        return closed_loop.run_group(envs, seeds, policy, 30, SPEC, 1, record=len(seeds))

    alone, together = run([11]), run([11, 12])
    assert alone[0]["steps"] == together[0]["steps"]
    for a, b in zip(alone[0]["record"]["imagined"], together[0]["record"]["imagined"], strict=True):
        np.testing.assert_array_equal(a, b)


def _config(tmp_path):
    from configs import tiny

    config = tiny.get_config()
    config.data.source, config.data.tasks = "metaworld", ("reach-v3", "push-v3")
    config.data.height = config.data.width = SIZE
    config.data.num_frames, config.data.frame_stride = 5, 2
    config.evaluate.episodes_per_task, config.evaluate.batch = 3, 2
    config.evaluate.max_steps, config.evaluate.execute_frames = 40, 2
    config.evaluate.gif_episodes = 1
    return config


def test_evaluate_writes_per_task_rates_intervals_and_gifs(tmp_path):
    # issue 18: per-task success rate and mean with 95% intervals, imagined|executed gifs.
    config = _config(tmp_path)
    results = evaluate.evaluate(
        config, str(tmp_path), imagine_towards_goal, read_motion, {"m": "fake"}, FakeTask
    )
    assert set(results["tasks"]) == {"reach-v3", "push-v3"}
    for runs in results["tasks"].values():
        assert runs["expert"]["success_rate"] == 1.0 and runs["zero"]["success_rate"] == 0.0
        assert runs["imagine_act"]["success_rate"] == 1.0
        assert runs["imagine_act"]["ci95"][0] < 1.0 and runs["imagine_act"]["episodes"] == 3
    assert results["mean"]["zero"]["ci95"] == pytest.approx([0.0, 0.39033], abs=1e-4)
    assert len(results["gifs"]) == 2 and all(os.path.exists(g) for g in results["gifs"])
    stored = json.loads((tmp_path / evaluate.EVAL_DIR / evaluate.RESULTS_FILE).read_text())
    assert stored["tasks"] == results["tasks"]


KILL_SCRIPT = """
import sys, time
sys.path.insert(0, {root!r})
from tests.sim import test_closed_loop as t
from tests.sim.fakes import FakeTask
from wow_jax import evaluate

def slow_imagine(frames, prompts, seeds):
    time.sleep(0.3)
    return t.imagine_towards_goal(frames, prompts, seeds)

config = t._config(None)
evaluate.evaluate(config, {workdir!r}, slow_imagine, t.read_motion, {{"m": "fake"}}, FakeTask)
"""


def _run(workdir, wait_for=None):
    script = KILL_SCRIPT.format(root=str(ROOT), workdir=str(workdir))
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT)
    if wait_for is None:
        assert proc.wait(timeout=300) == 0
        return None
    deadline = time.time() + 300
    while not wait_for.exists():
        assert proc.poll() is None, "the evaluation ended before it could be killed"
        assert time.time() < deadline
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return proc


def test_kill9_during_evaluation_then_rerun_equals_an_uninterrupted_run(tmp_path):
    # issue 18: a kill -9 in the evaluation stage loses no finished episode group; the rerun's
    # results equal an uninterrupted run's.
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    _run(whole)
    first_group = killed / evaluate.EVAL_DIR / "episodes/imagine_act/reach-v3/group_0.json"
    _run(killed, wait_for=first_group)
    assert not (killed / evaluate.EVAL_DIR / evaluate.RESULTS_FILE).exists()
    kept = first_group.stat().st_mtime_ns
    _run(killed)
    assert first_group.stat().st_mtime_ns == kept  # Read back, not run again.
    read = [
        json.loads((d / evaluate.EVAL_DIR / evaluate.RESULTS_FILE).read_text())
        for d in (whole, killed)
    ]
    for results in read:
        results.pop("gifs")
    assert read[0] == read[1]
    # The report a person opens (evaluation section, gifs by relative path) is the same.
    from wow_jax import report

    pages = [report.write_report(str(d)) for d in (whole, killed)]
    assert Path(pages[0]["html"]).read_text() == Path(pages[1]["html"]).read_text()
    assert "Closed loop in Meta-World" in Path(pages[0]["markdown"]).read_text()


def test_idm_gap_separates_a_faithful_imagination_from_a_still_one(tmp_path, tiny_config):
    # issue 17: the IDM reads the world model's imagined frames as well as the real ones; the
    # gap between the two measures how physically faithful the imagination is.
    from wow_jax.data import rlds, stats
    from wow_jax.sim import metaworld_collect

    path = metaworld_collect.collect(tmp_path, ["reach-v3"], 3, 8, size=SIZE, make_task=FakeTask)
    cfg = tiny_config
    cfg.data.path, cfg.data.height, cfg.data.width = str(path), SIZE, SIZE
    cfg.data.num_frames, cfg.data.action_norm = 5, "none"
    cfg.evaluate.batch = 2
    action_stats = stats.load_stats(path)
    source = rlds.EpisodeSource(path)

    def replay_truth(frames, prompts, seeds):  # Imagines the real clip exactly.
        del prompts
        starts = {int(s): i for i, s in enumerate(seeds)}
        return [truth[starts[int(s)]] for s in seeds]

    def stand_still(frames, prompts, seeds):
        del prompts, seeds
        return [np.repeat(f[None], 5, axis=0) for f in frames]

    truth = [source.read(i, np.arange(5), [], min_size=(SIZE, SIZE))["frames"] for i in range(3)]
    read = lambda video: read_motion(video, stride=1)  # noqa: E731
    faithful = evaluate.idm_gap(cfg, replay_truth, read, cfg.data, action_stats)
    still = evaluate.idm_gap(cfg, stand_still, read, cfg.data, action_stats)
    assert faithful["clips"] == still["clips"] == 3
    # Reading the fake frames recovers x to 1/40 per frame: real and faithful imagination agree.
    assert faithful["real"]["mae"][0] < 0.03
    assert faithful["imagined"]["mae"] == pytest.approx(faithful["real"]["mae"], abs=1e-6)
    # A still imagination scores no better than the zero action; the real frames far better.
    assert still["imagined"]["mae"][0] == pytest.approx(still["zero"]["mae"][0], abs=1e-6)
    assert still["imagined"]["mae"][0] > 10 * still["real"]["mae"][0]
