"""Request parsing: an OpenAI chat-completions or responses body → a validated GenerationRequest (pure functions).

Messages come in OpenAI's shapes and leave as the transformers-format messages that
harmony.render_prompt reads. Text a client sends is defused (control tokens cannot be smuggled
in), except raw harmony an assistant message carries back (harmony.md §5.5). Scalar parameters
are read through the field table in types.py.
"""

from __future__ import annotations

import json
import re
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from app.core import chat
from app.core.server.errors import invalid
from app.core.server.structured import ToolPlan, check_schema, read_output_format
from app.core.server.types import GenerationRequest, read_bool, read_effort, read_sampling

_TOOL_NAME_RE: Final = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_TEXT_PARTS: Final = ("text", "input_text", "output_text", "reasoning_text", "summary_text", "refusal")
_NON_TEXT_PARTS: Final = ("image_url", "input_image", "input_audio", "input_file", "file")
_CHAT_ROLES: Final = ("system", "developer", "user", "assistant", "tool", "function")
_MAX_STOPS: Final = 4
# Responses input items of hosted tools (web_search_call, custom_tool_call_output, …) that clients
# such as Codex send back: this server has no such tool, so they are left out, not refused.
_SKIPPED_ITEM_SUFFIXES: Final = ("_call", "_call_output", "item_reference")


class ReasoningMemory:
    """The reasoning behind recent tool calls, by call id.

    gpt-oss must see its earlier analysis again while a tool loop runs (harmony.md §4.4, §5.4), but
    most OpenAI clients send back only the call and its result. Bounded: the oldest are forgotten.
    """

    def __init__(self, size: int = 512) -> None:
        self._items: OrderedDict[str, str] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def put(self, call_id: str, reasoning: str) -> None:
        if not reasoning:
            return
        with self._lock:
            self._items[call_id] = reasoning
            self._items.move_to_end(call_id)
            while len(self._items) > self._size:
                self._items.popitem(last=False)

    def get(self, call_id: Any) -> str | None:
        if not isinstance(call_id, str):
            return None
        with self._lock:
            return self._items.get(call_id)


# --- pieces both endpoints share -------------------------------------------------------------------


def _text_parts(content: Any, param: str) -> str:
    """Message content as text; content-part lists must be text parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise invalid(f"'{param}' must be a string or a list of content parts.", param)
    return "".join(_text_part(part, f"{param}[{j}]") for j, part in enumerate(content))


def _text_part(part: Any, where: str) -> str:
    if isinstance(part, str):
        return part
    if not isinstance(part, Mapping):
        raise invalid(f"'{where}' must be a content part object.", where)
    kind = part.get("type")
    if kind in _TEXT_PARTS:
        text = part.get("text", part.get("refusal"))
        if not isinstance(text, str):
            raise invalid(f"'{where}.text' must be a string.", f"{where}.text")
        return text
    if kind in _NON_TEXT_PARTS:
        raise invalid(f"gpt-oss reads text only; '{where}' is of type '{kind}'.", where)
    raise invalid(f"Unknown content part type {json.dumps(kind)} in '{where}'.", f"{where}.type")


def _defuse(text: str) -> str:
    return chat._defuse(text)


def _assistant_text(text: str) -> str:
    # Raw harmony output pasted back by a client is parsed by render_prompt (harmony.md §5.5); any
    # other text that merely mentions a control token stays text.
    return text if "<|channel|>" in text or text.startswith("<|start|>") else _defuse(text)


def _check_model(body: Mapping[str, Any]) -> None:
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise invalid("'model' must be a string.", "model")


# Tool types other clients send that this server cannot run itself; they are left out (and
# noted in the log) rather than refusing the request. web_search is served by the browser when
# Harmonica's browsing is on.
_WEB_SEARCH_TOOLS: Final = ("web_search", "web_search_preview", "web_search_2025_08_26")


@dataclass
class ToolSet:
    """A request's tools after reading: function tools (namespaces flattened), builtins, notes."""

    functions: list[dict[str, Any]] = field(default_factory=list)
    namespaces: dict[str, str] = field(default_factory=dict)  # function name → namespace
    strict: set[str] = field(default_factory=set)
    builtin: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _tools(tools: Any, flat: bool, browsing: bool) -> ToolSet:
    """Validate OpenAI tools (chat: {"type","function":{...}}; responses: flat), keeping what can be used."""
    out = ToolSet()
    if tools is None:
        return out
    if not isinstance(tools, list):
        raise invalid("'tools' must be a list of tools.", "tools")
    for i, tool in enumerate(tools):
        where = f"tools[{i}]"
        if not isinstance(tool, Mapping):
            raise invalid(f"'{where}' must be an object.", where)
        kind = tool.get("type", "function")
        if kind == "function":
            _add_function(out, tool, where, flat, None)
        elif kind == "namespace":
            ns = tool.get("name")
            inner = tool.get("tools")
            if not isinstance(ns, str) or not isinstance(inner, list):
                raise invalid(f"'{where}' must have a name and a list of tools.", where)
            for j, sub in enumerate(inner):
                sub_where = f"{where}.tools[{j}]"
                if isinstance(sub, Mapping) and sub.get("type", "function") == "function":
                    _add_function(out, sub, sub_where, True, ns)
                else:
                    out.notes.append(f"left out {sub_where}: only function tools of a namespace can be used")
        elif kind in _WEB_SEARCH_TOOLS:
            if browsing:
                if "browser" not in out.builtin:
                    out.builtin.append("browser")
            else:
                out.notes.append(f"left out {where} ({kind}): web browsing is off in Harmonica")
        else:
            out.notes.append(f"left out {where}: tools of type {json.dumps(kind)} are not available here")
    names = [t["function"]["name"] for t in out.functions]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise invalid(f"Two tools share the name {json.dumps(dupes[0])}; tool names must be unique.", "tools")
    return out


