"""What the store holds: its vocabulary (roles, statuses), errors, conversation settings and the row types."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from app.core.errors import HarmonicaError

if TYPE_CHECKING:
    from app.core.engine import Sampling


DB_FILENAME: Final = "conversations.sqlite3"
ROLES: Final = ("system", "developer", "user", "assistant", "tool")
STATUSES: Final = ("complete", "streaming", "interrupted", "error")
EFFORTS: Final = ("low", "medium", "high")
TITLE_SOURCES: Final = ("auto", "model", "user")
DEFAULT_TITLE: Final = "New chat"
TITLE_MAX_CHARS: Final = 60


# --- errors ---------------------------------------------------------------------------------------


class StoreError(HarmonicaError):
    """A store failure the user can act on; the message is written for people."""


class StoreCorruptError(StoreError):
    """The database file is damaged; ``path`` names it. Use ``Store.open_or_recover`` to move it aside."""

    def __init__(self, path: Path, detail: str) -> None:
        self.path = Path(path)
        self.detail = detail
        super().__init__(
            f"The conversation database {self.path} is damaged and cannot be read ({detail}). "
            "Harmonica can move it aside as a backup, recover what is readable, and start a fresh one."
        )


# --- settings -------------------------------------------------------------------------------------

# How a stored or imported value of each setting is read: a bad one raises TypeError or ValueError
# (and the default stays); numbers out of range are clamped rather than rejected.


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError("not text")
    return value


def _identity(value: Any) -> str | None:
    if value is None or (isinstance(value, str) and value.strip()):
        return value
    raise TypeError("not a name")


def _effort(value: Any) -> str:
    if isinstance(value, str) and value.lower() in EFFORTS:
        return value.lower()
    raise ValueError("not an effort")


def _flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError("not true or false")
    return value


def _integer(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError("not an integer")
    return value


def _clamped(lo: float, hi: float) -> Callable[[Any], float]:
    def read(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise TypeError("not a number")
        return float(min(max(value, lo), hi))

    return read


def _optional_int(least: int) -> Callable[[Any], int | None]:
    """An integer, or None; below `least` means None too (the default: off, or the app's choice)."""

    def read(value: Any) -> int | None:
        if value is None:
            return None
        n = _integer(value)
        return n if n >= least else None

    return read


RUNS_ON_KEY: Final = "runs_on"

_SETTING_READERS: Final[dict[str, Callable[[Any], Any]]] = {
    "developer_instructions": _text,
    "model_identity": _identity,
    "reasoning_effort": _effort,
    "temperature": _clamped(0.0, 5.0),
    "top_p": _clamped(0.0, 1.0),
    "min_p": _clamped(0.0, 1.0),
    "repeat_penalty": _clamped(0.5, 2.5),
    "top_k": lambda value: max(0, _integer(value)),
    "trim_oldest": _flag,
    "seed": lambda value: None if value is None else _integer(value),
    "max_tokens": _optional_int(1),
    "context_size": _optional_int(256),
}


@dataclass
class ConversationSettings:
    """Per-conversation settings; defaults follow gpt-oss's recommendations (temperature 1.0, top_p 1.0)."""

    developer_instructions: str = ""
    model_identity: str | None = None  # None: the template's own identity line
    reasoning_effort: str = "medium"
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0 = off
    min_p: float = 0.0
    repeat_penalty: float = 1.0
    seed: int | None = None  # None = random
    max_tokens: int | None = None  # None = until the model stops or the context is full
    context_size: int | None = None  # None = the app's/model plan's default
    # When the conversation outgrows the context window, leave its oldest turns out of the prompt
    # (the UI says so) instead of refusing to answer.
    trim_oldest: bool = False
    # Keys this version does not know (written by a newer Harmonica or another feature) are kept
    # here so a round trip through this version loses nothing.
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        return {**self.extra, **data}

    # Where the chat last ran ("file:PATH" or "remote:[connection, model]", Runtime.engine_ref). Not a
    # setting the user edits: it rides in `extra`, so the settings dialog and older versions keep it
    # untouched, and presets leave it out (the store's save_preset / apply_preset).
    @property
    def runs_on(self) -> str:
        value = self.extra.get(RUNS_ON_KEY)
        return value if isinstance(value, str) else ""

    def ran_on(self, ref: str) -> ConversationSettings:
        """These settings, remembering that the chat ran on `ref`."""
        return dataclasses.replace(self, extra={**self.extra, RUNS_ON_KEY: ref})

    def without_runs_on(self) -> ConversationSettings:
        return dataclasses.replace(self, extra={k: v for k, v in self.extra.items() if k != RUNS_ON_KEY})

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> ConversationSettings:
        """Build settings from stored/imported data: bad values fall back to defaults, never raise."""
        out = cls()
        if not isinstance(data, Mapping):
            return out
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        out.extra = {k: v for k, v in data.items() if isinstance(k, str) and k not in known}
        for key, value in data.items():
            if key not in known:
                continue
            try:
                setattr(out, key, cls._coerce(key, value))
            except (TypeError, ValueError):
                pass  # keep the default
        return out

    @classmethod
    def _coerce(cls, key: str, value: Any) -> Any:
        return _SETTING_READERS[key](value)

    def to_sampling(self) -> Sampling:
        """The engine's ``Sampling`` for these settings (imported lazily to keep the store light)."""
        from app.core.engine import Sampling

        return Sampling(
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=self.top_k,
            min_p=self.min_p,
            repeat_penalty=self.repeat_penalty,
            seed=self.seed,
            max_tokens=self.max_tokens,
        )


# --- rows -----------------------------------------------------------------------------------------


@dataclass
class ConversationRow:
    """One conversation as stored."""

    id: int
    uid: str
    title: str
    title_source: str
    created: float
    updated: float
    settings: ConversationSettings
    active_leaf_id: int | None
    deleted_at: float | None = None

    @property
    def display_title(self) -> str:
        return self.title or DEFAULT_TITLE


@dataclass
class MessageRow:
    """One message as stored. ``tool_calls`` items are dicts: recipient, arguments (str), channel, content_type."""

    id: int
    conversation_id: int
    parent_id: int | None
    role: str
    content: str = ""
    thinking: str = ""
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    tool_name: str | None = None  # role "tool": which tool answered, e.g. "functions.get_weather"
    tool_call_id: str | None = None
    effort: str | None = None
    stats: dict[str, Any] = field(default_factory=dict)
    model: str | None = None
    status: str = "complete"
    created: float = 0.0
    updated: float = 0.0
    visited: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def is_interrupted(self) -> bool:
        return self.status == "interrupted"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class BranchInfo:
    """Where a message sits among its siblings: ``index`` is 0-based (the UI shows index+1/count)."""

    sibling_ids: tuple[int, ...]
    index: int

    @property
    def count(self) -> int:
        return len(self.sibling_ids)

    @property
    def has_branches(self) -> bool:
        return len(self.sibling_ids) > 1

    def label(self) -> str:
        return f"{self.index + 1}/{self.count}"


@dataclass(frozen=True)
class SearchHit:
    """A message matching a search; ``snippet`` marks hits with HIGHLIGHT_START/HIGHLIGHT_END."""

    message_id: int
    conversation_id: int
    conversation_title: str
    role: str
    snippet: str
    rank: float  # bm25 (lower is better); 0.0 when not ranked
    created: float
    # False when the query matched so many messages that hits come newest first, unranked.
    ranked: bool = True
    in_reasoning: bool = False  # the snippet comes from the reasoning, not the answer


@dataclass(frozen=True)
class Preset:
    """Named, reusable conversation settings."""

    id: int
    name: str
    settings: ConversationSettings
    created: float
    updated: float


@dataclass(frozen=True)
class RecoveryReport:
    """What happened when a damaged database was moved aside and salvaged."""

    backup_path: Path
    conversations: int
    messages: int
    error: str

    @property
    def message(self) -> str:
        return (
            f"The conversation database was damaged ({self.error}). It was moved to {self.backup_path}. "
            f"Recovered {self.conversations} conversation(s) and {self.messages} message(s) into a fresh database."
        )


class _Active:
    """Sentinel type: "append to the conversation's active leaf"."""

    def __repr__(self) -> str:
        return "ACTIVE"


ACTIVE: Final = _Active()
