"""How the API server listens (port, key, network exposure), its limits, and its test-only hooks."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

DEFAULT_PORT: Final = 8321
LOOPBACK: Final = "127.0.0.1"
ALL_INTERFACES: Final = "0.0.0.0"
CLIENT_NAME: Final = "api"
# Requests beyond this many in flight (being read, queued or generating) get 429 with Retry-After
# instead of piling up bodies and threads; one generates at a time, the rest wait their turn.
MAX_IN_FLIGHT: Final = 16
# What a client is told to wait before retrying after a 429, in seconds.
RETRY_AFTER_S: Final = 5
# Request bodies larger than this are refused (413) before they are read, parsed or tokenized.
MAX_BODY_BYTES: Final = 16 * 1024 * 1024
# JSON nested deeper than this (a request body, a tool's parameters, a response schema) is refused
# with a 400: nothing a real client sends comes close, and deep nesting only exhausts recursion.
MAX_JSON_DEPTH: Final = 64
# Stored responses kept for previous_response_id; the oldest are forgotten.
MAX_STORED_RESPONSES: Final = 100


@dataclass
class ServerSettings:
    """How the server listens. Loopback only unless allow_network is set explicitly."""

    port: int = DEFAULT_PORT  # 0: any free port
    api_key: str = ""  # empty: no key needed
    allow_network: bool = False  # listen on every interface, so other devices can connect
    max_in_flight: int = MAX_IN_FLIGHT  # requests read, queued or generating at once; more get 429
    max_body_bytes: int = MAX_BODY_BYTES  # larger request bodies get 413 before they are read
    # Let clients' web_search tools use Harmonica's browser (only while web browsing is on). Off by
    # default: an API client then fetches web pages with no approval card, which the user must choose.
    web_search: bool = False

    @property
    def host(self) -> str:
        return ALL_INTERFACES if self.allow_network else LOOPBACK


def generate_api_key() -> str:
    """A fresh random key in the usual `sk-…` shape (clients that check the prefix accept it)."""
    return "sk-harmonica-" + secrets.token_urlsafe(24)


@dataclass
class ServerTesting:
    """Test-only hooks; never reachable over HTTP.

    grammar(body) may return a GBNF grammar that forces the model's output for that request (the
    tests run random-weight models); every rendered prompt is appended to `prompts`. free_text, a
    GBNF expression, replaces the free text (reasoning, plain answers) of the grammars the server
    builds itself (structured output, tool_choice), so a random-weight model finishes quickly;
    every grammar the server used is appended to `grammars`.
    """

    grammar: Callable[[Mapping[str, Any]], str | None] | None = None
    prompts: list[str] = field(default_factory=list)
    free_text: str | None = None
    grammars: list[str] = field(default_factory=list)
    # False: the server's grammar covers the whole generation in one pass (scripted engines, which
    # replay one script per generation, cannot be resumed for a lazy grammar's second phase).
    lazy_grammar: bool = True
