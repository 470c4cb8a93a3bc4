"""What each kind of server speaks, and how its stream becomes harmony pieces for the app's own StreamParser.

Two ways to generate remotely:

- **raw harmony** (preferred where a server offers it): Harmonica renders the prompt itself, as for
  a local model, and the server continues the text with special tokens kept: llama-server's
  `/completion` with the harmony tokens in `preserved_tokens`, vLLM's `/v1/completions` with
  `skip_special_tokens: false`. The reply is gpt-oss's own output, parsed by harmony.StreamParser
  exactly like a local generation (builtin python and browser tools render natively).
- **chat completions** (everything else: Ollama, LM Studio, another Harmonica, any OpenAI-compatible
  server): the conversation goes as messages, and the deltas (`reasoning` / `reasoning_content` /
  `reasoning_text`, `content`, `tool_calls`) are turned back into harmony markers and text, so the
  same parser yields the same events. Text from the server is defused (a server cannot smuggle a
  `<|call|>` in through the content); python and the browser are offered as function tools
  (`python`, `browser_search`, …) and mapped back to their recipients.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from app.core.engine import Sampling
from app.core.harmony import PYTHON_SECTION, SPECIAL_TOKEN_IDS

Piece = tuple[int, bytes]
MAX_TOOL_CALLS = 16  # per answer; gpt-oss makes one at a time
TEXT_ID = -1  # the token id of a text piece: remote servers do not send ids, and -1 is never a marker

# --- kinds ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Kind:
    """One kind of server: how to name it, and what it offers."""

    id: str
    label: str
    raw: str | None  # "llama" (/completion), "openai" (/v1/completions with special tokens) or None
    # The field an assistant message's reasoning goes back in (chat completions).
    reasoning_field: str = "reasoning_content"
    # Whether the server's chat template continues a final assistant message (Continue in chat mode).
    continue_param: dict[str, Any] = field(default_factory=dict)


KINDS: dict[str, Kind] = {
    k.id: k
    for k in (
        Kind("vllm", "vLLM", "openai", "reasoning", {"continue_final_message": True, "add_generation_prompt": False}),
        Kind("llama-server", "llama.cpp server", "llama", "reasoning_content"),
        Kind("ollama", "Ollama", None, "reasoning"),
        Kind("lmstudio", "LM Studio", None, "reasoning"),
        Kind("harmonica", "Harmonica", None, "reasoning_content"),
        Kind("openai", "OpenAI-compatible server", None, "reasoning_content"),
    )
}
DEFAULT_KIND = "openai"


def kind_of(kind_id: str) -> Kind:
    return KINDS.get(kind_id, KINDS[DEFAULT_KIND])


# --- harmony markers --------------------------------------------------------------------------------
_SPECIAL_RE = re.compile(r"<\|([a-z_0-9]+)\|>")
HARMONY_MARKERS = ("<|start|>", "<|end|>", "<|message|>", "<|channel|>", "<|constrain|>", "<|return|>", "<|call|>")
_STOP_BY_ID = {SPECIAL_TOKEN_IDS["<|return|>"]: "return", SPECIAL_TOKEN_IDS["<|call|>"]: "call"}
_TOOL_NAME_RE = re.compile(r"[^A-Za-z0-9_.\-]")


def defuse(text: str) -> str:
    """Text from a server that must stay text: "<|call|>" becomes "<\u200b|call|>" (as the app does for prompts)."""
    return _SPECIAL_RE.sub(lambda m: "<\u200b|" + m.group(1) + "|>", text) if "<|" in text else text


def marker(name: str) -> Piece:
    """The piece of one harmony special token (its id is what the parser trusts)."""
    return SPECIAL_TOKEN_IDS[name], name.encode()


def text_piece(text: str) -> Piece:
    return TEXT_ID, text.encode("utf-8")


# --- builtin tools as function tools (chat completions) ----------------------------------------------
_PYTHON_FUNCTION = {
    "type": "function",
    "function": {
        "name": "python",
        "description": PYTHON_SECTION.removeprefix("## python\n\n").strip(),
        "parameters": {
            "type": "object",
            "properties": {"code": {"type": "string", "description": "The Python code to run."}},
            "required": ["code"],
        },
    },
}
_BROWSER_FUNCTIONS = [
    {
        "type": "function",
        "function": {
            "name": "browser_search",
            "description": "Searches the web for `query` and shows `topn` results.",
            "parameters": {
                "type": "object",
                "properties": {"query": {"type": "string"}, "topn": {"type": "integer"}},
                "required": ["query"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "browser_open",
            "description": "Opens link `id` of the page `cursor` (or a URL), at line `loc`, showing `num_lines` lines.",
            "parameters": {
                "type": "object",
                "properties": {
                    "id": {"type": ["integer", "string"]},
                    "cursor": {"type": "integer"},
                    "loc": {"type": "integer"},
                    "num_lines": {"type": "integer"},
                },
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "browser_find",
            "description": "Finds exact matches of `pattern` in the current page or page `cursor`.",
            "parameters": {
                "type": "object",
                "properties": {"pattern": {"type": "string"}, "cursor": {"type": "integer"}},
                "required": ["pattern"],
            },
        },
    },
]
_BUILTIN_WIRE = {
    "python": "python",
    "browser.search": "browser_search",
    "browser.open": "browser_open",
    "browser.find": "browser_find",
}
_WIRE_BUILTIN = {v: k for k, v in _BUILTIN_WIRE.items()}


def wire_tools(tools: Sequence[Mapping[str, Any]] | None, builtin_tools: Sequence[str] | None) -> list[dict[str, Any]]:
    """Function definitions for a chat request: the user's functions, then python and the browser as functions."""
    out: list[dict[str, Any]] = []
    for t in tools or ():
        fn = t.get("function") if isinstance(t.get("function"), Mapping) else t
        assert isinstance(fn, Mapping)
        entry = {"name": str(fn.get("name", "")), "description": str(fn.get("description") or "")}
        if fn.get("parameters") is not None:
            entry["parameters"] = fn["parameters"]
        out.append({"type": "function", "function": entry})
    builtins = set(builtin_tools or ())
    if "python" in builtins:
        out.append(_PYTHON_FUNCTION)
    if "browser" in builtins:
        out.extend(_BROWSER_FUNCTIONS)
    return out