def _add_function(out: ToolSet, tool: Mapping[str, Any], where: str, flat: bool, namespace: str | None) -> None:
    fn = tool if flat else tool.get("function")
    prefix = where if flat else f"{where}.function"
    if not isinstance(fn, Mapping):
        raise invalid(f"'{prefix}' must be an object with the function's name, description and parameters.", prefix)
    name = fn.get("name")
    if not isinstance(name, str) or not _TOOL_NAME_RE.match(name):
        raise invalid(
            f"'{prefix}.name' must be 1–64 letters, digits, '_' or '-'; got {json.dumps(name)}.", f"{prefix}.name"
        )
    desc = fn.get("description")
    if desc is not None and not isinstance(desc, str):
        raise invalid(f"'{prefix}.description' must be a string.", f"{prefix}.description")
    params = fn.get("parameters")
    if params is not None and not isinstance(params, Mapping):
        raise invalid(f"'{prefix}.parameters' must be a JSON schema object.", f"{prefix}.parameters")
    strict = fn.get("strict") is True
    if strict:
        check_schema(params or {"type": "object", "properties": {}}, f"{prefix}.parameters", strict=True)
        out.strict.add(name)
    entry: dict[str, Any] = {"name": name, "description": desc or ""}
    if params:
        entry["parameters"] = dict(params)
    out.functions.append({"type": "function", "function": entry})
    if namespace is not None:
        out.namespaces[name] = namespace


def _tool_choice(choice: Any, tools: ToolSet, flat: bool) -> tuple[list[dict[str, Any]] | None, ToolPlan]:
    """Apply tool_choice: "none" hides the tools; "required" and a named function are enforced by grammar."""
    functions = tools.functions

    def plan(mode: str, kept: list[dict[str, Any]]) -> tuple[list[dict[str, Any]] | None, ToolPlan]:
        names = {t["function"]["name"] for t in kept}
        strict = frozenset(n for n in tools.strict if n in names)
        if mode == "required" and not kept:
            raise invalid('tool_choice is "required" but the request has no function tools.', "tool_choice")
        if mode == "required":  # the grammar will be built from every kept tool's parameters
            for t in kept:
                fn = t["function"]
                if fn["name"] not in strict:  # strict ones were checked already
                    check_schema(fn.get("parameters") or {"type": "object"}, f"tools ({fn['name']})", strict=False)
        return (kept or None), ToolPlan(mode, strict)

    if choice is None or choice == "auto":
        return plan("auto", functions)
    if choice == "required":
        return plan("required", functions)
    if choice == "none":
        return None, ToolPlan("none")
    if isinstance(choice, Mapping):
        kind = choice.get("type")
        if kind == "function":
            fn = choice if flat or "name" in choice else choice.get("function")
            name = fn.get("name") if isinstance(fn, Mapping) else None
            picked = [t for t in functions if t["function"]["name"] == name]
            if not picked:
                raise invalid(
                    f"tool_choice names the function {json.dumps(name)}, which is not in 'tools'.", "tool_choice"
                )
            return plan("required", picked)
        if kind == "allowed_tools":
            # Responses puts mode and tools on the choice; chat completions nests them under "allowed_tools".
            nested = choice.get("allowed_tools")
            if isinstance(nested, Mapping):
                choice = nested
            allowed = choice.get("tools")
            names = {
                (t.get("name") or (t.get("function") or {}).get("name"))
                for t in allowed or []
                if isinstance(t, Mapping)
            }
            mode = choice.get("mode", "auto")
            if mode not in ("auto", "required"):
                raise invalid("tool_choice.mode must be auto or required.", "tool_choice.mode")
            return plan(str(mode), [t for t in functions if t["function"]["name"] in names])
        if kind in _WEB_SEARCH_TOOLS or kind in ("file_search", "code_interpreter", "mcp", "custom"):
            return plan("auto", functions)  # a hosted tool this server serves (or left out): like auto
    raise invalid('\'tool_choice\' must be "none", "auto", "required" or a function.', "tool_choice")


