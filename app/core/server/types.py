"""Typed API requests: the table of request fields (JSON type, range, meaning) and the request they parse into.

Every scalar parameter is declared once here, with its range; parsing reads it through that
declaration, and a bad value becomes one 400 error naming the parameter (errors.invalid). To
accept a new parameter, add a row to a table below (or a field to GenerationRequest) and read it
in parsing.py.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from app.core.engine import Sampling
from app.core.server.errors import invalid
from app.core.server.structured import OutputFormat, ToolPlan

# OpenAI's efforts are wider than gpt-oss's three; the nearest one is used.
EFFORT_ALIASES: Final = {
    "none": "low",
    "minimal": "low",
    "low": "low",
    "medium": "medium",
    "high": "high",
    "xhigh": "high",
}
DEFAULT_EFFORT: Final = "medium"


def is_number(v: Any) -> bool:
    """A JSON number (booleans are not numbers here, although Python says they are)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool)


@dataclass(frozen=True)
class Number:
    """A JSON number in [lo, hi] (or (lo, hi] when lo_open)."""

    lo: float
    hi: float
    lo_open: bool = False

    def check(self, key: str, v: Any) -> float:
        # NaN compares false with everything and JSON parsers accept NaN, Infinity and 1e999.
        if not is_number(v) or not math.isfinite(v) or v < self.lo or v > self.hi or (self.lo_open and v == self.lo):
            low = f"greater than {self.lo:g}" if self.lo_open else f"at least {self.lo:g}"
            raise invalid(f"'{key}' must be a number {low} and at most {self.hi:g}; got {json.dumps(v)}.", key)
        return float(v)


@dataclass(frozen=True)
class Integer:
    """A JSON integer in [lo, hi] (each bound optional); integral floats such as 5.0 count."""

    lo: int | None = None
    hi: int | None = None

    def check(self, key: str, v: Any) -> int:
        if isinstance(v, float) and math.isfinite(v) and v.is_integer():
            v = int(v)
        if (
            isinstance(v, bool)
            or not isinstance(v, int)
            or (self.lo is not None and v < self.lo)
            or (self.hi is not None and v > self.hi)
        ):
            if self.lo is not None and self.hi is not None:
                bounds = f" from {self.lo} to {self.hi}"
            elif self.lo is not None:
                bounds = f" of at least {self.lo}"
            else:
                bounds = ""
            shown = (
                json.dumps(v) if not isinstance(v, int) or abs(v) < 10**30 else f"an integer of {len(str(v))} digits"
            )
            raise invalid(f"'{key}' must be an integer{bounds}; got {shown}.", key)
        return v


@dataclass(frozen=True)
class Boolean:
    """true or false."""

    def check(self, key: str, v: Any) -> bool:
        if not isinstance(v, bool):
            raise invalid(f"'{key}' must be true or false; got {json.dumps(v)}.", key)
        return v


@dataclass(frozen=True)
class Effort:
    """A reasoning effort: OpenAI's names are mapped onto gpt-oss's low, medium and high."""

    def check(self, key: str, v: Any) -> str:
        if not isinstance(v, str) or v.lower() not in EFFORT_ALIASES:
            raise invalid(f"'{key}' must be one of low, medium, high; got {json.dumps(v)}.", key)
        return EFFORT_ALIASES[v.lower()]


def read_number(body: Mapping[str, Any], key: str, kind: Number) -> float | None:
    v = body.get(key)
    return None if v is None else kind.check(key, v)


def read_integer(body: Mapping[str, Any], key: str, kind: Integer) -> int | None:
    v = body.get(key)
    return None if v is None else kind.check(key, v)


def read_bool(body: Mapping[str, Any], key: str, default: bool) -> bool:
    v = body.get(key)
    return default if v is None else Boolean().check(key, v)


def read_effort(value: Any, param: str) -> str:
    return DEFAULT_EFFORT if value is None else Effort().check(param, value)


# --- sampling: request parameter → Sampling attribute --------------------------------------------

_INT32_MAX: Final = 2**31 - 1
# OpenAI's parameters, then llama.cpp-style extensions that many local clients send.
SAMPLING_FIELDS: Final[Mapping[str, Number | Integer]] = {
    "temperature": Number(0.0, 2.0),
    "top_p": Number(0.0, 1.0, lo_open=True),
    "seed": Integer(-(2**63), 2**64 - 1),  # what OpenAI's int64 and llama.cpp's uint32 seeds allow
    "presence_penalty": Number(-2.0, 2.0),
    "frequency_penalty": Number(-2.0, 2.0),
    "top_k": Integer(0, _INT32_MAX),
    "min_p": Number(0.0, 1.0),
    "repeat_penalty": Number(0.0, 10.0, lo_open=True),
}
# logit_bias: {"token id": bias}; OpenAI allows up to 300 entries of -100…100.
MAX_LOGIT_BIAS: Final = 300
LOGIT_BIAS_VALUE: Final = Number(-100.0, 100.0)
# The names of the answer-length limit, per endpoint; where several are given the later (newer) one wins.
MAX_TOKENS_FIELDS: Final[Mapping[str, tuple[str, ...]]] = {
    "chat": ("max_tokens", "max_completion_tokens"),
    "responses": ("max_output_tokens",),
    "completions": ("max_tokens",),
}
MAX_TOKENS: Final = Integer(1, _INT32_MAX)


