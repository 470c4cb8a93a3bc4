"""Conversation model and the generation driver: conversation → prompt → engine → harmony events."""

from __future__ import annotations

import dataclasses
import json
import re
import threading
import time
import uuid
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from datetime import date as Date
from typing import Any

from app.core import harmony
from app.core.engine import EngineError, GenerationStats, ModelInfo, Sampling, stream_with_progress
from app.core.engine import EngineLike as EngineLike  # re-exported: run_turn's callers name it from here
from app.core.errors import HarmonicaError
from app.core.harmony import Done, Event, FinalDelta, PreambleDelta, ReasoningDelta, ToolCall

EFFORTS = ("low", "medium", "high")
# Room the answer needs at least; a prompt that leaves less is refused up front instead of
# producing a truncated answer of a few tokens.
MIN_ANSWER_TOKENS = 64

_SPECIAL_RE = re.compile(r"<\|([a-z_0-9]+)\|>")


class ChatError(HarmonicaError):
    """A problem with a turn that the user can act on; the message is for people."""


class ContextOverflowError(ChatError):
    """The conversation no longer fits in the model's context window."""

    def __init__(self, prompt_tokens: int, n_ctx: int) -> None:
        self.prompt_tokens = prompt_tokens
        self.n_ctx = n_ctx
        super().__init__(
            f"This conversation is too long for the model's context window: the prompt is "
            f"{prompt_tokens:,} tokens and the window holds {n_ctx:,}. Start a new conversation, "
            f"or reload the model with a larger context size."
        )


@dataclass
class ToolCallRecord:
    """A tool call made by the assistant, as stored in the conversation."""

    recipient: str
    arguments: str
    content_type: str | None = None
    channel: str = "commentary"

    @property
    def name(self) -> str:
        """The function name the chat template expects ("functions.x" → "x")."""
        return self.recipient.removeprefix("functions.")

    def arguments_value(self) -> Any:
        """Arguments as a dict when they are JSON (the template must not double-encode them)."""
        try:
            return json.loads(self.arguments)
        except (ValueError, TypeError):
            return self.arguments


@dataclass
class Message:
    """One message of a conversation."""

    role: str  # "user", "assistant", "developer", "system" or "tool"
    content: str = ""
    thinking: str = ""
    preamble: str = ""  # user-visible commentary text the assistant wrote before a tool call
    tool_calls: list[ToolCallRecord] = field(default_factory=list)
    name: str | None = None  # for tool results: the recipient that was called
    effort: str | None = None
    model: str | None = None
    stats: GenerationStats | None = None
    stop_reason: str | None = None
    thinking_s: float | None = None
    created: float = field(default_factory=time.time)
    finished: float | None = None
    id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Message:
        d = dict(data)
        d["tool_calls"] = [ToolCallRecord(**t) for t in d.get("tool_calls") or []]
        if d.get("stats") is not None:
            d["stats"] = GenerationStats(**d["stats"])
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def _defuse(text: str) -> str:
    """Keep text that looks like a harmony control token from becoming one in the prompt.

    The prompt is tokenized with special tokens enabled, so a user (or a web page, or a tool
    result) typing "<|end|>" would otherwise inject structure; the template also refuses content
    containing channel markers. A zero-width space keeps the text readable and inert.
    """
    return _SPECIAL_RE.sub(lambda m: "<\u200b|" + m.group(1) + "|>", text) if "<|" in text else text


@dataclass
class Conversation:
    """An ordered list of messages; renders itself in the transformers chat format."""

    messages: list[Message] = field(default_factory=list)
    title: str = ""
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    created: float = field(default_factory=time.time)

    def add(self, message: Message) -> Message:
        self.messages.append(message)
        return message

    def add_user(self, text: str) -> Message:
        if not self.title:
            first = " ".join(text.split())
            self.title = first[:60] + ("…" if len(first) > 60 else "")
        return self.add(Message(role="user", content=text))

    def add_tool_result(self, recipient: str, content: str) -> Message:
        return self.add(Message(role="tool", name=recipient, content=content))

    def to_render_messages(self, developer: str | None = None) -> list[dict[str, Any]]:
        """Messages for harmony.render_prompt (transformers format), following harmony's rules.

        This is the one place those rules live (the store renders its rows through it):
        - Only a leading system/developer message becomes the instructions; `developer` overrides it.
        - Reasoning follows harmony.md §4.4: it travels only on tool-call messages (as `thinking`,
          never together with `content`), and only while the tool loop is still running, i.e. no
          later assistant message ended in a final answer. Doing it here rather than leaving it to
          the template gives the same prompt with the launch-day template, which always re-rendered
          it (§4.6).
        - A generation that produced several tool calls is split so each call is its own
          assistant message (the template renders only tool_calls[0]).
        - Assistant messages with neither content nor tool calls (e.g. cancelled while reasoning)
          are left out: the template has nothing to render for them.
        - Text that looks like a control token stays text (see _defuse).
        """
        out: list[dict[str, Any]] = []
        instructions = developer
        msgs = self.messages
        last_final = max(
            (i for i, m in enumerate(msgs) if m.role == "assistant" and not m.tool_calls and m.content), default=-1
        )
        for i, m in enumerate(msgs):
            if m.role in ("system", "developer"):
                if instructions is None and not out:
                    instructions = m.content
                continue
            if m.role == "assistant":
                if m.tool_calls:
                    for n, call in enumerate(m.tool_calls):
                        msg: dict[str, Any] = {
                            "role": "assistant",
                            "tool_calls": [
                                {
                                    "type": "function",
                                    "function": {"name": call.name, "arguments": call.arguments_value()},
                                }
                            ],
                        }
                        if n == 0 and i > last_final and m.thinking:
                            msg["thinking"] = _defuse(m.thinking)
                        out.append(msg)
                elif m.content:
                    out.append({"role": "assistant", "content": _defuse(m.content)})
            elif m.role == "tool":
                out.append({"role": "tool", "name": m.name or "", "content": _defuse(m.content)})
            else:
                out.append({"role": m.role, "content": _defuse(m.content)})
        if instructions and instructions.strip():
            out.insert(0, {"role": "developer", "content": _defuse(instructions)})
        return out


