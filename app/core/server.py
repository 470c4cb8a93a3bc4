"""A local OpenAI-compatible HTTP server (chat completions, responses, models) over the shared engine."""

from __future__ import annotations

import asyncio
import errno
import hmac
import ipaddress
import json
import logging
import os
import re
import secrets
import socket
import threading
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from app.core import chat
from app.core.chat import ChatError, ContextOverflowError, Conversation, TurnFinished, TurnStarted
from app.core.engine import EngineError, Sampling
from app.core.harmony import FinalDelta, PreambleDelta, ReasoningDelta, ToolCall
from app.core.scheduler import EngineScheduler

log = logging.getLogger(__name__)

DEFAULT_PORT = 8321
LOOPBACK = "127.0.0.1"
ALL_INTERFACES = "0.0.0.0"
CLIENT_NAME = "api"
# Requests beyond this many in flight (generating or queued) get 429 instead of piling up threads.
MAX_IN_FLIGHT = 64
# OpenAI's efforts are wider than gpt-oss's three; the nearest one is used.
EFFORT_ALIASES = {"none": "low", "minimal": "low", "low": "low", "medium": "medium", "high": "high", "xhigh": "high"}
_TOOL_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_LOOPBACK_HOSTS = {"localhost", "127.0.0.1", "::1", "[::1]"}


# =================================================================================================
# Settings, records, errors
# =================================================================================================
class ServerError(Exception):
    """The server could not start (port taken, bad address); the message is for people."""


@dataclass
class ServerSettings:
    """How the server listens. Loopback only unless allow_network is set explicitly."""

    port: int = DEFAULT_PORT  # 0: any free port
    api_key: str = ""  # empty: no key needed
    allow_network: bool = False  # listen on every interface, so other devices can connect

    @property
    def host(self) -> str:
        return ALL_INTERFACES if self.allow_network else LOOPBACK


def generate_api_key() -> str:
    """A fresh random key in the usual `sk-…` shape (clients that check the prefix accept it)."""
    return "sk-harmonica-" + secrets.token_urlsafe(24)


@dataclass(frozen=True)
class RequestRecord:
    """One finished HTTP request, for the request log."""

    time: float  # wall-clock time the request arrived (time.time())
    method: str
    path: str
    status: int
    client: str  # remote address
    duration_s: float
    prompt_tokens: int = 0
    completion_tokens: int = 0
    stream: bool = False
    note: str = ""  # finish reason, error message or "client disconnected"


@dataclass
class ServerTesting:
    """Test-only hooks; never reachable over HTTP.

    grammar(body) may return a GBNF grammar that forces the model's output for that request (the
    tests run random-weight models); every rendered prompt is appended to `prompts`.
    """

    grammar: Callable[[Mapping[str, Any]], str | None] | None = None
    prompts: list[str] = field(default_factory=list)


class ApiError(Exception):
    """An error answered in OpenAI's shape: {"error": {"message", "type", "param", "code"}}."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def _invalid(message: str, param: str | None = None, code: str | None = None) -> ApiError:
    return ApiError(400, message, param=param, code=code)


# =================================================================================================
# Request parsing (pure functions: body → what run_turn needs)
# =================================================================================================
@dataclass
class _Job:
    """A validated generation request."""

    endpoint: str  # "chat" or "responses"
    messages: list[dict[str, Any]]  # transformers-format messages for harmony.render_prompt
    tools: list[dict[str, Any]] | None
    effort: str
    sampling: Sampling
    stream: bool
    include_usage: bool = False
    stop: list[str] = field(default_factory=list)
    body: Mapping[str, Any] = field(default_factory=dict)
    store: bool = True
    input_messages: list[dict[str, Any]] = field(default_factory=list)  # the conversation without instructions


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _number(body: Mapping[str, Any], key: str, lo: float, hi: float, *, lo_open: bool = False) -> float | None:
    v = body.get(key)
    if v is None:
        return None
    if not _is_number(v) or v < lo or v > hi or (lo_open and v == lo):
        low = f"greater than {lo:g}" if lo_open else f"at least {lo:g}"
        raise _invalid(f"'{key}' must be a number {low} and at most {hi:g}; got {json.dumps(v)}.", key)
    return float(v)


def _integer(body: Mapping[str, Any], key: str, lo: int) -> int | None:
    v = body.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
        raise _invalid(f"'{key}' must be an integer of at least {lo}; got {json.dumps(v)}.", key)
    return v


def _bool(body: Mapping[str, Any], key: str, default: bool) -> bool:
    v = body.get(key)
    if v is None:
        return default
    if not isinstance(v, bool):
        raise _invalid(f"'{key}' must be true or false; got {json.dumps(v)}.", key)
    return v


def _effort(value: Any, param: str) -> str:
    if value is None:
        return "medium"
    if not isinstance(value, str) or value.lower() not in EFFORT_ALIASES:
        raise _invalid(f"'{param}' must be one of low, medium, high; got {json.dumps(value)}.", param)
    return EFFORT_ALIASES[value.lower()]


def _sampling(body: Mapping[str, Any], max_keys: Sequence[str]) -> Sampling:
    s = Sampling()
    t = _number(body, "temperature", 0.0, 2.0)
    if t is not None:
        s.temperature = t
    p = _number(body, "top_p", 0.0, 1.0, lo_open=True)
    if p is not None:
        s.top_p = p
    for key in max_keys:  # the later key (the newer name) wins
        m = _integer(body, key, 1)
        if m is not None:
            s.max_tokens = m
    seed = body.get("seed")
    if seed is not None:
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise _invalid(f"'seed' must be an integer; got {json.dumps(seed)}.", "seed")
        s.seed = seed
    # llama.cpp-style extensions that many local clients send.
    k = _integer(body, "top_k", 0)
    if k is not None:
        s.top_k = k
    mp = _number(body, "min_p", 0.0, 1.0)
    if mp is not None:
        s.min_p = mp
    rp = _number(body, "repeat_penalty", 0.0, 10.0, lo_open=True)
    if rp is not None:
        s.repeat_penalty = rp
    for key in ("presence_penalty", "frequency_penalty"):
        v = body.get(key)
        if v is not None and (not _is_number(v) or v != 0):
            raise _invalid(f"'{key}' is not supported by this server (only 0).", key)
    n = body.get("n")
    if n is not None and n != 1:
        raise _invalid("This server makes one choice per request; 'n' must be 1.", "n")
    if body.get("logprobs") or body.get("top_logprobs"):
        raise _invalid("This server does not return log probabilities.", "logprobs")
    return s


def _text_parts(content: Any, param: str) -> str:
    """Message content as text; content-part lists must be text parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        out: list[str] = []
        for j, part in enumerate(content):
            if isinstance(part, str):
                out.append(part)
                continue
            if not isinstance(part, Mapping):
                raise _invalid(f"'{param}[{j}]' must be a content part object.", f"{param}[{j}]")
            kind = part.get("type")
            if kind in ("text", "input_text", "output_text", "reasoning_text", "summary_text", "refusal"):
                text = part.get("text", part.get("refusal"))
                if not isinstance(text, str):
                    raise _invalid(f"'{param}[{j}].text' must be a string.", f"{param}[{j}].text")
                out.append(text)
            elif kind in ("image_url", "input_image", "input_audio", "input_file", "file"):
                raise _invalid(f"gpt-oss reads text only; '{param}[{j}]' is of type '{kind}'.", f"{param}[{j}]")
            else:
                raise _invalid(f"Unknown content part type {json.dumps(kind)} in '{param}[{j}]'.", f"{param}[{j}].type")
        return "".join(out)
    raise _invalid(f"'{param}' must be a string or a list of content parts.", param)


