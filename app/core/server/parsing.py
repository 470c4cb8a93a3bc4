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
from typing import Any, Final

from app.core import chat
from app.core.server.errors import invalid
from app.core.server.types import GenerationRequest, read_bool, read_effort, read_sampling

_TOOL_NAME_RE: Final = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_TEXT_PARTS: Final = ("text", "input_text", "output_text", "reasoning_text", "summary_text", "refusal")
_NON_TEXT_PARTS: Final = ("image_url", "input_image", "input_audio", "input_file", "file")
_CHAT_ROLES: Final = ("system", "developer", "user", "assistant", "tool", "function")
_MAX_STOPS: Final = 4


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


def _function_tools(tools: Any, flat: bool) -> list[dict[str, Any]] | None:
    """Validate OpenAI function tools (chat: {"type","function":{...}}; responses: flat)."""
    if tools is None:
        return None
    if not isinstance(tools, list):
        raise invalid("'tools' must be a list of function tools.", "tools")
    out = [_function_tool(tool, f"tools[{i}]", flat) for i, tool in enumerate(tools)]
    return out or None


def _function_tool(tool: Any, where: str, flat: bool) -> dict[str, Any]:
    if not isinstance(tool, Mapping):
        raise invalid(f"'{where}' must be an object.", where)
    if tool.get("type", "function") != "function":
        raise invalid(
            f"Only function tools are supported; '{where}' is of type {json.dumps(tool.get('type'))}.", f"{where}.type"
        )
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
    entry: dict[str, Any] = {"name": name, "description": desc or ""}
    if params:
        entry["parameters"] = dict(params)
    return {"type": "function", "function": entry}


def _tool_choice(choice: Any, tools: list[dict[str, Any]] | None, flat: bool) -> list[dict[str, Any]] | None:
    """Apply tool_choice: "none" hides the tools; a named function keeps only that one."""
    if choice is None or choice in ("auto", "required"):
        return tools
    if choice == "none":
        return None
    if isinstance(choice, Mapping) and choice.get("type") == "function":
        fn = choice if flat else choice.get("function")
        name = fn.get("name") if isinstance(fn, Mapping) else None
        picked = [t for t in tools or [] if t["function"]["name"] == name]
        if not picked:
            raise invalid(f"tool_choice names the function {json.dumps(name)}, which is not in 'tools'.", "tool_choice")
        return picked
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


def parse_chat_request(body: Mapping[str, Any], memory: ReasoningMemory | None = None) -> GenerationRequest:
    """Validate a /v1/chat/completions body; raises ApiError (400) naming the bad parameter."""
    _check_model(body)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise invalid("'messages' must be a non-empty list of messages.", "messages")
    out = [_chat_message(m, f"messages[{i}]", memory) for i, m in enumerate(messages)]
    tools = _tool_choice(body.get("tool_choice"), _function_tools(body.get("tools"), flat=False), flat=False)
    _response_format(body)
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
    """reasoning_effort, or the responses-style reasoning.effort some clients send instead."""
    reasoning = body.get("reasoning")
    if body.get("reasoning_effort") is None and isinstance(reasoning, Mapping):
        return read_effort(reasoning.get("effort"), "reasoning.effort")
    return read_effort(body.get("reasoning_effort"), "reasoning_effort")


def _response_format(body: Mapping[str, Any]) -> None:
    """Only plain text output is offered; anything else is refused rather than ignored."""
    fmt = body.get("response_format")
    if fmt is not None and not (isinstance(fmt, Mapping) and fmt.get("type") == "text"):
        raise invalid(
            "This server does not support structured output ('response_format'); leave it out.", "response_format"
        )


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
    body: Mapping[str, Any], memory: ReasoningMemory | None = None, history: list[dict[str, Any]] | None = None
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
    tools = _tool_choice(body.get("tool_choice"), _function_tools(body.get("tools"), flat=True), flat=True)
    reasoning = body.get("reasoning")
    if reasoning is not None and not isinstance(reasoning, Mapping):
        raise invalid('\'reasoning\' must be an object such as {"effort": "high"}.', "reasoning")
    effort = read_effort((reasoning or {}).get("effort"), "reasoning.effort")
    _text_format(body)
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
    )


def _text_format(body: Mapping[str, Any]) -> None:
    """Only plain text output is offered; anything else is refused rather than ignored."""
    text_cfg = body.get("text")
    fmt = text_cfg.get("format") if isinstance(text_cfg, Mapping) else None
    if isinstance(fmt, Mapping) and fmt.get("type") != "text":
        raise invalid("This server does not support structured output ('text.format'); leave it out.", "text.format")


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

    def add(self, item: Any, where: str) -> None:
        if not isinstance(item, Mapping):
            raise invalid(f"'{where}' must be an object.", where)
        kind = item.get("type") or ("message" if "role" in item else None)
        if kind == "message":
            self._message(item, where)
        elif kind == "reasoning":
            parts = item.get("content") or item.get("summary") or []
            self._pending_reasoning += _text_parts(parts, f"{where}.content")
        elif kind == "function_call":
            self._function_call(item, where)
        elif kind == "function_call_output":
            self._function_call_output(item, where)
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
