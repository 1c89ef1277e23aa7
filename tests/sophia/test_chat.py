"""The chat-completions client (wow_jax/sophia/chat.py) against a real HTTP server on 127.0.0.1
with scripted answers: every kind of bad answer is retried with backoff, then one clear error."""

import json
import socket

import numpy as np
import pytest

from tests.sophia.chat_server import ScriptedChat
from tests.sophia.fake_world import refine_config
from wow_jax.sophia import chat

SCHEMA = {
    "type": "object",
    "properties": {
        "score": {"type": "integer", "minimum": 1, "maximum": 5},
        "rationale": {"type": "string", "minLength": 1},
    },
    "required": ["score", "rationale"],
    "additionalProperties": False,
}
GOOD = json.dumps({"score": 4, "rationale": "fine"})


def client_for(server, sleeps=None, **overrides):
    config = refine_config(**{"sophia.base_url": server.base_url, "sophia.model": "critic-vl"})
    config.update_from_flattened_dict(overrides)
    endpoint = chat.Endpoint.from_config(config.sophia)
    return chat.ChatClient(endpoint, sleep=(sleeps.append if sleeps is not None else None))


def scripted(*replies):
    """respond() giving `replies` in order, then GOOD."""
    queue = list(replies)
    return lambda body: queue.pop(0) if queue else ("content", GOOD)


@pytest.mark.parametrize(
    "bad",
    [
        ("content", "{'score': 4"),  # malformed JSON
        ("sleep", 1.5, GOOD),  # an answer after the client's timeout
        ("status", 500),  # a server error
        ("content", json.dumps({"score": 7, "rationale": "off the scale"})),  # wrong schema
        ("content", json.dumps({"score": 4})),  # wrong schema: a key missing
        ("content", json.dumps({"score": 4, "rationale": "x", "extra": 1})),  # an extra key
    ],
    ids=["malformed_json", "timeout", "http_500", "out_of_range", "missing_key", "extra_key"],
)
def test_a_bad_answer_is_retried_after_a_backoff_then_the_good_one_is_used(bad):
    # issue 19: malformed JSON, a timeout, a 500 and a wrong schema each cost one retry.
    server = ScriptedChat(scripted(bad))
    sleeps = []
    try:
        answer = client_for(server, sleeps).ask([], SCHEMA, "physics", 0.0)
    finally:
        server.close()
    assert answer == {"score": 4, "rationale": "fine"}
    assert len(server.requests) == 2 and sleeps == [0.01]
    body = server.requests[0]["body"]
    assert server.requests[0]["path"] == "/v1/chat/completions"
    assert body["model"] == "critic-vl"
    assert body["response_format"]["json_schema"] == {
        "name": "physics",
        "schema": SCHEMA,
        "strict": True,
    }


def test_an_endpoint_that_keeps_answering_nonsense_gives_one_error_naming_every_attempt():
    # issue 19: after config.sophia.retries retries (backoff doubling) one ChatError says what
    # each attempt got and which keys to check.
    server = ScriptedChat(lambda body: ("content", "I think the video is great!"))
    sleeps = []
    try:
        with pytest.raises(chat.ChatError) as raised:
            client_for(server, sleeps, **{"sophia.retries": 3}).ask([], SCHEMA, "motion", 0.0)
    finally:
        server.close()
    message = str(raised.value)
    assert len(server.requests) == 4 and sleeps == [0.01, 0.02, 0.04]
    assert message.count("is not JSON") == 4 and "4 attempts" in message
    assert server.base_url in message and "config.sophia.base_url" in message


def test_an_unreachable_endpoint_gives_one_error():
    # issue 19: nothing listening on the port: retried, then one ChatError saying so.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = refine_config(**{"sophia.base_url": f"http://127.0.0.1:{port}/v1"})
    config.sophia.model = "m"
    client = chat.ChatClient(chat.Endpoint.from_config(config.sophia), sleep=lambda s: None)
    with pytest.raises(chat.ChatError, match=r"3 attempts: attempt 1: unreachable"):
        client.ask([], SCHEMA, "quality", 0.0)


def test_a_refused_request_is_not_retried_and_the_key_is_sent():
    # A 401 (a bad key) will not change on retry: one request, one error naming the key's config.
    server = ScriptedChat(lambda body: ("status", 401))
    try:
        with pytest.raises(chat.ChatError, match=r"HTTP 401.*config.sophia.api_key"):
            client_for(server, **{"sophia.api_key": "k-123"}).ask([], SCHEMA, "physics", 0.0)
    finally:
        server.close()
    assert len(server.requests) == 1 and server.requests[0]["key"] == "Bearer k-123"


def test_the_endpoint_comes_from_the_environment_when_the_config_leaves_it_empty(monkeypatch):
    config = refine_config()
    with pytest.raises(ValueError, match=r"config.sophia.base_url is empty and \$OPENAI_BASE_URL"):
        chat.Endpoint.from_config(config.sophia)
    monkeypatch.setenv("OPENAI_BASE_URL", "http://h:1/v1/")
    monkeypatch.setenv("OPENAI_MODEL", "qwen")
    monkeypatch.setenv("OPENAI_API_KEY", "secret")
    endpoint = chat.Endpoint.from_config(config.sophia)
    assert (endpoint.base_url, endpoint.model, endpoint.api_key) == (
        "http://h:1/v1",
        "qwen",
        "secret",
    )


def test_frames_go_as_png_data_urls_and_fenced_json_is_read():
    part = chat.image_part(np.full((4, 6, 3), 7, np.uint8))
    assert part["image_url"]["url"].startswith("data:image/png;base64,iVBOR")
    assert chat.parse_content("```json\n" + GOOD + "\n```", SCHEMA)["score"] == 4


def test_wow_jax_main_reports_a_chat_error_in_one_line():
    # issue 19: an unusable endpoint is the user's to fix: one line, no traceback.
    from wow_jax import main

    assert main.is_user_fault(chat.ChatError("the chat endpoint ... gave no usable answer"))