def _defuse(text: str) -> str:
    return chat._defuse(text)


def _assistant_text(text: str) -> str:
    # Raw harmony output pasted back by a client is parsed by render_prompt (harmony.md §5.5); any
    # other text that merely mentions a control token stays text.
    return text if "<|channel|>" in text or text.startswith("<|start|>") else _defuse(text)


def _function_tools(tools: Any, flat: bool) -> list[dict[str, Any]] | None:
    """Validate OpenAI function tools (chat: {"type","function":{...}}; responses: flat)."""
    if tools is None:
        return None
    if not isinstance(tools, list):
        raise _invalid("'tools' must be a list of function tools.", "tools")
    out: list[dict[str, Any]] = []
    for i, tool in enumerate(tools):
        where = f"tools[{i}]"
        if not isinstance(tool, Mapping):
            raise _invalid(f"'{where}' must be an object.", where)
        if tool.get("type", "function") != "function":
            raise _invalid(
                f"Only function tools are supported; '{where}' is of type {json.dumps(tool.get('type'))}.",
                f"{where}.type",
            )
        fn = tool if flat else tool.get("function")
        prefix = where if flat else f"{where}.function"
        if not isinstance(fn, Mapping):
            raise _invalid(
                f"'{prefix}' must be an object with the function's name, description and parameters.", prefix
            )
        name = fn.get("name")
        if not isinstance(name, str) or not _TOOL_NAME_RE.match(name):
            raise _invalid(
                f"'{prefix}.name' must be 1–64 letters, digits, '_' or '-'; got {json.dumps(name)}.", f"{prefix}.name"
            )
        desc = fn.get("description")
        if desc is not None and not isinstance(desc, str):
            raise _invalid(f"'{prefix}.description' must be a string.", f"{prefix}.description")
        params = fn.get("parameters")
        if params is not None and not isinstance(params, Mapping):
            raise _invalid(f"'{prefix}.parameters' must be a JSON schema object.", f"{prefix}.parameters")
        entry: dict[str, Any] = {"name": name, "description": desc or ""}
        if params:
            entry["parameters"] = dict(params)
        out.append({"type": "function", "function": entry})
    return out or None


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
            raise _invalid(
                f"tool_choice names the function {json.dumps(name)}, which is not in 'tools'.", "tool_choice"
            )
        return picked
    raise _invalid('\'tool_choice\' must be "none", "auto", "required" or a function.', "tool_choice")


def _call_args(arguments: Any, param: str) -> Any:
    if arguments is None or isinstance(arguments, (str, Mapping)):
        return arguments if arguments is not None else "{}"
    raise _invalid(f"'{param}' must be a JSON string.", param)


class _ReasoningMemory:
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


def parse_chat_request(body: Mapping[str, Any], memory: _ReasoningMemory | None = None) -> _Job:
    """Validate a /v1/chat/completions body; raises ApiError (400) naming the bad parameter."""
    _check_model(body)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _invalid("'messages' must be a non-empty list of messages.", "messages")
    out: list[dict[str, Any]] = []
    for i, m in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(m, Mapping):
            raise _invalid(f"'{where}' must be an object with a role and content.", where)
        role = m.get("role")
        if role not in ("system", "developer", "user", "assistant", "tool", "function"):
            raise _invalid(
                f"'{where}.role' must be system, developer, user, assistant or tool; got {json.dumps(role)}.",
                f"{where}.role",
            )
        text = _text_parts(m.get("content"), f"{where}.content")
        if role in ("system", "developer", "user"):
            out.append({"role": role, "content": _defuse(text)})
        elif role in ("tool", "function"):
            msg: dict[str, Any] = {"role": "tool", "content": _defuse(text)}
            if isinstance(m.get("tool_call_id"), str):
                msg["tool_call_id"] = m["tool_call_id"]
            if isinstance(m.get("name"), str):
                msg["name"] = m["name"]
            out.append(msg)
        else:
            msg = {"role": "assistant", "content": _assistant_text(text)}
            for key in ("reasoning_content", "reasoning", "thinking"):
                value = m.get(key)
                if isinstance(value, str) and value:
                    msg["thinking"] = _assistant_text(value)
                    break
            calls = m.get("tool_calls")
            if calls is not None:
                if not isinstance(calls, list):
                    raise _invalid(f"'{where}.tool_calls' must be a list.", f"{where}.tool_calls")
                norm = []
                for j, c in enumerate(calls):
                    cw = f"{where}.tool_calls[{j}]"
                    fn = c.get("function") if isinstance(c, Mapping) else None
                    if not isinstance(fn, Mapping) or not isinstance(fn.get("name"), str) or not fn["name"]:
                        raise _invalid(
                            f"'{cw}.function.name' must be the called function's name.", f"{cw}.function.name"
                        )
                    entry: dict[str, Any] = {
                        "type": "function",
                        "function": {
                            "name": fn["name"],
                            "arguments": _call_args(fn.get("arguments"), f"{cw}.function.arguments"),
                        },
                    }
                    if isinstance(c.get("id"), str):
                        entry["id"] = c["id"]
                    norm.append(entry)
                if norm:
                    msg["tool_calls"] = norm
                    if "thinking" not in msg and memory is not None:
                        remembered = memory.get(norm[0].get("id"))
                        if remembered:
                            msg["thinking"] = remembered
            out.append(msg)
    tools = _function_tools(body.get("tools"), flat=False)
    tools = _tool_choice(body.get("tool_choice"), tools, flat=False)
    effort_key = "reasoning_effort"
    effort_value = body.get("reasoning_effort")
    if effort_value is None and isinstance(body.get("reasoning"), Mapping):
        effort_key, effort_value = "reasoning.effort", body["reasoning"].get("effort")
    effort = _effort(effort_value, effort_key)
    fmt = body.get("response_format")
    if fmt is not None and not (isinstance(fmt, Mapping) and fmt.get("type") == "text"):
        raise _invalid(
            "This server does not support structured output ('response_format'); leave it out.", "response_format"
        )
    stop = body.get("stop")
    stops: list[str] = []
    if isinstance(stop, str):
        stops = [stop] if stop else []
    elif isinstance(stop, list) and all(isinstance(s, str) for s in stop) and len(stop) <= 4:
        stops = [s for s in stop if s]
    elif stop is not None:
        raise _invalid("'stop' must be a string or a list of up to 4 strings.", "stop")
    stream = _bool(body, "stream", False)
    opts = body.get("stream_options")
    include_usage = bool(isinstance(opts, Mapping) and opts.get("include_usage"))
    return _Job(
        "chat",
        out,
        tools,
        effort,
        _sampling(body, ("max_tokens", "max_completion_tokens")),
        stream,
        include_usage=include_usage,
        stop=stops,
        body=body,
    )


