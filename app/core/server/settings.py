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
# Requests beyond this many in flight (generating or queued) get 429 instead of piling up threads.
MAX_IN_FLIGHT: Final = 64
# Stored responses kept for previous_response_id; the oldest are forgotten.
MAX_STORED_RESPONSES: Final = 100


@dataclass
class ServerSettings:
    """How the server listens. Loopback only unless allow_network is set explicitly."""

    port: int = DEFAULT_PORT  # 0: any free port
    api_key: str = ""  # empty: no key needed
    allow_network: bool = False  # listen on every interface, so other devices can connect

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
    tests run random-weight models); every rendered prompt is appended to `prompts`.
    """

    grammar: Callable[[Mapping[str, Any]], str | None] | None = None
    prompts: list[str] = field(default_factory=list)
