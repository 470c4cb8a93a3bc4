"""Shared types of the tool system: what a tool is, what running it gave, approvals and user requests."""

from __future__ import annotations

import enum
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


class Approval(str, enum.Enum):
    """How a tool is allowed to run."""

    ASK = "ask"  # the user decides each call (Allow once / Always for this chat / Deny)
    AUTO = "auto"  # runs without asking
    PICK_FILE = "pick_file"  # the user picks (or confirms) a file for each call; picking is the approval


class Decision(str, enum.Enum):
    """The user's answer to an approval request."""

    ALLOW_ONCE = "allow_once"
    ALLOW_ALWAYS = "allow_always"  # for this chat
    DENY = "deny"


class ToolKind(str, enum.Enum):
    FUNCTION = "function"  # functions.NAME
    PYTHON = "python"  # the builtin python tool
    BROWSER = "browser"  # the builtin browser.search/open/find


@dataclass(frozen=True)
class ToolInfo:
    """A tool as the registry knows it (listed on the settings page, offered to the model)."""

    name: str  # "get_current_datetime", "python" or "browser"
    kind: ToolKind
    origin: str  # "builtin" or "user"
    description: str
    definition: dict[str, Any] | None = None  # function tools: the definition for render_prompt
    source: str | None = None  # user tools: the file they come from
    warnings: tuple[str, ...] = ()
    default_enabled: bool = True
    default_approval: Approval = Approval.AUTO
    timeout_s: float = 30.0
    func: Callable[..., Any] | None = field(default=None, compare=False, repr=False)  # builtin functions run in the app
    fingerprint: str | None = None  # user tools: sha256 of the source the tool process ran (what trust is bound to)

    @property
    def parameters(self) -> dict[str, Any]:
        fn = (self.definition or {}).get("function", {})
        return dict(fn.get("parameters") or {"type": "object", "properties": {}, "required": []})


# Names the model uses for the built-in tools (harmony recipients "python", "browser.search",
# "functions.NAME", and "container.*" in OpenAI's own builds). A user function named like one of them
# would be offered next to the real one, take over its settings row and approval (a user tool named
# "python" made the sandboxed python tool run without asking), or catch a call the model meant for
# the built-in ("functions.browser.search" normalises to "browser_search").
_RESERVED_EXACT = {"python": "python", "browser": "browser", "functions": "function-tool", "container": "container"}
_RESERVED_PREFIX = {"browser_": "browser", "functions_": "function-tool", "container_": "container"}


def builtin_name_clash(name: str) -> str | None:
    """Why a user tool may not be called `name` (a sentence for the Tools page), or None."""
    low = name.lower()
    what = _RESERVED_EXACT.get(low) or next((w for p, w in _RESERVED_PREFIX.items() if low.startswith(p)), None)
    if what is None:
        return None
    return (
        f"A user tool cannot be named {name!r}: the name belongs to Harmonica's built-in {what} tool, and the "
        f"model could call one when it means the other. Rename the function (for example to 'my_{low}')."
    )


@dataclass(frozen=True)
class LoadError:
    """A user tool file (or one function in it) that could not be offered, and why."""

    file: str
    error: str
    detail: str = ""


@dataclass
class ToolOutcome:
    """What running a tool gave: `content` goes to the model, the rest is for the card."""

    content: str
    is_error: bool = False
    output: str | None = None  # what the card shows when it differs from `content`
    images: list[str] = field(default_factory=list)
    status: str | None = None  # overrides "done"/"error", e.g. "denied"


class Reply:
    """A one-shot answer that a worker thread waits for and the UI thread gives.

    `wait()` honours the generation's cancel event; answering twice keeps the first answer.
    """

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._value: Any = None
        self._answered = False
        self.answered_at: float | None = None

    def answer(self, value: Any) -> bool:
        """Give the answer (from any thread); False when it had been answered already."""
        with self._lock:
            if self._answered:
                return False
            self._answered = True
            self._value = value
            self.answered_at = time.time()
        self._event.set()
        return True

    @property
    def answered(self) -> bool:
        return self._answered

    @property
    def value(self) -> Any:
        return self._value

    def wait(self, cancel: threading.Event | None = None, timeout_s: float | None = None, poll_s: float = 0.05) -> Any:
        """Block until answered; returns the answer, or None when cancelled or timed out."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while not self._event.is_set():
            if cancel is not None and cancel.is_set():
                return None
            remaining = poll_s if deadline is None else min(poll_s, deadline - time.monotonic())
            if remaining <= 0:
                return None
            self._event.wait(remaining)
        return self._value


__all__ = [
    "Approval",
    "Decision",
    "LoadError",
    "Reply",
    "ToolInfo",
    "ToolKind",
    "ToolOutcome",
    "builtin_name_clash",
]
