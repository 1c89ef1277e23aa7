"""SOPHIA's critics (wow_jax/sophia/critic.py): the offline critic from the simulator on the fake
point task, the chat critic against a scripted endpoint."""

import json

import numpy as np
import pytest

from tests.sim.fakes import FakeTask
from tests.sophia import fake_world
from tests.sophia.chat_server import ScriptedChat
from wow_jax.sim import closed_loop
from wow_jax.sophia import chat, critic

SEED = 4  # The point starts at x = 0.94.


def offline_critic():
    config = fake_world.refine_config()
    spec = closed_loop.frame_spec(config.data)
    env = FakeTask("reach-v3", 16, "corner")
    return critic.OfflineCritic(env, SEED, fake_world.read, 1, spec, config.sophia, [0, 1, 2])


def clip(prompt: str) -> np.ndarray:
    env = FakeTask("reach-v3", 16, "corner")
    env.reset(SEED)
    return fake_world.imagine_fn(9)(env.render()[None], [prompt], [0])[0]


def test_the_offline_critic_completes_a_solving_clip_and_fails_a_slow_one():
    # issue 19: the offline critic's verdict is the simulator's success of the IDM's actions
    # from the same start state; its physics score follows the task's progress.
    judge = offline_critic()
    solved = judge.score(clip("move closer, then reach the goal"), "reach the goal")
    slow = judge.score(clip("reach the goal"), "reach the goal")
    assert solved["verdict"] == "completed" and slow["verdict"] == "failed"
    assert solved["templates"]["physics"]["score"] == 5.0
    assert slow["templates"]["physics"]["score"] == 1.0  # FakeTask's rewards are negative.
    # Both move the right way (the expert's way) at a steady pace and replay to their frames.
    for report in (solved, slow):
        assert report["templates"]["semantics"]["score"] > 4.0
        assert report["templates"]["motion"]["score"] == pytest.approx(5.0)
        assert report["templates"]["quality"]["score"] == pytest.approx(5.0)
    assert solved["score"] > slow["score"] + 0.25


def test_the_offline_critic_marks_down_the_wrong_direction_and_a_jump():
    # issue 19: IDM-action agreement with what the instruction implies (the expert), and the
    # temporal consistency of the imagined frames.
    judge = offline_critic()
    backwards = clip("reach the goal")
    backwards[..., 0] = (backwards[:1, ..., 0] - 4 * np.arange(9)[:, None, None]).astype(np.uint8)
    away = judge.score(backwards, "reach the goal")["templates"]["semantics"]["score"]
    towards = judge.score(clip("reach the goal"), "reach the goal")["templates"]["semantics"]
    assert away < 2.5 and towards["score"] > away + 2.0
    jump = clip("reach the goal")
    jump[5:, ..., 0] = np.minimum(jump[5:, ..., 0].astype(int) + 80, 255).astype(np.uint8)
    report = judge.score(jump, "reach the goal")
    assert report["templates"]["motion"]["score"] < 2.0
    assert critic.motion(clip("reach the goal"))["score"] == pytest.approx(5.0)


def test_the_chat_critic_asks_four_templates_then_the_verdict_with_sampled_frames():
    # issue 19: the four templates (1-5 with rationales) in parallel, then the verdict; the
    # normalised score is the mean of (score - 1) / 4.
    scores = {"physics": 5, "motion": 4, "semantics": 2, "quality": 3}

    def respond(body):
        name = body["response_format"]["json_schema"]["name"]
        if name == "verdict":
            return "content", json.dumps({"verdict": "failed", "rationale": "wrong object"})
        return "content", json.dumps({"score": scores[name], "rationale": f"{name} note"})

    server = ScriptedChat(respond)
    config = fake_world.refine_config(**{"sophia.base_url": server.base_url})
    config.sophia.model, config.sophia.frames = "vl", 3
    try:
        judge = critic.ChatCritic(chat.ChatClient(chat.Endpoint.from_config(config.sophia)), 3)
        report = judge.score(clip("reach the goal"), "reach the goal")
    finally:
        server.close()
    assert sorted(server.names()[:4]) == sorted(critic.TEMPLATES)
    assert server.names()[4] == "verdict"
    content = server.requests[0]["body"]["messages"][1]["content"]
    assert [p["type"] for p in content] == ["text", "image_url", "image_url", "image_url"]
    assert "'reach the goal'" in content[0]["text"]
    verdict_text = server.requests[4]["body"]["messages"][1]["content"][0]["text"]
    assert "semantics 2/5: semantics note" in verdict_text
    assert report["verdict"] == "failed" and report["verdict_rationale"] == "wrong object"
    assert report["templates"]["semantics"] == {"score": 2, "rationale": "semantics note"}
    assert report["score"] == pytest.approx((4 + 3 + 1 + 2) / 16)


def test_frames_are_sampled_evenly_keeping_the_first_and_last():
    frames = np.arange(9)[:, None, None, None] * np.ones((1, 2, 2, 3), np.uint8)
    assert critic.sample_frames(frames, 4)[:, 0, 0, 0].tolist() == [0, 3, 5, 8]
    assert len(critic.sample_frames(frames, 20)) == 9
