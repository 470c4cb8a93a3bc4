"""Conversions between chat objects and stored rows: message fields, tool calls, titles, prompt rendering."""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

from app.core.store.rows import STATUSES, TITLE_MAX_CHARS, MessageRow

if TYPE_CHECKING:
    from app.core.chat import Message


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


def message_from_row(row: MessageRow) -> Message:
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
