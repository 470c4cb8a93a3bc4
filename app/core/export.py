"""Export conversations to Markdown and to complete, re-importable JSON; import that JSON back with validation."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from app.core.errors import HarmonicaError
from app.core.fsutil import FileTooLargeError, atomic_write, read_bounded
from app.core.store import (
    ROLES,
    STATUSES,
    TITLE_SOURCES,
    ConversationRow,
    ConversationSettings,
    MessageRow,
    Store,
)
from app.core.tools.safe_files import clean_image_entries

EXPORT_FORMAT: Final = "harmonica.conversations"
EXPORT_VERSION: Final = 1
# A JSON export this large is almost certainly not ours; refusing it early keeps a mistaken pick
# (a model file, a disk image) from being read into memory.
MAX_IMPORT_BYTES: Final = 512 * 1024 * 1024

_ROLE_HEADINGS: Final = {"user": "You", "assistant": "Assistant", "system": "System", "developer": "Developer"}


class ImportFormatError(HarmonicaError, ValueError):
    """An import file is not a valid Harmonica export; the message says where and why."""


# --- JSON export ------------------------------------------------------------------------------------


def conversation_to_dict(store: Store, conversation_id: int) -> dict[str, Any]:
    """One conversation with every branch, its settings, stats, tool calls and the active branch."""
    conv = store.get_conversation(conversation_id)
    messages = _parents_first(store.conversation_messages(conversation_id))
    return {
        "uid": conv.uid,
        "title": conv.title,
        "title_source": conv.title_source,
        "created": conv.created,
        "updated": conv.updated,
        "settings": conv.settings.to_dict(),
        "active_leaf": conv.active_leaf_id,
        "messages": [_message_to_dict(m) for m in messages],
    }


def _message_to_dict(m: MessageRow) -> dict[str, Any]:
    return {
        "id": m.id,
        "parent": m.parent_id,
        "role": m.role,
        "content": m.content,
        "thinking": m.thinking,
        "tool_calls": m.tool_calls,
        "tool_name": m.tool_name,
        "tool_call_id": m.tool_call_id,
        "effort": m.effort,
        "stats": m.stats,
        "model": m.model,
        "status": m.status,
        "created": m.created,
        "updated": m.updated,
        "visited": m.visited,
        "extra": m.extra,
    }


def export_json(store: Store, conversation_ids: Iterable[int] | None = None) -> dict[str, Any]:
    """The export document; ``None`` exports every conversation that is not deleted."""
    if conversation_ids is None:
        ids: list[int] = []
        before = None
        while page := store.list_conversations(limit=500, before=before):
            ids += [c.id for c in page]
            before = (page[-1].updated, page[-1].id)
    else:
        ids = list(conversation_ids)
    return {
        "format": EXPORT_FORMAT,
        "version": EXPORT_VERSION,
        "exported": time.time(),
        "conversations": [conversation_to_dict(store, cid) for cid in ids],
    }


def write_json(store: Store, path: str | Path, conversation_ids: Iterable[int] | None = None) -> Path:
    """Write the export atomically (a crash mid-write never leaves a half file under ``path``)."""
    return atomic_write(path, json.dumps(export_json(store, conversation_ids), ensure_ascii=False, indent=1))


# --- JSON import ------------------------------------------------------------------------------------


@dataclass
class _ConversationImport:
    uid: str | None
    title: str
    title_source: str
    created: float
    updated: float
    settings: ConversationSettings
    messages: list[MessageRow]
    active_leaf: int | None


def read_import_file(path: str | Path) -> Any:
    """Load an import file's JSON, with plain-language errors for every way that can fail."""
    p = Path(path)
    try:
        raw = read_bounded(p, MAX_IMPORT_BYTES).data
    except FileNotFoundError:
        raise ImportFormatError(f"{p} does not exist.") from None
    except IsADirectoryError:
        raise ImportFormatError(f"{p} is a folder, not an export file.") from None
    except FileTooLargeError as exc:
        raise ImportFormatError(f"{p} is {exc.size / 2**20:.0f} MiB, too large to be a Harmonica export.") from None
    except OSError as exc:
        raise ImportFormatError(f"{p} cannot be read: {exc.strerror or exc}.") from exc
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ImportFormatError(f"{p} is not a text file (it is not UTF-8), so it is not a Harmonica export.") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ImportFormatError(f"{p} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}).") from None