def _call_args(arguments: Any, param: str) -> Any:
    if arguments is None or isinstance(arguments, (str, Mapping)):
        return arguments if arguments is not None else "{}"
    raise invalid(f"'{param}' must be a JSON string.", param)


def _function_call(call_id: str | None, name: str, arguments: Any) -> dict[str, Any]:
    call: dict[str, Any] = {"type": "function", "function": {"name": name, "arguments": arguments}}
    if call_id is not None:
        call["id"] = call_id
    return call


# --- /v1/chat/completions --------------------------------------------------------------------------


def parse_chat_request(
    body: Mapping[str, Any], memory: ReasoningMemory | None = None, *, browsing: bool = False
) -> GenerationRequest:
    """Validate a /v1/chat/completions body; raises ApiError (400) naming the bad parameter.

    `browsing`: Harmonica's web browsing is on, so a web_search tool is served by the browser.
    """
    _check_model(body)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise invalid("'messages' must be a non-empty list of messages.", "messages")
    out = [_chat_message(m, f"messages[{i}]", memory) for i, m in enumerate(messages)]
    toolset = _tools(body.get("tools"), flat=False, browsing=browsing)
    tools, plan = _tool_choice(body.get("tool_choice"), toolset, flat=False)
    opts = body.get("stream_options")
    return GenerationRequest(
        "chat",
        out,
        tools,
        _chat_effort(body),
        read_sampling(body, "chat"),
        read_bool(body, "stream", False),
        include_usage=bool(isinstance(opts, Mapping) and opts.get("include_usage")),
        stop=_stops(body.get("stop")),
        body=body,
        output_format=read_output_format(body.get("response_format"), "response_format", nested=True),
        tool_plan=plan,
        builtin_tools=toolset.builtin if plan.mode != "none" else [],
        namespaces=toolset.namespaces,
        exclude_reasoning=_exclude_reasoning(body),
        notes=toolset.notes,
    )


def _chat_message(m: Any, where: str, memory: ReasoningMemory | None) -> dict[str, Any]:
    if not isinstance(m, Mapping):
        raise invalid(f"'{where}' must be an object with a role and content.", where)
    role = m.get("role")
    if role not in _CHAT_ROLES:
        raise invalid(
            f"'{where}.role' must be system, developer, user, assistant or tool; got {json.dumps(role)}.",
            f"{where}.role",
        )
    text = _text_parts(m.get("content"), f"{where}.content")
    if role in ("system", "developer", "user"):
        return {"role": role, "content": _defuse(text)}
    if role in ("tool", "function"):
        msg: dict[str, Any] = {"role": "tool", "content": _defuse(text)}
        for key in ("tool_call_id", "name"):
            if isinstance(m.get(key), str):
                msg[key] = m[key]
        return msg
    return _assistant_message(m, text, where, memory)


def _assistant_message(m: Mapping[str, Any], text: str, where: str, memory: ReasoningMemory | None) -> dict[str, Any]:
    msg: dict[str, Any] = {"role": "assistant", "content": _assistant_text(text)}
    for key in ("reasoning_content", "reasoning", "thinking"):  # the names different clients use
        value = m.get(key)
        if isinstance(value, str) and value:
            msg["thinking"] = _assistant_text(value)
            break
    calls = _chat_tool_calls(m.get("tool_calls"), f"{where}.tool_calls")
    if calls:
        msg["tool_calls"] = calls
        if "thinking" not in msg and memory is not None:
            remembered = memory.get(calls[0].get("id"))
            if remembered:
                msg["thinking"] = remembered
    return msg


