"""gpt-oss harmony format: render prompts from the model's chat template, parse streamed output."""

from __future__ import annotations

import codecs
import json
import logging
import re
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date as _date_type
from datetime import datetime
from functools import lru_cache
from typing import Any, ClassVar

from app.core.errors import HarmonicaError
from app.core.template_limits import TemplateLimitError, limited_environment, render_limited

# --- Special tokens (o200k_harmony); ids from harmony.md §1 -------------------------------------
START, END, MESSAGE, CHANNEL, CONSTRAIN = "<|start|>", "<|end|>", "<|message|>", "<|channel|>", "<|constrain|>"
RETURN, CALL, ENDOFTEXT, STARTOFTEXT = "<|return|>", "<|call|>", "<|endoftext|>", "<|startoftext|>"
SPECIAL_TOKEN_IDS: dict[str, int] = {
    "<|startoftext|>": 199998,
    "<|endoftext|>": 199999,
    "<|return|>": 200002,
    "<|constrain|>": 200003,
    "<|channel|>": 200005,
    "<|start|>": 200006,
    "<|end|>": 200007,
    "<|message|>": 200008,
    "<|call|>": 200012,
    "<|endofprompt|>": 200018,
}


# --- Stream events ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class ReasoningDelta:
    """Text appended to the analysis channel (chain of thought)."""

    text: str


@dataclass(frozen=True)
class PreambleDelta:
    """Text of a commentary message with no recipient: a user-visible preamble."""

    text: str


@dataclass(frozen=True)
class FinalDelta:
    """Text appended to the final answer."""

    text: str


@dataclass(frozen=True)
class ToolCall:
    """A complete tool call; `recipient` is e.g. "functions.get_weather", "browser.search", "python"."""

    recipient: str
    arguments: str
    channel: str = "commentary"
    content_type: str | None = None


@dataclass(frozen=True)
class Done:
    """End of one generation. stop_reason: "return", "call", "eos", "length", "cancelled" or "error"."""

    stop_reason: str


Event = ReasoningDelta | PreambleDelta | FinalDelta | ToolCall | Done


@dataclass
class Completion:
    """The parsed content of one assistant generation."""

    reasoning: str = ""
    final: str = ""
    preambles: list[str] = field(default_factory=list)
    tool_calls: list[ToolCall] = field(default_factory=list)
    stop_reason: str | None = None


# =================================================================================================
# Errors and small helpers
# =================================================================================================
log = logging.getLogger(__name__)


class HarmonyError(HarmonicaError):
    """A prompt could not be rendered; the message says why in plain words."""


ENDOFPROMPT = "<|endofprompt|>"
BUILTIN_TOOLS = ("browser", "python")
# Recipients of the builtin tools (harmony.md §2). They are called on the analysis channel.
BUILTIN_RECIPIENTS = frozenset({"python", "browser.search", "browser.open", "browser.find"})
DEFAULT_IDENTITY = "You are ChatGPT, a large language model trained by OpenAI."


def _tojson(value: Any) -> str:
    # Same as transformers' tojson override (ensure_ascii=False, no sorting, default separators).
    return json.dumps(value, ensure_ascii=False)