def validate_export(data: Any) -> list[_ConversationImport]:
    """Check a whole export document before anything is written; raise ImportFormatError at the first problem."""
    if not isinstance(data, Mapping):
        raise ImportFormatError("This is not a Harmonica export: the file holds JSON, but not an object.")
    if data.get("format") != EXPORT_FORMAT:
        raise ImportFormatError(
            f'This is not a Harmonica export: its "format" is {data.get("format")!r}, expected {EXPORT_FORMAT!r}.'
        )
    version = data.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ImportFormatError(f'The export\'s "version" must be a positive whole number, not {version!r}.')
    if version > EXPORT_VERSION:
        raise ImportFormatError(
            f"This export was written by a newer Harmonica (format version {version}; this version reads up to "
            f"{EXPORT_VERSION}). Update Harmonica to import it."
        )
    convs = data.get("conversations")
    if not isinstance(convs, list):
        raise ImportFormatError('The export has no "conversations" list.')
    return [_validate_conversation(c, f"conversations[{i}]") for i, c in enumerate(convs)]


def _validate_conversation(c: Any, where: str) -> _ConversationImport:
    if not isinstance(c, Mapping):
        raise ImportFormatError(f"{where}: expected an object.")
    uid = _opt(c, "uid", str, where)
    title = _opt(c, "title", str, where) or ""
    title_source = _opt(c, "title_source", str, where) or ("user" if title else "auto")
    if title_source not in TITLE_SOURCES:
        raise ImportFormatError(
            f"{where}.title_source: expected one of {', '.join(TITLE_SOURCES)}, got {title_source!r}."
        )
    created = _time(c, "created", where, default=time.time())
    updated = _time(c, "updated", where, default=created)
    settings_raw = c.get("settings", {})
    if not isinstance(settings_raw, Mapping):
        raise ImportFormatError(f"{where}.settings: expected an object.")
    msgs_raw = c.get("messages")
    if not isinstance(msgs_raw, list):
        raise ImportFormatError(f"{where}.messages: expected a list.")
    messages = [_validate_message(m, f"{where}.messages[{j}]", created) for j, m in enumerate(msgs_raw)]
    ids = [m.id for m in messages]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise ImportFormatError(f"{where}.messages: the id {dup} is used twice.")
    known = set(ids)
    for j, m in enumerate(messages):
        if m.parent_id is not None and m.parent_id not in known:
            raise ImportFormatError(
                f"{where}.messages[{j}].parent: no message with id {m.parent_id} in this conversation."
            )
    ordered = _parents_first(messages)
    if len(ordered) != len(messages):
        raise ImportFormatError(f"{where}.messages: the parent links form a loop.")
    active = c.get("active_leaf")
    if active is not None and (isinstance(active, bool) or not isinstance(active, int) or active not in known):
        raise ImportFormatError(f"{where}.active_leaf: no message with id {active!r} in this conversation.")
    return _ConversationImport(
        uid,
        title,
        title_source,
        created,
        updated,
        ConversationSettings.from_dict(settings_raw).without_runs_on(),
        ordered,
        active,
    )


def _validate_message(m: Any, where: str, conv_created: float) -> MessageRow:
    if not isinstance(m, Mapping):
        raise ImportFormatError(f"{where}: expected an object.")
    mid = m.get("id")
    if isinstance(mid, bool) or not isinstance(mid, int):
        raise ImportFormatError(f"{where}.id: expected a whole number, got {mid!r}.")
    parent = m.get("parent")
    if parent is not None and (isinstance(parent, bool) or not isinstance(parent, int)):
        raise ImportFormatError(f"{where}.parent: expected a message id or null, got {parent!r}.")
    role = m.get("role")
    if role not in ROLES:
        raise ImportFormatError(f"{where}.role: expected one of {', '.join(ROLES)}, got {role!r}.")
    status = m.get("status", "complete")
    if status not in STATUSES:
        raise ImportFormatError(f"{where}.status: expected one of {', '.join(STATUSES)}, got {status!r}.")
    tool_calls = m.get("tool_calls") or []
    if not isinstance(tool_calls, list):
        raise ImportFormatError(f"{where}.tool_calls: expected a list.")
    for k, call in enumerate(tool_calls):
        if not isinstance(call, Mapping) or not isinstance(call.get("recipient"), str) or not call["recipient"]:
            raise ImportFormatError(f'{where}.tool_calls[{k}]: expected an object with a "recipient".')
        if not isinstance(call.get("arguments", ""), (str, Mapping, list)):
            raise ImportFormatError(f"{where}.tool_calls[{k}].arguments: expected text or JSON.")
    stats = m.get("stats") or {}
    extra = m.get("extra") or {}
    for key, value in (("stats", stats), ("extra", extra)):
        if not isinstance(value, Mapping):
            raise ImportFormatError(f"{where}.{key}: expected an object.")
    extra = dict(extra)
    run = extra.get("tool_run")
    if isinstance(run, Mapping):
        # A tool card's images: only embedded image bytes survive an import. A path would point at
        # the importing user's own files (the card would open them, the desktop would launch them).
        extra["tool_run"] = {**run, "images": clean_image_entries(run.get("images"))}
    created = _time(m, "created", where, default=conv_created)
    return MessageRow(
        id=mid,
        conversation_id=0,
        parent_id=parent,
        role=role,
        content=_opt(m, "content", str, where) or "",
        thinking=_opt(m, "thinking", str, where) or "",
        tool_calls=[dict(c) for c in tool_calls],
        tool_name=_opt(m, "tool_name", str, where),
        tool_call_id=_opt(m, "tool_call_id", str, where),
        effort=_opt(m, "effort", str, where),
        stats=dict(stats),
        model=_opt(m, "model", str, where),
        status=status,
        created=created,
        updated=_time(m, "updated", where, default=created),
        visited=_time(m, "visited", where, default=created),
        extra=extra,
    )