def recipient_of(wire_name: str) -> str:
    """The harmony recipient of a function name a server sent back ("python", "browser.search", "functions.x")."""
    name = _TOOL_NAME_RE.sub("_", wire_name.strip())[:64] or "unnamed"
    if name in _WIRE_BUILTIN:
        return _WIRE_BUILTIN[name]
    return name if name.startswith("functions.") else "functions." + name


def wire_name_of(name: str) -> str:
    """The function name a chat request uses for a recipient stored in the conversation."""
    return _BUILTIN_WIRE.get(name, name.removeprefix("functions."))


# --- messages ---------------------------------------------------------------------------------------


def chat_messages(messages: Sequence[Mapping[str, Any]], kind: Kind) -> list[dict[str, Any]]:
    """The conversation (transformers-format messages, as render_prompt reads them) as OpenAI chat messages.

    Tool calls get ids (call_1, call_2, …) and each tool result answers the oldest call still open
    with that name (else the oldest open call), as harmony orders them.
    """
    out: list[dict[str, Any]] = []
    open_calls: list[tuple[str, str]] = []  # (id, wire name) not answered yet
    n = 0
    for m in messages:
        role = m.get("role")
        if role in ("developer", "system"):
            out.append({"role": "system", "content": str(m.get("content") or "")})
        elif role == "assistant":
            msg: dict[str, Any] = {"role": "assistant", "content": str(m.get("content") or "")}
            thinking = m.get("thinking") or m.get("reasoning_content") or m.get("reasoning")
            if thinking:
                msg[kind.reasoning_field] = str(thinking)
            calls = []
            for call in m.get("tool_calls") or ():
                fn = call.get("function", call) if isinstance(call, Mapping) else {}
                name = wire_name_of(str(fn.get("name", "")))
                args = fn.get("arguments", "")
                if not isinstance(args, str):
                    args = json.dumps(args, ensure_ascii=False)
                n += 1
                cid = f"call_{n}"
                open_calls.append((cid, name))
                calls.append({"id": cid, "type": "function", "function": {"name": name, "arguments": args}})
            if calls:
                msg["tool_calls"] = calls
                if not msg["content"]:
                    msg["content"] = None
            out.append(msg)
        elif role == "tool":
            name = wire_name_of(str(m.get("name") or ""))
            pick = next((c for c in open_calls if c[1] == name), open_calls[0] if open_calls else None)
            entry: dict[str, Any] = {"role": "tool", "content": str(m.get("content") or "")}
            if pick is not None:
                open_calls.remove(pick)
                entry["tool_call_id"] = pick[0]
                entry["name"] = pick[1]
            else:
                entry["tool_call_id"] = "call_0"
            out.append(entry)
        else:
            out.append({"role": "user", "content": str(m.get("content") or "")})
    return out