# =================================================================================================
# Prompt rendering
# =================================================================================================
# The fixed builtin-tool sections of the system message, byte-for-byte as the gpt-oss template has them.
BROWSER_SECTION = (
    "## browser\n\n"
    "// Tool for browsing.\n"
    "// The `cursor` appears in brackets before each browsing display: `[{cursor}]`.\n"
    "// Cite information from the tool using the following format:\n"
    "// `【{cursor}†L{line_start}(-L{line_end})?】`, for example: `【6†L9-L11】` or `【8†L3】`.\n"
    "// Do not quote more than 10 words directly from the tool output.\n"
    "// sources=web (default: web)\n"
    "namespace browser {\n\n"
    "// Searches for information related to `query` and displays `topn` results.\n"
    "type search = (_: {\n"
    "query: string,\n"
    "topn?: number, // default: 10\n"
    "source?: string,\n"
    "}) => any;\n\n"
    "// Opens the link `id` from the page indicated by `cursor` starting at line number `loc`, showing `num_lines` lines.\n"
    "// Valid link ids are displayed with the formatting: `【{id}†.*】`.\n"
    "// If `cursor` is not provided, the most recent page is implied.\n"
    "// If `id` is a string, it is treated as a fully qualified URL associated with `source`.\n"
    "// If `loc` is not provided, the viewport will be positioned at the beginning of the document or centered on the most relevant passage, if available.\n"
    "// Use this function without `id` to scroll to a new location of an opened page.\n"
    "type open = (_: {\n"
    "id?: number | string, // default: -1\n"
    "cursor?: number, // default: -1\n"
    "loc?: number, // default: -1\n"
    "num_lines?: number, // default: -1\n"
    "view_source?: boolean, // default: false\n"
    "source?: string,\n"
    "}) => any;\n\n"
    "// Finds exact matches of `pattern` in the current page, or the page given by `cursor`.\n"
    "type find = (_: {\n"
    "pattern: string,\n"
    "cursor?: number, // default: -1\n"
    "}) => any;\n\n"
    "} // namespace browser\n\n"
)
PYTHON_SECTION = (
    "## python\n\n"
    "Use this tool to execute Python code in your chain of thought. The code will not be shown to the user. "
    "This tool should be used for internal reasoning, but not for code that is intended to be visible to the user "
    "(e.g. when creating plots, tables, or files).\n\n"
    "When you send a message containing Python code to python, it will be executed in a stateful Jupyter notebook "
    "environment. python will respond with the output of the execution or time out after 120.0 seconds. "
    "The drive at '/mnt/data' can be used to save and persist user files. "
    "Internet access for this session is UNKNOWN. Depends on the cluster.\n\n"
)