def _check_model(body: Mapping[str, Any]) -> None:
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise _invalid("'model' must be a string.", "model")


def parse_responses_request(
    body: Mapping[str, Any], memory: _ReasoningMemory | None = None, history: list[dict[str, Any]] | None = None
) -> _Job:
    """Validate a /v1/responses body; `history` is the stored conversation of previous_response_id."""
    _check_model(body)
    raw = body.get("input")
    if isinstance(raw, str):
        items: list[Any] = [{"role": "user", "content": raw}]
    elif isinstance(raw, list) and raw:
        items = raw
    else:
        raise _invalid("'input' must be a string or a non-empty list of input items.", "input")
    msgs: list[dict[str, Any]] = [dict(m) for m in history or []]
    pending_reasoning = ""
    last_was_call = False
    for i, item in enumerate(items):
        where = f"input[{i}]"
        if not isinstance(item, Mapping):
            raise _invalid(f"'{where}' must be an object.", where)
        kind = item.get("type") or ("message" if "role" in item else None)
        if kind == "message":
            role = item.get("role")
            if role not in ("system", "developer", "user", "assistant"):
                raise _invalid(f"'{where}.role' must be system, developer, user or assistant.", f"{where}.role")
            text = _text_parts(item.get("content"), f"{where}.content")
            if role == "assistant":
                msgs.append({"role": "assistant", "content": _assistant_text(text)})
            else:
                msgs.append({"role": role, "content": _defuse(text)})
            pending_reasoning = ""
            last_was_call = False
        elif kind == "reasoning":
            parts = item.get("content") or item.get("summary") or []
            pending_reasoning += _text_parts(parts, f"{where}.content")
        elif kind == "function_call":
            name, call_id = item.get("name"), item.get("call_id")
            if not isinstance(name, str) or not name:
                raise _invalid(f"'{where}.name' must be the called function's name.", f"{where}.name")
            if not isinstance(call_id, str) or not call_id:
                raise _invalid(f"'{where}.call_id' must be a string.", f"{where}.call_id")
            call = {
                "id": call_id,
                "type": "function",
                "function": {"name": name, "arguments": _call_args(item.get("arguments"), f"{where}.arguments")},
            }
            if last_was_call:
                msgs[-1]["tool_calls"].append(call)  # parallel calls: one message, results matched by id
            else:
                msg: dict[str, Any] = {"role": "assistant", "tool_calls": [call]}
                thinking = pending_reasoning or (memory.get(call_id) if memory is not None else None)
                if thinking:
                    msg["thinking"] = _assistant_text(thinking)
                msgs.append(msg)
            pending_reasoning = ""
            last_was_call = True
        elif kind == "function_call_output":
            call_id = item.get("call_id")
            if not isinstance(call_id, str) or not call_id:
                raise _invalid(f"'{where}.call_id' must be the id of the call this answers.", f"{where}.call_id")
            output = item.get("output")
            text = output if isinstance(output, str) else _text_parts(output, f"{where}.output")
            msgs.append({"role": "tool", "tool_call_id": call_id, "content": _defuse(text)})
            last_was_call = False
        else:
            raise _invalid(
                f"Input items of type {json.dumps(kind)} are not supported here ('{where}').", f"{where}.type"
            )
    instructions = body.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        raise _invalid("'instructions' must be a string.", "instructions")
    tools = _function_tools(body.get("tools"), flat=True)
    tools = _tool_choice(body.get("tool_choice"), tools, flat=True)
    reasoning = body.get("reasoning")
    if reasoning is not None and not isinstance(reasoning, Mapping):
        raise _invalid('\'reasoning\' must be an object such as {"effort": "high"}.', "reasoning")
    effort = _effort((reasoning or {}).get("effort"), "reasoning.effort")
    text_cfg = body.get("text")
    if (
        isinstance(text_cfg, Mapping)
        and isinstance(text_cfg.get("format"), Mapping)
        and text_cfg["format"].get("type") != "text"
    ):
        raise _invalid("This server does not support structured output ('text.format'); leave it out.", "text.format")
    full = ([{"role": "developer", "content": _defuse(instructions)}] if instructions else []) + msgs
    return _Job(
        "responses",
        full,
        tools,
        effort,
        _sampling(body, ("max_output_tokens",)),
        _bool(body, "stream", False),
        body=body,
        store=_bool(body, "store", True),
        input_messages=msgs,
    )


# =================================================================================================
# One generation: run_turn on a worker thread, events to the event loop
# =================================================================================================
class _RequestConversation(Conversation):
    """A conversation whose messages come ready-made from an API request (OpenAI shape).

    harmony.render_prompt accepts the OpenAI message format itself (reasoning_content, tool_call_id
    matching, parallel calls); keeping the request's messages as they are loses nothing, and
    run_turn still does the rendering, the context check, the streaming and the parsing.
    """

    def __init__(self, messages: list[dict[str, Any]]) -> None:
        super().__init__()
        self._render = messages

    def to_render_messages(self, developer: str | None = None) -> list[dict[str, Any]]:
        return [dict(m) for m in self._render]


class _CountingEngine:
    """The scheduler client seen by run_turn, counting generated tokens (and noting the prompt)."""

    def __init__(self, inner: Any, prompts: list[str] | None) -> None:
        self._inner = inner
        self._prompts = prompts
        self.tokens = 0

    @property
    def info(self) -> Any:
        return self._inner.info

    @property
    def n_ctx(self) -> int:
        return int(self._inner.n_ctx)

    @property
    def last_stats(self) -> Any:
        return self._inner.last_stats

    def tokenize(self, text: str, special: bool = True) -> list[int]:
        if self._prompts is not None:
            self._prompts.append(text)
        return self._inner.tokenize(text, special=special)  # type: ignore[no-any-return]

    def stream(
        self, prompt: Any, sampling: Sampling, *, cancel: threading.Event | None = None, grammar: str | None = None
    ) -> Iterator[tuple[int, bytes]]:
        inner = self._inner.stream(prompt, sampling, cancel=cancel, grammar=grammar)

        def run() -> Iterator[tuple[int, bytes]]:
            try:
                for item in inner:
                    self.tokens += 1
                    yield item
            finally:
                inner.close()

        return run()


class _StopMatcher:
    """Cuts streamed text at the first stop sequence, holding back what may be the start of one."""

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = [s for s in stops if s]
        self.held = ""

    def feed(self, text: str) -> tuple[str, bool]:
        if not self.stops:
            return text, False
        buf = self.held + text
        hits = [i for i in (buf.find(s) for s in self.stops) if i >= 0]
        if hits:
            self.held = ""
            return buf[: min(hits)], True
        keep = 0
        for s in self.stops:
            for k in range(min(len(s) - 1, len(buf)), keep, -1):
                if buf.endswith(s[:k]):
                    keep = k
                    break
        self.held = buf[len(buf) - keep :] if keep else ""
        return buf[: len(buf) - keep], False

    def flush(self) -> str:
        held, self.held = self.held, ""
        return held


@dataclass
class _Call:
    id: str
    item_id: str
    name: str
    arguments: str