def sampling_fields(sampling: Sampling, *, max_tokens_key: str = "max_tokens") -> dict[str, Any]:
    """OpenAI sampling fields for `sampling` (top_k, min_p and the repeat penalty only where set)."""
    body: dict[str, Any] = {"temperature": sampling.temperature, "top_p": sampling.top_p}
    if sampling.max_tokens:
        body[max_tokens_key] = sampling.max_tokens
    if sampling.seed is not None:
        body["seed"] = sampling.seed
    if sampling.top_k:
        body["top_k"] = sampling.top_k
    if sampling.min_p:
        body["min_p"] = sampling.min_p
    if sampling.repeat_penalty and sampling.repeat_penalty != 1.0:
        body["repetition_penalty"] = sampling.repeat_penalty
    return body


def chat_body(
    model: str,
    messages: list[dict[str, Any]],
    *,
    kind: Kind,
    effort: str,
    sampling: Sampling,
    tools: list[dict[str, Any]],
    continuing: bool = False,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": model,
        "messages": messages,
        "stream": True,
        "stream_options": {"include_usage": True},
        "reasoning_effort": effort,
        **sampling_fields(sampling),
    }
    if tools:
        body["tools"] = tools
        body["tool_choice"] = "auto"
    if continuing:
        body.update(kind.continue_param)
    return body


def raw_body(model: str, prompt: str, *, kind: Kind, sampling: Sampling, room: int) -> dict[str, Any]:
    """The request that continues `prompt` (rendered harmony) with special tokens kept.

    `room` is what the context window leaves for the answer: vLLM's completions default to 16
    tokens when no limit is given, so one is always sent.
    """
    if kind.raw == "llama":
        body: dict[str, Any] = {
            "prompt": prompt,
            "stream": True,
            "cache_prompt": True,
            "n_predict": sampling.max_tokens or -1,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "top_k": sampling.top_k,
            "min_p": sampling.min_p,
            "repeat_penalty": sampling.repeat_penalty,
            # llama-server drops special tokens from the text unless they are "preserved".
            "preserved_tokens": list(HARMONY_MARKERS),
        }
        if sampling.seed is not None:
            body["seed"] = sampling.seed
        return body
    return {
        "model": model,
        "prompt": prompt,
        "stream": True,
        "stream_options": {"include_usage": True},
        "skip_special_tokens": False,
        "spaces_between_special_tokens": False,
        "stop_token_ids": [SPECIAL_TOKEN_IDS["<|return|>"], SPECIAL_TOKEN_IDS["<|call|>"]],
        "include_stop_str_in_output": False,
        "max_tokens": min(sampling.max_tokens, room) if sampling.max_tokens else room,
        **{k: v for k, v in sampling_fields(sampling).items() if k != "max_tokens"},
    }


