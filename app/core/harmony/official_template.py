"""The built-in renderer: the same bytes as the official 2025-08-08 gpt-oss template, in plain Python."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from app.core.harmony.constants import (
    BROWSER_SECTION,
    CALL,
    CHANNEL,
    DEFAULT_IDENTITY,
    END,
    MESSAGE,
    PYTHON_SECTION,
    RETURN,
    START,
)
from app.core.harmony.errors import HarmonyError
from app.core.harmony.normalise import _builtin_call_text, _builtin_result_text, _is_builtin, _tojson


# ---- pure-Python renderer (same bytes as the official 2025-08-08 template) -----------------------
def _get(spec: Any, key: str) -> Any:
    return spec.get(key) if isinstance(spec, Mapping) else None


def _ts_type(spec: Any) -> str:
    """JSON schema → TypeScript, following the template macro exactly (quirks included)."""
    kind = _get(spec, "type")
    if kind == "array":
        return _ts_array(spec)
    if isinstance(kind, (list, tuple)) and kind:
        return " | ".join(str(k) for k in kind)
    one_of = _get(spec, "oneOf")
    if one_of:
        return _ts_one_of(list(one_of))
    if kind == "string":
        enum = _get(spec, "enum")
        if enum:
            return '"' + '" | "'.join(str(e) for e in enum) + '"'
        return "string | null" if _get(spec, "nullable") else "string"
    if kind in ("number", "integer"):
        return "number"
    if kind == "boolean":
        return "boolean"
    if kind == "object":
        return _ts_object(spec)
    return "any"


def _ts_array(spec: Any) -> str:
    items = _get(spec, "items")
    if not items:
        text = "any[]"
    elif _get(items, "type") in ("string", "number", "boolean"):
        text = f"{_get(items, 'type')}[]"
    elif _get(items, "type") == "integer":
        text = "number[]"
    else:
        inner = _ts_type(items)
        text = "any[]" if inner == "object | object" or len(inner) > 50 else inner + "[]"
    return text + " | null" if _get(spec, "nullable") else text


def _ts_one_of(variants: list[Any]) -> str:
    # The template means to write `any` for unions of objects, but that flag never leaves its
    # loop, so it always writes the union, with its odd spacing.
    pieces: list[str] = []
    for n, variant in enumerate(variants):
        piece = _ts_type(variant)
        if _get(variant, "description"):
            piece += "// " + str(variant["description"])
        if isinstance(variant, Mapping) and "default" in variant:
            piece += "                    // default: " + _tojson(variant["default"])
        if n < len(variants) - 1:
            piece += " | \n"
        pieces.append(piece)
    return "".join(pieces)


def _ts_object(spec: Any) -> str:
    props = _get(spec, "properties")
    if not props or not isinstance(props, Mapping):
        return "object"
    required = _get(spec, "required") or []
    members = [
        f"{key}{'' if key in required else '?'}: \n                {_ts_type(sub)}" for key, sub in props.items()
    ]
    return "{\n" + ", ".join(members) + "}"


def _functions_namespace(tools: list[dict[str, Any]]) -> str:
    out = ["## functions\n\nnamespace functions {\n\n"]
    for tool in tools:
        fn = tool["function"]
        out.append(f"// {fn['description']}\ntype {fn['name']} = ")
        params = fn.get("parameters")
        props = _get(params, "properties")
        if params and props and isinstance(props, Mapping):
            out.append("(_: {\n")
            required = params.get("required") or []
            for name, spec in props.items():
                if _get(spec, "description"):
                    out.append(f"// {spec['description']}\n")
                out.append(f"{name}{'' if name in required else '?'}: {_ts_type(spec)}")
                if isinstance(spec, Mapping) and "default" in spec:
                    if spec.get("enum"):
                        out.append(f", // default: {spec['default']}")
                    elif spec.get("oneOf"):
                        out.append(f"// default: {spec['default']}")
                    else:
                        out.append(", // default: " + _tojson(spec["default"]))
                out.append(",\n")
            out.append("}) => any;\n\n")
        else:
            out.append("() => any;\n\n")
    out.append("} // namespace functions")
    return "".join(out)


def _render_in_python(
    msgs: list[dict[str, Any]],
    tools: list[dict[str, Any]] | None,
    builtin: list[str] | None,
    effort: str | None,
    identity: str | None,
    add_generation_prompt: bool,
    today: str,
    declared: frozenset[str],
) -> str:
    out = [_system_message(tools, builtin, effort, identity, today)]
    if msgs[0]["role"] in ("developer", "system"):
        instructions, rest = msgs[0]["content"], msgs[1:]
    else:
        instructions, rest = "", msgs
    if instructions or tools:
        out.append(f"{START}developer{MESSAGE}")
        if instructions:
            out.append(f"# Instructions\n\n{instructions}\n\n")
        if tools:
            out.append("# Tools\n\n" + _functions_namespace(tools))
        out.append(END)
    out += _history(rest, add_generation_prompt, declared)
    if add_generation_prompt:
        out.append(f"{START}assistant")
    return "".join(out)


def _system_message(
    tools: list[dict[str, Any]] | None, builtin: list[str] | None, effort: str | None, identity: str | None, today: str
) -> str:
    out = [
        f"{START}system{MESSAGE}{DEFAULT_IDENTITY if identity is None else identity}\n",
        f"Knowledge cutoff: 2024-06\nCurrent date: {today}\n\n",
        f"Reasoning: {'medium' if effort is None else effort}\n\n",
    ]
    if builtin:
        out.append("# Tools\n\n")
        if "browser" in builtin:
            out.append(BROWSER_SECTION)
        if "python" in builtin:
            out.append(PYTHON_SECTION)
    out.append("# Valid channels: analysis, commentary, final. Channel must be included for every message.")
    if tools:
        out.append("\nCalls to these tools must go to the commentary channel: 'functions'.")
    out.append(END)
    return "".join(out)


def _history(rest: list[dict[str, Any]], add_generation_prompt: bool, declared: frozenset[str]) -> list[str]:
    """The conversation after the instructions, message by message."""
    out: list[str] = []
    last_call: str | None = None
    for n, msg in enumerate(rest):
        role = msg["role"]
        if role == "assistant" and "tool_calls" in msg:
            answered_later = any(m["role"] == "assistant" and "tool_calls" not in m for m in rest[n + 1 :])
            out.append(_assistant_call(msg, answered_later, declared))
            last_call = msg["tool_calls"][0]["function"]["name"]
        elif role == "assistant" and n == len(rest) - 1 and not add_generation_prompt:
            if "thinking" in msg:
                out.append(f"{START}assistant{CHANNEL}analysis{MESSAGE}{msg['thinking']}{END}")
            out.append(f"{START}assistant{CHANNEL}final{MESSAGE}{msg['content']}{RETURN}")
        elif role == "assistant":
            out.append(f"{START}assistant{CHANNEL}final{MESSAGE}{msg['content']}{END}")
            last_call = None
        elif role == "tool":
            out.append(_tool_result(msg, last_call, declared))
        elif role == "user":
            out.append(f"{START}user{MESSAGE}{msg['content']}{END}")
    return out


def _assistant_call(msg: dict[str, Any], answered_later: bool, declared: frozenset[str]) -> str:
    """A tool call, after its analysis while the tool loop still runs (harmony.md §4.4)."""
    fn = msg["tool_calls"][0]["function"]
    analysis = msg.get("content") or msg.get("thinking")
    text = f"{START}assistant{CHANNEL}analysis{MESSAGE}{analysis}{END}" if analysis and not answered_later else ""
    if _is_builtin(fn["name"], declared):
        return text + _builtin_call_text(fn)
    ctype = fn.get("content_type", "json")
    head = f"{START}assistant to=functions.{fn['name']}{CHANNEL}commentary {ctype}{MESSAGE}"
    return text + head + _tojson(fn["arguments"]) + CALL


def _tool_result(msg: dict[str, Any], last_call: str | None, declared: frozenset[str]) -> str:
    if last_call is None:  # normalisation removes these; kept as a guard
        raise HarmonyError("a tool result has no tool call before it")
    if _is_builtin(last_call, declared):
        return _builtin_result_text(last_call, msg)
    return f"{START}functions.{last_call} to=assistant{CHANNEL}commentary{MESSAGE}" + _tojson(msg["content"]) + END
