"""Caller messages and tools repaired into the exact shape the official template accepts."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from app.core.harmony.constants import BUILTIN_RECIPIENTS, BUILTIN_TOOLS, CALL, CHANNEL, END, MESSAGE, START
from app.core.harmony.errors import HarmonyError
from app.core.harmony.events import ToolCall
from app.core.harmony.parser import parse_completion


def _tojson(value: Any) -> str:
    # Same as transformers' tojson override (ensure_ascii=False, no sorting, default separators).
    return json.dumps(value, ensure_ascii=False)


# ---- input normalisation --------------------------------------------------------------------------
def _text_of(content: Any) -> str:
    """Message content as text: OpenAI content-part lists are joined, other objects JSON-encoded."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence) and not isinstance(content, (bytes, bytearray)):
        parts: list[str] = []
        for part in content:
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, Mapping) and isinstance(part.get("text"), str):
                parts.append(part["text"])
        return "".join(parts)
    if isinstance(content, (bytes, bytearray)):
        return bytes(content).decode("utf-8", "replace")
    try:
        return _tojson(content)
    except (TypeError, ValueError):
        return str(content)


def _parse_arguments(arguments: Any) -> Any:
    """Arguments as a JSON value (a dict normally); a JSON string is decoded, unparseable text kept."""
    if arguments is None:
        return {}
    if isinstance(arguments, str):
        if not arguments.strip():
            return {}
        try:
            return json.loads(arguments)
        except ValueError:
            return arguments
    return arguments


def _tool_call_from_event(call: ToolCall) -> dict[str, Any]:
    name = call.recipient[len("functions.") :] if call.recipient.startswith("functions.") else call.recipient
    fn: dict[str, Any] = {"name": name, "arguments": call.arguments}
    if call.content_type and call.content_type != "json":
        fn["content_type"] = call.content_type
    return {"type": "function", "function": fn}


def _normalise_tool_call(raw: Any, index: int) -> dict[str, Any]:
    if isinstance(raw, ToolCall):
        raw = _tool_call_from_event(raw)
    if not isinstance(raw, Mapping):
        raise HarmonyError(f"message #{index}: a tool call must be a dict, got {type(raw).__name__}")
    inner = raw.get("function")
    fn: Mapping[str, Any] = inner if isinstance(inner, Mapping) else raw
    name = fn.get("name")
    if not isinstance(name, str) or not name.strip():
        raise HarmonyError(f"message #{index}: a tool call has no function name")
    name = name.strip()
    if name.startswith("functions."):
        name = name[len("functions.") :]
    out_fn: dict[str, Any] = {"name": name, "arguments": fn.get("arguments")}
    if fn.get("content_type") is not None:
        out_fn["content_type"] = str(fn["content_type"])
    call: dict[str, Any] = {"type": "function", "function": out_fn}
    if raw.get("id") is not None:
        call["id"] = raw["id"]
    return call


def _split_harmony_text(text: str) -> tuple[str, str, list[dict[str, Any]]]:
    """(reasoning, visible text, tool calls) from raw harmony text pasted into a history message."""
    done = parse_completion(text)
    visible = done.final if done.final else "\n\n".join(p for p in done.preambles if p)
    return done.reasoning, visible, [_tool_call_from_event(c) for c in done.tool_calls]


def _looks_like_harmony(text: str) -> bool:
    return CHANNEL in text or text.startswith(START)


def _normalise_tools(tools: Any) -> list[dict[str, Any]] | None:
    if tools is None:
        return None
    if isinstance(tools, (Mapping, str, bytes)) or not isinstance(tools, Iterable):
        raise HarmonyError("tools must be a list of function tool definitions")
    out: list[dict[str, Any]] = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, Mapping):
            raise HarmonyError(f"tool #{i} must be a dict, got {type(tool).__name__}")
        inner = tool.get("function")
        fn: Mapping[str, Any] = inner if isinstance(inner, Mapping) else tool
        name = fn.get("name")
        if not isinstance(name, str) or not name.strip():
            raise HarmonyError(f"tool #{i} has no name")
        new_fn = dict(fn)
        new_fn["name"] = name.strip()
        desc = fn.get("description")
        new_fn["description"] = "" if desc is None else str(desc)
        if new_fn.get("parameters") is None:
            new_fn.pop("parameters", None)
        new_tool = {k: v for k, v in tool.items() if k != "function"} if fn is not tool else {}
        new_tool.setdefault("type", "function")
        new_tool["function"] = new_fn
        out.append(new_tool)
    return out or None