def _chat_tool_calls(calls: Any, where: str) -> list[dict[str, Any]]:
    if calls is None:
        return []
    if not isinstance(calls, list):
        raise invalid(f"'{where}' must be a list.", where)
    out = []
    for j, c in enumerate(calls):
        cw = f"{where}[{j}]"
        fn = c.get("function") if isinstance(c, Mapping) else None
        if not isinstance(fn, Mapping) or not isinstance(fn.get("name"), str) or not fn["name"]:
            raise invalid(f"'{cw}.function.name' must be the called function's name.", f"{cw}.function.name")
        assert isinstance(c, Mapping)
        call_id = c.get("id") if isinstance(c.get("id"), str) else None
        out.append(_function_call(call_id, fn["name"], _call_args(fn.get("arguments"), f"{cw}.function.arguments")))
    return out


def _chat_effort(body: Mapping[str, Any]) -> str:
    """reasoning_effort, else the fallbacks other servers' clients send, in this order:
    reasoning.effort (responses/OpenRouter style), chat_template_kwargs.reasoning_effort
    (vLLM/llama-server style), chat_template_kwargs.enable_thinking false (Qwen style: gpt-oss
    always reasons, so the least: low)."""
    if body.get("reasoning_effort") is not None:
        return read_effort(body.get("reasoning_effort"), "reasoning_effort")
    reasoning = body.get("reasoning")
    if isinstance(reasoning, Mapping) and reasoning.get("effort") is not None:
        return read_effort(reasoning.get("effort"), "reasoning.effort")
    kwargs = body.get("chat_template_kwargs")
    if kwargs is not None and not isinstance(kwargs, Mapping):
        raise invalid("'chat_template_kwargs' must be an object.", "chat_template_kwargs")
    kwargs = kwargs or {}
    if kwargs.get("reasoning_effort") is not None:
        return read_effort(kwargs.get("reasoning_effort"), "chat_template_kwargs.reasoning_effort")
    if kwargs.get("enable_thinking") is False or (isinstance(reasoning, Mapping) and reasoning.get("enabled") is False):
        return "low"
    return read_effort(None, "reasoning_effort")


def _exclude_reasoning(body: Mapping[str, Any]) -> bool:
    """reasoning: {"exclude": true} (OpenRouter) or include_reasoning: false: leave reasoning out of the reply."""
    reasoning = body.get("reasoning")
    if isinstance(reasoning, Mapping) and reasoning.get("exclude") is not None:
        return read_bool(reasoning, "exclude", False)
    return body.get("include_reasoning") is False


def _stops(stop: Any) -> list[str]:
    if stop is None:
        return []
    if isinstance(stop, str):
        return [stop] if stop else []
    if isinstance(stop, list) and all(isinstance(s, str) for s in stop) and len(stop) <= _MAX_STOPS:
        return [s for s in stop if s]
    raise invalid(f"'stop' must be a string or a list of up to {_MAX_STOPS} strings.", "stop")


# --- /v1/responses ---------------------------------------------------------------------------------


def parse_responses_request(
    body: Mapping[str, Any],
    memory: ReasoningMemory | None = None,
    history: list[dict[str, Any]] | None = None,
    *,
    browsing: bool = False,
) -> GenerationRequest:
    """Validate a /v1/responses body; `history` is the stored conversation of previous_response_id."""
    _check_model(body)
    raw = body.get("input")
    if isinstance(raw, str):
        items: list[Any] = [{"role": "user", "content": raw}]
    elif isinstance(raw, list) and raw:
        items = raw
    else:
        raise invalid("'input' must be a string or a non-empty list of input items.", "input")
    reader = _InputReader(history, memory)
    for i, item in enumerate(items):
        reader.add(item, f"input[{i}]")
    instructions = body.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        raise invalid("'instructions' must be a string.", "instructions")
    toolset = _tools(body.get("tools"), flat=True, browsing=browsing)
    tools, plan = _tool_choice(body.get("tool_choice"), toolset, flat=True)
    reasoning = body.get("reasoning")
    if reasoning is not None and not isinstance(reasoning, Mapping):
        raise invalid('\'reasoning\' must be an object such as {"effort": "high"}.', "reasoning")
    effort = read_effort((reasoning or {}).get("effort"), "reasoning.effort")
    summary = (reasoning or {}).get("summary")
    if summary is not None and summary not in ("auto", "concise", "detailed"):
        raise invalid("'reasoning.summary' must be auto, concise or detailed.", "reasoning.summary")
    text_cfg = body.get("text")
    if text_cfg is not None and not isinstance(text_cfg, Mapping):
        raise invalid('\'text\' must be an object such as {"format": {"type": "text"}}.', "text")
    msgs = reader.messages
    full = ([{"role": "developer", "content": _defuse(instructions)}] if instructions else []) + msgs
    return GenerationRequest(
        "responses",
        full,
        tools,
        effort,
        read_sampling(body, "responses"),
        read_bool(body, "stream", False),
        body=body,
        store=read_bool(body, "store", True),
        input_messages=msgs,
        output_format=read_output_format((text_cfg or {}).get("format"), "text.format", nested=False),
        tool_plan=plan,
        builtin_tools=toolset.builtin if plan.mode != "none" else [],
        namespaces=toolset.namespaces,
        exclude_reasoning=_exclude_reasoning(body),
        reasoning_summary=summary,
        echo_tools=[dict(t) for t in body.get("tools") or [] if isinstance(t, Mapping)],
        notes=toolset.notes + reader.notes,
    )


