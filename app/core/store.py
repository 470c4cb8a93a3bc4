"""SQLite (WAL) persistence of conversations, branching messages, settings and presets, with search and crash recovery.

Durability: the database runs in WAL mode with ``synchronous=NORMAL``. Every commit is appended
to the write-ahead log before the call returns, so anything committed survives the app being
killed (SIGKILL, crash, force quit). Only an operating-system crash or power loss can lose the
last few commits, because NORMAL skips the fsync on each commit (the WAL is fsynced at
checkpoints); the database itself is never corrupted by that. This trade keeps a commit at tens
of microseconds, which is what lets the streaming tail be saved every half second.

Threads: one ``Store`` holds one connection opened with ``check_same_thread=False`` and guards
every public method with a re-entrant lock, so the UI thread and generation workers can share
one instance; calls are serialised (they are all short). One app instance per database file:
opening the store marks rows left "streaming" as "interrupted", which assumes no other live
process is streaming into the same file.

How the UI uses it: the sidebar pages through ``list_conversations`` (newest first) and shows
``search`` hits (``snippet_to_html`` bolds the matches); rename/delete/``restore_conversation``
(undo). The chat view shows ``active_path_with_branches`` (each message with its ‹ i/n ›) and
moves with ``navigate_sibling``. Edit-and-resend is ``edit_user_message`` then a new answer;
regenerate is ``begin_stream(parent_id=regenerate_parent(id))``; Continue is ``resume_stream``
on a row from ``interrupted_messages``. A generation is ``begin_stream`` → ``StreamSaver.feed``
per token → ``finish_stream``. ``render_messages`` turns a path into prompt messages.

Branches: messages form a tree through ``parent_id``. Each conversation remembers its active
leaf; the visible conversation is the path from the root to that leaf. Editing a user message
or regenerating an answer adds a sibling (same parent) and makes it active. Each leaf records
when it was last active (``visited``), so switching back to a branch returns to where the user
left it.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import re
import shutil
import sqlite3
import tempfile
import threading
import time
import unicodedata
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TypeVar

# --- constants ------------------------------------------------------------------------------------

DB_FILENAME: Final = "conversations.sqlite3"
ROLES: Final = ("system", "developer", "user", "assistant", "tool")
STATUSES: Final = ("complete", "streaming", "interrupted", "error")
EFFORTS: Final = ("low", "medium", "high")
TITLE_SOURCES: Final = ("auto", "model", "user")
DEFAULT_TITLE: Final = "New chat"
TITLE_MAX_CHARS: Final = 60
# Search snippets wrap hits in these control characters; they never occur in typed text, so the
# UI can escape the snippet first and then turn them into <b>…</b> (see snippet_to_html).
HIGHLIGHT_START: Final = "\x02"
HIGHLIGHT_END: Final = "\x03"
SNIPPET_ELLIPSIS: Final = "…"
# Up to this many matching messages, search ranks by relevance (bm25); beyond it, newest first.
RANKED_SEARCH_MAX_MATCHES: Final = 5000
# Conversations deleted longer ago than this are purged when the store opens.
DEFAULT_PURGE_AFTER_S: Final = 30 * 24 * 3600.0
# Below this size a full quick_check on open costs a few tens of ms; above it only the cheap
# header/size checks run at open, and damage is caught when a damaged page is read.
_QUICK_CHECK_MAX_BYTES: Final = 64 * 1024 * 1024
_SQLITE_HEADER: Final = b"SQLite format 3\x00"
_SQLITE_CORRUPT: Final = 11
_SQLITE_NOTADB: Final = 26


# --- errors ---------------------------------------------------------------------------------------


class StoreError(Exception):
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

# Accepted ranges; out-of-range values are clamped rather than rejected.
_FLOAT_RANGES: Final[dict[str, tuple[float, float]]] = {
    "temperature": (0.0, 5.0),
    "top_p": (0.0, 1.0),
    "min_p": (0.0, 1.0),
    "repeat_penalty": (0.5, 2.5),
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
        if key in ("developer_instructions",):
            if not isinstance(value, str):
                raise TypeError(key)
            return value
        if key == "model_identity":
            if value is None or (isinstance(value, str) and value.strip()):
                return value
            raise TypeError(key)
        if key == "reasoning_effort":
            if isinstance(value, str) and value.lower() in EFFORTS:
                return value.lower()
            raise ValueError(key)
        if key in _FLOAT_RANGES:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise TypeError(key)
            lo, hi = _FLOAT_RANGES[key]
            return float(min(max(value, lo), hi))
        if key == "top_k":
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(key)
            return max(0, value)
        if key == "trim_oldest":
            if not isinstance(value, bool):
                raise TypeError(key)
            return value
        if key in ("seed", "max_tokens", "context_size"):
            if value is None:
                return None
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(key)
            if key == "seed":
                return value
            if key == "context_size":
                return value if value >= 256 else None
            return value if value > 0 else None
        raise KeyError(key)

    def to_sampling(self) -> Any:
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

# --- duck-typed conversion helpers (used by the chat model integration) -----------------------------


def tool_call_to_dict(call: Any) -> dict[str, Any]:
    """Normalise a tool call (harmony.ToolCall, chat.ToolCallRecord, a dict, or an OpenAI-style dict)."""
    if isinstance(call, Mapping) and isinstance(call.get("function"), Mapping):  # OpenAI/transformers shape
        name = str(call["function"].get("name", ""))
        out: dict[str, Any] = {
            "recipient": name if "." in name else f"functions.{name}",
            "arguments": call["function"].get("arguments", ""),
            "channel": "commentary",
            "content_type": "json",
        }
    else:

        def get(key: str, default: Any = None) -> Any:
            return call.get(key, default) if isinstance(call, Mapping) else getattr(call, key, default)

        out = {
            "recipient": str(get("recipient") or get("name") or ""),
            "arguments": get("arguments", ""),
            "channel": str(get("channel") or "commentary"),
            "content_type": get("content_type"),
        }
    if not isinstance(out["arguments"], str):
        out["arguments"] = json.dumps(out["arguments"], ensure_ascii=False)
    call_id = call.get("id") if isinstance(call, Mapping) else getattr(call, "id", None)
    if call_id:
        out["id"] = str(call_id)
    return out


def stats_to_dict(stats: Any) -> dict[str, Any]:
    """GenerationStats (or any dataclass / mapping / None) → a JSON-able dict."""
    if stats is None:
        return {}
    if dataclasses.is_dataclass(stats) and not isinstance(stats, type):
        return dataclasses.asdict(stats)
    if isinstance(stats, Mapping):
        return dict(stats)
    raise TypeError(f"stats must be a dataclass or a mapping, not {type(stats).__name__}")


# Fields of a chat message that have no column of their own; they travel in ``extra``.
_EXTRA_MESSAGE_FIELDS: Final = ("preamble", "stop_reason", "thinking_s", "finished")


def message_fields(obj: Any) -> dict[str, Any]:
    """Read message fields from any object or mapping (e.g. chat.Message) by name.

    Returns keyword arguments for ``Store.add_message``: role, content, thinking, tool_calls,
    tool_name, tool_call_id, effort, stats, model, status, extra (preamble, stop_reason, ...).
    """

    def get(name: str, default: Any = None) -> Any:
        if isinstance(obj, Mapping):
            return obj.get(name, default)
        return getattr(obj, name, default)

    status = get("status", "complete")
    extra = dict(get("extra") or {})
    for key in _EXTRA_MESSAGE_FIELDS:
        value = get(key)
        if value not in (None, ""):
            extra[key] = value
    return {
        "role": str(get("role", "")),
        "content": get("content", "") or "",
        "thinking": get("thinking", "") or get("reasoning", "") or "",
        "tool_calls": [tool_call_to_dict(c) for c in (get("tool_calls") or [])],
        "tool_name": get("tool_name") or get("name"),
        "tool_call_id": get("tool_call_id"),
        "effort": get("effort"),
        "stats": stats_to_dict(get("stats")),
        "model": get("model"),
        "status": status if status in STATUSES else "complete",
        "extra": extra,
    }


def row_to_chat_dict(row: MessageRow) -> dict[str, Any]:
    """A stored message in the shape ``chat.Message.from_dict`` reads (plus id/parent/status)."""
    from app.core.engine import GenerationStats

    known_stats = {f.name for f in dataclasses.fields(GenerationStats)}
    stats = {k: v for k, v in row.stats.items() if k in known_stats} if row.stats else None
    out: dict[str, Any] = {
        "id": str(row.id),
        "parent_id": row.parent_id,
        "status": row.status,
        "role": row.role,
        "content": row.content,
        "thinking": row.thinking,
        "tool_calls": [
            {
                "recipient": c.get("recipient", ""),
                "arguments": c.get("arguments", ""),
                "content_type": c.get("content_type"),
                "channel": c.get("channel") or "commentary",
            }
            for c in row.tool_calls
        ],
        "name": row.tool_name,
        "effort": row.effort,
        "model": row.model,
        "stats": stats,
        "created": row.created,
    }
    for key in _EXTRA_MESSAGE_FIELDS:
        out[key] = row.extra.get(key, "" if key == "preamble" else None)
    return out


def auto_title(text: str, max_chars: int = TITLE_MAX_CHARS) -> str:
    """The first non-empty line of a user message, whitespace collapsed, cut at a word and ellipsised."""
    for line in text.splitlines():
        line = re.sub(r"^[#>*\-\s]+", "", line)  # markdown heading/quote/list marks say nothing
        line = " ".join(line.split())
        if line:
            break
    else:
        return ""
    if len(line) <= max_chars:
        return line
    cut = line[: max_chars - 1]
    space = cut.rfind(" ")
    if space >= max_chars // 2:
        cut = cut[:space]
    return cut.rstrip(" ,.;:-") + "…"


def clean_generated_title(text: str, max_chars: int = TITLE_MAX_CHARS) -> str:
    """Tidy a model-written title: first line, no quotes/markdown/"Title:" prefix, bounded length."""
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    line = re.sub(r"^(title\s*:\s*)", "", line, flags=re.IGNORECASE)
    line = line.strip(" \"'`*#_“”‘’").rstrip(".")
    return auto_title(line, max_chars)


def build_fts_query(text: str) -> str:
    """Turn what the user typed into a safe FTS5 query: every word must appear; the last is a prefix.

    "quoted phrases" stay phrases. FTS5 operators typed by the user are treated as words, so no
    input can produce a syntax error.
    """
    parts: list[str] = []
    pos = 0
    for m in re.finditer(r'"([^"]*)"', text):
        parts += _words(text[pos : m.start()])
        phrase = " ".join(_tokens(m.group(1)))
        if phrase:
            parts.append(f'"{phrase}"')
        pos = m.end()
    parts += _words(text[pos:])
    # Still typing the last word (no space or closing quote after it): match it as a prefix;
    # not a single letter, which would match nearly everything and say nothing.
    if parts and re.search(r"\w\w$", text):
        parts[-1] += "*"
    return " ".join(parts)


def _tokens(text: str) -> list[str]:
    return re.findall(r"\w+", text.replace('"', " "))


def _words(text: str) -> list[str]:
    return [f'"{w}"' for w in _tokens(text)]


# Tokens as FTS5's unicode61 tokenizer sees them: runs of letters/digits ("_" separates).
_TOKEN_RE: Final = re.compile(r"[^\W_]+")


def _fold(word: str) -> str:
    """Case- and accent-fold like unicode61 with remove_diacritics 2 ("Zürich" → "zurich")."""
    decomposed = unicodedata.normalize("NFKD", word)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch)).casefold()


def query_terms(text: str) -> list[tuple[str, bool]]:
    """The folded words of a search (as build_fts_query reads it), each with "is a prefix"."""
    fts = build_fts_query(text)
    terms: list[tuple[str, bool]] = []
    for m in re.finditer(r'"([^"]*)"(\*?)', fts):
        words = _TOKEN_RE.findall(m.group(1))
        for i, w in enumerate(words):
            terms.append((_fold(w), bool(m.group(2)) and i == len(words) - 1))
    return terms


def _hit_spans(
    text: str, terms: Sequence[tuple[str, bool]]
) -> tuple[list[tuple[int, int]], list[tuple[int, int, int]]]:
    """All tokens of ``text`` (start, end) and the hits among them (token index, start, end)."""
    tokens: list[tuple[int, int]] = []
    hits: list[tuple[int, int, int]] = []
    for m in _TOKEN_RE.finditer(text):
        word = _fold(m.group())
        tokens.append((m.start(), m.end()))
        if any(word == t or (prefix and word.startswith(t)) for t, prefix in terms):
            hits.append((len(tokens) - 1, m.start(), m.end()))
    return tokens, hits


def _mark(text: str, spans: Sequence[tuple[int, int, int]], start: int, end: int) -> str:
    out, pos = [], start
    for _, a, b in spans:
        if a < start or b > end:
            continue
        out += [text[pos:a], HIGHLIGHT_START, text[a:b], HIGHLIGHT_END]
        pos = b
    out.append(text[pos:end])
    return "".join(out)


def highlight_text(text: str, query: str) -> str:
    """``text`` with every word of the search ``query`` marked (HIGHLIGHT_START/END)."""
    terms = query_terms(query)
    if not terms:
        return text
    _, hits = _hit_spans(text, terms)
    return _mark(text, hits, 0, len(text))


def make_snippet(text: str, query: str | Sequence[tuple[str, bool]], max_tokens: int = 16) -> tuple[int, str]:
    """The best window of about ``max_tokens`` words around the hits, marked; with its score.

    The score counts distinct query words in the window first, then hits: the window that shows
    most of what was searched for wins. (0, "") when nothing matches.
    """
    terms = query_terms(query) if isinstance(query, str) else list(query)
    tokens, hits = _hit_spans(text, terms)
    if not hits:
        return 0, ""
    best: tuple[int, int, int] | None = None  # (distinct, count, -first_token)
    best_start = 0
    for h, _, _ in hits:
        start = max(0, min(h - 3, len(tokens) - max_tokens))
        inside = [(i, a, b) for i, a, b in hits if start <= i < start + max_tokens]
        distinct = len({_fold(text[a:b]) for _, a, b in inside})
        key = (distinct, len(inside), -start)
        if best is None or key > best:
            best, best_start = key, start
    assert best is not None
    last = min(len(tokens), best_start + max_tokens) - 1
    a = 0 if best_start == 0 else tokens[best_start][0]
    b = len(text) if last == len(tokens) - 1 else tokens[last][1]
    body = _mark(text, hits, a, b).strip()
    prefix = SNIPPET_ELLIPSIS if best_start > 0 else ""
    suffix = SNIPPET_ELLIPSIS if last < len(tokens) - 1 else ""
    return best[0] * 1000 + best[1], prefix + body + suffix


def snippet_parts(snippet: str) -> list[tuple[str, bool]]:
    """Split a marked snippet into (text, highlighted) parts."""
    out: list[tuple[str, bool]] = []
    for i, chunk in enumerate(re.split(f"[{HIGHLIGHT_START}{HIGHLIGHT_END}]", snippet)):
        if chunk:
            out.append((chunk, i % 2 == 1))
    return out


def snippet_to_html(snippet: str) -> str:
    """HTML-escape a snippet and turn its hit markers into <b>…</b>."""
    import html

    return "".join(f"<b>{html.escape(t)}</b>" if hit else html.escape(t) for t, hit in snippet_parts(snippet))


def snippet_to_markdown(snippet: str) -> str:
    """A snippet with hits as **bold** markdown."""
    return "".join(f"**{t}**" if hit else t for t, hit in snippet_parts(snippet))


# --- rendering for harmony --------------------------------------------------------------------------


def message_from_row(row: MessageRow) -> Any:
    """A stored message as a chat.Message (its id is the row id, as text)."""
    from app.core.chat import Message

    return Message.from_dict(row_to_chat_dict(row))


def render_messages(path: Sequence[MessageRow], developer_instructions: str | None = None) -> list[dict[str, Any]]:
    """Transformers-format messages for harmony.render_prompt from a branch path (root → leaf).

    The rules (instructions, reasoning kept only inside a running tool loop, one call per message,
    control tokens defused) live in chat.Conversation.to_render_messages; this only converts rows.
    """
    from app.core.chat import Conversation

    return Conversation(messages=[message_from_row(r) for r in path]).to_render_messages(developer_instructions)


# --- schema and migrations --------------------------------------------------------------------------


def _run_script(db: sqlite3.Connection, script: str) -> None:
    """Run SQL statements one by one: ``executescript`` would COMMIT the migration's transaction."""
    buffer = ""
    for line in script.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            db.execute(buffer)
            buffer = ""
    if buffer.strip():
        raise ValueError(f"incomplete SQL statement in migration: {buffer.strip()[:80]}")