def _normalise_builtin(builtin_tools: Any) -> list[str] | None:
    if builtin_tools is None:
        return None
    items = [builtin_tools] if isinstance(builtin_tools, str) else list(builtin_tools)
    out: list[str] = []
    for item in items:
        if item not in BUILTIN_TOOLS:
            raise HarmonyError(f"unknown builtin tool {item!r}; gpt-oss knows 'browser' and 'python'")
        if item not in out:
            out.append(item)
    return out or None


def _normalise_messages(messages: Any, declared: frozenset[str] = frozenset()) -> list[dict[str, Any]]:
    """Messages in the exact shape the official template accepts (see render_prompt)."""
    if isinstance(messages, (str, bytes, Mapping)) or not isinstance(messages, Iterable):
        raise HarmonyError("messages must be a list of {'role': ..., 'content': ...} dicts")
    staged = [msg for i, raw in enumerate(messages) if (msg := _normalise_message(raw, i)) is not None]
    out = _one_call_per_message(_merge_instructions(staged))
    _settle_calls_and_results(out, declared)
    return out


def _normalise_message(raw: Any, i: int) -> dict[str, Any] | None:
    """One message in the template's shape; None for one that says nothing (an empty assistant turn)."""
    if not isinstance(raw, Mapping):
        raise HarmonyError(f"message #{i} must be a dict, got {type(raw).__name__}")
    role = raw.get("role")
    if not isinstance(role, str) or not role:
        raise HarmonyError(f"message #{i} has no role")
    msg: dict[str, Any] = {k: v for k, v in raw.items() if v is not None}
    role = role.strip().lower()
    msg["role"] = role = "tool" if role == "function" else role  # the old OpenAI name for tool results
    if role == "assistant":
        return _normalise_assistant(msg, i)
    if role == "tool":
        _normalise_tool_result(msg)
    else:
        msg["content"] = _text_of(msg.get("content"))
    return msg


def _normalise_assistant(msg: dict[str, Any], i: int) -> dict[str, Any] | None:
    if "thinking" not in msg:
        for alias in ("reasoning_content", "reasoning"):
            if isinstance(msg.get(alias), str):
                msg["thinking"] = msg[alias]
                break
    for alias in ("reasoning_content", "reasoning"):
        msg.pop(alias, None)
    thinking = _text_of(msg["thinking"]) if "thinking" in msg else None
    content, thinking, found = _unpack_pasted_harmony(_text_of(msg.get("content")), thinking)
    calls = [_normalise_tool_call(c, i) for c in (msg.pop("tool_calls", None) or found)]
    msg["content"] = content
    if thinking is not None:
        msg["thinking"] = thinking
    if calls:
        msg["tool_calls"] = calls
        # The template rejects content+thinking on a call; the thinking is the real analysis
        # (llama.cpp does the same). Content alone is rendered as analysis, like the template.
        if msg.get("thinking") and msg.get("content"):
            msg["content"] = ""
        if not msg["content"]:
            del msg["content"]
    elif not content and not thinking:
        return None  # an empty assistant message says nothing; the template would render an empty answer
    return msg


def _unpack_pasted_harmony(content: str, thinking: str | None) -> tuple[str, str | None, list[dict[str, Any]]]:
    """Raw harmony output pasted into history, split the way the model meant it: (content, thinking, calls)."""
    found: list[dict[str, Any]] = []
    if thinking is not None and _looks_like_harmony(thinking):
        reasoning, visible, calls = _split_harmony_text(thinking)
        thinking = reasoning
        content = content or visible
        found += calls
    if _looks_like_harmony(content):
        reasoning, visible, calls = _split_harmony_text(content)
        if reasoning:
            thinking = (thinking or "") + reasoning
        content = visible
        found += calls
    return content, thinking, found


def _normalise_tool_result(msg: dict[str, Any]) -> None:
    content = msg.get("content", "")
    if isinstance(content, list) and all(isinstance(p, (str, Mapping)) for p in content):
        msg["content"] = _text_of(content)  # OpenAI content parts
    elif not isinstance(content, str):
        try:
            json.dumps(content, ensure_ascii=False)
        except (TypeError, ValueError):
            msg["content"] = str(content)  # the template would fail on it in tojson