def continuation_prefix(thinking: str, content: str) -> str:
    """Harmony text that reopens a cut-short assistant message, to follow `<|start|>assistant`.

    The reasoning and partial answer are written back exactly where they stopped (no terminator
    after the open part), so the next token continues them.
    """
    if content:
        head = f"<|channel|>analysis<|message|>{_defuse(thinking)}<|end|><|start|>assistant" if thinking else ""
        return f"{head}<|channel|>final<|message|>{_defuse(content)}"
    if thinking:
        return f"<|channel|>analysis<|message|>{_defuse(thinking)}"
    return ""


# --- The generation driver ------------------------------------------------------------------------
@dataclass(frozen=True)
class TurnStarted:
    """The prompt is ready; `message` is the assistant message being filled in (live)."""

    message: Message
    prompt_tokens: int
    n_ctx: int


@dataclass(frozen=True)
class PromptProgress:
    """The engine read `done` of the `total` prompt tokens it had to (the rest was cached).

    Not yielded: it arrives while the engine is busy with the prompt, so run_turn hands it to its
    `progress` callback (the UI's worker passes it on to the window: "Reading your message… 40%")."""

    done: int
    total: int

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 1.0


@dataclass(frozen=True)
class TurnFinished:
    """The assistant message is complete (or stopped) and has been appended to the conversation."""

    message: Message


TurnEvent = Event | TurnStarted | TurnFinished


@dataclass(frozen=True)
class ChatRequest:
    """The turn a prompt was rendered from, for engines that generate elsewhere (app/core/remote):
    a chat-completions server gets these messages and tools, not the rendered text."""

    messages: list[dict[str, Any]]  # transformers format, as render_prompt reads them
    effort: str
    tools: list[dict[str, Any]] | None = None
    builtin_tools: list[str] | None = None
    resume: Message | None = None  # the cut-short answer being continued


class RenderedPrompt(list[int]):
    """The token ids of a rendered prompt, carrying its text and the turn it came from.

    Every engine reads it as the list of ids it is; a RemoteEngine reads `text` (raw harmony) or
    `request` (chat completions). It passes unchanged through the scheduler and every wrapper.
    """

    def __init__(self, ids: Sequence[int], text: str, request: ChatRequest | None = None) -> None:
        super().__init__(ids)
        self.text = text
        self.request = request


def build_prompt(
    conversation: Conversation,
    info: ModelInfo | None,
    *,
    effort: str = "medium",
    developer: str | None = None,
    identity: str | None = None,
    tools: Sequence[dict[str, Any]] | None = None,
    builtin_tools: Sequence[str] | None = None,
    date: Date | None = None,
) -> str:
    """The prompt text for the next assistant message, with the model's own chat template."""
    try:
        return harmony.render_prompt(
            conversation.to_render_messages(developer),
            chat_template=info.chat_template if info is not None else None,
            tools=list(tools) if tools else None,
            builtin_tools=list(builtin_tools) if builtin_tools else None,
            reasoning_effort=effort,
            model_identity=identity,
            add_generation_prompt=True,
            date=date,
        )
    except Exception as exc:  # a template error is about this conversation, not a crash
        raise ChatError(f"Could not build the prompt for this conversation: {exc}") from exc