# --- streams → pieces -------------------------------------------------------------------------------


@dataclass
class StreamOutcome:
    """What the end of a stream said: how it stopped and the server's token counts."""

    stop_reason: str = ""  # "return", "call", "length", "eos"; "" while the stream has not ended properly
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    pieces: int = 0  # pieces yielded (a stand-in for tokens where the server sends no usage)


def _usage(outcome: StreamOutcome, usage: Any) -> None:
    if not isinstance(usage, Mapping):
        return
    pt, ct = usage.get("prompt_tokens"), usage.get("completion_tokens")
    if isinstance(pt, int) and pt >= 0:
        outcome.prompt_tokens = pt
    if isinstance(ct, int) and ct >= 0:
        outcome.completion_tokens = ct
    details = usage.get("prompt_tokens_details")
    if isinstance(details, Mapping) and isinstance(details.get("cached_tokens"), int):
        outcome.cached_tokens = int(details["cached_tokens"])


_FINISH = {"stop": "return", "tool_calls": "call", "function_call": "call", "length": "length", "eos": "return"}


class ChatDeltaMapper:
    """Chat-completion chunks → harmony pieces (markers by id, text defused), in stream order.

    Reasoning opens an analysis message, content a final message; tool calls are gathered by
    index and written out as commentary calls when the stream ends (their arguments arrive in
    fragments), each ended by `<|call|>`.
    """

    def __init__(self, outcome: StreamOutcome) -> None:
        self.outcome = outcome
        self._channel: str | None = None
        self._messages = 0
        self._calls: dict[int, dict[str, Any]] = {}
        self._finish: str | None = None

    def _open(self, channel: str) -> Iterator[Piece]:
        if self._channel == channel:
            return
        if self._channel is not None:
            yield marker("<|end|>")
        if self._messages:
            yield marker("<|start|>")
            yield text_piece("assistant")
        self._messages += 1
        self._channel = channel
        yield marker("<|channel|>")
        yield text_piece(channel)
        yield marker("<|message|>")

    def feed(self, chunk: Mapping[str, Any]) -> Iterator[Piece]:
        _usage(self.outcome, chunk.get("usage"))
        choices = chunk.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], Mapping):
            return
        choice = choices[0]
        delta = choice.get("delta") if isinstance(choice.get("delta"), Mapping) else choice.get("message")
        if isinstance(delta, Mapping):
            reasoning = next(
                (
                    delta[k]
                    for k in ("reasoning", "reasoning_content", "reasoning_text")
                    if isinstance(delta.get(k), str)
                ),
                None,
            )
            if reasoning:
                yield from self._open("analysis")
                yield text_piece(defuse(reasoning))
            content = delta.get("content")
            if isinstance(content, str) and content:
                yield from self._open("final")
                yield text_piece(defuse(content))
            calls = delta.get("tool_calls")
            if isinstance(calls, list):
                for i, call in enumerate(calls):
                    self._gather(call, i)
        finish = choice.get("finish_reason")
        if isinstance(finish, str) and finish:
            self._finish = finish

    def _gather(self, call: Any, position: int) -> None:
        if not isinstance(call, Mapping):
            return
        index = call.get("index", position)
        index = index if isinstance(index, int) else position
        if index not in self._calls and len(self._calls) >= MAX_TOOL_CALLS:
            return  # a server inventing hundreds of calls does not get hundreds of approval cards
        slot = self._calls.setdefault(index, {"name": "", "arguments": ""})
        fn = call.get("function")
        if isinstance(fn, Mapping):
            if isinstance(fn.get("name"), str):
                slot["name"] += fn["name"]
            args = fn.get("arguments")
            if isinstance(args, str):
                slot["arguments"] += args
            elif args is not None:
                slot["arguments"] += json.dumps(args, ensure_ascii=False)

    def finish(self) -> Iterator[Piece]:
        """Write out the gathered tool calls; set the outcome's stop reason (only when the server ended the answer)."""
        calls = [self._calls[i] for i in sorted(self._calls)]
        for call in calls:
            if not call["name"]:
                continue
            recipient = recipient_of(call["name"])
            if self._channel is not None:
                yield marker("<|end|>")
            if self._messages:
                yield marker("<|start|>")
                yield text_piece("assistant")
            self._messages += 1
            self._channel = None
            builtin = recipient in _BUILTIN_WIRE
            yield marker("<|channel|>")
            yield text_piece(("analysis" if builtin else "commentary") + f" to={recipient} ")
            if not builtin:
                yield marker("<|constrain|>")
                yield text_piece("json")
            yield marker("<|message|>")
            yield text_piece(defuse(call["arguments"]))
            yield marker("<|call|>")
        if self._finish is not None:
            stop = _FINISH.get(self._finish, "return")
            self.outcome.stop_reason = "call" if calls and stop == "return" else stop
        elif calls:
            self.outcome.stop_reason = "call"