def _migrate_0_to_1(db: sqlite3.Connection) -> None:
    """The first release's schema: conversations, a message tree, key/value settings."""
    _run_script(
        db,
        """
        CREATE TABLE conversations (
            id INTEGER PRIMARY KEY,
            title TEXT NOT NULL DEFAULT '',
            created REAL NOT NULL,
            updated REAL NOT NULL,
            settings TEXT NOT NULL DEFAULT '{}'
        );
        CREATE TABLE messages (
            id INTEGER PRIMARY KEY,
            conversation_id INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
            parent_id INTEGER REFERENCES messages(id) ON DELETE CASCADE,
            role TEXT NOT NULL,
            content TEXT NOT NULL DEFAULT '',
            thinking TEXT NOT NULL DEFAULT '',
            created REAL NOT NULL
        );
        CREATE INDEX messages_conversation ON messages(conversation_id);
        CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        """,
    )


def _migrate_1_to_2(db: sqlite3.Connection) -> None:
    """Tool calls, stats, streaming status, active branch, soft delete, presets, full-text search."""
    for ddl in (
        "ALTER TABLE conversations ADD COLUMN uid TEXT",
        "ALTER TABLE conversations ADD COLUMN title_source TEXT NOT NULL DEFAULT 'auto'",
        "ALTER TABLE conversations ADD COLUMN active_leaf_id INTEGER REFERENCES messages(id) ON DELETE SET NULL",
        "ALTER TABLE conversations ADD COLUMN deleted_at REAL",
        "ALTER TABLE messages ADD COLUMN tool_calls TEXT NOT NULL DEFAULT '[]'",
        "ALTER TABLE messages ADD COLUMN tool_name TEXT",
        "ALTER TABLE messages ADD COLUMN tool_call_id TEXT",
        "ALTER TABLE messages ADD COLUMN effort TEXT",
        "ALTER TABLE messages ADD COLUMN stats TEXT NOT NULL DEFAULT '{}'",
        "ALTER TABLE messages ADD COLUMN model TEXT",
        "ALTER TABLE messages ADD COLUMN status TEXT NOT NULL DEFAULT 'complete'",
        "ALTER TABLE messages ADD COLUMN updated REAL NOT NULL DEFAULT 0",
        "ALTER TABLE messages ADD COLUMN visited REAL NOT NULL DEFAULT 0",
        "ALTER TABLE messages ADD COLUMN extra TEXT NOT NULL DEFAULT '{}'",
    ):
        db.execute(ddl)
    _run_script(
        db,
        """
        UPDATE conversations SET uid = lower(hex(randomblob(16))) WHERE uid IS NULL;
        CREATE UNIQUE INDEX conversations_uid ON conversations(uid);
        CREATE INDEX conversations_live_updated ON conversations(updated DESC, id DESC) WHERE deleted_at IS NULL;
        CREATE INDEX conversations_deleted ON conversations(deleted_at) WHERE deleted_at IS NOT NULL;
        UPDATE messages SET updated = created, visited = created;
        UPDATE messages SET role = 'tool' WHERE role NOT IN ('system', 'developer', 'user', 'assistant', 'tool');
        CREATE INDEX messages_parent ON messages(parent_id);
        CREATE INDEX messages_unfinished ON messages(status) WHERE status != 'complete';
        -- v1 had no notion of an active branch: the newest leaf is the best guess.
        UPDATE conversations SET active_leaf_id = (
            SELECT m.id FROM messages m
            WHERE m.conversation_id = conversations.id
              AND NOT EXISTS (SELECT 1 FROM messages c WHERE c.parent_id = m.id)
            ORDER BY m.created DESC, m.id DESC LIMIT 1);
        CREATE TABLE presets (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            settings TEXT NOT NULL DEFAULT '{}',
            created REAL NOT NULL,
            updated REAL NOT NULL
        );
        -- External-content index over messages. Streaming rows are left out so that saving the
        -- tail every half second never rewrites index entries; they are indexed when finished.
        CREATE VIRTUAL TABLE messages_fts USING fts5(
            content, thinking,
            content='messages', content_rowid='id',
            tokenize='unicode61 remove_diacritics 2', prefix='2 3'
        );
        INSERT INTO messages_fts(messages_fts, rank) VALUES ('rank', 'bm25(1.0, 0.4)');
        INSERT INTO messages_fts(rowid, content, thinking)
            SELECT id, content, thinking FROM messages WHERE status != 'streaming';
        CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages WHEN new.status != 'streaming' BEGIN
            INSERT INTO messages_fts(rowid, content, thinking) VALUES (new.id, new.content, new.thinking);
        END;
        CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages WHEN old.status != 'streaming' BEGIN
            INSERT INTO messages_fts(messages_fts, rowid, content, thinking)
                VALUES ('delete', old.id, old.content, old.thinking);
        END;
        CREATE TRIGGER messages_fts_update AFTER UPDATE OF content, thinking, status ON messages
        WHEN old.status != 'streaming' OR new.status != 'streaming' BEGIN
            INSERT INTO messages_fts(messages_fts, rowid, content, thinking)
                SELECT 'delete', old.id, old.content, old.thinking WHERE old.status != 'streaming';
            INSERT INTO messages_fts(rowid, content, thinking)
                SELECT new.id, new.content, new.thinking WHERE new.status != 'streaming';
        END;
        """,
    )