def _merge_instructions(staged: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Leading system/developer messages merge into the one instructions block the template reads."""
    lead = 0
    while lead < len(staged) and staged[lead]["role"] in ("system", "developer"):
        lead += 1
    if lead <= 1:
        return staged
    merged = "\n\n".join(m["content"] for m in staged[:lead] if m["content"])
    return [{"role": staged[0]["role"], "content": merged}] + staged[lead:]


def _one_call_per_message(staged: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The template renders only tool_calls[0]: split parallel calls, each followed by its results."""
    out: list[dict[str, Any]] = []
    i = 0
    while i < len(staged):
        msg = staged[i]
        calls = msg.get("tool_calls") or []
        if msg["role"] != "assistant" or len(calls) < 2:
            out.append(msg)
            i += 1
            continue
        j = i + 1
        while j < len(staged) and staged[j]["role"] == "tool":
            j += 1
        buckets = _results_by_call(calls, staged[i + 1 : j])
        for k, call in enumerate(calls):
            part = {key: v for key, v in msg.items() if key not in ("tool_calls", "thinking", "content")}
            if k == 0:
                part.update({key: msg[key] for key in ("thinking", "content") if key in msg})
            part["tool_calls"] = [call]
            out.append(part)
            out.extend(buckets[k])
        i = j
    return out


def _results_by_call(calls: list[dict[str, Any]], results: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Each call's results, matched by tool_call_id, else by order; the unmatched rest go to the last."""
    buckets: list[list[dict[str, Any]]] = [[] for _ in calls]
    leftovers: list[dict[str, Any]] = []
    ids = [c.get("id") for c in calls]
    for res in results:
        rid = res.get("tool_call_id")
        if rid is not None and rid in ids:
            buckets[ids.index(rid)].append(res)
        else:
            leftovers.append(res)
    for bucket in buckets:
        if not bucket and leftovers:
            bucket.append(leftovers.pop(0))
    buckets[-1].extend(leftovers)
    return buckets


def _settle_calls_and_results(out: list[dict[str, Any]], declared: frozenset[str]) -> None:
    """Fix-ups that need the whole conversation: arguments as JSON values, orphan tool results."""
    pending_call = False
    for msg in out:
        role = msg["role"]
        if role == "assistant":
            pending_call = "tool_calls" in msg
            if pending_call:
                fn = msg["tool_calls"][0]["function"]
                if not _is_builtin(fn["name"], declared):
                    fn["arguments"] = _parse_arguments(fn["arguments"])
                elif fn["arguments"] is None:
                    fn["arguments"] = {}
        elif role == "tool" and not pending_call:
            # The template raises here. We keep what the tool said, as a note in a user turn, so the
            # model still sees it and nothing is silently lost.
            name = msg.get("name")
            label = f"Tool result from {name}" if isinstance(name, str) and name else "Tool result"
            text = _text_of(msg.get("content"))
            msg.clear()
            msg.update({"role": "user", "content": f"[{label}]\n{text}"})


def _is_builtin(name: str, declared: frozenset[str]) -> bool:
    # A function tool the caller declared under a builtin's name stays a function tool.
    return name in BUILTIN_RECIPIENTS and name not in declared


def _builtin_call_text(fn: Mapping[str, Any]) -> str:
    name = fn["name"]
    args = fn.get("arguments")
    if name == "python":
        ctype = fn.get("content_type") or "code"
        if isinstance(args, Mapping) and isinstance(args.get("code"), str):
            body = args["code"]
        else:
            body = args if isinstance(args, str) else _tojson(args)
    else:
        ctype = fn.get("content_type") or "json"
        body = args if isinstance(args, str) else _tojson(args)
    return f"{START}assistant to={name}{CHANNEL}analysis {ctype}{MESSAGE}{body}{CALL}"


def _builtin_result_text(name: str, msg: Mapping[str, Any]) -> str:
    content = msg.get("content")
    text = content if isinstance(content, str) else _text_of(content)
    return f"{START}{name} to=assistant{CHANNEL}analysis{MESSAGE}{text}{END}"