@dataclass
class _Outcome:
    """Everything one generation produced, as the API reports it."""

    reasoning: str = ""
    content: str = ""
    preamble: str = ""
    final: str = ""
    calls: list[_Call] = field(default_factory=list)
    stop_reason: str = ""
    finish_reason: str = "stop"
    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0
    reasoning_tokens: int = 0
    error: ApiError | None = None

    def usage_chat(self) -> dict[str, Any]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": self.cached_tokens},
            "completion_tokens_details": {"reasoning_tokens": self.reasoning_tokens},
        }

    def usage_responses(self) -> dict[str, Any]:
        return {
            "input_tokens": self.prompt_tokens,
            "input_tokens_details": {"cached_tokens": self.cached_tokens},
            "output_tokens": self.completion_tokens,
            "output_tokens_details": {"reasoning_tokens": self.reasoning_tokens},
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }


_END = object()


def _error_for(exc: BaseException) -> ApiError:
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, ContextOverflowError):
        return ApiError(400, str(exc), param="messages", code="context_length_exceeded")
    text = str(exc)
    if "No model is loaded" in text:
        return ApiError(
            503,
            "No model is loaded in Harmonica. Open a model in the app first.",
            type="server_error",
            code="model_not_loaded",
        )
    if isinstance(exc, (ChatError, EngineError)):
        return ApiError(400, text)
    log.error("API generation failed", exc_info=exc)
    return ApiError(500, f"The server failed while generating: {text}", type="server_error")


class _Generation:
    """Runs run_turn for one request on its own thread; deltas reach the event loop through a queue.

    Queue items: ("reasoning"|"content"|"preamble"|"final", text), ("call", _Call), ("started",
    prompt_tokens), ("error", ApiError); then _END. The outcome is complete once _END arrives.
    """

    def __init__(self, server: ApiServer, job: _Job, loop: asyncio.AbstractEventLoop) -> None:
        self.server = server
        self.job = job
        self.loop = loop
        self.cancel = threading.Event()
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self.outcome = _Outcome()
        self.done = threading.Event()
        self.disconnected = False
        self._stop_hit = False
        self._thread = threading.Thread(target=self._run, name="harmonica-api-generation", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _put(self, item: Any) -> None:
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)
        except RuntimeError:  # the event loop is gone (server stopped): nobody is listening
            self.cancel.set()

    def _run(self) -> None:
        job, out = self.job, self.outcome
        testing = self.server.testing
        engine = _CountingEngine(
            self.server.scheduler.client(self.server.client_name), testing.prompts if testing else None
        )
        matcher = _StopMatcher(job.stop)
        declared = {t["function"]["name"] for t in job.tools or []}
        last_reasoning_token = -1
        message = None
        try:
            grammar = testing.grammar(job.body) if testing is not None and testing.grammar is not None else None
            turn = chat.run_turn(
                engine,
                _RequestConversation(job.messages),
                effort=job.effort,
                sampling=job.sampling,
                cancel=self.cancel,
                tools=job.tools,
                grammar=grammar,
            )
            try:
                for ev in turn:
                    if isinstance(ev, ReasoningDelta):
                        out.reasoning += ev.text
                        if engine.tokens != last_reasoning_token:
                            out.reasoning_tokens += 1
                            last_reasoning_token = engine.tokens
                        self._put(("reasoning", ev.text))
                    elif isinstance(ev, PreambleDelta):
                        out.preamble += ev.text
                        self._put(("preamble", ev.text))
                    elif isinstance(ev, FinalDelta):
                        if self._stop_hit:
                            continue
                        text, hit = matcher.feed(ev.text)  # stop sequences apply to the answer
                        if hit:
                            self._stop_hit = True
                            self.cancel.set()
                        if text:
                            out.final += text
                            self._put(("final", text))
                    elif isinstance(ev, ToolCall):
                        name = ev.recipient.removeprefix("functions.")
                        if not ev.recipient.startswith("functions.") or not declared:
                            continue  # a builtin tool or an unsolicited call: nothing the client can run
                        call = _Call("call_" + secrets.token_hex(12), "fc_" + secrets.token_hex(12), name, ev.arguments)
                        out.calls.append(call)
                        self.server.reasoning_memory.put(call.id, out.reasoning)
                        self._put(("call", call))
                    elif isinstance(ev, TurnStarted):
                        out.prompt_tokens = ev.prompt_tokens
                        self._put(("started", ev.prompt_tokens))
                    elif isinstance(ev, TurnFinished):
                        message = ev.message
            finally:
                turn.close()
            if not self._stop_hit:
                rest = matcher.flush()
                if rest:
                    out.final += rest
                    self._put(("final", rest))
        except BaseException as exc:  # noqa: BLE001 - every failure is reported to the client
            out.error = _error_for(exc)
            self._put(("error", out.error))
        finally:
            # The chat API has one content field: a preamble and then an answer become two paragraphs.
            out.content = "\n\n".join(t for t in (out.preamble, out.final) if t)
            stats = message.stats if message is not None else engine.last_stats
            if stats is not None:
                out.cached_tokens = stats.cached_tokens
                out.prompt_tokens = out.prompt_tokens or stats.prompt_tokens
            out.completion_tokens = engine.tokens
            out.reasoning_tokens = min(out.reasoning_tokens, out.completion_tokens)
            out.stop_reason = (message.stop_reason or "") if message is not None else "error"
            if out.calls:
                out.finish_reason = "tool_calls"
            elif out.stop_reason == "length":
                out.finish_reason = "length"
            else:
                out.finish_reason = "stop"
            self.done.set()
            self._put(_END)

    async def items(self) -> AsyncIterator[Any]:
        while True:
            item = await self.queue.get()
            if item is _END:
                return
            yield item

    async def wait(self) -> None:
        async for _ in self.items():
            pass

    async def first_event(self) -> Any:
        """The first queue item: ("started", n) once the prompt is ready, or ("error", e)."""
        item = await self.queue.get()
        if item is _END:
            return (
                "error",
                self.outcome.error or ApiError(500, "The generation ended before it started.", type="server_error"),
            )
        return item

    def stop(self) -> None:
        self.cancel.set()


# =================================================================================================
# HTTP
# =================================================================================================
def _error_response(request: Any, err: ApiError) -> Any:
    from starlette.responses import JSONResponse

    request.scope.setdefault("state", {})["note"] = err.message
    return JSONResponse(err.body(), status_code=err.status)


def _sse(data: Mapping[str, Any], event: str | None = None) -> bytes:
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return (f"event: {event}\ndata: {text}\n\n" if event else f"data: {text}\n\n").encode("utf-8")


def _host_of(value: str) -> str:
    """The host part of a Host header or Origin URL, lower-case, IPv6 in brackets kept."""
    if "://" in value:
        host = urlsplit(value).hostname or ""
        return host.lower()
    value = value.strip().lower()
    if value.startswith("["):
        return value[: value.find("]") + 1] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


