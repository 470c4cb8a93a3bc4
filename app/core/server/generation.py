"""One generation for one request: run_turn on a worker thread, its events bridged to the event loop.

The thread drives chat.run_turn through a scheduler client (so API requests queue fairly with
the chat window and the lab), applies stop sequences to the answer, and puts what happens on an
asyncio queue; the endpoint reads the queue and writes its own wire format. The Outcome is what
the generation produced in the end, for the non-streamed reply and the request log.
"""

from __future__ import annotations

import asyncio
import codecs
import dataclasses
import json
import logging
import secrets
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from app.core import chat
from app.core.chat import Conversation, Message, TurnEvent, TurnFinished, TurnStarted
from app.core.engine import EngineLike, EngineWrapper, Sampling, close_stream
from app.core.harmony import FinalDelta, PreambleDelta, ReasoningDelta, StreamParser, ToolCall
from app.core.server import structured
from app.core.server.errors import ApiError, api_error_for
from app.core.server.parsing import ReasoningMemory
from app.core.server.settings import ServerTesting
from app.core.server.types import GenerationRequest

if TYPE_CHECKING:
    from starlette.requests import Request

log = logging.getLogger(__name__)
# Rounds one request may take when the server itself answers a call (a browser call it serves, or
# an error result for a call the client cannot run) before the model must answer.
MAX_ROUNDS: Final = 4
# The stop tokens a raw completion ends with, written back so harmony-reading tools see them.
_STOP_TEXT: Final = {"return": "<|return|>", "call": "<|call|>"}

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

    def __init__(
        self, inner: EngineLike, prompts: list[str] | None, rewrite: Callable[[str], str] | None = None
    ) -> None:
        super().__init__(inner)
        self._prompts = prompts
        self._rewrite = rewrite  # run_turn tokenizes the rendered prompt once: the place to amend it
        self.tokens = 0

    def tokenize(self, text: str, *, special: bool = True) -> list[int]:
        if self._rewrite is not None:
            text = self._rewrite(text)
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


# Special tokens the gate watches, as the engines write them (text of the token).
_START, _CHANNEL, _MESSAGE = b"<|start|>", b"<|channel|>", b"<|message|>"
_ENDS = (b"<|end|>", b"<|call|>", b"<|return|>")
_MAX_HEADER_TOKENS = 64  # a header longer than this is malformed; let it through as text


class HeaderGate(EngineWrapper):
    """Phase one of a lazily constrained generation: run_turn's engine, passing tokens through until
    the model opens a message the grammar must constrain, then stopping right before that header.

    A grammar over every token costs a pass over the whole vocabulary per token (about 100 ms on a
    laptop CPU with gpt-oss's 201k tokens), so reasoning under a grammar would crawl. Like
    llama.cpp's lazy grammars, the reasoning and preambles run free; the header of the answer or
    call is held back, and phase two (Generation._run_tail) continues from the tokens passed so far
    with a grammar for just that message, reusing the KV cache.
    """

    def __init__(self, inner: CountingEngine, opens: Callable[[str], bool]) -> None:
        super().__init__(inner)
        self._opens = opens
        self.prompt: list[int] = []
        self.passed: list[int] = []
        self.triggered = False
        self._last_piece = b""

    def stream(
        self,
        prompt: str | Sequence[int],
        sampling: Sampling | None = None,
        *,
        cancel: threading.Event | None = None,
        grammar: str | None = None,
    ) -> Iterator[tuple[int, bytes]]:
        self.prompt = self._inner.tokenize(prompt) if isinstance(prompt, str) else list(prompt)
        inner = self._inner.stream(self.prompt, sampling, cancel=cancel, grammar=grammar)
        return self._gate(inner)

    def _gate(self, inner: Iterator[tuple[int, bytes]]) -> Iterator[tuple[int, bytes]]:
        held: list[tuple[int, bytes]] | None = []  # the header being read; None inside a message body
        try:
            for tok, piece in inner:
                if held is None:
                    if piece == _CHANNEL:  # a header with no <|start|> before it (the model skipped it)
                        held = [(tok, piece)]
                        continue
                    self.passed.append(tok)
                    self._last_piece = piece
                    yield tok, piece
                    if piece == _START:
                        held = []
                    continue
                held.append((tok, piece))
                if piece == _MESSAGE:
                    header = b"".join(p for _, p in held).decode("utf-8", "replace")
                    if self._opens(header):
                        self.triggered = True
                        return
                elif len(held) <= _MAX_HEADER_TOKENS and piece not in _ENDS:
                    continue
                for item in held:  # a free message (or a malformed header): let it through
                    self.passed.append(item[0])
                    self._last_piece = item[1]
                    yield item
                held = None
            if held:  # the generation ended inside a header
                for item in held:
                    self.passed.append(item[0])
                    yield item
        finally:
            close_stream(inner)

    @property
    def after_start(self) -> bool:
        """Whether the held-back header followed a <|start|> (it must then begin with "assistant")."""
        return bool(self.passed) and self._last_piece == _START


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
    namespace: str | None = None  # responses: the namespace tool the function came from

    def chat_shape(self) -> dict[str, Any]:
        """The call as a chat-completions tool_calls entry (also how a stored conversation keeps it)."""
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}


