"""The tool loop: generate, run the tool the model called (with approval), append its result, generate again.

`run_tool_loop` is a generator meant for a worker thread (app/ui/workers.py). Besides every event
of `chat.run_turn` it yields tool events: a call card appears (ToolCallStarted), the user is asked
(ApprovalRequest / FileRequest carry a thread-safe Reply the UI answers), the tool runs
(ToolRunning) and finishes (ToolFinished, with the tool message appended to the conversation).
It ends with LoopFinished, after RoundLimitReached when the model kept calling tools.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import date as Date
from pathlib import Path
from typing import Any

from app.core.chat import Conversation, Message, PromptProgress, ToolCallRecord, TurnEvent, TurnFinished, run_turn
from app.core.engine import EngineLike, Sampling
from app.core.tools.base import Approval, Decision, Reply, ToolOutcome
from app.core.tools.local import ToolError, read_picked_file
from app.core.tools.registry import ToolSession

MAX_RESULT_CHARS = 16_000  # what one tool result may add to the prompt (≈ 4k tokens)

# Statuses of a call card.
WAITING = "waiting"  # for the user's approval or file choice
RUNNING = "running"
DONE = "done"
ERROR = "error"
DENIED = "denied"
CANCELLED = "cancelled"
SKIPPED = "skipped"  # the round limit was reached before it ran
STATUSES = (WAITING, RUNNING, DONE, ERROR, DENIED, CANCELLED, SKIPPED)


@dataclass
class ToolRun:
    """One tool call and its result: what a card shows and what the store keeps to show it again."""

    recipient: str  # as the model wrote it, e.g. "functions.get_weather", "python", "browser.search"
    arguments: str  # raw arguments (JSON text, or code for python)
    kind: str = "function"  # "function", "python", "browser" or "unknown"
    tool: str = ""  # the registry's tool name ("get_weather", "python", "browser")
    status: str = WAITING
    started: float | None = None  # epoch seconds when it started running
    duration_s: float | None = None
    output: str = ""  # shown on the card (may be longer than what the model got)
    result: str = ""  # the tool message the model reads
    is_error: bool = False
    images: list[str] = field(default_factory=list)
    message_id: str | None = None  # the assistant message that made the call
    result_message_id: str | None = None  # the tool message holding the result
    request: str | None = None  # "approval" or "file" while waiting for the user
    id: str = field(default_factory=lambda: uuid.uuid4().hex)

    @property
    def title(self) -> str:
        """The name on the card: "python", "browser.search", "get_weather"."""
        return self.recipient.removeprefix("functions.") or "tool"

    @property
    def language(self) -> str:
        return "python" if self.kind == "python" else "json"

    def code(self) -> str:
        """The code of a python call (the model sends raw code, sometimes a JSON {"code": ...})."""
        return python_code(self.arguments)

    def pretty_arguments(self) -> str:
        if self.kind == "python":
            return self.code()
        try:
            return json.dumps(json.loads(self.arguments), indent=2, ensure_ascii=False)
        except (ValueError, TypeError):
            return self.arguments

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ToolRun:
        known = set(cls.__dataclass_fields__)
        run = cls(**{k: v for k, v in data.items() if k in known})
        if run.status not in STATUSES:
            run.status = ERROR if run.is_error else DONE
        run.images = [str(p) for p in run.images or []]
        return run


# --- events ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ToolCallStarted:
    """A call card appears (status WAITING when the user will be asked, RUNNING otherwise)."""

    run: ToolRun


@dataclass(frozen=True)
class ApprovalRequest:
    """Ask the user: answer `reply.answer(Decision.ALLOW_ONCE | ALLOW_ALWAYS | DENY)` from any thread."""

    run: ToolRun
    reply: Reply


@dataclass(frozen=True)
class FileRequest:
    """The model wants a file read: the user picks one (`reply.answer(path)`) or refuses (`reply.answer(None)`)."""

    run: ToolRun
    purpose: str
    suggested_path: str | None
    reply: Reply


@dataclass(frozen=True)
class ToolRunning:
    run: ToolRun


@dataclass(frozen=True)
class ToolFinished:
    """The tool finished (or was denied/skipped); `message` is the tool message now in the conversation."""

    run: ToolRun
    message: Message


@dataclass(frozen=True)
class RoundLimitReached:
    limit: int
    text: str


@dataclass(frozen=True)
class LoopFinished:
    """The loop ended; `message` is the last assistant message (the final answer when there is one)."""

    message: Message | None
    tool_calls: int
    reason: str  # "answer", "round_limit", "cancelled", "stopped" (length/error/eos without an answer)


LoopEvent = (
    TurnEvent
    | ToolCallStarted
    | ApprovalRequest
    | FileRequest
    | ToolRunning
    | ToolFinished
    | RoundLimitReached
    | LoopFinished
)
Grammar = str | Sequence[str | None] | Callable[[int], "str | None"] | None


def python_code(arguments: str) -> str:
    text = arguments or ""
    stripped = text.strip()
    if stripped.startswith("{"):
        try:
            value = json.loads(stripped)
        except ValueError:
            return text
        if isinstance(value, dict) and isinstance(value.get("code"), str):
            return str(value["code"])
    return text


def _grammar_for(grammar: Grammar, generation: int) -> str | None:
    if grammar is None or isinstance(grammar, str):
        return grammar
    if callable(grammar):
        return grammar(generation)
    items = list(grammar)
    if not items:
        return None
    return items[min(generation, len(items) - 1)]


def _cap(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    head = text[: limit * 3 // 4]
    tail = text[-(limit // 4) :]
    return f"{head}\n[… {len(text) - len(head) - len(tail):,} characters left out …]\n{tail}"


def _parse_json_arguments(raw: str) -> tuple[Any, str | None]:
    text = (raw or "").strip()
    if not text:
        return {}, None
    try:
        return json.loads(text), None
    except json.JSONDecodeError as exc:
        return None, f"the arguments are not valid JSON ({exc.msg} at position {exc.pos}); send a JSON object"


# --- the loop --------------------------------------------------------------------------------------
def run_tool_loop(
    engine: EngineLike,
    conversation: Conversation,
    session: ToolSession,
    *,
    effort: str = "medium",
    sampling: Sampling | None = None,
    cancel: threading.Event | None = None,
    developer: str | None = None,
    identity: str | None = None,
    date: Date | None = None,
    grammar: Grammar = None,
    round_limit: int | None = None,
    max_result_chars: int = MAX_RESULT_CHARS,
    progress: Callable[[PromptProgress], None] | None = None,
) -> Iterator[LoopEvent]:
    """Answer the conversation's last user message, running the tools the model calls.

    Raises what run_turn raises before a generation starts (ChatError, EngineError); tool
    problems never raise: they become tool results the model reads.
    """
    limit = round_limit if round_limit is not None else session.registry.settings.round_limit
    cancel = cancel or threading.Event()
    calls = 0
    generation = 0
    while True:
        tools, builtin = session.prompt_tools()
        last: Message | None = None
        for ev in run_turn(
            engine,
            conversation,
            effort=effort,
            sampling=sampling,
            cancel=cancel,
            developer=developer,
            identity=identity,
            tools=tools,
            builtin_tools=builtin,
            date=date,
            grammar=_grammar_for(grammar, generation),
            progress=progress,
        ):
            if isinstance(ev, TurnFinished):
                last = ev.message
            yield ev
        generation += 1
        if last is None:
            yield LoopFinished(None, calls, "stopped")
            return
        if cancel.is_set() or last.stop_reason == "cancelled":
            yield LoopFinished(last, calls, "cancelled")
            return
        if not last.tool_calls or last.stop_reason in ("length", "error"):
            yield LoopFinished(last, calls, "answer" if last.content else "stopped")
            return
        for call in last.tool_calls:
            if calls >= limit:
                run = ToolRun(
                    call.recipient,
                    call.arguments,
                    kind=_kind_of(call.recipient),
                    status=SKIPPED,
                    message_id=last.id,
                    is_error=True,
                )
                run.result = run.output = f"Not run: the limit of {limit} tool calls for one answer was reached."
                msg = conversation.add_tool_result(call.recipient, run.result)
                run.result_message_id = msg.id
                yield ToolFinished(run, msg)
                text = (
                    f"Stopped after {limit} tool calls without a final answer. Send a message to let the "
                    f"model continue, or raise the limit in Settings → Tools."
                )
                yield RoundLimitReached(limit, text)
                yield LoopFinished(last, calls, "round_limit")
                return
            calls += 1
            run = yield from _run_call(call, last, conversation, session, cancel, max_result_chars)
            if run.status == CANCELLED or cancel.is_set():
                yield LoopFinished(last, calls, "cancelled")
                return


def _snap(run: ToolRun) -> ToolRun:
    """A copy for an event: events are delivered later on the UI thread, and must say what was true then
    (cards match runs by `id`)."""
    return replace(run, images=list(run.images))


def _kind_of(recipient: str) -> str:
    if recipient == "python":
        return "python"
    if recipient.startswith("browser."):
        return "browser"
    if recipient.startswith("functions."):
        return "function"
    return "unknown"


def _run_call(
    call: ToolCallRecord,
    assistant: Message,
    conversation: Conversation,
    session: ToolSession,
    cancel: threading.Event,
    max_result_chars: int,
) -> Generator[LoopEvent, None, ToolRun]:
    """Resolve, approve, run and record one call; returns its ToolRun (through StopIteration)."""
    registry = session.registry
    recipient = call.recipient.strip()
    run = ToolRun(recipient, call.arguments, kind=_kind_of(recipient), message_id=assistant.id)
    outcome: ToolOutcome | None = None
    tool_name = ""
    file_args: dict[str, Any] | None = None

    # 1. What is being called, and may it run at all?
    if run.kind == "python":
        tool_name = "python"
        if not registry.is_enabled("python"):
            outcome = ToolOutcome(
                "Error: the python tool is not enabled in this chat; answer without it.", is_error=True
            )
    elif run.kind == "browser":
        tool_name = "browser"
        if not registry.is_enabled("browser") or not registry.browser_available(session.offline):
            why = "Harmonica is offline" if session.offline and registry.is_enabled("browser") else "it is not enabled"
            outcome = ToolOutcome(
                f"Error: the browser tool is not available ({why}); answer without browsing.", is_error=True
            )
    elif run.kind == "function":
        raw = recipient[len("functions.") :]
        info = registry.resolve_function(raw)
        if info is None or not registry.is_enabled(info.name):
            names = ", ".join(t.name for t in registry.function_tools() if registry.is_enabled(t.name)) or "none"
            what = "is not enabled" if info is not None else "does not exist"
            outcome = ToolOutcome(f"Error: the function {raw!r} {what}. Available functions: {names}.", is_error=True)
        else:
            tool_name = info.name
            args, problem = _parse_json_arguments(call.arguments)
            if problem is not None:
                outcome = ToolOutcome(f"Error: {problem}.", is_error=True)
            elif info.default_approval is Approval.PICK_FILE:
                file_args = args if isinstance(args, dict) else {}
    else:
        available = ["functions.*"] + [n for n in ("python", "browser") if registry.is_enabled(n)]
        outcome = ToolOutcome(
            f"Error: there is no tool named {recipient!r} here. Available: {', '.join(available)}.", is_error=True
        )
    run.tool = tool_name or recipient

    # 2. Approval (or the user picking the file).
    picked: str | None = None
    announced = outcome is None  # every branch below shows the card; a refused call shows it at the end
    if outcome is None:
        approval = registry.approval_for(tool_name)
        if approval is Approval.PICK_FILE:
            run.status, run.request = WAITING, "file"
            yield ToolCallStarted(_snap(run))
            reply = Reply()
            purpose = str((file_args or {}).get("purpose") or "")
            suggested = (file_args or {}).get("suggested_path")
            yield FileRequest(_snap(run), purpose, str(suggested) if suggested else None, reply)
            answer = reply.wait(cancel)
            run.request = None
            if cancel.is_set():
                outcome = ToolOutcome(
                    "The user stopped the answer before choosing a file.", is_error=True, status=CANCELLED
                )
            elif not answer:
                outcome = ToolOutcome("The user declined to share a file.", is_error=True, status=DENIED)
            else:
                picked = str(answer)
        elif approval is Approval.ASK and tool_name not in session.always_allowed:
            run.status, run.request = WAITING, "approval"
            yield ToolCallStarted(_snap(run))
            reply = Reply()
            yield ApprovalRequest(_snap(run), reply)
            decision = reply.wait(cancel)
            run.request = None
            if cancel.is_set() or decision is None:
                outcome = ToolOutcome(
                    "The user stopped the answer before allowing this call.", is_error=True, status=CANCELLED
                )
            elif decision == Decision.DENY or decision == Decision.DENY.value:
                outcome = ToolOutcome(
                    "The user denied this tool call. Do not retry it; answer without it.", is_error=True, status=DENIED
                )
            elif decision == Decision.ALLOW_ALWAYS or decision == Decision.ALLOW_ALWAYS.value:
                session.always_allowed.add(tool_name)
        else:
            run.status = RUNNING
            yield ToolCallStarted(_snap(run))

    # 3. Run it.
    if outcome is None:
        run.status = RUNNING
        run.started = time.time()
        yield ToolRunning(_snap(run))
        t0 = time.monotonic()
        try:
            outcome = _execute(run, tool_name, call, session, cancel, picked)
        except Exception as exc:  # noqa: BLE001 - a bug in a tool path must not end the chat
            outcome = ToolOutcome(f"Error: the tool failed: {type(exc).__name__}: {exc}", is_error=True)
        run.duration_s = time.monotonic() - t0
        if cancel.is_set() and outcome.status is None:
            outcome.status = CANCELLED

    run.is_error = outcome.is_error
    run.status = outcome.status or (ERROR if outcome.is_error else DONE)
    if not announced:
        yield ToolCallStarted(_snap(run))  # refused before it could run: the card still appears
    run.images = list(outcome.images)
    run.output = outcome.output if outcome.output is not None else outcome.content
    run.result = _cap(outcome.content, max_result_chars)
    message = conversation.add_tool_result(recipient, run.result)
    run.result_message_id = message.id
    yield ToolFinished(run, message)
    return run


def _execute(
    run: ToolRun,
    tool_name: str,
    call: ToolCallRecord,
    session: ToolSession,
    cancel: threading.Event,
    picked: str | None,
) -> ToolOutcome:
    registry = session.registry
    if run.kind == "python":
        result = session.kernel.execute(run.code(), cancel=cancel)
        text = result.model_text()
        outcome = ToolOutcome(text, is_error=result.is_error, images=list(result.images))
        if cancel.is_set():
            outcome.status = CANCELLED
        return outcome
    if run.kind == "browser":
        args, problem = _parse_json_arguments(call.arguments)
        if problem is not None:
            return ToolOutcome(f"Error: {problem}.", is_error=True)
        return session.browser.call(run.recipient.split(".", 1)[1], args, cancel=cancel)
    info = registry.info(tool_name)
    assert info is not None
    if picked is not None:
        try:
            return ToolOutcome(read_picked_file(Path(picked)))
        except ToolError as exc:
            return ToolOutcome(f"Error: {exc}", is_error=True)
    args, problem = _parse_json_arguments(call.arguments)
    if problem is not None:
        return ToolOutcome(f"Error: {problem}.", is_error=True)
    return registry.call_function(info, args, cancel=cancel)


__all__ = [
    "CANCELLED",
    "DENIED",
    "DONE",
    "ERROR",
    "MAX_RESULT_CHARS",
    "RUNNING",
    "SKIPPED",
    "STATUSES",
    "WAITING",
    "ApprovalRequest",
    "FileRequest",
    "LoopEvent",
    "LoopFinished",
    "RoundLimitReached",
    "ToolCallStarted",
    "ToolFinished",
    "ToolRun",
    "ToolRunning",
    "python_code",
    "run_tool_loop",
]