class _InputReader:
    """Turns responses input items into chat messages, one item at a time.

    Reasoning items attach to the function call that follows them; consecutive function calls
    are parallel calls and share one assistant message (their results are matched by id).
    """

    def __init__(self, history: list[dict[str, Any]] | None, memory: ReasoningMemory | None) -> None:
        self.messages: list[dict[str, Any]] = [dict(m) for m in history or []]
        self._memory = memory
        self._pending_reasoning = ""
        self._last_was_call = False
        self.notes: list[str] = []

    def add(self, item: Any, where: str) -> None:
        if not isinstance(item, Mapping):
            raise invalid(f"'{where}' must be an object.", where)
        kind = item.get("type") or ("message" if "role" in item else None)
        if kind == "message":
            self._message(item, where)
        elif kind == "reasoning":
            # The full reasoning, else what this server sent as "encrypted" reasoning (the same text),
            # else the summary.
            text = _text_parts(item.get("content") or [], f"{where}.content")
            encrypted = item.get("encrypted_content")
            if not text and isinstance(encrypted, str):
                text = encrypted
            if not text:
                text = _text_parts(item.get("summary") or [], f"{where}.summary")
            self._pending_reasoning += text
        elif kind == "function_call":
            self._function_call(item, where)
        elif kind == "function_call_output":
            self._function_call_output(item, where)
        elif isinstance(kind, str) and kind.endswith(_SKIPPED_ITEM_SUFFIXES):
            self.notes.append(f"left out {where} ({kind}): this server has no such tool")
        else:
            raise invalid(
                f"Input items of type {json.dumps(kind)} are not supported here ('{where}').", f"{where}.type"
            )

    def _message(self, item: Mapping[str, Any], where: str) -> None:
        role = item.get("role")
        if role not in ("system", "developer", "user", "assistant"):
            raise invalid(f"'{where}.role' must be system, developer, user or assistant.", f"{where}.role")
        text = _text_parts(item.get("content"), f"{where}.content")
        content = _assistant_text(text) if role == "assistant" else _defuse(text)
        self.messages.append({"role": role, "content": content})
        self._pending_reasoning = ""
        self._last_was_call = False

    def _function_call(self, item: Mapping[str, Any], where: str) -> None:
        name, call_id = item.get("name"), item.get("call_id")
        if not isinstance(name, str) or not name:
            raise invalid(f"'{where}.name' must be the called function's name.", f"{where}.name")
        if not isinstance(call_id, str) or not call_id:
            raise invalid(f"'{where}.call_id' must be a string.", f"{where}.call_id")
        call = _function_call(call_id, name, _call_args(item.get("arguments"), f"{where}.arguments"))
        if self._last_was_call:
            self.messages[-1]["tool_calls"].append(call)  # parallel calls: one message, results matched by id
        else:
            msg: dict[str, Any] = {"role": "assistant", "tool_calls": [call]}
            thinking = self._pending_reasoning or (self._memory.get(call_id) if self._memory is not None else None)
            if thinking:
                msg["thinking"] = _assistant_text(thinking)
            self.messages.append(msg)
        self._pending_reasoning = ""
        self._last_was_call = True

    def _function_call_output(self, item: Mapping[str, Any], where: str) -> None:
        call_id = item.get("call_id")
        if not isinstance(call_id, str) or not call_id:
            raise invalid(f"'{where}.call_id' must be the id of the call this answers.", f"{where}.call_id")
        output = item.get("output")
        text = output if isinstance(output, str) else _text_parts(output, f"{where}.output")
        self.messages.append({"role": "tool", "tool_call_id": call_id, "content": _defuse(text)})
        self._last_was_call = False