def argument_pieces(arguments: str, size: int = 32) -> list[str]:
    """A call's arguments cut into pieces for streaming (clients join them; some show them live)."""
    return [arguments[i : i + size] for i in range(0, len(arguments), size)] or [""]


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
        testing: ServerTesting | None = None,
        browser: Callable[[], Any] | None = None,
    ) -> None:
        self.job = request
        self.loop = loop
        self.cancel = threading.Event()
        self.queue: asyncio.Queue[Item] = asyncio.Queue()
        self.outcome = Outcome()
        self.done = threading.Event()
        self.disconnected = False
        fmt = request.output_format
        rewrite = None
        if fmt is not None:
            section = structured.response_format_section(fmt)
            rewrite = lambda prompt: structured.with_response_format(prompt, section)  # noqa: E731
        self._engine = CountingEngine(engine, testing.prompts if testing is not None else None, rewrite)
        self._memory = memory
        # The server's own grammar constrains only the answer or call, lazily (HeaderGate); a grammar
        # forced by a test constrains the whole generation.
        self._tail_grammar: str | None = None
        self._opens: Callable[[str], bool] | None = None
        if grammar is None and request.raw_prompt is None:
            free_text = testing.free_text if testing is not None else None
            full = structured.build_grammar(fmt=fmt, tools=request.tools, plan=request.tool_plan, free_text=free_text)
            if full is not None and (testing is None or testing.lazy_grammar):
                self._tail_grammar = structured.build_grammar(
                    fmt=fmt, tools=request.tools, plan=request.tool_plan, free_text=free_text, tail=True
                )
                answer = fmt is not None or request.tool_plan.mode == "required"
                calls = bool(request.tools)
                self._opens = lambda header: structured.opens_constrained(header, answer=answer, calls=calls)
                # Tests on random weights let the whole grammar shape the free part too.
                grammar = full if free_text is not None else None
            else:
                grammar = full
        if testing is not None:
            testing.grammars += [g for g in (grammar, self._tail_grammar) if g is not None]
        self._grammar = grammar
        self._tail_stop: str | None = None  # why phase two ended, when there was one
        self._browser_factory = browser if "browser" in request.builtin_tools else None
        self._browser: Any = None
        self._matcher = StopMatcher(request.stop)
        self._stop_hit = False
        self._declared = {t["function"]["name"]: t["function"] for t in request.tools or []}
        self._last_reasoning_token = -1
        self._message: Message | None = None
        self._round_reasoning = ""
        self._feedback: list[dict[str, Any]] = []  # what the server answered this round, for the next
        self._watch: asyncio.Future[None] | None = None
        self._thread = threading.Thread(target=self._run, name="harmonica-api-generation", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.cancel.set()

    def watch(self, request: Request) -> None:
        """Notice the client leaving from now on, also while the request waits in the queue.

        The body has been read, so the next message on the connection can only be its end.
        """

        async def disconnected() -> None:
            while True:
                message = await request.receive()
                if message["type"] == "http.disconnect":
                    if not self.done.is_set():
                        self.disconnected = True
                        self.stop()
                    return

        self._watch = asyncio.ensure_future(disconnected())

    def unwatch(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None

    def _put(self, item: Item) -> None:
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)
        except RuntimeError:  # the event loop is gone (server stopped): nobody is listening
            self.cancel.set()

    # --- the worker thread -----------------------------------------------------------------------
    def _run(self) -> None:
        job = self.job
        try:
            if job.raw_prompt is not None:
                self._run_raw(job.raw_prompt)
            else:
                self._run_turns()
            self._check_output()
        except BaseException as exc:  # noqa: BLE001 - every failure is reported to the client
            self.outcome.error = api_error_for(exc)
            self._put(("error", self.outcome.error))
        finally:
            if self._browser is not None:
                try:
                    self._browser.close()
                except Exception:
                    log.exception("closing the API request's browser failed")
            self._finish()
            self.done.set()
            self._put(END)

    def _run_turns(self) -> None:
        """run_turn until the model answers or calls a tool the client runs; calls the server answers
        itself (a served browser, or an error result) go back to the model for another round."""
        job = self.job
        messages = [dict(m) for m in job.messages]
        for _round in range(MAX_ROUNDS):
            if self.cancel.is_set():
                break
            self._feedback = []
            self._round_reasoning = ""
            gate = HeaderGate(self._engine, self._opens) if self._opens is not None else None
            turn = chat.run_turn(
                gate or self._engine,
                RequestConversation(messages),
                effort=job.effort,
                sampling=job.sampling,
                cancel=self.cancel,
                tools=job.tools,
                builtin_tools=job.builtin_tools or None,
                grammar=self._grammar,
            )
            try:
                for ev in turn:
                    self._on_event(ev)
            finally:
                turn.close()
            if gate is not None and gate.triggered and not self.cancel.is_set():
                self._run_tail(gate)
            if not self._feedback or self.outcome.calls or self.outcome.final or self._stop_hit:
                break
            messages += self._feedback
        if not self._stop_hit:
            self._emit_final(self._matcher.flush())

    def _run_tail(self, gate: HeaderGate) -> None:
        """Phase two: from where the gate stopped, the constrained message under its grammar."""
        assert self._tail_grammar is not None
        grammar = self._tail_grammar
        if gate.after_start:  # the header follows "<|start|>": it names the assistant first
            head, rest = grammar.split("\n", 1)
            grammar = f'root ::= "assistant" ( {head.removeprefix("root ::= ")} )\n{rest}'
        tokens = gate.prompt + gate.passed
        sampling = self.job.sampling
        n_ctx = self._engine.n_ctx
        used = self._engine.tokens
        left = (sampling.max_tokens - used) if sampling.max_tokens is not None else None
        if (left is not None and left <= 0) or (n_ctx and len(tokens) >= n_ctx):
            self._tail_stop = "length"
            return
        parser = StreamParser()
        stream = self._engine.stream(
            tokens, dataclasses.replace(sampling, max_tokens=left), cancel=self.cancel, grammar=grammar
        )
        try:
            for tok, piece in stream:
                for ev in parser.feed(piece, tok):
                    self._on_event(ev)
        finally:
            close = getattr(stream, "close", None)
            if close is not None:
                close()
        stats = self._engine.last_stats
        stop = "cancelled" if self.cancel.is_set() else (stats.stop_reason if stats is not None else "eos")
        for ev in parser.finish(stop):
            self._on_event(ev)
        self._tail_stop = stop

    def _run_raw(self, prompt: str) -> None:
        """/v1/completions: the prompt as given (special tokens kept), the output as raw text."""
        engine = self._engine
        tokens = engine.tokenize(prompt, special=True)
        n_ctx = engine.n_ctx
        if n_ctx and len(tokens) >= n_ctx:
            raise chat.ContextOverflowError(len(tokens), n_ctx)
        self.outcome.prompt_tokens = len(tokens)
        self._put(("started", len(tokens)))
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        stream = engine.stream(tokens, self.job.sampling, cancel=self.cancel)
        try:
            for _tok, piece in stream:
                self._on_final(decoder.decode(piece))
                if self._stop_hit:
                    break
        finally:
            close = getattr(stream, "close", None)
            if close is not None:
                close()
        if not self._stop_hit:
            stats = engine.last_stats
            tail = decoder.decode(b"", final=True) + _STOP_TEXT.get(stats.stop_reason if stats else "", "")
            self._on_final(tail)
            self._emit_final(self._matcher.flush())
        self.outcome.stop_reason = engine.last_stats.stop_reason if engine.last_stats is not None else ""

    def _check_output(self) -> None:
        """Structured output must match its format; a cut-short answer is reported as such instead."""
        fmt, out = self.job.output_format, self.outcome
        if fmt is None or out.calls or self.cancel.is_set():  # cut short: by a stop sequence or the client
            return
        if self._stop_reason() == "length":
            return  # finish_reason "length": clients know the JSON is incomplete
        problem = structured.output_problem(fmt, out.final.strip())
        if problem is not None:
            raise ApiError(
                500,
                f"The model's answer does not match the requested {fmt.kind.replace('_', ' ')}: {problem}. "
                "Try again, or simplify the schema.",
                type="server_error",
                code="invalid_model_output",
            )

    def _on_event(self, ev: TurnEvent) -> None:
        out = self.outcome
        if isinstance(ev, ReasoningDelta):
            out.reasoning += ev.text
            self._round_reasoning += ev.text
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
            if not out.prompt_tokens:  # later rounds extend the first prompt
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
        """A call the client runs becomes a tool call; any other is answered here and the model goes on."""
        name = ev.recipient.removeprefix("functions.") if ev.recipient.startswith("functions.") else None
        fn = self._declared.get(name) if name is not None else None
        if fn is not None:
            assert name is not None
            arguments = structured.repair_arguments(ev.arguments)
            problem = None if arguments is not None else "they are not a JSON object"
            if arguments is not None and name in self.job.tool_plan.strict:
                found = structured.schema_problem(fn.get("parameters") or {}, json.loads(arguments))
                problem = f"they do not match its parameters: {found}" if found else None
            if problem is None:
                assert arguments is not None
                call = Call(
                    "call_" + secrets.token_hex(12),
                    "fc_" + secrets.token_hex(12),
                    name,
                    arguments,
                    self.job.namespaces.get(name),
                )
                self.outcome.calls.append(call)
                self._memory.put(call.id, self.outcome.reasoning)
                self._put(("call", call))
                return
            self._answer(
                ev, f"Error: the arguments of {name} were refused: {problem}. Call it again with arguments that fit."
            )
            return
        if ev.recipient.startswith("browser.") and self._browser_factory is not None:
            self._answer(ev, self._browse(ev))
            return
        available = ", ".join(sorted(self._declared)) or "none"
        what = f"There is no function {name}" if name is not None else f"The tool {ev.recipient} is not available here"
        log.info("API: the model called %s, which the client did not declare", ev.recipient or "(nothing)")
        self._answer(ev, f"Error: {what}. Functions you can call: {available}. Otherwise answer the user directly.")

    def _browse(self, ev: ToolCall) -> str:
        if self._browser is None:
            assert self._browser_factory is not None
            self._browser = self._browser_factory()
        try:
            args = json.loads(ev.arguments) if ev.arguments.strip() else {}
        except ValueError:
            return "Error: the arguments must be a JSON object."
        try:
            outcome = self._browser.call(ev.recipient.removeprefix("browser."), args)
        except Exception as exc:  # noqa: BLE001 - the model reads the failure and answers without it
            log.warning("API: browser call failed: %s", exc)
            return f"Error: the browser failed: {exc}"
        return str(outcome.content)

    def _answer(self, ev: ToolCall, result: str) -> None:
        """Queue the call and the server's answer to it for the model's next round."""
        name = ev.recipient.removeprefix("functions.")
        call: dict[str, Any] = {
            "role": "assistant",
            "tool_calls": [{"type": "function", "function": {"name": name, "arguments": ev.arguments}}],
        }
        if self._round_reasoning:
            call["thinking"] = self._round_reasoning
        self._feedback += [call, {"role": "tool", "name": name, "content": result}]

    def _stop_reason(self) -> str:
        """Why the generation ended: phase two's reason when there was one, else the turn's."""
        if self._tail_stop is not None:
            return self._tail_stop
        return (self._message.stop_reason or "") if self._message is not None else ""

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
        if message is not None or self._tail_stop is not None:
            out.stop_reason = self._stop_reason()
        elif not out.stop_reason:
            out.stop_reason = "error"
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