@dataclass(frozen=True)
class Unsupported:
    """A parameter this server cannot honour: accepted only with a value that changes nothing."""

    key: str
    harmless: Callable[[Any], bool]
    message: str
    param: str | None = None  # the parameter the error names, when not `key`


UNSUPPORTED_FIELDS: Final[Sequence[Unsupported]] = (
    Unsupported("n", lambda v: v == 1, "This server makes one choice per request; 'n' must be 1."),
    Unsupported("logprobs", lambda v: not v, "This server does not return log probabilities."),
    Unsupported("top_logprobs", lambda v: not v, "This server does not return log probabilities.", "logprobs"),
)


def read_sampling(body: Mapping[str, Any], endpoint: Literal["chat", "responses", "completions"]) -> Sampling:
    """The sampler settings of a request, every value checked against SAMPLING_FIELDS."""
    s = Sampling()
    for key, kind in SAMPLING_FIELDS.items():
        v = body.get(key)
        if v is not None:
            setattr(s, key, kind.check(key, v))
    for key in MAX_TOKENS_FIELDS[endpoint]:
        m = read_integer(body, key, MAX_TOKENS)
        if m is not None:
            s.max_tokens = m
    s.logit_bias = read_logit_bias(body.get("logit_bias"))
    for u in UNSUPPORTED_FIELDS:
        v = body.get(u.key)
        if v is not None and not u.harmless(v):
            raise invalid(u.message, u.param or u.key)
    return s


def read_logit_bias(value: Any) -> dict[int, float] | None:
    """OpenAI's logit_bias object: token ids (as strings) → bias from -100 to 100."""
    if value is None:
        return None
    if not isinstance(value, Mapping) or len(value) > MAX_LOGIT_BIAS:
        raise invalid(
            f"'logit_bias' must be an object of at most {MAX_LOGIT_BIAS} token ids (as strings) mapped to "
            "a bias from -100 to 100.",
            "logit_bias",
        )
    out: dict[int, float] = {}
    for key, bias in value.items():
        if not (isinstance(key, str) and key.isascii() and key.isdigit() and len(key) <= 9):
            raise invalid(f"'logit_bias' keys must be token ids such as \"1734\"; got {json.dumps(key)}.", "logit_bias")
        out[int(key)] = LOGIT_BIAS_VALUE.check(f"logit_bias.{key}", bias)
    return out or None


# --- the parsed request ----------------------------------------------------------------------------


@dataclass
class GenerationRequest:
    """A validated generation request of either endpoint: what run_turn needs, and what the reply echoes."""

    endpoint: Literal["chat", "responses", "completions"]
    messages: list[dict[str, Any]]  # transformers-format messages for harmony.render_prompt
    tools: list[dict[str, Any]] | None  # OpenAI chat-shaped function tools, after tool_choice
    effort: str
    sampling: Sampling
    stream: bool
    include_usage: bool = False  # chat: stream_options.include_usage
    stop: list[str] = field(default_factory=list)  # chat: stop sequences, applied to the answer
    body: Mapping[str, Any] = field(default_factory=dict)  # the request as sent
    store: bool = True  # responses: keep the conversation for previous_response_id
    input_messages: list[dict[str, Any]] = field(default_factory=list)  # the conversation without instructions
    output_format: OutputFormat | None = None  # response_format / text.format: JSON output
    tool_plan: ToolPlan = field(default_factory=ToolPlan)  # tool_choice and strict tools
    builtin_tools: list[str] = field(default_factory=list)  # "browser" when a web_search tool is served
    namespaces: dict[str, str] = field(default_factory=dict)  # flattened function name → its namespace
    exclude_reasoning: bool = False  # reasoning: {"exclude": true}: no reasoning in the reply
    reasoning_summary: str | None = None  # responses: reasoning.summary ("auto", "concise", "detailed")
    raw_prompt: str | None = None  # /v1/completions: the prompt text as given, special tokens kept
    echo_tools: list[dict[str, Any]] = field(default_factory=list)  # responses: the tools as the client sent them
    notes: list[str] = field(default_factory=list)  # what the server skipped or changed, for the log