def _is_loopback_name(host: str) -> bool:
    if host in _LOOPBACK_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class ApiServer:
    """The OpenAI-compatible server: build with the shared scheduler, then start()/stop().

    Requests queue behind other generations under the scheduler client name "api". uvicorn runs
    on its own thread with its own event loop; start() returns once the port is listening and
    raises ServerError with a plain message when it cannot (port taken, address unusable).
    """

    def __init__(
        self,
        scheduler: EngineScheduler,
        settings: ServerSettings | None = None,
        *,
        client_name: str = CLIENT_NAME,
        log_size: int = 200,
        testing: ServerTesting | None = None,
    ) -> None:
        self.scheduler = scheduler
        self.settings = settings or ServerSettings()
        self.client_name = client_name
        self.testing = testing
        self.reasoning_memory = _ReasoningMemory()
        self._responses: OrderedDict[str, list[dict[str, Any]]] = OrderedDict()  # response id → conversation
        self._log: deque[RequestRecord] = deque(maxlen=log_size)
        self._log_lock = threading.Lock()
        self._log_listeners: list[Callable[[RequestRecord], None]] = []
        self._active: set[_Generation] = set()
        self._uvicorn: Any = None
        self._thread: threading.Thread | None = None
        self._port = 0
        self._host = self.settings.host
        self._api_key = self.settings.api_key
        self._startup_error: BaseException | None = None
        self._lifecycle = threading.Lock()
        self.app = self._build_app()

    # --- lifecycle ---------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return (
            self._thread is not None and self._thread.is_alive() and self._uvicorn is not None and self._uvicorn.started
        )

    @property
    def port(self) -> int:
        """The port listened on (the real one when settings.port is 0); 0 when stopped."""
        return self._port if self.running else 0

    @property
    def host(self) -> str:
        return self._host

    @property
    def exposed(self) -> bool:
        """True when other devices on the network can reach the server (the UI warns)."""
        return not _is_loopback_name(self._host)

    @property
    def base_url(self) -> str:
        """What a client on this computer passes as base_url, e.g. http://127.0.0.1:8321/v1."""
        return f"http://{LOOPBACK}:{self._port}/v1" if self.running else ""

    def network_urls(self) -> list[str]:
        """base_url for other devices (only when exposed): one per IPv4 address of this machine."""
        if not (self.running and self.exposed):
            return []
        return [f"http://{ip}:{self._port}/v1" for ip in lan_addresses()]

    def start(self, timeout: float = 10.0) -> None:
        """Bind and start serving with the current settings; raises ServerError."""
        import uvicorn

        with self._lifecycle:
            if self.running:
                return
            s = self.settings
            if not isinstance(s.port, int) or not 0 <= s.port <= 65535:
                raise ServerError(
                    f"{s.port} is not a valid port; use a number from 1024 to 65535 (or 0 for any free port)."
                )
            self._host, self._api_key = s.host, s.api_key.strip()
            sock = _bind(self._host, s.port)
            self._port = sock.getsockname()[1]
            config = uvicorn.Config(
                self.app,
                log_config=None,
                access_log=False,
                lifespan="off",
                ws="none",
                http="h11",
                timeout_graceful_shutdown=3,
                server_header=False,
            )
            server = uvicorn.Server(config)
            self._uvicorn = server
            self._startup_error = None

            def serve() -> None:
                try:
                    server.run(sockets=[sock])
                except BaseException as exc:
                    self._startup_error = exc
                    log.exception("API server stopped with an error")
                finally:
                    sock.close()

            self._thread = threading.Thread(target=serve, name="harmonica-api-server", daemon=True)
            self._thread.start()
            deadline = time.monotonic() + timeout
            while not server.started:
                if not self._thread.is_alive() or time.monotonic() > deadline:
                    server.should_exit = True
                    err = self._startup_error
                    self._thread.join(2)
                    self._thread = None
                    raise ServerError(f"The API server could not start: {err or 'it did not come up in time'}.")
                time.sleep(0.01)
            log.info("API server listening on %s:%d", self._host, self._port)

    def set_api_key(self, key: str) -> None:
        """Change the required key at once, running or not (empty: no key)."""
        self.settings.api_key = key
        self._api_key = key.strip()

    def stop(self, timeout: float = 8.0) -> None:
        """Stop serving: running and queued API generations are cancelled first."""
        with self._lifecycle:
            server, thread = self._uvicorn, self._thread
            if server is None or thread is None:
                return
            for gen in list(self._active):
                gen.stop()
            server.should_exit = True
            thread.join(timeout / 2)
            if thread.is_alive():
                server.force_exit = True
                thread.join(timeout / 2)
            self._thread = None
            self._uvicorn = None
            log.info("API server stopped")

    # --- request log -----------------------------------------------------------------------------
    def request_log(self) -> list[RequestRecord]:
        with self._log_lock:
            return list(self._log)

    def add_log_listener(self, callback: Callable[[RequestRecord], None]) -> Callable[[], None]:
        """Call `callback(record)` (on the server's thread) after each request; returns a remover."""
        with self._log_lock:
            self._log_listeners.append(callback)

        def remove() -> None:
            with self._log_lock:
                if callback in self._log_listeners:
                    self._log_listeners.remove(callback)

        return remove

    def _record(self, rec: RequestRecord) -> None:
        with self._log_lock:
            self._log.append(rec)
            listeners = list(self._log_listeners)
        for cb in listeners:
            try:
                cb(rec)
            except Exception:
                log.exception("request log listener failed")

    @property
    def active_requests(self) -> int:
        """Generations running or queued for this server right now."""
        return len(self._active)

    # --- the ASGI app ------------------------------------------------------------------------------
    def _build_app(self) -> Any:
        from starlette.applications import Starlette
        from starlette.exceptions import HTTPException
        from starlette.requests import Request
        from starlette.responses import JSONResponse
        from starlette.routing import Route

        async def http_error(_request: Request, exc: Exception) -> JSONResponse:
            assert isinstance(exc, HTTPException)
            kind = {404: "not_found_error", 405: "invalid_request_error"}.get(exc.status_code, "invalid_request_error")
            message = {
                404: "Unknown path. This server offers /v1/models, /v1/chat/completions and /v1/responses.",
                405: "This path does not accept that HTTP method.",
            }.get(exc.status_code, str(exc.detail))
            return _error_response(_request, ApiError(exc.status_code, message, type=kind))  # type: ignore[no-any-return]

        async def server_error(_request: Request, exc: Exception) -> JSONResponse:
            log.error("API request failed", exc_info=exc)
            return JSONResponse(ApiError(500, f"Internal error: {exc}", type="server_error").body(), status_code=500)

        routes = [
            Route("/v1/models", self._models, methods=["GET"]),
            Route("/v1/models/{model_id:path}", self._model, methods=["GET"]),
            Route("/v1/chat/completions", self._chat_completions, methods=["POST"]),
            Route("/v1/responses", self._responses_create, methods=["POST"]),
            Route("/health", self._health, methods=["GET"]),
        ]
        app = Starlette(routes=routes, exception_handlers={HTTPException: http_error, Exception: server_error})
        return _Guard(self, app)

    # --- helpers ---------------------------------------------------------------------------------
    def model_id(self) -> str | None:
        info = self.scheduler.engine.info if self.scheduler.engine is not None else None
        if info is None:
            return None
        path = getattr(info, "path", None)
        stem = getattr(path, "stem", "") if path is not None else ""
        if not stem or str(path).startswith("scripted:"):
            stem = str(getattr(info, "name", "") or "gpt-oss")
        stem = re.sub(r"-0000\d-of-0000\d$", "", stem)  # a split model's first part
        return re.sub(r"[^A-Za-z0-9._:-]+", "-", stem).strip("-").lower() or "gpt-oss"

    def _model_card(self, model_id: str) -> dict[str, Any]:
        info = self.scheduler.engine.info if self.scheduler.engine is not None else None
        card: dict[str, Any] = {
            "id": model_id,
            "object": "model",
            "created": int(getattr(info, "loaded_at", 0) or 0),
            "owned_by": "harmonica",
        }
        if info is not None:
            card["context_window"] = int(getattr(info, "n_ctx", 0) or 0)
        return card

    async def _body(self, request: Any) -> Mapping[str, Any]:
        raw = await request.body()
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise _invalid("The request body is not valid JSON.") from None
        if not isinstance(body, Mapping):
            raise _invalid("The request body must be a JSON object.")
        return body

    def _begin(self, job: _Job, request: Any) -> _Generation:
        if self.scheduler.engine is None or self.scheduler.engine.info is None:
            raise _error_for(EngineError("No model is loaded."))
        if len(self._active) >= MAX_IN_FLIGHT:
            raise ApiError(
                429, f"{MAX_IN_FLIGHT} requests are already waiting; try again later.", type="rate_limit_error"
            )
        gen = _Generation(self, job, asyncio.get_running_loop())
        self._active.add(gen)
        request.scope.setdefault("state", {})["generation"] = gen
        request.scope["state"]["stream"] = job.stream
        gen.start()
        return gen

    async def _run_to_end(self, gen: _Generation, request: Any) -> bool:
        """Wait for a non-streamed generation; False (generation cancelled) if the client left."""

        async def disconnected() -> None:
            while True:
                message = await request.receive()
                if message["type"] == "http.disconnect":
                    return

        watch = asyncio.ensure_future(disconnected())
        finish = asyncio.ensure_future(gen.wait())
        try:
            done, _ = await asyncio.wait({watch, finish}, return_when=asyncio.FIRST_COMPLETED)
            if finish not in done:
                gen.disconnected = True
                gen.stop()
                await finish
                return False
            return True
        finally:
            watch.cancel()
            if not finish.done():
                gen.stop()
                finish.cancel()

    # --- endpoints ---------------------------------------------------------------------------------
    async def _health(self, _request: Any) -> Any:
        from starlette.responses import JSONResponse

        return JSONResponse({"status": "ok", "model": self.model_id(), "queue": self.scheduler.state.describe()})

    async def _models(self, _request: Any) -> Any:
        from starlette.responses import JSONResponse

        mid = self.model_id()
        return JSONResponse({"object": "list", "data": [self._model_card(mid)] if mid else []})

    async def _model(self, request: Any) -> Any:
        from starlette.responses import JSONResponse

        mid = self.model_id()
        want = request.path_params["model_id"]
        if mid is None or want != mid:
            err = ApiError(
                404,
                f"The model '{want}' does not exist; this server runs '{mid or 'no model'}'.",
                code="model_not_found",
                param="model",
            )
            return _error_response(request, err)
        return JSONResponse(self._model_card(mid))

    async def _chat_completions(self, request: Any) -> Any:
        from starlette.responses import JSONResponse, StreamingResponse

        try:
            job = parse_chat_request(await self._body(request), self.reasoning_memory)
            gen = self._begin(job, request)
        except ApiError as err:
            return _error_response(request, err)
        cid = "chatcmpl-" + secrets.token_hex(12)
        created = int(time.time())
        model = self.model_id() or "gpt-oss"
        first = await gen.first_event()
        if first[0] == "error":
            await gen.wait()
            return _error_response(request, first[1])

        if not job.stream:
            if not await self._run_to_end(gen, request):
                return JSONResponse({"error": {"message": "client disconnected"}}, status_code=499)
            out = gen.outcome
            if out.error is not None:
                return _error_response(request, out.error)
            message: dict[str, Any] = {"role": "assistant", "content": out.content or None}
            if out.reasoning:
                message["reasoning_content"] = out.reasoning
            if out.calls:
                message["tool_calls"] = [
                    {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                    for c in out.calls
                ]
            body = {
                "id": cid,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "message": message, "finish_reason": out.finish_reason, "logprobs": None}],
                "usage": out.usage_chat(),
            }
            return JSONResponse(body)

        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            return _sse(
                {
                    "id": cid,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": model,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
                }
            )

        async def events() -> AsyncIterator[bytes]:
            try:
                yield chunk({"role": "assistant", "content": ""})
                n_calls = 0
                last = ""
                async for kind, value in gen.items():
                    if kind == "reasoning":
                        yield chunk({"reasoning_content": value})
                    elif kind in ("final", "preamble"):
                        if kind == "final" and last == "preamble":
                            value = "\n\n" + value  # as in the non-streamed content
                        last = kind
                        yield chunk({"content": value})
                    elif kind == "call":
                        yield chunk(
                            {
                                "tool_calls": [
                                    {
                                        "index": n_calls,
                                        "id": value.id,
                                        "type": "function",
                                        "function": {"name": value.name, "arguments": value.arguments},
                                    }
                                ]
                            }
                        )
                        n_calls += 1
                    elif kind == "error":
                        yield _sse(value.body())
                out = gen.outcome
                if out.error is None:
                    yield chunk({}, out.finish_reason)
                    if job.include_usage:
                        yield _sse(
                            {
                                "id": cid,
                                "object": "chat.completion.chunk",
                                "created": created,
                                "model": model,
                                "choices": [],
                                "usage": out.usage_chat(),
                            }
                        )
                yield b"data: [DONE]\n\n"
            finally:
                if not gen.done.is_set():
                    gen.disconnected = True
                    gen.stop()

        return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    async def _responses_create(self, request: Any) -> Any:
        from starlette.responses import JSONResponse, StreamingResponse

        try:
            body = await self._body(request)
            history = None
            prev = body.get("previous_response_id")
            if prev is not None:
                history = self._responses.get(prev) if isinstance(prev, str) else None
                if history is None:
                    raise _invalid(f"Previous response with id {json.dumps(prev)} not found.", "previous_response_id")
            job = parse_responses_request(body, self.reasoning_memory, history)
            gen = self._begin(job, request)
        except ApiError as err:
            return _error_response(request, err)
        rid = "resp_" + secrets.token_hex(16)
        created = time.time()
        model = self.model_id() or "gpt-oss"
        first = await gen.first_event()
        if first[0] == "error":
            await gen.wait()
            return _error_response(request, first[1])

        def response(
            status: str, output: list[dict[str, Any]], usage: dict[str, Any] | None, error: ApiError | None = None
        ) -> dict[str, Any]:
            tools = [
                {
                    "type": "function",
                    "name": t["function"]["name"],
                    "description": t["function"]["description"],
                    "parameters": t["function"].get("parameters"),
                    "strict": False,
                }
                for t in job.tools or []
            ]
            incomplete = {"reason": "max_output_tokens"} if status == "incomplete" else None
            return {
                "id": rid,
                "object": "response",
                "created_at": created,
                "status": status,
                "model": model,
                "output": output,
                "usage": usage,
                "error": {"code": "server_error", "message": error.message} if error else None,
                "incomplete_details": incomplete,
                "instructions": body.get("instructions"),
                "metadata": body.get("metadata") or {},
                "parallel_tool_calls": False,
                "tool_choice": body.get("tool_choice") or "auto",
                "tools": tools,
                "temperature": job.sampling.temperature,
                "top_p": job.sampling.top_p,
                "max_output_tokens": job.sampling.max_tokens,
                "reasoning": {"effort": job.effort, "summary": None},
                "text": {"format": {"type": "text"}},
                "previous_response_id": body.get("previous_response_id"),
                "store": job.store,
                "truncation": "disabled",
                "completed_at": time.time() if status in ("completed", "incomplete") else None,
            }

        def finished_status(out: _Outcome) -> str:
            return "incomplete" if out.finish_reason == "length" else "completed"

        if not job.stream:
            if not await self._run_to_end(gen, request):
                return JSONResponse({"error": {"message": "client disconnected"}}, status_code=499)
            out = gen.outcome
            if out.error is not None:
                return _error_response(request, out.error)
            items = _output_items(out, finished_status(out))
            self._remember_response(rid, job, out)
            return JSONResponse(response(finished_status(out), items, out.usage_responses()))

        async def events() -> AsyncIterator[bytes]:
            seq = 0

            def ev(kind: str, **data: Any) -> bytes:
                nonlocal seq
                payload = {"type": kind, "sequence_number": seq, **data}
                seq += 1
                return _sse(payload, kind)

            output: list[dict[str, Any]] = []
            open_item: dict[str, Any] | None = None  # the item whose text is streaming
            text = ""

            def close_item() -> list[bytes]:
                nonlocal open_item, text
                if open_item is None:
                    return []
                idx = len(output) - 1
                chunks: list[bytes] = []
                if open_item["type"] == "reasoning":
                    open_item["content"] = [{"type": "reasoning_text", "text": text}]
                    part = open_item["content"][0]
                    chunks.append(
                        ev(
                            "response.reasoning_text.done",
                            item_id=open_item["id"],
                            output_index=idx,
                            content_index=0,
                            text=text,
                        )
                    )
                else:
                    open_item["content"] = [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]
                    part = open_item["content"][0]
                    chunks.append(
                        ev(
                            "response.output_text.done",
                            item_id=open_item["id"],
                            output_index=idx,
                            content_index=0,
                            text=text,
                            logprobs=[],
                        )
                    )
                chunks.append(
                    ev(
                        "response.content_part.done",
                        item_id=open_item["id"],
                        output_index=idx,
                        content_index=0,
                        part=part,
                    )
                )
                open_item["status"] = "completed"
                chunks.append(ev("response.output_item.done", output_index=idx, item=open_item))
                open_item, text = None, ""
                return chunks

            def open_new(kind: str) -> list[bytes]:
                nonlocal open_item
                if kind == "reasoning":
                    item: dict[str, Any] = {
                        "id": "rs_" + secrets.token_hex(12),
                        "type": "reasoning",
                        "summary": [],
                        "content": [],
                        "status": "in_progress",
                    }
                    part: dict[str, Any] = {"type": "reasoning_text", "text": ""}
                else:
                    item = {
                        "id": "msg_" + secrets.token_hex(12),
                        "type": "message",
                        "role": "assistant",
                        "status": "in_progress",
                        "content": [],
                        "phase": "commentary" if kind == "preamble" else "final_answer",
                    }
                    part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
                output.append(item)
                open_item = item
                idx = len(output) - 1
                return [
                    ev("response.output_item.added", output_index=idx, item=dict(item)),
                    ev("response.content_part.added", item_id=item["id"], output_index=idx, content_index=0, part=part),
                ]

            def kind_of(item: dict[str, Any] | None) -> str | None:
                if item is None:
                    return None
                if item["type"] == "reasoning":
                    return "reasoning"
                return "preamble" if item.get("phase") == "commentary" else "final"

            try:
                yield ev("response.created", response=response("in_progress", [], None))
                yield ev("response.in_progress", response=response("in_progress", [], None))
                failure: ApiError | None = None
                async for kind, value in gen.items():
                    if kind in ("reasoning", "final", "preamble"):
                        if kind_of(open_item) != kind:
                            for c in close_item() + open_new(kind):
                                yield c
                        text += value
                        idx = len(output) - 1
                        assert open_item is not None
                        if kind == "reasoning":
                            yield ev(
                                "response.reasoning_text.delta",
                                item_id=open_item["id"],
                                output_index=idx,
                                content_index=0,
                                delta=value,
                            )
                        else:
                            yield ev(
                                "response.output_text.delta",
                                item_id=open_item["id"],
                                output_index=idx,
                                content_index=0,
                                delta=value,
                                logprobs=[],
                            )
                    elif kind == "call":
                        for c in close_item():
                            yield c
                        item = {
                            "id": value.item_id,
                            "type": "function_call",
                            "call_id": value.id,
                            "name": value.name,
                            "arguments": "",
                            "status": "in_progress",
                        }
                        output.append(item)
                        idx = len(output) - 1
                        yield ev("response.output_item.added", output_index=idx, item=dict(item))
                        yield ev(
                            "response.function_call_arguments.delta",
                            item_id=value.item_id,
                            output_index=idx,
                            delta=value.arguments,
                        )
                        yield ev(
                            "response.function_call_arguments.done",
                            item_id=value.item_id,
                            output_index=idx,
                            arguments=value.arguments,
                            name=value.name,
                        )
                        item.update(arguments=value.arguments, status="completed")
                        yield ev("response.output_item.done", output_index=idx, item=item)
                    elif kind == "error":
                        failure = value
                for c in close_item():
                    yield c
                out = gen.outcome
                if failure is not None or out.error is not None:
                    err = failure or out.error
                    assert err is not None
                    yield ev("error", code=err.code or err.type, message=err.message, param=err.param)
                    yield ev("response.failed", response=response("failed", output, out.usage_responses(), err))
                    return
                status = finished_status(out)
                self._remember_response(rid, job, out)
                final = response(status, output, out.usage_responses())
                yield ev("response.completed" if status == "completed" else "response.incomplete", response=final)
            finally:
                if not gen.done.is_set():
                    gen.disconnected = True
                    gen.stop()

        return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    def _remember_response(self, rid: str, job: _Job, out: _Outcome) -> None:
        """Keep a stored response's conversation for previous_response_id (the last 100)."""
        if not job.store:
            return
        convo = [dict(m) for m in job.input_messages]
        if out.calls:
            for k, c in enumerate(out.calls):
                msg: dict[str, Any] = {
                    "role": "assistant",
                    "tool_calls": [
                        {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                    ],
                }
                if k == 0 and out.reasoning:
                    msg["thinking"] = out.reasoning
                convo.append(msg)
        elif out.content:
            convo.append({"role": "assistant", "content": out.content})
        self._responses[rid] = convo
        while len(self._responses) > 100:
            self._responses.popitem(last=False)


def _output_items(out: _Outcome, status: str) -> list[dict[str, Any]]:
    """Responses API output items for a finished generation."""
    items: list[dict[str, Any]] = []
    if out.reasoning:
        items.append(
            {
                "id": "rs_" + secrets.token_hex(12),
                "type": "reasoning",
                "summary": [],
                "content": [{"type": "reasoning_text", "text": out.reasoning}],
                "status": "completed",
            }
        )
    if out.preamble:
        items.append(
            {
                "id": "msg_" + secrets.token_hex(12),
                "type": "message",
                "role": "assistant",
                "status": "completed",
                "phase": "commentary",
                "content": [{"type": "output_text", "text": out.preamble, "annotations": [], "logprobs": []}],
            }
        )
    for c in out.calls:
        items.append(
            {
                "id": c.item_id,
                "type": "function_call",
                "call_id": c.id,
                "name": c.name,
                "arguments": c.arguments,
                "status": "completed",
            }
        )
    if out.final:
        items.append(
            {
                "id": "msg_" + secrets.token_hex(12),
                "type": "message",
                "role": "assistant",
                "status": "completed" if status == "completed" else "incomplete",
                "phase": "final_answer",
                "content": [{"type": "output_text", "text": out.final, "annotations": [], "logprobs": []}],
            }
        )
    return items


class _Guard:
    """Outermost ASGI layer: API key, Host/Origin checks against browser attacks, and the request log."""

    def __init__(self, server: ApiServer, app: Any) -> None:
        self.server = server
        self.app = app

    async def _reply(self, send: Any, err: ApiError, extra: list[tuple[bytes, bytes]] | None = None) -> None:
        body = json.dumps(err.body()).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())] + (extra or [])
        await send({"type": "http.response.start", "status": err.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    def _refusal(self, scope: Mapping[str, Any]) -> tuple[ApiError, list[tuple[bytes, bytes]]] | None:
        server = self.server
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        # A web page open in the user's browser can send requests to 127.0.0.1; reject any that
        # come from a non-local page (Origin) or through DNS rebinding (a foreign Host name).
        origin = headers.get("origin")
        if origin and origin != "null" and not _is_loopback_name(_host_of(origin)):
            return ApiError(
                403,
                "Requests from web pages on other sites are not allowed.",
                type="permission_error",
                code="forbidden_origin",
            ), []
        if not server.exposed and "host" in headers and not _is_loopback_name(_host_of(headers["host"])):
            return ApiError(
                403,
                "This server only answers on 127.0.0.1 / localhost.",
                type="permission_error",
                code="forbidden_host",
            ), []
        key = server._api_key
        if key and scope.get("path", "").startswith("/v1"):
            auth = headers.get("authorization", "")
            given = auth[7:].strip() if auth[:7].lower() == "bearer " else headers.get("x-api-key", "")
            if not hmac.compare_digest(given.encode(), key.encode()):
                what = "No API key was provided" if not given else "Incorrect API key provided"
                err = ApiError(
                    401, f"{what}. Use the key shown in Harmonica's API server panel.", code="invalid_api_key"
                )
                return err, [(b"www-authenticate", b"Bearer")]
        return None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        arrived = time.time()
        status = 0
        client = scope.get("client")
        address = f"{client[0]}" if client else ""
        scope.setdefault("state", {})
        note = ""

        async def send_and_note(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        refusal = self._refusal(scope)
        try:
            if refusal is not None:
                err, extra = refusal
                note = err.message
                await self._reply(send_and_note, err, extra)
            else:
                await self.app(scope, receive, send_and_note)
        finally:
            state = scope.get("state", {})
            gen: _Generation | None = state.get("generation")
            prompt = completion = 0
            note = note or str(state.get("note", ""))
            cancelled: BaseException | None = None
            if gen is not None:
                if not gen.done.is_set():
                    # A cancelled generation stops within a token; wait so the log has its counts.
                    gen.stop()
                    try:
                        await asyncio.get_running_loop().run_in_executor(None, gen.done.wait, 10.0)
                    except asyncio.CancelledError as exc:  # the server is shutting down
                        cancelled = exc
                self.server._active.discard(gen)
                out = gen.outcome
                prompt, completion = out.prompt_tokens, out.completion_tokens
                if gen.disconnected:
                    note = "client disconnected"
                elif out.error is not None:
                    note = out.error.message
                else:
                    note = out.finish_reason
            if status == 0:
                status = 499 if gen is not None and gen.disconnected else 500
            self.server._record(
                RequestRecord(
                    time=arrived,
                    method=scope.get("method", ""),
                    path=scope.get("path", ""),
                    status=status,
                    client=address,
                    duration_s=time.perf_counter() - t0,
                    prompt_tokens=prompt,
                    completion_tokens=completion,
                    stream=bool(state.get("stream")),
                    note=note,
                )
            )
            if cancelled is not None:
                raise cancelled


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        if os.name != "nt":  # on Windows SO_REUSEADDR would let two servers share a port
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        if exc.errno in (errno.EADDRINUSE, getattr(errno, "WSAEADDRINUSE", -1)):
            raise ServerError(f"Port {port} is already in use by another program. Choose another port.") from None
        if exc.errno in (errno.EACCES, getattr(errno, "WSAEACCES", -1)):
            raise ServerError(
                f"Harmonica may not listen on port {port} (ports below 1024 need administrator rights). Choose another port."
            ) from None
        raise ServerError(f"Cannot listen on {host}:{port}: {exc.strerror or exc}.") from None
    return sock


def lan_addresses() -> list[str]:
    """This machine's IPv4 addresses that other devices on the network might reach."""
    out: list[str] = []
    try:
        import psutil

        for addrs in psutil.net_if_addrs().values():
            for a in addrs:
                if (
                    a.family == socket.AF_INET
                    and not a.address.startswith("127.")
                    and not a.address.startswith("169.254.")
                ):
                    out.append(a.address)
    except Exception:  # noqa: BLE001 - only a hint for the UI
        pass
    return sorted(set(out))


def example_code(base_url: str, api_key: str = "", model: str = "gpt-oss-20b") -> str:
    """The Python snippet shown in the UI and the README, filled in with the real address and key."""
    key = api_key or "not-needed"
    return (
        "from openai import OpenAI\n"
        "\n"
        "client = OpenAI(\n"
        f'    base_url="{base_url}",\n'
        f'    api_key="{key}",\n'
        ")\n"
        "\n"
        "response = client.chat.completions.create(\n"
        f'    model="{model}",\n'
        "    messages=[\n"
        '        {"role": "system", "content": "You are a helpful assistant."},\n'
        '        {"role": "user", "content": "Explain what MXFP4 quantization is."},\n'
        "    ],\n"
        '    reasoning_effort="medium",  # low, medium or high\n'
        ")\n"
        "\n"
        "message = response.choices[0].message\n"
        'print("Reasoning:", message.reasoning_content)  # gpt-oss\'s chain of thought\n'
        'print("Answer:", message.content)\n'
    )


__all__ = [
    "DEFAULT_PORT",
    "ApiError",
    "ApiServer",
    "RequestRecord",
    "ServerError",
    "ServerSettings",
    "ServerTesting",
    "example_code",
    "generate_api_key",
    "lan_addresses",
    "parse_chat_request",
    "parse_responses_request",
]