# MIGRATIONS[i] takes a database at schema version i to version i + 1. A fresh database runs them
# all, so the upgrade path is exercised on every install, not only on upgrades.
MIGRATIONS: Final[list[Callable[[sqlite3.Connection], None]]] = [_migrate_0_to_1, _migrate_1_to_2]
SCHEMA_VERSION: Final = len(MIGRATIONS)

_MESSAGE_COLUMNS: Final = (
    "id, conversation_id, parent_id, role, content, thinking, tool_calls, tool_name, tool_call_id, "
    "effort, stats, model, status, created, updated, visited, extra"
)
_INSERT_MESSAGE: Final = (
    "INSERT INTO messages (conversation_id, parent_id, role, content, thinking, tool_calls, tool_name, "
    "tool_call_id, effort, stats, model, status, created, updated, visited, extra) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_CONVERSATION_COLUMNS: Final = "id, uid, title, title_source, created, updated, settings, active_leaf_id, deleted_at"


def _loads(text: str | None, default: Any) -> Any:
    if not text:
        return default
    try:
        value = json.loads(text)
    except ValueError:
        return default
    return value if isinstance(value, type(default)) else default


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _calls_json(calls: Iterable[Any]) -> str:
    return _dumps([tool_call_to_dict(c) for c in calls])


def _message_from_row(r: Sequence[Any]) -> MessageRow:
    return MessageRow(
        id=r[0],
        conversation_id=r[1],
        parent_id=r[2],
        role=r[3],
        content=r[4] or "",
        thinking=r[5] or "",
        tool_calls=_loads(r[6], []),
        tool_name=r[7],
        tool_call_id=r[8],
        effort=r[9],
        stats=_loads(r[10], {}),
        model=r[11],
        status=r[12],
        created=r[13],
        updated=r[14],
        visited=r[15],
        extra=_loads(r[16], {}),
    )


def _conversation_from_row(r: Sequence[Any]) -> ConversationRow:
    return ConversationRow(
        id=r[0],
        uid=r[1],
        title=r[2],
        title_source=r[3],
        created=r[4],
        updated=r[5],
        settings=ConversationSettings.from_dict(_loads(r[6], {})),
        active_leaf_id=r[7],
        deleted_at=r[8],
    )


def _is_corruption(exc: BaseException) -> bool:
    if not isinstance(exc, sqlite3.DatabaseError):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None and (code & 0xFF) in (_SQLITE_CORRUPT, _SQLITE_NOTADB):
        return True
    text = str(exc).lower()
    return "malformed" in text or "not a database" in text


_F = TypeVar("_F", bound=Callable[..., Any])


def _guarded(method: _F) -> _F:
    """Run a public method under the store's lock; turn SQLite corruption into StoreCorruptError."""

    @functools.wraps(method)
    def wrapper(self: Store, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            if self._db is None:
                raise StoreError("The conversation store is closed.")
            try:
                return method(self, *args, **kwargs)
            except sqlite3.DatabaseError as exc:
                if _is_corruption(exc):
                    raise StoreCorruptError(self.path, str(exc)) from exc
                raise

    return wrapper  # type: ignore[return-value]


def default_store_path() -> Path:
    """The database file in the app's data folder (HARMONICA_HOME when set)."""
    from app.core.paths import data_dir

    return data_dir() / DB_FILENAME


# --- the store ---------------------------------------------------------------------------------------


class Store:
    """Conversations, message trees, settings and presets in one SQLite file. Thread-safe (one lock)."""

    def __init__(self, db: sqlite3.Connection, path: Path, interrupted_on_open: list[int]) -> None:
        self._db: sqlite3.Connection | None = db
        self.path = path
        self._lock = threading.RLock()
        self._tx_depth = 0
        # Rows that were "streaming" when the store was opened: the previous run died mid-answer.
        self.interrupted_on_open: tuple[int, ...] = tuple(interrupted_on_open)

    # ---- opening / closing ----

    @classmethod
    def open(cls, path: str | Path | None = None, *, purge_after_s: float | None = DEFAULT_PURGE_AFTER_S) -> Store:
        """Open (creating or migrating) the store. Raises StoreCorruptError for a damaged file."""
        p = Path(path) if path is not None else default_store_path()
        p.parent.mkdir(parents=True, exist_ok=True)
        _check_header(p)
        try:
            db = sqlite3.connect(p, isolation_level=None, check_same_thread=False, timeout=10.0)
        except sqlite3.DatabaseError as exc:
            if _is_corruption(exc):
                raise StoreCorruptError(p, str(exc)) from exc
            raise StoreError(f"Cannot open the conversation database {p}: {exc}") from exc
        try:
            interrupted = _prepare(db, p)
        except sqlite3.DatabaseError as exc:
            db.close()
            if _is_corruption(exc):
                raise StoreCorruptError(p, str(exc)) from exc
            raise StoreError(f"Cannot open the conversation database {p}: {exc}") from exc
        except BaseException:
            db.close()
            raise
        store = cls(db, p, interrupted)
        if purge_after_s is not None:
            store.purge_deleted(older_than_s=purge_after_s)
        return store

    @classmethod
    def open_or_recover(cls, path: str | Path | None = None, **kwargs: Any) -> tuple[Store, RecoveryReport | None]:
        """Open the store; if the file is damaged, move it aside, salvage what is readable, start fresh.

        The app always gets a working store; a RecoveryReport (with a message for the user) says
        when recovery happened.
        """
        p = Path(path) if path is not None else default_store_path()
        try:
            return cls.open(p, **kwargs), None
        except StoreCorruptError as exc:
            return recover_corrupt(p, exc.detail, **kwargs)

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                try:
                    self._db.execute("PRAGMA optimize")
                except sqlite3.DatabaseError:
                    pass
                self._db.close()
                self._db = None

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise StoreError("The conversation store is closed.")
        return self._db

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Group writes into one atomic commit; nests (inner blocks join the outer transaction)."""
        with self._lock:
            db = self.db
            if self._tx_depth == 0:
                db.execute("BEGIN IMMEDIATE")
            self._tx_depth += 1
            try:
                yield
            except BaseException:
                self._tx_depth -= 1
                if self._tx_depth == 0:
                    db.execute("ROLLBACK")
                raise
            else:
                self._tx_depth -= 1
                if self._tx_depth == 0:
                    db.execute("COMMIT")

    # ---- conversations ----

    @_guarded
    def create_conversation(
        self, title: str = "", settings: ConversationSettings | None = None, *, created: float | None = None
    ) -> ConversationRow:
        now = time.time() if created is None else created
        source = "user" if title.strip() else "auto"
        cur = self.db.execute(
            "INSERT INTO conversations (uid, title, title_source, created, updated, settings) VALUES (?, ?, ?, ?, ?, ?)",
            (uuid.uuid4().hex, title.strip(), source, now, now, _dumps((settings or ConversationSettings()).to_dict())),
        )
        return self.get_conversation(int(cur.lastrowid or 0))

    @_guarded
    def get_conversation(self, conversation_id: int) -> ConversationRow:
        row = self.db.execute(
            f"SELECT {_CONVERSATION_COLUMNS} FROM conversations WHERE id = ?", (conversation_id,)
        ).fetchone()
        if row is None:
            raise StoreError(f"Conversation {conversation_id} does not exist.")
        return _conversation_from_row(row)

    @_guarded
    def list_conversations(
        self, limit: int = 50, before: tuple[float, int] | None = None, *, deleted: bool = False
    ) -> list[ConversationRow]:
        """Newest first (by last activity). Page with ``before=(row.updated, row.id)`` of the last row."""
        where = "deleted_at IS NOT NULL" if deleted else "deleted_at IS NULL"
        params: list[Any] = []
        if before is not None:
            where += " AND (updated < ? OR (updated = ? AND id < ?))"
            params += [before[0], before[0], before[1]]
        rows = self.db.execute(
            f"SELECT {_CONVERSATION_COLUMNS} FROM conversations WHERE {where} ORDER BY updated DESC, id DESC LIMIT ?",
            (*params, limit),
        ).fetchall()
        return [_conversation_from_row(r) for r in rows]

    @_guarded
    def count_conversations(self, *, deleted: bool = False) -> int:
        where = "deleted_at IS NOT NULL" if deleted else "deleted_at IS NULL"
        return int(self.db.execute(f"SELECT count(*) FROM conversations WHERE {where}").fetchone()[0])

    @_guarded
    def rename_conversation(self, conversation_id: int, title: str) -> None:
        """A user rename; an empty title returns to the automatic one."""
        title = " ".join(title.split())
        # bump=False: renaming is not activity, the conversation keeps its place in the list.
        if title:
            self._update_conv(conversation_id, "title = ?, title_source = 'user'", (title,), bump=False)
        else:
            first = self.db.execute(
                "SELECT content FROM messages WHERE conversation_id = ? AND role = 'user' ORDER BY id LIMIT 1",
                (conversation_id,),
            ).fetchone()
            self._update_conv(
                conversation_id,
                "title = ?, title_source = 'auto'",
                (auto_title(first[0]) if first else "",),
                bump=False,
            )

    @_guarded
    def set_generated_title(self, conversation_id: int, title: str) -> bool:
        """Hook for a model-written title. Never overrides a user's rename; returns whether it was set."""
        clean = clean_generated_title(title)
        if not clean:
            return False
        cur = self.db.execute(
            "UPDATE conversations SET title = ?, title_source = 'model' WHERE id = ? AND title_source != 'user'",
            (clean, conversation_id),
        )
        return cur.rowcount > 0

    @_guarded
    def delete_conversation(self, conversation_id: int) -> None:
        """Soft delete: hidden from lists and search until ``restore_conversation`` or a purge."""
        self._update_conv(conversation_id, "deleted_at = ?", (time.time(),), bump=False)

    @_guarded
    def restore_conversation(self, conversation_id: int) -> None:
        """Undo a delete."""
        self._update_conv(conversation_id, "deleted_at = NULL", (), bump=False)

    @_guarded
    def purge_deleted(self, older_than_s: float = 0.0) -> int:
        """Permanently remove conversations deleted more than ``older_than_s`` seconds ago."""
        cutoff = time.time() - older_than_s
        with self.transaction():
            ids = [
                r[0]
                for r in self.db.execute(
                    "SELECT id FROM conversations WHERE deleted_at IS NOT NULL AND deleted_at <= ?", (cutoff,)
                )
            ]
            for cid in ids:
                self._hard_delete(cid)
        return len(ids)

    @_guarded
    def purge_conversation(self, conversation_id: int) -> None:
        with self.transaction():
            self._hard_delete(conversation_id)

    def _hard_delete(self, conversation_id: int) -> None:
        # Clear the leaf pointer first, so deleting its message needs no ON DELETE SET NULL step.
        self.db.execute("UPDATE conversations SET active_leaf_id = NULL WHERE id = ?", (conversation_id,))
        self.db.execute("DELETE FROM messages WHERE conversation_id = ?", (conversation_id,))
        self.db.execute("DELETE FROM conversations WHERE id = ?", (conversation_id,))

    @_guarded
    def conversation_settings(self, conversation_id: int) -> ConversationSettings:
        return self.get_conversation(conversation_id).settings

    @_guarded
    def set_conversation_settings(self, conversation_id: int, settings: ConversationSettings) -> None:
        self._update_conv(conversation_id, "settings = ?", (_dumps(settings.to_dict()),), bump=False)

    def _update_conv(self, conversation_id: int, assignments: str, params: tuple[Any, ...], bump: bool = True) -> None:
        if bump:
            assignments += ", updated = ?"
            params = (*params, time.time())
        cur = self.db.execute(f"UPDATE conversations SET {assignments} WHERE id = ?", (*params, conversation_id))
        if cur.rowcount == 0:
            raise StoreError(f"Conversation {conversation_id} does not exist.")

    # ---- messages ----

    @_guarded
    def add_message(
        self,
        conversation_id: int,
        role: str,
        content: str = "",
        *,
        parent_id: int | _Active | None = ACTIVE,
        thinking: str = "",
        tool_calls: Sequence[Any] = (),
        tool_name: str | None = None,
        tool_call_id: str | None = None,
        effort: str | None = None,
        stats: Any = None,
        model: str | None = None,
        status: str = "complete",
        extra: Mapping[str, Any] | None = None,
        make_active: bool = True,
        created: float | None = None,
    ) -> MessageRow:
        """Insert and commit one message (by default under the active leaf, becoming the new leaf)."""
        if role not in ROLES:
            raise StoreError(f"Unknown message role {role!r}; expected one of {', '.join(ROLES)}.")
        if status not in STATUSES:
            raise StoreError(f"Unknown message status {status!r}; expected one of {', '.join(STATUSES)}.")
        now = time.time() if created is None else created
        with self.transaction():
            conv = self.get_conversation(conversation_id)
            parent = conv.active_leaf_id if isinstance(parent_id, _Active) else parent_id
            if parent is not None:
                prow = self.db.execute("SELECT conversation_id FROM messages WHERE id = ?", (parent,)).fetchone()
                if prow is None or prow[0] != conversation_id:
                    raise StoreError(f"Message {parent} is not in conversation {conversation_id}.")
            cur = self.db.execute(
                _INSERT_MESSAGE,
                (
                    conversation_id,
                    parent,
                    role,
                    content,
                    thinking,
                    _calls_json(tool_calls),
                    tool_name,
                    tool_call_id,
                    effort,
                    _dumps(stats_to_dict(stats)),
                    model,
                    status,
                    now,
                    now,
                    now,
                    _dumps(dict(extra or {})),
                ),
            )
            mid = int(cur.lastrowid or 0)
            sets = "updated = ?"
            params: list[Any] = [now]
            if make_active:
                sets += ", active_leaf_id = ?"
                params.append(mid)
            if role == "user" and conv.title_source == "auto" and not conv.title:
                sets += ", title = ?"
                params.append(auto_title(content))
            self.db.execute(f"UPDATE conversations SET {sets} WHERE id = ?", (*params, conversation_id))
        return self.get_message(mid)

    @_guarded
    def add_message_from(
        self, conversation_id: int, message: Any, *, parent_id: int | _Active | None = ACTIVE
    ) -> MessageRow:
        """Commit a finished message taken from any object with message fields (e.g. chat.Message)."""
        return self.add_message(conversation_id, parent_id=parent_id, **message_fields(message))

    @_guarded
    def get_message(self, message_id: int) -> MessageRow:
        row = self.db.execute(f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE id = ?", (message_id,)).fetchone()
        if row is None:
            raise StoreError(f"Message {message_id} does not exist.")
        return _message_from_row(row)

    @_guarded
    def update_message(
        self,
        message_id: int,
        *,
        content: str | None = None,
        thinking: str | None = None,
        stats: Any = None,
        extra: Mapping[str, Any] | None = None,
    ) -> MessageRow:
        """Change a message in place (no branch). Use ``edit_user_message`` for edit-and-resend."""
        sets, params = ["updated = ?"], [time.time()]
        for col, value in (("content", content), ("thinking", thinking)):
            if value is not None:
                sets.append(f"{col} = ?")
                params.append(value)
        if stats is not None:
            sets.append("stats = ?")
            params.append(_dumps(stats_to_dict(stats)))
        if extra is not None:
            sets.append("extra = ?")
            params.append(_dumps(dict(extra)))
        cur = self.db.execute(f"UPDATE messages SET {', '.join(sets)} WHERE id = ?", (*params, message_id))
        if cur.rowcount == 0:
            raise StoreError(f"Message {message_id} does not exist.")
        return self.get_message(message_id)

    @_guarded
    def conversation_messages(self, conversation_id: int) -> list[MessageRow]:
        """Every message of the conversation (all branches), in insertion order."""
        rows = self.db.execute(
            f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE conversation_id = ? ORDER BY id", (conversation_id,)
        ).fetchall()
        return [_message_from_row(r) for r in rows]

    @_guarded
    def children(self, message_id: int) -> list[MessageRow]:
        rows = self.db.execute(
            f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE parent_id = ? ORDER BY created, id", (message_id,)
        ).fetchall()
        return [_message_from_row(r) for r in rows]

    @_guarded
    def delete_message(self, message_id: int, *, with_replies: bool = False) -> None:
        """Delete one message. Its replies move up to its parent, unless ``with_replies`` deletes them too."""
        msg = self.get_message(message_id)
        with self.transaction():
            conv = self.get_conversation(msg.conversation_id)
            leaf = conv.active_leaf_id
            on_path = leaf is not None and message_id in self._ancestor_ids(leaf)
            if with_replies:
                self.db.execute("DELETE FROM messages WHERE id = ?", (message_id,))  # cascades down the subtree
            else:
                self.db.execute("UPDATE messages SET parent_id = ? WHERE parent_id = ?", (msg.parent_id, message_id))
                self.db.execute("DELETE FROM messages WHERE id = ?", (message_id,))
            if on_path and (with_replies or leaf == message_id):
                new_leaf = self._best_leaf(msg.parent_id, msg.conversation_id)
                self.db.execute(
                    "UPDATE conversations SET active_leaf_id = ? WHERE id = ?", (new_leaf, msg.conversation_id)
                )
            self.db.execute("UPDATE conversations SET updated = ? WHERE id = ?", (time.time(), msg.conversation_id))

    # ---- branches ----

    def _ancestor_ids(self, message_id: int) -> list[int]:
        rows = self.db.execute(
            "WITH RECURSIVE up(id, parent_id) AS ("
            " SELECT id, parent_id FROM messages WHERE id = ?"
            " UNION ALL SELECT m.id, m.parent_id FROM messages m JOIN up ON m.id = up.parent_id)"
            " SELECT id FROM up",
            (message_id,),
        ).fetchall()
        return [r[0] for r in rows]

    def _best_leaf(self, root_id: int | None, conversation_id: int) -> int | None:
        """The most recently active leaf under ``root_id`` (the whole conversation when None)."""
        if root_id is None:
            row = self.db.execute(
                "SELECT m.id FROM messages m WHERE m.conversation_id = ?"
                " AND NOT EXISTS (SELECT 1 FROM messages c WHERE c.parent_id = m.id)"
                " ORDER BY m.visited DESC, m.id DESC LIMIT 1",
                (conversation_id,),
            ).fetchone()
        else:
            row = self.db.execute(
                "WITH RECURSIVE down(id) AS (SELECT ? UNION ALL"
                " SELECT m.id FROM messages m JOIN down ON m.parent_id = down.id)"
                " SELECT m.id FROM down JOIN messages m ON m.id = down.id"
                " WHERE NOT EXISTS (SELECT 1 FROM messages c WHERE c.parent_id = m.id)"
                " ORDER BY m.visited DESC, m.id DESC LIMIT 1",
                (root_id,),
            ).fetchone()
        return None if row is None else int(row[0])

    @_guarded
    def path_to(self, message_id: int) -> list[MessageRow]:
        """Messages from the root down to ``message_id``."""
        rows = self.db.execute(
            "WITH RECURSIVE up(id, parent_id, depth) AS ("
            " SELECT id, parent_id, 0 FROM messages WHERE id = ?"
            " UNION ALL SELECT m.id, m.parent_id, up.depth + 1 FROM messages m JOIN up ON m.id = up.parent_id)"
            f" SELECT {', '.join('m.' + c.strip() for c in _MESSAGE_COLUMNS.split(','))}"
            " FROM up JOIN messages m ON m.id = up.id ORDER BY up.depth DESC",
            (message_id,),
        ).fetchall()
        return [_message_from_row(r) for r in rows]

    @_guarded
    def active_path(self, conversation_id: int) -> list[MessageRow]:
        """The visible conversation: root → active leaf."""
        conv = self.get_conversation(conversation_id)
        leaf = conv.active_leaf_id
        if leaf is None:
            leaf = self._best_leaf(None, conversation_id)
            if leaf is None:
                return []
            self.db.execute("UPDATE conversations SET active_leaf_id = ? WHERE id = ?", (leaf, conversation_id))
        return self.path_to(leaf)

    @_guarded
    def branch_info(self, conversation_id: int, message_ids: Sequence[int]) -> dict[int, BranchInfo]:
        """Sibling position of each given message (one query for the whole conversation)."""
        groups: dict[int | None, list[int]] = {}
        for mid, parent in self.db.execute(
            "SELECT id, parent_id FROM messages WHERE conversation_id = ? ORDER BY created, id", (conversation_id,)
        ):
            groups.setdefault(parent, []).append(mid)
        parent_of = {mid: parent for parent, ids in groups.items() for mid in ids}
        out: dict[int, BranchInfo] = {}
        for mid in message_ids:
            if mid in parent_of:
                sibs = tuple(groups[parent_of[mid]])
                out[mid] = BranchInfo(sibs, sibs.index(mid))
        return out

    @_guarded
    def active_path_with_branches(self, conversation_id: int) -> list[tuple[MessageRow, BranchInfo]]:
        """What the chat view needs to show a conversation: each message with its ‹ i/n › position."""
        path = self.active_path(conversation_id)
        info = self.branch_info(conversation_id, [m.id for m in path])
        return [(m, info[m.id]) for m in path]

    @_guarded
    def siblings(self, message_id: int) -> BranchInfo:
        msg = self.get_message(message_id)
        if msg.parent_id is None:
            rows = self.db.execute(
                "SELECT id FROM messages WHERE conversation_id = ? AND parent_id IS NULL ORDER BY created, id",
                (msg.conversation_id,),
            ).fetchall()
        else:
            rows = self.db.execute(
                "SELECT id FROM messages WHERE parent_id = ? ORDER BY created, id", (msg.parent_id,)
            ).fetchall()
        ids = tuple(r[0] for r in rows)
        return BranchInfo(ids, ids.index(message_id))

    @_guarded
    def set_active_leaf(self, conversation_id: int, message_id: int) -> None:
        msg = self.get_message(message_id)
        if msg.conversation_id != conversation_id:
            raise StoreError(f"Message {message_id} is not in conversation {conversation_id}.")
        with self.transaction():
            self.db.execute("UPDATE messages SET visited = ? WHERE id = ?", (time.time(), message_id))
            self.db.execute("UPDATE conversations SET active_leaf_id = ? WHERE id = ?", (message_id, conversation_id))

    @_guarded
    def switch_branch(self, message_id: int) -> list[MessageRow]:
        """Show the branch through ``message_id`` (where the user last was in it); returns the new path."""
        msg = self.get_message(message_id)
        leaf = self._best_leaf(message_id, msg.conversation_id)
        assert leaf is not None  # message_id itself is in its own subtree
        self.set_active_leaf(msg.conversation_id, leaf)
        return self.path_to(leaf)

    @_guarded
    def navigate_sibling(self, message_id: int, delta: int) -> list[MessageRow]:
        """‹ / › : move ``delta`` siblings from ``message_id`` (clamped); returns the new active path."""
        info = self.siblings(message_id)
        target = info.sibling_ids[min(max(info.index + delta, 0), info.count - 1)]
        return self.switch_branch(target)

    @_guarded
    def edit_user_message(self, message_id: int, new_content: str) -> MessageRow:
        """Edit-and-resend: a new user message beside the old one (a branch), made active.

        The caller then generates the answer under the returned message.
        """
        old = self.get_message(message_id)
        if old.role != "user":
            raise StoreError("Only user messages can be edited and resent.")
        return self.add_message(
            old.conversation_id, "user", new_content, parent_id=old.parent_id, extra={"edited_from": old.id}
        )

    @_guarded
    def regenerate_parent(self, message_id: int) -> int | None:
        """Where a regenerated answer goes: under the user message that started this answer's turn.

        A turn may span tool calls and tool results; regenerating redoes the whole turn, so the
        new answer is a sibling of the turn's first assistant message.
        """
        for msg in reversed(self.path_to(message_id)):
            if msg.role in ("user", "system", "developer"):
                return msg.id
        return None

    # ---- streaming ----

    @_guarded
    def begin_stream(
        self,
        conversation_id: int,
        *,
        parent_id: int | _Active | None = ACTIVE,
        role: str = "assistant",
        effort: str | None = None,
        model: str | None = None,
    ) -> int:
        """Start an answer: an empty message marked "streaming", made the active leaf. Returns its id."""
        return self.add_message(
            conversation_id, role, parent_id=parent_id, effort=effort, model=model, status="streaming"
        ).id

    @_guarded
    def update_stream(self, message_id: int, content: str, thinking: str = "") -> None:
        """Save the streaming tail (one small committed UPDATE; cheap enough for every 0.5 s)."""
        cur = self.db.execute(
            "UPDATE messages SET content = ?, thinking = ?, updated = ? WHERE id = ? AND status = 'streaming'",
            (content, thinking, time.time(), message_id),
        )
        if cur.rowcount == 0:
            raise StoreError(f"Message {message_id} is not streaming.")

    @_guarded
    def finish_stream(
        self,
        message_id: int,
        *,
        content: str | None = None,
        thinking: str | None = None,
        tool_calls: Sequence[Any] | None = None,
        stats: Any = None,
        status: str = "complete",
        extra: Mapping[str, Any] | None = None,
    ) -> MessageRow:
        """Commit the finished message (status "complete", or "interrupted"/"error" when cut short)."""
        if status not in ("complete", "interrupted", "error"):
            raise StoreError(f"A finished message cannot have status {status!r}.")
        now = time.time()
        sets, params = ["status = ?", "updated = ?"], [status, now]
        if content is not None:
            sets.append("content = ?")
            params.append(content)
        if thinking is not None:
            sets.append("thinking = ?")
            params.append(thinking)
        if tool_calls is not None:
            sets.append("tool_calls = ?")
            params.append(_calls_json(tool_calls))
        if stats is not None:
            sets.append("stats = ?")
            params.append(_dumps(stats_to_dict(stats)))
        if extra is not None:
            sets.append("extra = ?")
            params.append(_dumps(dict(extra)))
        with self.transaction():
            cur = self.db.execute(f"UPDATE messages SET {', '.join(sets)} WHERE id = ?", (*params, message_id))
            if cur.rowcount == 0:
                raise StoreError(f"Message {message_id} does not exist.")
            self.db.execute(
                "UPDATE conversations SET updated = ? WHERE id = (SELECT conversation_id FROM messages WHERE id = ?)",
                (now, message_id),
            )
        return self.get_message(message_id)

    @_guarded
    def finish_stream_from(self, message_id: int, message: Any, *, status: str = "complete") -> MessageRow:
        """``finish_stream`` with everything taken from a finished message object (e.g. chat.Message)."""
        f = message_fields(message)
        return self.finish_stream(
            message_id,
            content=f["content"],
            thinking=f["thinking"],
            tool_calls=f["tool_calls"],
            stats=f["stats"],
            status=status,
            extra=f["extra"],
        )

    @_guarded
    def resume_stream(self, message_id: int) -> MessageRow:
        """Continue an interrupted answer: it becomes "streaming" again; returns it with its partial text."""
        cur = self.db.execute(
            "UPDATE messages SET status = 'streaming', updated = ? WHERE id = ? AND status IN ('interrupted', 'error')",
            (time.time(), message_id),
        )
        if cur.rowcount == 0:
            raise StoreError(f"Message {message_id} is not an interrupted answer.")
        return self.get_message(message_id)

    @_guarded
    def interrupted_messages(self, conversation_id: int | None = None) -> list[MessageRow]:
        """Answers cut short (by a crash, or stopped); the UI offers Continue and Regenerate on them."""
        sql = f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE status = 'interrupted'"
        params: tuple[Any, ...] = ()
        if conversation_id is not None:
            sql += " AND conversation_id = ?"
            params = (conversation_id,)
        return [_message_from_row(r) for r in self.db.execute(sql + " ORDER BY id", params)]

    # ---- search ----

    @_guarded
    def search(
        self, text: str, limit: int = 50, *, conversation_id: int | None = None, one_per_conversation: bool = False
    ) -> list[SearchHit]:
        """Full-text search over message content and reasoning, best matches first.

        ``text`` is what the user typed (see build_fts_query). Deleted conversations are excluded.
        When more than RANKED_SEARCH_MAX_MATCHES messages match, hits come newest first
        (``hit.ranked`` is False) so a very common word still answers in milliseconds. With
        ``conversation_id``: find in that conversation, hits in conversation order.
        """
        query = build_fts_query(text)
        if not query or limit <= 0:
            return []
        terms = query_terms(text)
        if conversation_id is not None:
            # Find-in-conversation: one FTS pass bounded to the conversation's id range (a
            # per-row MATCH lookup would redo prefix expansion for every row), then its rows.
            lo, hi = self.db.execute(
                "SELECT min(id), max(id) FROM messages WHERE conversation_id = ?", (conversation_id,)
            ).fetchone()
            if lo is None:
                return []
            rows = self.db.execute(
                "WITH f AS MATERIALIZED (SELECT rowid AS id FROM messages_fts WHERE messages_fts MATCH ?"
                " AND rowid BETWEEN ? AND ?) "
                "SELECT m.id, m.conversation_id, c.title, m.role, 0.0, m.created, NULL, m.content, m.thinking "
                "FROM f JOIN messages m ON m.id = f.id JOIN conversations c ON c.id = m.conversation_id "
                "WHERE m.conversation_id = ? ORDER BY m.id LIMIT ?",
                (query, lo, hi, conversation_id, limit),
            ).fetchall()
            return [self._hit(r, terms, ranked=False) for r in rows]
        # bm25 costs a pass over every matching row (~4 µs each), so beyond
        # RANKED_SEARCH_MAX_MATCHES matches the newest matches come first instead; FTS5 walks
        # rowids newest-first and stops at the LIMIT. Probing for the N-th match is cheap.
        many = (
            self.db.execute(
                "SELECT rowid FROM messages_fts WHERE messages_fts MATCH ? ORDER BY rowid DESC LIMIT 1 OFFSET ?",
                (query, RANKED_SEARCH_MAX_MATCHES - 1),
            ).fetchone()
            is not None
        )
        rank, order, outer = ("0.0", "rowid DESC", "f.rowid DESC") if many else ("rank", "rank", "f.score")
        # Deleted conversations (and repeats, for one_per_conversation) are dropped after the
        # FTS query; ask for more rows when too few remain.
        fetch = limit * 4 if one_per_conversation else limit + 8
        while True:
            rows = self.db.execute(
                "SELECT f.rowid, m.conversation_id, c.title, m.role, f.score, m.created, c.deleted_at FROM "
                f"(SELECT rowid, {rank} AS score FROM messages_fts WHERE messages_fts MATCH ? ORDER BY {order} LIMIT ?) "
                "AS f JOIN messages m ON m.id = f.rowid JOIN conversations c ON c.id = m.conversation_id "
                f"ORDER BY {outer}",
                (query, fetch),
            ).fetchall()
            chosen: list[Sequence[Any]] = []
            seen: set[int] = set()
            for r in rows:
                if r[6] is not None or (one_per_conversation and r[1] in seen):
                    continue
                seen.add(r[1])
                chosen.append(r)
                if len(chosen) >= limit:
                    break
            if len(chosen) >= limit or len(rows) < fetch:
                break
            fetch *= 4
        # Texts only for the hits shown (the rows above may be many times more).
        marks = ",".join("?" * len(chosen))
        texts = (
            {
                r[0]: (r[1], r[2])
                for r in self.db.execute(
                    f"SELECT id, content, thinking FROM messages WHERE id IN ({marks})", [r[0] for r in chosen]
                )
            }
            if chosen
            else {}
        )
        return [self._hit((*r, *texts.get(r[0], ("", ""))), terms, ranked=not many) for r in chosen]

    @staticmethod
    def _hit(r: Sequence[Any], terms: Sequence[tuple[str, bool]], ranked: bool) -> SearchHit:
        # Snippets are made here rather than with FTS5's snippet(): that needs one MATCH lookup
        # per row, and each lookup re-expands a prefix term (hundreds of ms for common words).
        content_score, content_snip = make_snippet(r[7] or "", terms)
        thinking_score, thinking_snip = make_snippet(r[8] or "", terms)
        snippet = content_snip if content_score >= thinking_score else thinking_snip
        return SearchHit(
            r[0],
            r[1],
            r[2] or DEFAULT_TITLE,
            r[3],
            snippet,
            float(r[4]),
            r[5],
            ranked,
            in_reasoning=content_score < thinking_score,
        )

    @_guarded
    def highlight(self, message_id: int, text: str) -> tuple[str, str]:
        """The whole content and thinking of a message with every word of the search marked."""
        msg = self.get_message(message_id)
        return highlight_text(msg.content, text), highlight_text(msg.thinking, text)

    # ---- app settings (key → JSON) ----

    @_guarded
    def get_setting(self, key: str, default: Any = None) -> Any:
        row = self.db.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
        if row is None:
            return default
        try:
            return json.loads(row[0])
        except ValueError:
            return default

    @_guarded
    def set_setting(self, key: str, value: Any) -> None:
        self.db.execute(
            "INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, _dumps(value)),
        )

    @_guarded
    def delete_setting(self, key: str) -> None:
        self.db.execute("DELETE FROM settings WHERE key = ?", (key,))

    @_guarded
    def all_settings(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in self.db.execute("SELECT key, value FROM settings ORDER BY key"):
            try:
                out[key] = json.loads(value)
            except ValueError:
                continue  # a value damaged outside the app is skipped, not fatal
        return out

    # ---- presets ----

    @_guarded
    def save_preset(self, name: str, settings: ConversationSettings) -> Preset:
        """Create or overwrite the preset called ``name``."""
        name = " ".join(name.split())
        if not name:
            raise StoreError("A preset needs a name.")
        now = time.time()
        self.db.execute(
            "INSERT INTO presets (name, settings, created, updated) VALUES (?, ?, ?, ?) "
            "ON CONFLICT(name) DO UPDATE SET settings = excluded.settings, updated = excluded.updated",
            (name, _dumps(settings.to_dict()), now, now),
        )
        preset = self.get_preset(name)
        assert preset is not None
        return preset

    @_guarded
    def get_preset(self, name: str) -> Preset | None:
        row = self.db.execute(
            "SELECT id, name, settings, created, updated FROM presets WHERE name = ?", (" ".join(name.split()),)
        ).fetchone()
        if row is None:
            return None
        return Preset(row[0], row[1], ConversationSettings.from_dict(_loads(row[2], {})), row[3], row[4])

    @_guarded
    def list_presets(self) -> list[Preset]:
        rows = self.db.execute("SELECT id, name, settings, created, updated FROM presets ORDER BY name COLLATE NOCASE")
        return [Preset(r[0], r[1], ConversationSettings.from_dict(_loads(r[2], {})), r[3], r[4]) for r in rows]

    @_guarded
    def delete_preset(self, name: str) -> bool:
        return self.db.execute("DELETE FROM presets WHERE name = ?", (" ".join(name.split()),)).rowcount > 0

    @_guarded
    def apply_preset(self, conversation_id: int, name: str) -> ConversationSettings:
        preset = self.get_preset(name)
        if preset is None:
            raise StoreError(f"There is no preset called {name!r}.")
        self.set_conversation_settings(conversation_id, preset.settings)
        return preset.settings

    # ---- bulk insert (import, recovery) ----

    @_guarded
    def insert_conversation_tree(
        self,
        *,
        uid: str | None,
        title: str,
        title_source: str,
        created: float,
        updated: float,
        settings: ConversationSettings,
        messages: Sequence[MessageRow],
        active_leaf_id: int | None,
        deleted_at: float | None = None,
    ) -> int:
        """Insert a whole conversation whose messages use their own ids (remapped here).

        ``messages`` must list parents before children. An existing ``uid`` gets a fresh one (the
        import is a copy). Rows left "streaming" become "interrupted". Returns the new id.
        """
        with self.transaction():
            if not uid or self.db.execute("SELECT 1 FROM conversations WHERE uid = ?", (uid,)).fetchone():
                uid = uuid.uuid4().hex
            cur = self.db.execute(
                "INSERT INTO conversations (uid, title, title_source, created, updated, settings, deleted_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    uid,
                    title,
                    title_source if title_source in TITLE_SOURCES else "auto",
                    created,
                    updated,
                    _dumps(settings.to_dict()),
                    deleted_at,
                ),
            )
            cid = int(cur.lastrowid or 0)
            new_ids: dict[int, int] = {}
            for m in messages:
                parent = new_ids.get(m.parent_id) if m.parent_id is not None else None
                status = "interrupted" if m.status == "streaming" else m.status
                cur = self.db.execute(
                    _INSERT_MESSAGE,
                    (
                        cid,
                        parent,
                        m.role if m.role in ROLES else "tool",
                        m.content,
                        m.thinking,
                        _calls_json(m.tool_calls),
                        m.tool_name,
                        m.tool_call_id,
                        m.effort,
                        _dumps(m.stats),
                        m.model,
                        status if status in STATUSES else "complete",
                        m.created,
                        m.updated or m.created,
                        m.visited or m.created,
                        _dumps(m.extra),
                    ),
                )
                new_ids[m.id] = int(cur.lastrowid or 0)
            leaf = new_ids.get(active_leaf_id) if active_leaf_id is not None else None
            if leaf is None:
                leaf = self._best_leaf(None, cid)
            self.db.execute("UPDATE conversations SET active_leaf_id = ? WHERE id = ?", (leaf, cid))
        return cid

    @_guarded
    def stats(self) -> dict[str, int]:
        """Row counts, for diagnostics and the recovery report."""
        return {
            "conversations": int(self.db.execute("SELECT count(*) FROM conversations").fetchone()[0]),
            "messages": int(self.db.execute("SELECT count(*) FROM messages").fetchone()[0]),
            "presets": int(self.db.execute("SELECT count(*) FROM presets").fetchone()[0]),
        }


class StreamSaver:
    """Saves a streaming message's tail at most every ``interval`` seconds as text arrives.

    Call ``feed`` with the whole text so far after each token; it writes when the interval has
    passed. ``flush`` writes whatever is newer than the last save.
    """

    def __init__(
        self, store: Store, message_id: int, interval: float = 0.5, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.store = store
        self.message_id = message_id
        self.interval = interval
        self._clock = clock
        self._last_save = clock()
        self._saved: tuple[str, str] = ("", "")
        self._pending: tuple[str, str] = ("", "")

    def feed(self, content: str, thinking: str = "") -> bool:
        """Record the current text; returns True when this call saved it."""
        self._pending = (content, thinking)
        if self._clock() - self._last_save >= self.interval:
            return self.flush()
        return False

    def flush(self) -> bool:
        if self._pending == self._saved:
            self._last_save = self._clock()
            return False
        self.store.update_stream(self.message_id, *self._pending)
        self._saved = self._pending
        self._last_save = self._clock()
        return True


# --- opening helpers ------------------------------------------------------------------------------


def _check_header(path: Path) -> None:
    """Fail fast and clearly on a file that is not SQLite at all (or lost its first page)."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return
    if size == 0:
        return  # SQLite treats an empty file as a new database
    with path.open("rb") as f:
        head = f.read(100)
    if len(head) < 100 or not head.startswith(_SQLITE_HEADER):
        raise StoreCorruptError(path, "not a SQLite database: the file header is wrong")


def _prepare(db: sqlite3.Connection, path: Path) -> list[int]:
    db.execute("PRAGMA busy_timeout = 10000")
    mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        raise StoreError(f"The conversation database {path} cannot use write-ahead logging (journal mode {mode}).")
    db.execute("PRAGMA synchronous = NORMAL")
    db.execute("PRAGMA foreign_keys = ON")
    db.execute("PRAGMA temp_store = MEMORY")
    db.execute("PRAGMA cache_size = -16000")  # 16 MB page cache: a big search stays in memory
    version = int(db.execute("PRAGMA user_version").fetchone()[0])
    latest = len(MIGRATIONS)
    if version > latest:
        raise StoreError(
            f"The conversation database {path} was written by a newer Harmonica (schema {version}, this version "
            f"understands up to {latest}). Update Harmonica to open it."
        )
    if version > 0:
        _check_integrity(db, path)
    for target in range(version, latest):
        db.execute("BEGIN IMMEDIATE")
        try:
            MIGRATIONS[target](db)
            db.execute(f"PRAGMA user_version = {target + 1}")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
    rows = db.execute("UPDATE messages SET status = 'interrupted' WHERE status = 'streaming' RETURNING id").fetchall()
    return sorted(r[0] for r in rows)


def _check_integrity(db: sqlite3.Connection, path: Path) -> None:
    size = path.stat().st_size if path.exists() else 0
    wal = Path(f"{path}-wal")
    page_size = int(db.execute("PRAGMA page_size").fetchone()[0])
    page_count = int(db.execute("PRAGMA page_count").fetchone()[0])
    # Without a WAL the file must hold every page the header counts; a shorter file was truncated.
    if (not wal.exists() or wal.stat().st_size == 0) and size < page_size * page_count:
        raise StoreCorruptError(path, f"the file is truncated: {size} bytes, expected {page_size * page_count}")
    if size <= _QUICK_CHECK_MAX_BYTES:
        result = [r[0] for r in db.execute("PRAGMA quick_check(5)")]
        if result != ["ok"]:
            raise StoreCorruptError(path, "; ".join(str(r) for r in result))


# --- recovery -----------------------------------------------------------------------------------------

_SALVAGE_TABLES: Final = ("conversations", "messages", "settings", "presets")


def recover_corrupt(path: Path, error: str = "damaged", **open_kwargs: Any) -> tuple[Store, RecoveryReport]:
    """Move a damaged database aside (timestamped backup), salvage readable rows into a fresh store."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    backup = path.with_name(f"{path.stem}.corrupt-{stamp}{path.suffix}")
    n = 1
    while backup.exists():
        backup = path.with_name(f"{path.stem}.corrupt-{stamp}-{n}{path.suffix}")
        n += 1
    os.replace(path, backup)
    for suffix in ("-wal", "-shm"):
        side = Path(f"{path}{suffix}")
        if side.exists():
            os.replace(side, Path(f"{backup}{suffix}"))
    salvaged = _salvage(backup)
    store = Store.open(path, **open_kwargs)
    conversations, messages = _restore_salvage(store, salvaged)
    return store, RecoveryReport(backup, conversations, messages, error)


def _salvage(backup: Path) -> dict[str, tuple[list[str], list[tuple[Any, ...]]]]:
    """Read what can be read from each known table of a damaged file (working on a scratch copy)."""
    out: dict[str, tuple[list[str], list[tuple[Any, ...]]]] = {}
    with tempfile.TemporaryDirectory(prefix="harmonica-salvage-") as tmp:
        scratch = Path(tmp) / "salvage.sqlite3"
        try:
            shutil.copyfile(backup, scratch)
            if Path(f"{backup}-wal").exists():
                shutil.copyfile(f"{backup}-wal", f"{scratch}-wal")
            else:
                _fit_header_to_file(scratch)
            db = sqlite3.connect(scratch, isolation_level=None)
            # Skip schema entries that fail to parse (as the sqlite3 shell's .recover does).
            db.execute("PRAGMA writable_schema = ON")
        except (OSError, sqlite3.Error):
            return out
        try:
            for table in _SALVAGE_TABLES:
                try:
                    cols = [r[1] for r in db.execute(f"PRAGMA table_info({table})")]
                except sqlite3.DatabaseError:
                    continue
                if cols:
                    out[table] = (cols, _read_table(db, table, cols))
        finally:
            db.close()
    return out


def _fit_header_to_file(path: Path) -> None:
    """A truncated file's header still counts the lost pages, and SQLite then refuses the whole
    schema; make the header count only the pages that are really there (scratch copy only)."""
    size = path.stat().st_size
    with path.open("r+b") as f:
        head = f.read(100)
        if len(head) < 100 or not head.startswith(_SQLITE_HEADER):
            return
        page_size = int.from_bytes(head[16:18], "big")
        page_size = 65536 if page_size == 1 else page_size
        if page_size < 512:
            return
        if int.from_bytes(head[28:32], "big") > size // page_size:
            f.seek(28)
            f.write((size // page_size).to_bytes(4, "big"))


def _read_table(db: sqlite3.Connection, table: str, cols: list[str]) -> list[tuple[Any, ...]]:
    """Rows in key order. A batch that hits a damaged page is retried smaller, down to one row;
    a row that cannot be read is jumped over in growing steps until reading works again."""
    key = "rowid" if table == "settings" else "id"
    select = f"SELECT {', '.join(cols)}, {key} FROM {table} WHERE {key} > ? ORDER BY {key} LIMIT ?"
    rows: list[tuple[Any, ...]] = []
    last: int = -(2**62)
    size, step, failures = 256, 1, 0
    while failures < 200:
        try:
            batch = db.execute(select, (last, size)).fetchall()
        except sqlite3.DatabaseError:
            if size > 1:
                size = max(1, size // 8)
                continue
            failures += 1
            last = max(last, 0) + step
            step *= 2
            if last >= 2**62:
                break
            continue
        if not batch:
            break
        rows += [r[:-1] for r in batch]
        last = int(batch[-1][-1])
        step, size = 1, min(256, size * 2)
    return rows


def _restore_salvage(store: Store, salvaged: Mapping[str, tuple[list[str], list[tuple[Any, ...]]]]) -> tuple[int, int]:
    db = store.db
    counts = {"conversations": 0, "messages": 0}
    with store._lock:
        db.execute("PRAGMA foreign_keys = OFF")
        try:
            with store.transaction():
                for table in _SALVAGE_TABLES:
                    if table not in salvaged:
                        continue
                    cols, rows = salvaged[table]
                    current = [r[1] for r in db.execute(f"PRAGMA table_info({table})")]
                    use = [c for c in cols if c in current]
                    idx = [cols.index(c) for c in use]
                    sql = f"INSERT OR IGNORE INTO {table} ({', '.join(use)}) VALUES ({', '.join('?' * len(use))})"
                    for row in rows:
                        try:
                            cur = db.execute(sql, [row[i] for i in idx])
                        except sqlite3.Error:
                            continue  # a row damaged beyond use (e.g. NOT NULL lost)
                        if table in counts:
                            counts[table] += cur.rowcount
                # Tie up what the damage cut: orphans go, lost parents make roots, pointers are fixed.
                db.execute("UPDATE conversations SET uid = lower(hex(randomblob(16))) WHERE uid IS NULL")
                db.execute("DELETE FROM messages WHERE conversation_id NOT IN (SELECT id FROM conversations)")
                db.execute(
                    "UPDATE messages SET parent_id = NULL WHERE parent_id IS NOT NULL AND parent_id NOT IN (SELECT id FROM messages)"
                )
                db.execute("UPDATE messages SET status = 'interrupted' WHERE status = 'streaming'")
                db.execute(
                    "UPDATE conversations SET active_leaf_id = NULL WHERE active_leaf_id NOT IN (SELECT id FROM messages)"
                )
                db.execute("INSERT INTO messages_fts(messages_fts) VALUES ('rebuild')")
        finally:
            db.execute("PRAGMA foreign_keys = ON")
        counts["messages"] = int(db.execute("SELECT count(*) FROM messages").fetchone()[0])
        counts["conversations"] = int(db.execute("SELECT count(*) FROM conversations").fetchone()[0])
    return counts["conversations"], counts["messages"]