def _opt(d: Mapping[str, Any], key: str, typ: type, where: str) -> Any:
    value = d.get(key)
    if value is not None and not isinstance(value, typ):
        raise ImportFormatError(f"{where}.{key}: expected {typ.__name__ if typ is not str else 'text'}, got {value!r}.")
    return value


def _time(d: Mapping[str, Any], key: str, where: str, default: float) -> float:
    value = d.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ImportFormatError(f"{where}.{key}: expected a time in seconds since 1970, got {value!r}.")
    return float(value)


def _parents_first(messages: Sequence[MessageRow]) -> list[MessageRow]:
    """Order so every parent comes before its children (stable otherwise); drops rows in a loop."""
    children: dict[int | None, list[MessageRow]] = {}
    ids = {m.id for m in messages}
    for m in messages:
        children.setdefault(m.parent_id if m.parent_id in ids else None, []).append(m)
    out: list[MessageRow] = []
    stack = list(reversed(children.get(None, [])))
    while stack:
        m = stack.pop()
        out.append(m)
        stack.extend(reversed(children.get(m.id, [])))
    return out


def import_json(store: Store, source: Any) -> list[int]:
    """Import an export (a path, or the already-loaded document). All or nothing; returns new ids.

    Imported conversations are copies: ids are renumbered, and a conversation whose uid already
    exists gets a new one, so importing the same file twice gives two copies and never clobbers.
    """
    data = read_import_file(source) if isinstance(source, (str, Path)) else source
    convs = validate_export(data)
    new_ids: list[int] = []
    with store.transaction():
        for c in convs:
            new_ids.append(
                store.insert_conversation_tree(
                    uid=c.uid,
                    title=c.title,
                    title_source=c.title_source,
                    created=c.created,
                    updated=c.updated,
                    settings=c.settings,
                    messages=c.messages,
                    active_leaf_id=c.active_leaf,
                )
            )
    return new_ids


# --- Markdown -----------------------------------------------------------------------------------------


def message_markdown(message: MessageRow, *, include_reasoning: bool = False) -> str:
    """One message as Markdown (the body of "Copy as Markdown", without a heading)."""
    parts: list[str] = []
    if include_reasoning and message.thinking.strip():
        # <details> folds the reasoning away on GitHub and most viewers; the blank lines let the
        # reasoning's own markdown render inside it.
        parts.append(f"<details>\n<summary>Reasoning</summary>\n\n{message.thinking.strip()}\n\n</details>")
    preamble = message.extra.get("preamble")
    if isinstance(preamble, str) and preamble.strip():
        parts.append(f"*{preamble.strip()}*")
    if message.role == "tool":
        parts.append(_fenced(message.content, _json_lang(message.content)))
    elif message.content.strip():
        parts.append(message.content.strip())
    for call in message.tool_calls:
        args = call.get("arguments", "")
        try:
            args = (
                json.dumps(json.loads(args), ensure_ascii=False, indent=2)
                if isinstance(args, str)
                else json.dumps(args, indent=2)
            )
            lang = "json"
        except ValueError:
            lang = ""
        parts.append(f"**Tool call** `{call.get('recipient', '')}`\n\n{_fenced(str(args), lang)}")
    if message.status == "interrupted":
        parts.append("*(interrupted)*")
    return "\n\n".join(parts)


def _json_lang(text: str) -> str:
    try:
        json.loads(text)
    except ValueError:
        return ""
    return "json"


