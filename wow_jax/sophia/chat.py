"""An OpenAI-compatible chat-completions client for the critic and the refiner: what a local vLLM
or SGLang server running a vision-language model (e.g. Qwen2.5-VL) or a hosted model speaks.

    POST <base_url>/chat/completions  {'model', 'messages', 'temperature', 'response_format':
        {'type': 'json_schema', 'json_schema': {'name', 'schema', 'strict': true}}}
    -> {'choices': [{'message': {'content': '<JSON text>'}}]}

Frames go in as base64 PNG `image_url` parts (uint8 [h, w, 3] each). The answer's content is
parsed as JSON (a ```json fence around it is tolerated) and validated against the schema
(`validate`: objects with required properties and no others, strings, integers and numbers with
bounds, enums). A request that times out (config.sophia.timeout seconds per socket operation),
cannot connect, gets a 5xx/408/429, or an answer that is not JSON or breaks the schema is retried
config.sophia.retries times, waiting config.sophia.backoff seconds doubled per retry; then one
ChatError says what every attempt got. Another 4xx (a wrong model name, a bad key) is not retried.

The endpoint, model and key come from config.sophia.base_url/model/api_key or, when empty, the
environment (OPENAI_BASE_URL, OPENAI_MODEL, OPENAI_API_KEY); the key is never written anywhere.
"""

from __future__ import annotations

import base64
import dataclasses
import http.client
import io
import json
import os
import time
import urllib.error
import urllib.request

import numpy as np
from PIL import Image

BASE_URL_ENV, MODEL_ENV, KEY_ENV = "OPENAI_BASE_URL", "OPENAI_MODEL", "OPENAI_API_KEY"
RETRIED_STATUS = (408, 429)  # Client statuses worth another attempt (besides every 5xx).


class ChatError(Exception):
    """The chat endpoint is unreachable or keeps giving answers that cannot be used."""


class _Unusable(Exception):
    """One attempt's failure that another attempt may not repeat."""


@dataclasses.dataclass(frozen=True)
class Endpoint:
    base_url: str
    model: str
    api_key: str
    timeout: float
    retries: int
    backoff: float

    @classmethod
    def from_config(cls, sophia_cfg) -> Endpoint:
        """From config.sophia, the environment filling empty base_url/model/api_key."""
        base_url = sophia_cfg.base_url or os.environ.get(BASE_URL_ENV, "")
        model = sophia_cfg.model or os.environ.get(MODEL_ENV, "")
        if not base_url:
            raise ValueError(
                f"config.sophia.base_url is empty and ${BASE_URL_ENV} is unset: a chat critic or "
                "refiner needs an OpenAI-compatible endpoint, e.g. "
                "--config.sophia.base_url=http://127.0.0.1:8000/v1 (vLLM or SGLang serving "
                "Qwen2.5-VL), or use the offline backends (sophia.critic/refiner='offline')"
            )
        if not model:
            raise ValueError(
                f"config.sophia.model is empty and ${MODEL_ENV} is unset; set it to the model "
                "the endpoint serves (--config.sophia.model=Qwen/Qwen2.5-VL-7B-Instruct)"
            )
        return cls(
            base_url=base_url.rstrip("/"),
            model=model,
            api_key=sophia_cfg.api_key or os.environ.get(KEY_ENV, ""),
            timeout=float(sophia_cfg.timeout),
            retries=int(sophia_cfg.retries),
            backoff=float(sophia_cfg.backoff),
        )


def image_part(frame: np.ndarray) -> dict:
    """uint8 [h, w, 3] -> a chat `image_url` content part holding the frame as a PNG data URL."""
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(frame, np.uint8)).save(buffer, format="PNG")
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{data}"}}


