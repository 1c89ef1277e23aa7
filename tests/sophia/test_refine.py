"""Mode refine's work (wow_jax/sophia/refine.py) on the fake point task with a fake world model:
the whole loop against a real chat-completions server on 127.0.0.1 whose first answer of every
kind is bad (malformed JSON, a 500, a timeout, a wrong schema), and offline (simulator critic,
caption refiner) with the closed-loop comparison of the original and refined prompts."""

import base64
import io
import json
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.sophia import fake_world
from tests.sophia.chat_server import ScriptedChat
from wow_jax.data import captions
from wow_jax.sim import metaworld_collect
from wow_jax.sophia import refine, report

MODELS = {"world_model": "fake", "idm": "fake"}
REWRITE = "the robot approaches the target, then reaches the goal"
FIRST_ANSWER = {  # The first request of each kind gets this; every later one a good answer.
    "physics": ("content", '{"score": 5, "rationale": '),  # malformed JSON
    "motion": ("status", 500),
    "semantics": ("sleep", 1.5, '{"score": 5, "rationale": "late"}'),  # past the timeout
    "quality": ("content", json.dumps({"score": "high", "rationale": "?"})),  # wrong schema
    "rewrite": ("content", json.dumps({"prompt": REWRITE})),  # wrong schema
}


def last_position(body) -> float:
    """x of the point in the last frame the critic was sent."""
    parts = body["messages"][1]["content"]
    url = [p for p in parts if p["type"] == "image_url"][-1]["image_url"]["url"]
    image = np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))))
    return fake_world.position(image)


def vlm(body, seen: set, lock: threading.Lock):
    """A stand-in VLM judging the point's last position: the goal reached is 5/5 'completed';
    `seen` holds the kinds of request answered so far."""
    name = body["response_format"]["json_schema"]["name"]
    with lock:
        first = name not in seen
        seen.add(name)
    if first and name in FIRST_ANSWER:
        return FIRST_ANSWER[name]
    if name == "rewrite":
        return "content", json.dumps({"instruction": REWRITE})
    reached = last_position(body) >= 4.5
    if name == "verdict":
        verdict = "completed" if reached else "failed"
        return "content", json.dumps({"verdict": verdict, "rationale": "the point's position"})
    return "content", json.dumps({"score": 5 if reached else 2, "rationale": f"{name} seen"})


@pytest.fixture
def chat_server():
    seen, lock = set(), threading.Lock()
    server = ScriptedChat(lambda body: vlm(body, seen, lock))
    yield server
    server.close()


def test_refine_against_a_chat_endpoint_retries_bad_answers_and_keeps_the_refined_prompt(
    tmp_path, chat_server
):
    # issue 19: the loop against a real HTTP server speaking chat-completions with scripted
    # answers: each bad first answer is retried, round 0's original instruction fails, the
    # refiner's rewrite completes and stops the loop; everything lands in results and the report.
    config = fake_world.refine_config(
        **{
            "sophia.critic": "chat",
            "sophia.refiner": "chat",
            "sophia.base_url": chat_server.base_url,
        }
    )
    config.sophia.model = "qwen-vl"
    results = refine.refine(config, str(tmp_path), fake_world.imagine_fn(9), fake_world.read,
                            MODELS, make_task=fake_world.make_task)  # fmt: skip
    (case,) = results["cases"]
    assert [r["stop"] for r in case["rounds"]] == [None, "completed"]
    first, second = case["rounds"]
    assert {c["prompt"] for c in first["candidates"]} == {
        "solve reach-v3"
    }  # FakeTask's instruction
    assert all(c["report"]["verdict"] == "failed" for c in first["candidates"])
    assert [c["prompt"] for c in second["candidates"]] == [REWRITE, REWRITE]
    assert case["best"] == {"round": 1, "candidate": 0, "prompt": REWRITE, "score": 1.0,
                            "verdict": "completed"}  # fmt: skip
    assert first["candidates"][0]["report"]["score"] == pytest.approx(0.25)
    # Retries: every kind's first answer was bad and asked again; nothing else was repeated.
    names = chat_server.names()
    videos = 4  # Two rounds of two candidates.
    for name in ("physics", "motion", "semantics", "quality", "verdict"):
        expected = videos + (name != "verdict")
        assert names.count(name) == expected, name
    assert names.count("rewrite") == 2 + 1
    # The closed loop: the original instruction does not reach the goal, the refined one does.
    assert results["closed_loop"]["cases"] == {case["name"]: {"original": False, "refined": True}}
    summary = results["summary"]
    assert summary["round_0_best"] == pytest.approx(0.25) and summary["final_best"] == 1.0
    assert summary["completed_round_0"] == 0 and summary["completed_final"] == 1
    # Saved and reported: results.json, the page with every round's gifs and the plot.
    out = tmp_path / refine.REFINE_DIR
    assert json.loads((out / refine.RESULTS_FILE).read_text())["summary"] == summary
    page = (out / report.HTML_FILE).read_text()
    for r in range(2):
        for k in range(2):
            assert f"cases/{case['name']}/round_{r}/candidate_{k}.gif" in page
    assert "scores.png" in page and (out / report.PLOT_FILE).stat().st_size > 1000
    assert REWRITE in page and "round 1 (stop: completed)" in page
    assert "qwen-vl" in json.dumps(results["settings"])