class RawReader:
    """Raw completion chunks (llama-server /completion or OpenAI /v1/completions) → text pieces and the stop reason."""

    def __init__(self, outcome: StreamOutcome, kind: Kind) -> None:
        self.outcome = outcome
        self.kind = kind
        self._tail = ""

    def feed(self, chunk: Mapping[str, Any]) -> Iterator[Piece]:
        if self.kind.raw == "llama":
            yield from self._llama(chunk)
        else:
            yield from self._openai(chunk)

    def _text(self, text: str) -> Iterator[Piece]:
        if text:
            self._tail = (self._tail + text)[-16:]
            yield text_piece(text)

    def _llama(self, chunk: Mapping[str, Any]) -> Iterator[Piece]:
        content = chunk.get("content")
        if isinstance(content, str):
            yield from self._text(content)
        if chunk.get("stop") is True:
            pt, ct = chunk.get("tokens_evaluated"), chunk.get("tokens_predicted")
            if isinstance(pt, int):
                self.outcome.prompt_tokens = pt
            if isinstance(ct, int):
                self.outcome.completion_tokens = ct
            timings = chunk.get("timings")
            if isinstance(timings, Mapping) and isinstance(timings.get("cache_n"), int):
                self.outcome.cached_tokens = int(timings["cache_n"])
            stop_type = chunk.get("stop_type")
            if self._tail.endswith("<|call|>"):
                self.outcome.stop_reason = "call"
            elif self._tail.endswith("<|return|>"):
                self.outcome.stop_reason = "return"
            elif stop_type == "limit":
                self.outcome.stop_reason = "length"
            else:
                self.outcome.stop_reason = "eos"

    def _openai(self, chunk: Mapping[str, Any]) -> Iterator[Piece]:
        _usage(self.outcome, chunk.get("usage"))
        choices = chunk.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], Mapping):
            return
        choice = choices[0]
        text = choice.get("text")
        if isinstance(text, str):
            yield from self._text(text)
        finish = choice.get("finish_reason")
        if isinstance(finish, str) and finish:
            stop_id = choice.get("stop_reason")
            if isinstance(stop_id, int) and stop_id in _STOP_BY_ID:
                self.outcome.stop_reason = _STOP_BY_ID[stop_id]
            elif finish == "length":
                self.outcome.stop_reason = "length"
            elif self._tail.endswith("<|call|>"):
                self.outcome.stop_reason = "call"
            else:
                self.outcome.stop_reason = "return" if finish == "stop" else "eos"

    def finish(self) -> Iterator[Piece]:
        return iter(())