def run_turn(
    engine: EngineLike,
    conversation: Conversation,
    *,
    effort: str = "medium",
    sampling: Sampling | None = None,
    cancel: threading.Event | None = None,
    developer: str | None = None,
    identity: str | None = None,
    tools: Sequence[dict[str, Any]] | None = None,
    builtin_tools: Sequence[str] | None = None,
    date: Date | None = None,
    grammar: str | None = None,
    resume: Message | None = None,
    progress: Callable[[PromptProgress], None] | None = None,
) -> Generator[TurnEvent, None, None]:
    """Generate one assistant message for `conversation`, yielding events as they stream.

    Raises ChatError (ContextOverflowError when the prompt does not fit) or EngineError before
    anything is generated; once generation started, the (possibly partial) assistant message is
    always appended to the conversation, even when cancelled or when the engine fails.

    `resume` continues an answer that was cut short (stopped, or interrupted by a crash): the
    prompt ends inside that message, with its reasoning and partial answer already written, so
    the model picks up mid-sentence; new text is appended to `resume`, which is then appended to
    the conversation (which must not already hold it).

    `progress` is told how far the engine is in reading the prompt (PromptProgress), from the
    thread that runs this generator, before the first token.
    """
    info = engine.info
    if info is None:
        raise ChatError("No model is loaded. Open a gpt-oss model file first (File → Open model…).")
    if effort not in EFFORTS:
        raise ChatError(f"Unknown reasoning effort {effort!r}; choose low, medium or high.")
    sampling = sampling or Sampling()
    prompt = build_prompt(
        conversation,
        info,
        effort=effort,
        developer=developer,
        identity=identity,
        tools=tools,
        builtin_tools=builtin_tools,
        date=date,
    )
    prefix = continuation_prefix(resume.thinking, resume.content) if resume is not None else ""
    request = ChatRequest(
        conversation.to_render_messages(developer),
        effort,
        list(tools) if tools else None,
        list(builtin_tools) if builtin_tools else None,
        resume,
    )
    tokens = RenderedPrompt(engine.tokenize(prompt + prefix, special=True), prompt + prefix, request)
    n_ctx = engine.n_ctx
    if n_ctx and len(tokens) + MIN_ANSWER_TOKENS > n_ctx:
        raise ContextOverflowError(len(tokens), n_ctx)

    if resume is not None:
        message = resume
        message.finished = None
        message.stop_reason = None
    else:
        message = Message(role="assistant", effort=effort, model=info.name)
    yield TurnStarted(message, len(tokens), n_ctx)

    parser = harmony.StreamParser()
    if prefix:
        parser.feed(prefix)  # the text is already in `message`; its events are not repeated
    builder = _MessageBuilder(message)
    stop_reason = "error"
    failure: BaseException | None = None
    try:
        report = (lambda done, total: progress(PromptProgress(done, total))) if progress is not None else None
        for token_id, piece in stream_with_progress(
            engine, tokens, sampling, cancel=cancel, grammar=grammar, progress=report
        ):
            for ev in parser.feed(piece, token_id):
                builder.apply(ev)
                yield ev
        last = engine.last_stats
        stop_reason = (last.stop_reason if last is not None else "") or "eos"
        if cancel is not None and cancel.is_set():
            stop_reason = "cancelled"
    except GeneratorExit:
        _finish(conversation, builder, engine, parser, "cancelled")
        raise
    except Exception as exc:  # noqa: BLE001 -- any failure keeps the partial message, then is re-raised typed
        failure = exc
        stop_reason = "error"
    yield from _finish(conversation, builder, engine, parser, stop_reason)
    if failure is not None:
        if isinstance(failure, (EngineError, ChatError)):
            raise failure
        raise ChatError(f"Generation failed: {failure}") from failure
    yield TurnFinished(message)


class _MessageBuilder:
    """Fills in the assistant message from parser events, and times how long it reasoned."""

    def __init__(self, message: Message) -> None:
        self.message = message
        self._t_think: float | None = None

    def apply(self, ev: Event) -> None:
        message = self.message
        if isinstance(ev, ReasoningDelta):
            if self._t_think is None:
                self._t_think = time.perf_counter()
            message.thinking += ev.text
            return
        self.end_thinking()
        if isinstance(ev, FinalDelta):
            message.content += ev.text
        elif isinstance(ev, PreambleDelta):
            message.preamble += ev.text
        elif isinstance(ev, ToolCall):
            message.tool_calls.append(ToolCallRecord(ev.recipient, ev.arguments, ev.content_type, ev.channel))

    def end_thinking(self) -> None:
        """The reasoning is over (something else came, or the turn ended): note how long it took."""
        if self._t_think is not None and self.message.thinking_s is None:
            self.message.thinking_s = time.perf_counter() - self._t_think


def _finish(
    conversation: Conversation,
    builder: _MessageBuilder,
    engine: EngineLike,
    parser: harmony.StreamParser,
    stop_reason: str,
) -> list[Event]:
    """Flush the parser, fill in stats and append the message (once)."""
    message = builder.message
    if message.finished is not None:
        return []
    try:
        events: list[Event] = list(parser.finish(stop_reason))
    except Exception:  # noqa: BLE001 -- the parser is lenient by contract; never lose the message over it
        events = [Done(stop_reason)]
    for ev in events:
        builder.apply(ev)
    builder.end_thinking()
    last = engine.last_stats
    message.stats = dataclasses.replace(last) if last is not None else GenerationStats()
    message.stats.stop_reason = stop_reason
    message.stop_reason = stop_reason
    message.finished = time.time()
    conversation.add(message)
    return events