def test_refine_offline_raises_the_critic_score_and_the_closed_loop_success(tmp_path):
    # issue 19: offline (simulator critic, mixture-caption refiner) the refined prompts score
    # above round 0 and solve the task in the closed loop where the original does not.
    config = fake_world.refine_config(**{"sophia.episodes_per_task": 2})
    results = refine.refine(config, str(tmp_path), fake_world.imagine_fn(9), fake_world.read,
                            MODELS, make_task=fake_world.make_task)  # fmt: skip
    summary = results["summary"]
    assert summary["cases"] == 2
    assert summary["final_best"] > summary["round_0_best"] + 0.2
    assert summary["completed_round_0"] == 0 and summary["completed_final"] == 2
    vocabulary = captions.caption_variants("solve reach-v3", [], metaworld_collect.ROBOT_NAME)
    for case in results["cases"]:
        assert case["best"]["round"] == 1 and case["best"]["prompt"] in vocabulary
        assert fake_world.STEPWISE.search(case["best"]["prompt"])  # A fine (step-wise) caption.
    loop_results = results["closed_loop"]
    assert loop_results["original"]["success_rate"] == 0.0
    assert loop_results["refined"]["success_rate"] == 1.0


def test_a_rerun_reads_every_round_back_and_other_settings_move_them_aside(tmp_path):
    # issue 19: a finished refine rerun imagines nothing; changed settings start over.
    config = fake_world.refine_config()
    run = lambda cfg, calls: refine.refine(  # noqa: E731
        cfg, str(tmp_path), fake_world.imagine_fn(9, calls), fake_world.read, MODELS,
        make_task=fake_world.make_task,
    )  # fmt: skip
    first, calls = run(config, []), []
    again = run(config, calls)
    assert calls == [] and again["cases"] == first["cases"]
    config.sophia.candidates = 3
    run(config, calls)
    assert calls and len(calls[0]) == 3
    assert [p.name for p in (tmp_path / "refine").glob("cases.stale-*")]


def test_a_chat_backend_without_an_endpoint_is_refused_before_any_work(tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    config = fake_world.refine_config(**{"sophia.critic": "chat"})
    with pytest.raises(ValueError, match="config.sophia.base_url is empty"):
        refine.refine(config, str(tmp_path), None, None, MODELS, make_task=fake_world.make_task)
    assert not (tmp_path / "refine").exists()


def test_the_run_report_gets_a_sophia_section(tmp_path):
    # issue 19: the workdir's report.html (wow_jax/report.py) summarises the refinement.
    from wow_jax import report as run_report

    config = fake_world.refine_config()
    refine.refine(config, str(tmp_path), fake_world.imagine_fn(9), fake_world.read, MODELS,
                  make_task=fake_world.make_task)  # fmt: skip
    paths = run_report.write_report(str(tmp_path))
    page = Path(paths["html"]).read_text()
    assert "SOPHIA: critic-guided refinement" in page and "refine/scores.png" in page
    markdown = Path(paths["markdown"]).read_text()
    assert "| closed-loop success rate | 0.00 | 1.00 |" in markdown
