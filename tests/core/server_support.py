"""Shared pieces of the API server tests: the real tiny-GGUF server, scripted servers, grammars, clients."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import pytest

openai = pytest.importorskip("openai")

from app.core.server import ApiServer  # noqa: E402

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
RESPONSES_WEATHER_TOOL = {"type": "function", **WEATHER_TOOL["function"]}  # the Responses API's flat shape


def final_grammar(answer: str, reasoning: str = "[a-z ]{3,10}") -> str:
    return (
        f'root ::= <|channel|> "analysis" <|message|> {reasoning} <|end|> <|start|> "assistant" '
        f'<|channel|> "final" <|message|> "{answer}" <|return|>'
    )


CALL_GRAMMAR = (
    'root ::= <|channel|> "analysis" <|message|> [a-z ]{4,12} <|end|> <|start|> "assistant" '
    '<|channel|> "commentary to=functions.get_weather " <|constrain|> "json" <|message|> "{\\"city\\":\\"Paris\\"}" <|call|>'
)
ENDLESS = "root ::= [a-z ] root"


def last_user_text(body: Mapping[str, Any]) -> str:
    msgs = body.get("messages") or body.get("input")
    if isinstance(msgs, str):
        return msgs
    for m in reversed(msgs or []):
        if isinstance(m, Mapping) and m.get("role") == "user":
            c = m.get("content")
            return c if isinstance(c, str) else "".join(p.get("text", "") for p in c)
    return ""


class Hook:
    """The test-only grammar hook: a function of the request body, replaceable per test."""

    def __init__(self) -> None:
        self.fn: Callable[[Mapping[str, Any]], str | None] = lambda body: final_grammar("hello there")

    def __call__(self, body: Mapping[str, Any]) -> str | None:
        return self.fn(body)


def wait_for(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def client(server: ApiServer, key: str = "unused") -> Any:
    return openai.OpenAI(base_url=server.base_url, api_key=key, max_retries=0, timeout=30)
