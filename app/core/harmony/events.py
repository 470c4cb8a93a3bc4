"""What the parser makes of a generation: stream events and the merged Completion."""

from __future__ import annotations

from dataclasses import dataclass, field


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