def _fenced(text: str, lang: str = "") -> str:
    fence = "```"
    while fence in text:  # a fence longer than any run of backticks inside keeps the block closed
        fence += "`"
    return f"{fence}{lang}\n{text.rstrip()}\n{fence}"


def conversation_markdown(
    conversation: ConversationRow,
    path: Sequence[MessageRow],
    *,
    include_reasoning: bool = False,
    include_metadata: bool = True,
) -> str:
    """A branch path (normally the active one) as a Markdown document."""
    lines = [f"# {conversation.display_title}"]
    if include_metadata:
        models = sorted({m.model for m in path if m.model})
        efforts = sorted({m.effort for m in path if m.effort})
        meta = [
            f"Exported from Harmonica on {time.strftime('%Y-%m-%d %H:%M')}",
            f"started {time.strftime('%Y-%m-%d %H:%M', time.localtime(conversation.created))}",
        ]
        if models:
            meta.append("model " + ", ".join(models))
        if efforts:
            meta.append("reasoning effort " + ", ".join(efforts))
        lines.append("*" + " · ".join(meta) + "*")
        instructions = conversation.settings.developer_instructions.strip()
        if instructions:
            lines.append("## Instructions\n\n" + instructions)
    for m in path:
        if m.role == "tool":
            heading = f"## Tool result ({m.tool_name})" if m.tool_name else "## Tool result"
        else:
            heading = f"## {_ROLE_HEADINGS.get(m.role, m.role.title())}"
        body = message_markdown(m, include_reasoning=include_reasoning)
        lines.append(heading + ("\n\n" + body if body else ""))
    return "\n\n".join(lines) + "\n"


def export_markdown(
    store: Store,
    conversation_id: int,
    *,
    include_reasoning: bool = False,
    include_metadata: bool = True,
    path: str | Path | None = None,
) -> str:
    """The active branch of a conversation as Markdown; written atomically to ``path`` when given."""
    text = conversation_markdown(
        store.get_conversation(conversation_id),
        store.active_path(conversation_id),
        include_reasoning=include_reasoning,
        include_metadata=include_metadata,
    )
    if path is not None:
        atomic_write(path, text)
    return text


def markdown_to_text(markdown: str) -> str:
    """Plain text of a Markdown answer ("Copy as text"): no markup, code and list structure kept."""
    from markdown_it import MarkdownIt

    md = MarkdownIt("commonmark").enable(["table", "strikethrough"])
    out: list[str] = []
    lists: list[list[int]] = []  # per open list: [next number] or [-1] for bullets
    for tok in md.parse(markdown):
        t = tok.type
        if t == "inline":
            out.append(_inline_text(tok.children or []))
        elif t in ("fence", "code_block"):
            out.append(tok.content.rstrip("\n") + "\n\n")
        elif t in ("paragraph_close", "heading_close"):
            out.append("\n" if tok.hidden else "\n\n")
        elif t == "bullet_list_open":
            lists.append([-1])
        elif t == "ordered_list_open":
            lists.append([int(tok.attrGet("start") or 1)])
        elif t in ("bullet_list_close", "ordered_list_close"):
            lists.pop()
            if not lists:
                out.append("\n")
        elif t == "list_item_open" and lists:
            indent = "  " * (len(lists) - 1)
            counter = lists[-1]
            if counter[0] < 0:
                out.append(f"{indent}• ")
            else:
                out.append(f"{indent}{counter[0]}. ")
                counter[0] += 1
        elif t == "hr":
            out.append("\n")
        elif t in ("th_close", "td_close"):
            out.append("\t")
        elif t == "tr_close":
            if out and out[-1] == "\t":
                out.pop()
            out.append("\n")
        elif t == "table_close":
            out.append("\n")
        elif t == "html_block":
            out.append(tok.content)
    text = "".join(out)
    while "\n\n\n" in text:
        text = text.replace("\n\n\n", "\n\n")
    return text.strip() + "\n" if text.strip() else ""


def _inline_text(children: Sequence[Any]) -> str:
    parts: list[str] = []
    link_href: list[str | None] = []
    link_start: list[int] = []
    for c in children:
        if c.type in ("text", "code_inline", "html_inline"):
            parts.append(c.content)
        elif c.type in ("softbreak", "hardbreak"):
            parts.append("\n")
        elif c.type == "image":
            parts.append(c.content or "")
        elif c.type == "link_open":
            link_href.append(c.attrGet("href"))
            link_start.append(len(parts))
        elif c.type == "link_close" and link_href:
            href, start = link_href.pop(), link_start.pop()
            label = "".join(parts[start:])
            if href and href != label and not href.startswith("#"):
                parts.append(f" ({href})")
    return "".join(parts)
