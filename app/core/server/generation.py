"""One generation for one request: run_turn on a worker thread, its events bridged to the event loop.

The thread drives chat.run_turn through a scheduler client (so API requests queue fairly with
the chat window and the lab), applies stop sequences to the answer, and puts what happens on an
asyncio queue; the endpoint reads the queue and writes its own wire format. The Outcome is what
the generation produced in the end, for the non-streamed reply and the request log.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from app.core import chat
from app.core.chat import Conversation, Message, TurnEvent, TurnFinished, TurnStarted
from app.core.engine import EngineLike, EngineWrapper, Sampling, close_stream
from app.core.harmony import FinalDelta, PreambleDelta, ReasoningDelta, ToolCall
from app.core.server.errors import ApiError, api_error_for
from app.core.server.parsing import ReasoningMemory
from app.core.server.types import GenerationRequest

# What the queue carries: (kind, value). Kinds: "reasoning", "preamble", "final" (text deltas),
# "call" (a Call), "started" (prompt tokens), "error" (an ApiError), and END last.
Item = tuple[str, Any]
END: Final[Item] = ("end", None)


class RequestConversation(Conversation):
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


class CountingEngine(EngineWrapper):
    """The scheduler client seen by run_turn, counting generated tokens (and noting the prompt)."""

    def __init__(self, inner: EngineLike, prompts: list[str] | None) -> None:
        super().__init__(inner)
        self._prompts = prompts
        self.tokens = 0

    def tokenize(self, text: str, *, special: bool = True) -> list[int]:
        if self._prompts is not None:
            self._prompts.append(text)
        return super().tokenize(text, special=special)

    def stream(
        self,
        prompt: str | Sequence[int],
        sampling: Sampling | None = None,
        *,
        cancel: threading.Event | None = None,
        grammar: str | None = None,
    ) -> Iterator[tuple[int, bytes]]:
        inner = super().stream(prompt, sampling, cancel=cancel, grammar=grammar)

        def run() -> Iterator[tuple[int, bytes]]:
            try:
                for item in inner:
                    self.tokens += 1
                    yield item
            finally:
                close_stream(inner)

        return run()


class StopMatcher:
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
class Call:
    """A function call the model made, with the ids both APIs report it under."""

    id: str  # call_…: what the client answers with tool_call_id / call_id
    item_id: str  # fc_…: the responses API's output item id
    name: str
    arguments: str

    def chat_shape(self) -> dict[str, Any]:
        """The call as a chat-completions tool_calls entry (also how a stored conversation keeps it)."""
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}


@dataclass
class Outcome:
    """Everything one generation produced, as the API reports it."""

    reasoning: str = ""
    content: str = ""
    preamble: str = ""
    final: str = ""
    calls: list[Call] = field(default_factory=list)
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


class Generation:
    """Runs run_turn for one request on its own thread; deltas reach the event loop through a queue.

    The outcome is complete once END arrives (and `done` is set).
    """

    def __init__(
        self,
        request: GenerationRequest,
        loop: asyncio.AbstractEventLoop,
        engine: EngineLike,
        *,
        memory: ReasoningMemory,
        grammar: str | None = None,
        prompts: list[str] | None = None,
    ) -> None:
        self.job = request
        self.loop = loop
        self.cancel = threading.Event()
        self.queue: asyncio.Queue[Item] = asyncio.Queue()
        self.outcome = Outcome()
        self.done = threading.Event()
        self.disconnected = False
        self._engine = CountingEngine(engine, prompts)
        self._memory = memory
        self._grammar = grammar
        self._matcher = StopMatcher(request.stop)
        self._stop_hit = False
        self._declared = {t["function"]["name"] for t in request.tools or []}
        self._last_reasoning_token = -1
        self._message: Message | None = None
        self._thread = threading.Thread(target=self._run, name="harmonica-api-generation", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.cancel.set()

    def _put(self, item: Item) -> None:
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)
        except RuntimeError:  # the event loop is gone (server stopped): nobody is listening
            self.cancel.set()

    # --- the worker thread -----------------------------------------------------------------------
    def _run(self) -> None:
        job = self.job
        try:
            turn = chat.run_turn(
                self._engine,
                RequestConversation(job.messages),
                effort=job.effort,
                sampling=job.sampling,
                cancel=self.cancel,
                tools=job.tools,
                grammar=self._grammar,
            )
            try:
                for ev in turn:
                    self._on_event(ev)
            finally:
                turn.close()
            if not self._stop_hit:
                self._emit_final(self._matcher.flush())
        except BaseException as exc:  # noqa: BLE001 - every failure is reported to the client
            self.outcome.error = api_error_for(exc)
            self._put(("error", self.outcome.error))
        finally:
            self._finish()
            self.done.set()
            self._put(END)

    def _on_event(self, ev: TurnEvent) -> None:
        out = self.outcome
        if isinstance(ev, ReasoningDelta):
            out.reasoning += ev.text
            if self._engine.tokens != self._last_reasoning_token:  # several deltas may share a token
                out.reasoning_tokens += 1
                self._last_reasoning_token = self._engine.tokens
            self._put(("reasoning", ev.text))
        elif isinstance(ev, PreambleDelta):
            out.preamble += ev.text
            self._put(("preamble", ev.text))
        elif isinstance(ev, FinalDelta):
            self._on_final(ev.text)
        elif isinstance(ev, ToolCall):
            self._on_call(ev)
        elif isinstance(ev, TurnStarted):
            out.prompt_tokens = ev.prompt_tokens
            self._put(("started", ev.prompt_tokens))
        elif isinstance(ev, TurnFinished):
            self._message = ev.message

    def _on_final(self, delta: str) -> None:
        if self._stop_hit:
            return
        text, hit = self._matcher.feed(delta)  # stop sequences apply to the answer
        if hit:
            self._stop_hit = True
            self.cancel.set()
        self._emit_final(text)

    def _emit_final(self, text: str) -> None:
        if text:
            self.outcome.final += text
            self._put(("final", text))

    def _on_call(self, ev: ToolCall) -> None:
        if not ev.recipient.startswith("functions.") or not self._declared:
            return  # a builtin tool or an unsolicited call: nothing the client can run
        name = ev.recipient.removeprefix("functions.")
        call = Call("call_" + secrets.token_hex(12), "fc_" + secrets.token_hex(12), name, ev.arguments)
        self.outcome.calls.append(call)
        self._memory.put(call.id, self.outcome.reasoning)
        self._put(("call", call))

    def _finish(self) -> None:
        """Fill in the outcome's totals and finish reason from the finished message and stats."""
        out, message = self.outcome, self._message
        # The chat API has one content field: a preamble and then an answer become two paragraphs.
        out.content = "\n\n".join(t for t in (out.preamble, out.final) if t)
        stats = message.stats if message is not None else self._engine.last_stats
        if stats is not None:
            out.cached_tokens = stats.cached_tokens
            out.prompt_tokens = out.prompt_tokens or stats.prompt_tokens
        out.completion_tokens = self._engine.tokens
        out.reasoning_tokens = min(out.reasoning_tokens, out.completion_tokens)
        out.stop_reason = (message.stop_reason or "") if message is not None else "error"
        if out.calls:
            out.finish_reason = "tool_calls"
        elif out.stop_reason == "length":
            out.finish_reason = "length"
        else:
            out.finish_reason = "stop"

    # --- the event loop's side -------------------------------------------------------------------
    async def items(self) -> AsyncIterator[Item]:
        while True:
            item = await self.queue.get()
            if item is END:
                return
            yield item

    async def wait(self) -> None:
        async for _ in self.items():
            pass

    async def first_event(self) -> Item:
        """The first queue item: ("started", n) once the prompt is ready, or ("error", e)."""
        item = await self.queue.get()
        if item is END:
            return (
                "error",
                self.outcome.error or ApiError(500, "The generation ended before it started.", type="server_error"),
            )
        return item