def validate(value, schema: dict, where: str = "answer") -> None:
    """_Unusable naming the first place where `value` breaks `schema` (module docstring)."""
    kind = schema["type"]
    if kind == "object":
        if not isinstance(value, dict):
            raise _Unusable(f"{where} must be an object, got {type(value).__name__}")
        properties = schema["properties"]
        missing = [k for k in schema["required"] if k not in value]
        extra = [k for k in value if k not in properties]
        if missing or extra:
            raise _Unusable(f"{where} must have keys {sorted(properties)}, missing {missing}, "
                            f"unexpected {extra}")  # fmt: skip
        for key, item in value.items():
            validate(item, properties[key], f"{where}.{key}")
        return
    types = {"string": (str,), "integer": (int,), "number": (int, float)}[kind]
    if not isinstance(value, types) or isinstance(value, bool):
        raise _Unusable(f"{where} must be a {kind}, got {value!r}")
    if "enum" in schema and value not in schema["enum"]:
        raise _Unusable(f"{where} must be one of {schema['enum']}, got {value!r}")
    if kind == "string" and len(value.strip()) < schema.get("minLength", 0):
        raise _Unusable(f"{where} must be a non-empty string, got {value!r}")
    low, high = schema.get("minimum", -np.inf), schema.get("maximum", np.inf)
    if kind != "string" and not low <= value <= high:
        raise _Unusable(f"{where} must be in [{low}, {high}], got {value!r}")


def parse_content(content: str, schema: dict) -> dict:
    """The JSON answer in a message's content, validated; _Unusable otherwise."""
    text = content.strip()
    if text.startswith("```"):
        text = text.split("\n", 1)[-1].rsplit("```", 1)[0]
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise _Unusable(f"the answer is not JSON ({error.msg}): {content[:80]!r}") from None
    validate(value, schema)
    return value


class ChatClient:
    """`ask(messages, schema, name, temperature) -> dict`, the validated JSON answer."""

    def __init__(self, endpoint: Endpoint, sleep=time.sleep):
        self.endpoint, self.sleep = endpoint, sleep
        self.url = f"{endpoint.base_url}/chat/completions"

    def ask(self, messages: list, schema: dict, name: str, temperature: float) -> dict:
        body = {
            "model": self.endpoint.model,
            "messages": messages,
            "temperature": temperature,
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": name, "schema": schema, "strict": True},
            },
        }
        problems = []
        for attempt in range(self.endpoint.retries + 1):
            if attempt:
                self.sleep(self.endpoint.backoff * 2 ** (attempt - 1))
            try:
                return parse_content(self._post(body), schema)
            except _Unusable as error:
                problems.append(f"attempt {attempt + 1}: {error}")
        raise ChatError(
            f"the chat endpoint {self.url} (model {self.endpoint.model!r}) gave no usable "
            f"{name} answer in {len(problems)} attempts: {'; '.join(problems)}; check that the "
            "server runs and serves that model with image input (config.sophia.base_url, "
            "sophia.model), or raise config.sophia.timeout / sophia.retries"
        )

    def _post(self, body: dict) -> str:
        """One request -> the first choice's message content."""
        headers = {"Content-Type": "application/json"}
        if self.endpoint.api_key:
            headers["Authorization"] = f"Bearer {self.endpoint.api_key}"
        request = urllib.request.Request(self.url, json.dumps(body).encode(), headers)
        try:
            with urllib.request.urlopen(request, timeout=self.endpoint.timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as error:
            detail = " ".join(error.read()[:200].decode("utf-8", "replace").split())
            if error.code < 500 and error.code not in RETRIED_STATUS:
                raise ChatError(
                    f"the chat endpoint {self.url} refused the request with HTTP {error.code}: "
                    f"{detail}; check config.sophia.model and the key (config.sophia.api_key or "
                    f"${KEY_ENV})"
                ) from None
            raise _Unusable(f"HTTP {error.code}: {detail}") from None
        except TimeoutError:
            raise _Unusable(f"no answer within {self.endpoint.timeout} s") from None
        except (OSError, http.client.HTTPException) as error:
            reason = getattr(error, "reason", error)
            if isinstance(reason, TimeoutError):
                raise _Unusable(f"no answer within {self.endpoint.timeout} s") from None
            raise _Unusable(f"unreachable ({reason})") from None
        try:
            return json.loads(raw)["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise _Unusable(f"not a chat-completions response: {raw[:80]!r}") from None