# ---- Jinja environment (the same one HF transformers builds) -------------------------------------
@lru_cache(maxsize=16)
def _compile_template(source: str) -> Any:
    import jinja2
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class _GenerationTag(jinja2.ext.Extension):
        # transformers' AssistantTracker adds `{% generation %}`; rendering-wise it only outputs its body.
        tags: ClassVar[set[str]] = {"generation"}  # type: ignore[misc]  # jinja2 declares it on instances

        def parse(self, parser: Any) -> Any:
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return jinja2.nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

        def _body(self, caller: Any) -> str:
            return str(caller())

    def raise_exception(message: str) -> None:
        raise jinja2.exceptions.TemplateError(message)

    def tojson(
        x: Any, ensure_ascii: bool = False, indent: Any = None, separators: Any = None, sort_keys: bool = False
    ) -> str:
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    class _TemplateDict:
        def __call__(self, *args: Any, **kwargs: Any) -> dict[Any, Any]:
            return dict(*args, **kwargs)

        def fromkeys(self, *args: Any, **kwargs: Any) -> dict[Any, Any]:
            return dict.fromkeys(*args, **kwargs)

    class _Namespace(jinja2.utils.Namespace):
        # Like transformers: namespaces refuse dunder/underscore attributes (sandbox hardening).
        def __init__(*args: Any, **kwargs: Any) -> None:
            self, rest = args[0], args[1:]
            attrs = dict(*rest, **kwargs)
            for name in attrs:
                _Namespace._check(name)
            jinja2.utils.Namespace.__init__(self, attrs)

        def __setitem__(self, name: str, value: Any) -> None:
            _Namespace._check(name)
            jinja2.utils.Namespace.__setitem__(self, name, value)

        @staticmethod
        def _check(name: Any) -> None:
            if isinstance(name, str) and name.startswith("_"):
                raise jinja2.exceptions.SecurityError(f"templates cannot store underscore attributes ({name!r})")

    # Bounded in time, steps and size too (a model file's template may loop or explode).
    env = limited_environment(ImmutableSandboxedEnvironment)(
        trim_blocks=True, lstrip_blocks=True, extensions=[_GenerationTag, jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    env.globals["dict"] = _TemplateDict()
    env.globals["namespace"] = _Namespace
    return env.from_string(source)


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


def _render_with_template(
    source: str,
    msgs: list[dict[str, Any]],
    tools: list[dict[str, Any]] | None,
    builtin: list[str] | None,
    effort: str | None,
    identity: str | None,
    add_generation_prompt: bool,
    when: _date_type | None,
    declared: frozenset[str],
) -> str:
    try:
        template = _compile_template(source)
    except Exception as exc:
        raise HarmonyError(f"the chat template could not be compiled: {exc}") from exc

    # Builtin tool turns: the official template can only write `functions.*` calls. We give it a
    # placeholder call/result with a unique name, then swap in the harmony form for the builtin.
    nonce = secrets.token_hex(6)
    swaps: list[tuple[str, str, str]] = []  # (marker in the output, terminator, replacement text)
    shown: list[dict[str, Any]] = []
    last_builtin: str | None = None
    for msg in msgs:
        role = msg["role"]
        if role == "assistant" and "tool_calls" in msg:
            fn = msg["tool_calls"][0]["function"]
            if _is_builtin(fn["name"], declared):
                name = f"harmonica_{nonce}_c{len(swaps)}_"
                swaps.append((f"to=functions.{name}", CALL, _builtin_call_text(fn)))
                msg = {**msg, "tool_calls": [{"type": "function", "function": {"name": name, "arguments": {}}}]}
                last_builtin = fn["name"]
            else:
                last_builtin = None
        elif role == "assistant":
            last_builtin = None
        elif role == "tool" and last_builtin is not None:
            mark = f"harmonica_{nonce}_r{len(swaps)}_"
            swaps.append((mark, END, _builtin_result_text(last_builtin, msg)))
            msg = {**msg, "content": mark}
        shown.append(msg)

    def strftime_now(fmt: str) -> str:
        return (when if when is not None else datetime.now()).strftime(fmt)

    extra: dict[str, Any] = {}
    if builtin is not None:
        extra["builtin_tools"] = builtin
    if effort is not None:
        extra["reasoning_effort"] = effort
    if identity is not None:
        extra["model_identity"] = identity
    variables = dict(
        messages=shown,
        tools=tools,
        documents=None,
        add_generation_prompt=add_generation_prompt,
        strftime_now=strftime_now,
        **extra,
    )
    try:
        text: str = render_limited(template, variables)
    except TemplateLimitError as exc:
        raise HarmonyError(str(exc)) from None
    except Exception as exc:
        raise HarmonyError(f"the chat template failed: {exc}") from exc

    for mark, terminator, replacement in swaps:
        at = text.find(mark)
        start = text.rfind(START, 0, at) if at >= 0 else -1
        stop = text.find(terminator, at) if at >= 0 else -1
        if start < 0 or stop < 0:
            raise HarmonyError("the chat template cannot show builtin tool (python/browser) turns in the history")
        text = text[:start] + replacement + text[stop + len(terminator) :]
    return text


def render_prompt(
    messages: Sequence[Mapping[str, Any]],
    *,
    chat_template: str | None = None,
    tools: Sequence[Mapping[str, Any]] | None = None,
    builtin_tools: Sequence[str] | None = None,
    reasoning_effort: str | None = "medium",
    model_identity: str | None = None,
    add_generation_prompt: bool = True,
    date: _date_type | None = None,
) -> str:
    """Render a conversation to a gpt-oss prompt.

    With `chat_template` (the model file's own template) the text is byte-identical to HF
    transformers' `apply_chat_template(tokenize=False)` for the same template and kwargs; without
    one, a built-in renderer gives exactly what the official 2025-08-08 template gives.

    Inputs that make the official template fail are repaired first, the same way for both paths:
    `None` values are dropped; `reasoning_content`/`reasoning` become `thinking`; content-part lists
    become text; raw harmony text (`<|channel|>...`) in an assistant message is parsed into
    thinking/content/tool calls; tool-call arguments given as a JSON string become a JSON value
    (unparseable text is kept); an assistant message with several tool calls is split into one
    message per call, each followed by its result (matched on `tool_call_id`, else by order);
    `tool_calls: []` is dropped; a call with both content and thinking keeps the thinking (the
    content is dropped, as llama.cpp does); a tool result with no call before it becomes a user
    turn `[Tool result from NAME]\\n...` so nothing is lost; tools with no description get "";
    leading system/developer messages are merged into the instructions (later ones are dropped,
    as the template does); empty assistant messages are dropped.

    Builtin tool turns (an assistant call to `python` or `browser.search|open|find` that is not a
    declared function tool) are written in harmony form: `<|start|>assistant to=python<|channel|>
    analysis code<|message|>CODE<|call|>` and results `<|start|>python to=assistant<|channel|>
    analysis<|message|>TEXT<|end|>`. With a template, placeholder function turns are rendered and
    then replaced, so the template still decides everything else.

    Raises HarmonyError with a readable message for input or template errors.
    """
    if not isinstance(add_generation_prompt, bool):
        add_generation_prompt = bool(add_generation_prompt)
    norm_tools = _normalise_tools(tools)
    declared = frozenset(t["function"]["name"] for t in norm_tools or [])
    msgs = _normalise_messages(messages, declared)
    if not msgs:
        raise HarmonyError("there are no messages to render")
    builtin = _normalise_builtin(builtin_tools)
    effort = None if reasoning_effort is None else str(reasoning_effort)
    identity = None if model_identity is None else str(model_identity)
    if date is not None and not isinstance(date, _date_type):
        raise HarmonyError(f"date must be a datetime.date, got {type(date).__name__}")
    if chat_template is not None:
        if not isinstance(chat_template, str) or not chat_template.strip():
            raise HarmonyError("the chat template must be a non-empty string")
        return _render_with_template(
            chat_template, msgs, norm_tools, builtin, effort, identity, add_generation_prompt, date, declared
        )
    today = (date if date is not None else datetime.now()).strftime("%Y-%m-%d")
    try:
        return _render_in_python(msgs, norm_tools, builtin, effort, identity, add_generation_prompt, today, declared)
    except HarmonyError:
        raise
    except Exception as exc:  # odd values deep in a tool schema, for example
        raise HarmonyError(f"the conversation could not be rendered: {exc}") from exc


# =================================================================================================
# Streaming parser
# =================================================================================================
_MARKERS = (START, END, MESSAGE, CHANNEL, CONSTRAIN, RETURN, CALL, ENDOFTEXT, STARTOFTEXT, ENDOFPROMPT)
_MARKER_SET = frozenset(_MARKERS)
_MARKER_PREFIXES = frozenset(m[:n] for m in _MARKERS for n in range(1, len(m)))
_MAX_MARKER = max(len(m) for m in _MARKERS)
_ID_TO_MARKER = {v: k for k, v in SPECIAL_TOKEN_IDS.items()}
_utf8_decode = codecs.utf_8_decode
_TERMINATORS = {END: None, RETURN: "return", CALL: "call"}
# A header longer than this without <|message|> is free text (harmony.md §5.3), not a header.
_HEADER_LIMIT = 256
_HEADER_SPLIT = re.compile(r"(<\|channel\|>|<\|constrain\|>)")
_RECIPIENT = re.compile(r"[^\s<>\"'`,;?()\[\]{}]+")
_CTYPE_WORD = re.compile(r"[A-Za-z][\w.+/-]*")
_NOT_RECIPIENTS = frozenset({"assistant", "user", "system", "developer", "all"})
_DROP_CALL_STOPS = frozenset({"length", "cancelled", "error"})

_REASONING, _PREAMBLE, _FINAL, _CALL, _IGNORE = range(5)


def _channel_name(word: str) -> str:
    cleaned = re.sub(r"[^a-z]", "", word.lower())
    for name in ("analysis", "commentary", "final"):
        if cleaned.startswith(name):
            return name
    return cleaned


@dataclass
class _Header:
    role: str = "assistant"
    channel: str | None = None
    recipient: str | None = None
    content_type: str | None = None


def _parse_header(text: str, implicit: bool) -> _Header:
    """Read a header leniently: recipient in the role or channel part, constrain with or without
    its marker, stray `to=assistant`, punctuation after the channel, leaked markers in names."""
    sections = _HEADER_SPLIT.split(text)
    head = _Header()
    recipients: list[str] = []
    extras: list[str] = []
    role_words = sections[0].split()
    if role_words and not role_words[0].startswith("to="):
        # With an implicit start only "assistant" (or a cut-off piece of it) can stand here.
        if not (implicit and "assistant".startswith(role_words[0])):
            head.role = role_words[0]
        role_words = role_words[1:]
    for n in range(1, len(sections), 2):
        marker, words = sections[n], sections[n + 1].split()
        if marker == CHANNEL:
            if words and not words[0].startswith("to="):
                head.channel = _channel_name(words[0])
                words = words[1:]
        elif words:
            head.content_type = words[0]
            words = words[1:]
        for word in words:
            (recipients if word.startswith("to=") else extras).append(word)
    for word in role_words:
        (recipients if word.startswith("to=") else extras).append(word)
    for word in recipients:
        found = _RECIPIENT.match(word[3:].lstrip("\"'`"))
        name = found.group(0).rstrip(".:") if found else ""
        if name and name.lower() not in _NOT_RECIPIENTS:
            head.recipient = name
            break
    if head.content_type is None and len(extras) == 1 and _CTYPE_WORD.fullmatch(extras[0]):
        head.content_type = extras[0]
    return head


def _free_text(text: str) -> str:
    """The message text in a header that never reached <|message|>: what follows the channel name
    (or the role), minus any recipient and content-type words."""
    sections = _HEADER_SPLIT.split(text)
    last = sections[-1]
    if len(sections) > 1:
        last = re.sub(r"^\s*\S+", "", last, count=1)  # the channel name / content type
    else:
        last = re.sub(r"^\s*assistant", "", last, count=1)
    while True:
        trimmed = re.sub(r"^\s*(to=\S+|json|code)(?=\s|$)", "", last, count=1)
        if trimmed == last:
            break
        last = trimmed
    return last.lstrip()


class StreamParser:
    """Turns the pieces of one gpt-oss generation into events, in O(n), never raising.

    The input starts right after the prompt's `<|start|>assistant`. Pieces may be text or bytes
    (UTF-8 split anywhere; invalid bytes become U+FFFD) and may carry the token id, which is
    trusted over the text for special tokens (llama.cpp renders `<|call|>`/`<|return|>` as 0 bytes).
    Splitting the same input differently never changes the merged result.

    Several analysis messages are joined with no separator (as llama.cpp does); each commentary
    message without a recipient is one preamble.

    Leniency choices: text before any header, or a message with no channel, is the final answer;
    an unknown channel name is final; `to=assistant` is not a recipient; any message with a
    recipient (either header position, any channel) is a tool call, emitted when the message ends
    (`<|call|>`, `<|end|>`, `<|return|>`, a new `<|start|>`/`<|channel|>`, or finish() unless the
    stop reason is "length"/"cancelled"/"error", which would make it a truncated call); a header
    over 256 characters, or one ended without `<|message|>`, is read as free text; messages whose
    role is not the assistant (made-up tool output or user turns) are dropped.
    """

    __slots__ = (
        "_args",
        "_bpend",
        "_call",
        "_calls",
        "_done",
        "_dropped_call",
        "_final",
        "_held",
        "_hlen",
        "_hparts",
        "_implicit",
        "_in_header",
        "_kind",
        "_last_stop",
        "_preamble_open",
        "_preambles",
        "_reasoning",
        "_stop_reason",
        "_undecided",
    )

    def __init__(self) -> None:
        self._bpend = b""  # the start of a UTF-8 sequence split across pieces
        self._held = ""  # a possible partial marker, e.g. "<|en"
        self._reasoning: list[str] = []
        self._final: list[str] = []
        self._preambles: list[list[str]] = []
        self._calls: list[ToolCall] = []
        self._last_stop: str | None = None
        self._done = False
        self._stop_reason: str | None = None
        self._dropped_call: ToolCall | None = None
        self._kind = _IGNORE
        self._call: _Header | None = None
        self._args: list[str] = []
        self._preamble_open = False
        self._begin_header(implicit=True)

    # ---- public API --------------------------------------------------------------------------
    def feed(self, piece: str | bytes, token_id: int | None = None) -> list[Event]:
        out: list[Event] = []
        if self._done:
            return out
        try:
            if token_id is not None and token_id in _ID_TO_MARKER:
                self._flush_partial(out)
                self._marker(_ID_TO_MARKER[token_id], out)
                return out
            cls = piece.__class__
            if cls is bytes and not self._bpend and piece.isascii():
                text = piece.decode("ascii")  # type: ignore[union-attr]
            elif cls is str:
                if self._bpend:
                    self._flush_partial(out)  # a text piece ends any dangling UTF-8 sequence
                text = piece
            elif isinstance(piece, (bytes, bytearray, memoryview)):
                data = self._bpend + bytes(piece)
                text, used = _utf8_decode(data, "replace", False)
                self._bpend = data[used:]
            else:
                text = "" if piece is None else str(piece)
            if text:
                if self._held or self._in_header or "<" in text:
                    self._scan(text, out)
                else:
                    self._body_text(text, out)  # the common case: plain text inside a message
        except Exception:  # pragma: no cover - a parser bug must not kill a generation
            log.exception("harmony parser failed on %r", piece, extra={"private": True})  # model text: see core/logs.py
        return out

    def finish(self, stop_reason: str | None = None) -> list[Event]:
        out: list[Event] = []
        if self._done:
            return out
        try:
            self._flush_partial(out)
            stop = stop_reason or self._last_stop or "eos"
            if self._in_header:
                self._end_header_without_message(out)
            if not self._in_header:
                if self._kind == _CALL and stop in _DROP_CALL_STOPS:
                    assert self._call is not None
                    self._dropped_call = ToolCall(
                        self._call.recipient or "",
                        "".join(self._args),
                        self._call_channel(),
                        self._call.content_type,
                    )
                    self._kind = _IGNORE
                self._close(out)
        except Exception:  # pragma: no cover
            log.exception("harmony parser failed while finishing")
            stop = stop_reason or "error"
        self._done = True
        self._stop_reason = stop
        out.append(Done(stop))
        return out

    @property
    def completion(self) -> Completion:
        """Everything parsed so far, merged."""
        return Completion(
            reasoning="".join(self._reasoning),
            final="".join(self._final),
            preambles=["".join(p) for p in self._preambles],
            tool_calls=list(self._calls),
            stop_reason=self._stop_reason,
        )

    @property
    def truncated_call(self) -> ToolCall | None:
        """A tool call cut off by finish("length"/"cancelled"/"error"); it was not emitted."""
        return self._dropped_call

    # ---- text scanning -----------------------------------------------------------------------
    def _flush_partial(self, out: list[Event]) -> None:
        rest = _utf8_decode(self._bpend, "replace", True)[0] if self._bpend else ""
        self._bpend = b""
        if rest:
            self._scan(rest, out)
        if self._held:
            held, self._held = self._held, ""
            self._text(held, out)  # it never became a marker: it is text

    def _scan(self, text: str, out: list[Event]) -> None:
        buf = self._held + text if self._held else text
        self._held = ""
        i, n = 0, len(buf)
        while i < n:
            j = buf.find("<|", i)
            if j < 0:
                if buf[-1] == "<":
                    if n - 1 > i:
                        self._text(buf[i : n - 1], out)
                    self._held = "<"
                else:
                    self._text(buf[i:] if i else buf, out)
                return
            if j > i:
                self._text(buf[i:j], out)
            k = buf.find("|>", j + 2, j + _MAX_MARKER)
            if k >= 0:
                candidate = buf[j : k + 2]
                if candidate in _MARKER_SET:
                    self._marker(candidate, out)
                    i = k + 2
                    continue
            elif n - j < _MAX_MARKER and buf[j:] in _MARKER_PREFIXES:
                self._held = buf[j:]
                return
            self._text("<|", out)  # not a special token, e.g. "<|example|>"
            i = j + 2

    def _text(self, text: str, out: list[Event]) -> None:
        if self._in_header:
            self._header_text(text, out)
        else:
            self._body_text(text, out)

    def _body_text(self, text: str, out: list[Event]) -> None:
        kind = self._kind
        if kind == _FINAL:
            self._final.append(text)
            out.append(FinalDelta(text))
        elif kind == _REASONING:
            self._reasoning.append(text)
            out.append(ReasoningDelta(text))
        elif kind == _CALL:
            self._args.append(text)
        elif kind == _PREAMBLE:
            if not self._preamble_open:
                self._preambles.append([])
                self._preamble_open = True
            self._preambles[-1].append(text)
            out.append(PreambleDelta(text))

    # ---- headers -----------------------------------------------------------------------------
    def _begin_header(self, implicit: bool) -> None:
        self._in_header = True
        self._implicit = implicit
        self._undecided = implicit  # implicit headers may turn out to be bare answer text
        self._hparts: list[str] = []
        self._hlen = 0

    def _header_text(self, text: str, out: list[Event]) -> None:
        if self._undecided:
            seen = "".join(self._hparts) + text if self._hparts else text.lstrip()
            if not seen:
                return
            if seen.startswith(("to=", "assistant")):
                self._undecided = False
                self._hparts, self._hlen = [], 0
                text = seen
            elif "to=".startswith(seen) or "assistant".startswith(seen):
                self._hparts, self._hlen = [seen], len(seen)
                return
            else:
                # No header at all: the model went straight to its answer.
                self._start_body(_Header(channel="final"))
                self._body_text(seen, out)
                return
        self._hparts.append(text)
        self._hlen += len(text)
        if self._hlen > _HEADER_LIMIT:
            self._overflow(out)

    def _header_marker(self, marker: str, out: list[Event]) -> None:
        if self._undecided:
            self._undecided = False  # a channel/constrain marker: this is a header
        self._hparts.append(marker)
        self._hlen += len(marker)
        if self._hlen > _HEADER_LIMIT:
            self._overflow(out)

    def _overflow(self, out: list[Event]) -> None:
        whole = "".join(self._hparts)
        head, tail = whole[:_HEADER_LIMIT], whole[_HEADER_LIMIT:]
        self._start_body(_parse_header(head, self._implicit))
        self._body_text(_free_text(head) + tail, out)

    def _end_header_without_message(self, out: list[Event]) -> None:
        """A terminator (or the end) came before <|message|>: read the header as free text."""
        whole = "".join(self._hparts)
        if not whole.strip():
            self._in_header = True
            return
        if self._undecided:
            self._start_body(_Header(channel="final"))
            self._body_text(whole, out)
            return
        head = _parse_header(whole, self._implicit)
        free = _free_text(whole)
        if head.recipient is not None and not free:
            return  # a call header that never got its arguments: nothing to run
        self._start_body(head)
        if free:
            self._body_text(free, out)

    def _start_body(self, head: _Header) -> None:
        self._in_header = False
        self._undecided = False
        self._hparts = []
        self._hlen = 0
        self._preamble_open = False
        if not head.role.lower().startswith("assistant"):
            self._kind = _IGNORE  # the model writing another author's message (e.g. made-up tool output)
        elif head.recipient is not None:
            self._kind = _CALL
            self._call = head
            self._args = []
        elif head.channel == "analysis":
            self._kind = _REASONING
        elif head.channel == "commentary":
            self._kind = _PREAMBLE
        else:
            self._kind = _FINAL

    def _call_channel(self) -> str:
        channel = self._call.channel if self._call is not None else None
        return channel if channel in ("analysis", "commentary", "final") else "commentary"

    def _close(self, out: list[Event]) -> None:
        """End the open message (if any)."""
        if self._in_header:
            return
        if self._kind == _CALL and self._call is not None:
            call = ToolCall(
                recipient=self._call.recipient or "",
                arguments="".join(self._args),
                channel=self._call_channel(),
                content_type=self._call.content_type,
            )
            self._calls.append(call)
            out.append(call)
        self._kind = _IGNORE
        self._call = None
        self._args = []
        self._preamble_open = False

    # ---- markers -----------------------------------------------------------------------------
    def _marker(self, marker: str, out: list[Event]) -> None:
        if marker in _TERMINATORS:
            if self._in_header:
                self._end_header_without_message(out)
            self._close(out)
            self._last_stop = _TERMINATORS[marker]
            self._begin_header(implicit=True)
        elif marker == START:
            if self._in_header:
                self._end_header_without_message(out)  # bare text or a header with free text
            self._close(out)
            self._begin_header(implicit=False)
        elif marker == MESSAGE:
            if self._in_header:
                # Undecided means only whitespace or a fragment like "to" came before: no header.
                head = _Header() if self._undecided else _parse_header("".join(self._hparts), self._implicit)
                self._start_body(head)
            # a stray <|message|> inside a message is dropped
        elif marker == CHANNEL:
            if not self._in_header:
                # <|channel|> inside a message: the model skipped <|end|><|start|>assistant.
                self._close(out)
                self._begin_header(implicit=True)
            self._header_marker(marker, out)
        elif marker == CONSTRAIN and self._in_header:
            self._header_marker(marker, out)
        # <|endoftext|>, <|startoftext|>, <|endofprompt|>: nothing to show


def parse_completion(raw: str, stop_reason: str | None = None) -> Completion:
    """Parse one whole generation (text after `<|start|>assistant`) into a Completion."""
    parser = StreamParser()
    parser.feed(raw if isinstance(raw, (str, bytes)) else str(raw))
    parser.finish(stop_reason)
    return parser.completion


__all__ = [
    "BROWSER_SECTION",
    "BUILTIN_RECIPIENTS",
    "BUILTIN_TOOLS",
    "CALL",
    "CHANNEL",
    "CONSTRAIN",
    "DEFAULT_IDENTITY",
    "END",
    "ENDOFPROMPT",
    "ENDOFTEXT",
    "MESSAGE",
    "PYTHON_SECTION",
    "RETURN",
    "SPECIAL_TOKEN_IDS",
    "START",
    "STARTOFTEXT",
    "Completion",
    "Done",
    "Event",
    "FinalDelta",
    "HarmonyError",
    "PreambleDelta",
    "ReasoningDelta",
    "StreamParser",
    "ToolCall",
    "parse_completion",
    "render_prompt",
]
