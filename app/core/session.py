"""A stored conversation driven through the engine: send, answer, edit, regenerate, continue — no widgets."""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date as Date
from typing import Any

from app.core.chat import (
    MIN_ANSWER_TOKENS,
    Conversation,
    Message,
    PromptProgress,
    TurnEvent,
    TurnFinished,
    TurnStarted,
    build_prompt,
    run_turn,
)
from app.core.engine import EngineLike, Sampling
from app.core.harmony import FinalDelta, PreambleDelta, ReasoningDelta
from app.core.store import (
    ACTIVE,
    BranchInfo,
    ConversationSettings,
    MessageRow,
    RowRef,
    Store,
    StoreError,
    StoreUnavailableError,
    StreamSaver,
    message_fields,
    message_from_row,
)

# Streaming tails are saved this often, so a crash loses at most this much of an answer.
TAIL_SAVE_INTERVAL_S = 0.5
# A conversation above this share of the context window gets a warning before it is full.
CONTEXT_WARN_FRACTION = 0.85
# Stop reasons that leave an answer unfinished: it is stored "interrupted" and can be continued.
CUT_SHORT = frozenset({"cancelled", "length", "error"})
TITLE_REQUEST = (
    "Give this conversation a short title of at most six words, in the language of the conversation. "
    "Reply with the title only: no quotes, no punctuation at the end."
)


@dataclass(frozen=True)
class MessageSaved:
    """A message of the turn was committed to the store: an answer (after each generation) or a
    tool result; `message` is the chat.Message it was saved from."""

    row: MessageRow
    message: Message


@dataclass(frozen=True)
class MessageKept:
    """A message of the turn could not be saved (the store cannot write now): it is kept in memory
    and written, in order, when the store can write again (`store.retry()`); `ref.id` is its row then."""

    ref: RowRef
    message: Message


@dataclass(frozen=True)
class ContextTrimmed:
    """The oldest `dropped` messages were left out of the prompt so the conversation fits."""

    dropped: int
    prompt_tokens: int


SessionEvent = TurnEvent | MessageSaved | MessageKept | ContextTrimmed


class ChatSession:
    """One conversation of the store and how answers are generated into it.

    The conversation row is created on the first message, so an untouched "New chat" leaves
    nothing behind. Every method is safe to call from a worker thread (the store serialises).
    """

    def __init__(self, store: Store, conversation_id: int | None = None) -> None:
        self.store = store
        self.conversation_id = conversation_id
        self._settings = store.conversation_settings(conversation_id) if conversation_id is not None else None
        self._lock = threading.Lock()

    # --- conversation --------------------------------------------------------------------------
    @property
    def settings(self) -> ConversationSettings:
        if self.conversation_id is not None:
            return self.store.conversation_settings(self.conversation_id)
        if self._settings is None:
            self._settings = ConversationSettings()
        return self._settings

    def set_settings(self, settings: ConversationSettings) -> None:
        self._settings = settings
        if self.conversation_id is not None:
            self.store.set_conversation_settings(self.conversation_id, settings)

    def ensure(self) -> int:
        """The conversation's id, creating the row (with the settings chosen so far) if needed."""
        with self._lock:
            if self.conversation_id is None:
                row = self.store.create_conversation(settings=self._settings or ConversationSettings())
                self.conversation_id = row.id
            return self.conversation_id

    @property
    def title(self) -> str:
        return self.store.get_conversation(self.conversation_id).display_title if self.conversation_id else ""

    def view(self) -> list[tuple[MessageRow, BranchInfo]]:
        """What the chat shows: the active path, each message with its ‹ i/n › position."""
        if self.conversation_id is None:
            return []
        return self.store.active_path_with_branches(self.conversation_id)

    def conversation_until(self, leaf_id: int | None) -> Conversation:
        """The path root → `leaf_id` as a chat.Conversation (empty for None)."""
        rows = self.store.path_to(leaf_id) if leaf_id is not None else []
        return Conversation(messages=[message_from_row(r) for r in rows])

    # --- user intent ---------------------------------------------------------------------------
    def add_user(self, text: str) -> MessageRow:
        cid = self.ensure()
        return self.store.add_message(cid, "user", text)

    def edit_user(self, message_id: int, text: str) -> MessageRow:
        """Edit-and-resend: the edited message becomes a new branch beside the old one."""
        return self.store.edit_user_message(message_id, text)

    def regenerate_parent(self, message_id: int) -> int | None:
        return self.store.regenerate_parent(message_id)

    def navigate(self, message_id: int, delta: int) -> None:
        self.store.navigate_sibling(message_id, delta)

    def delete(self, message_id: int) -> None:
        """Delete a message; its replies stay, attached to its parent."""
        self.store.delete_message(message_id)

    # --- generation ----------------------------------------------------------------------------
    def generate(
        self,
        engine: EngineLike,
        *,
        parent_id: int | Any | None = ACTIVE,
        resume_id: int | None = None,
        effort: str | None = None,
        sampling: Sampling | None = None,
        cancel: threading.Event | None = None,
        tools: Sequence[dict[str, Any]] | None = None,
        builtin_tools: Sequence[str] | None = None,
        date: Date | None = None,
        grammar: Any = None,
        tool_session: Any = None,
        round_limit: int | None = None,
        progress: Callable[[PromptProgress], None] | None = None,
    ) -> Iterator[SessionEvent | Any]:
        """Generate an answer under `parent_id` (default: the active leaf) and store it.

        With a `tool_session` (app.core.tools.registry.ToolSession) the turn runs the tool loop:
        each generation is stored as its own answer row, each tool result as a tool row under the
        call (its card data in `extra["tool_run"]`), and the loop's events pass through.

        The answer row is created once the prompt is ready (a refused prompt leaves nothing
        behind), its tail is saved every TAIL_SAVE_INTERVAL_S while it streams, and it is
        committed when generation ends: "complete", or "interrupted" when it was cut short (stop,
        token limit, error), so the UI can offer Continue. `resume_id` continues such an answer.
        Settings (instructions, identity, effort, sampling, trimming) come from the conversation.
        `progress` hears how far the engine is in reading the prompt (chat.PromptProgress).
        """
        cid = self.ensure()
        settings = self.settings
        parent, partial, effort = self._answer_place(cid, parent_id, resume_id, effort)
        effort = effort or settings.reasoning_effort
        sampling = sampling or settings.to_sampling()
        developer = settings.developer_instructions or None
        identity = settings.model_identity or None
        conv = self.conversation_until(parent)
        if settings.trim_oldest:
            dropped, n = trim_to_fit(
                engine,
                conv,
                effort=effort,
                developer=developer,
                identity=identity,
                tools=tools,
                builtin_tools=builtin_tools,
                date=date,
                resume=partial,
            )
            if dropped:
                yield ContextTrimmed(dropped, n)

        tool_finished: type[Any] | None = None
        if tool_session is not None and partial is None:
            from app.core.tools.loop import ToolFinished, run_tool_loop

            tool_finished = ToolFinished
            turn: Iterator[Any] = run_tool_loop(
                engine,
                conv,
                tool_session,
                effort=effort,
                sampling=sampling,
                cancel=cancel,
                developer=developer,
                identity=identity,
                date=date,
                grammar=grammar,
                round_limit=round_limit,
                progress=progress,
            )
        else:
            if tool_session is not None:
                tools, builtin_tools = tool_session.prompt_tools()  # the same prompt the loop renders
            turn = run_turn(
                engine,
                conv,
                effort=effort,
                sampling=sampling,
                cancel=cancel,
                developer=developer,
                identity=identity,
                tools=tools,
                builtin_tools=builtin_tools,
                date=date,
                grammar=grammar,
                resume=partial,
                progress=progress,
            )
        rows = _AnswerRows(self.store, cid, parent, resume_id, effort, tool_finished)
        try:
            for ev in turn:
                yield from rows.on_event(ev)
        except BaseException:
            rows.interrupted()  # run_turn has already filled in the message (stop reason "error" or "cancelled")
            raise

    def _answer_place(
        self, cid: int, parent_id: int | Any | None, resume_id: int | None, effort: str | None
    ) -> tuple[int | None, Message | None, str | None]:
        """(parent row, partial message to continue, effort) of a new or continued answer."""
        if resume_id is not None:
            row = self.store.get_message(resume_id)
            if row.role != "assistant" or row.status not in ("interrupted", "error"):
                raise StoreError("Only an answer that was cut short can be continued.")
            return row.parent_id, message_from_row(row), effort or row.effort
        if parent_id is ACTIVE:
            return self.store.get_conversation(cid).active_leaf_id, None, effort
        return parent_id, None, effort

    def title_request(self) -> Conversation | None:
        """The conversation so far plus a request for a title; None unless a model title is wanted.

        The request follows the conversation so the engine reuses its KV cache for everything
        before it, and the next real turn can reuse the same prefix afterwards.
        """
        if self.conversation_id is None:
            return None
        row = self.store.get_conversation(self.conversation_id)
        if row.title_source != "auto" or row.active_leaf_id is None:
            return None
        conv = self.conversation_until(row.active_leaf_id)
        conv.add(Message(role="user", content=TITLE_REQUEST))
        return conv

    def generate_title(
        self,
        engine: EngineLike,
        *,
        cancel: threading.Event | None = None,
        date: Date | None = None,
        grammar: str | None = None,
    ) -> Iterator[str]:
        """Ask the model for a short title; yields the title once it is stored (nothing otherwise)."""
        conv = self.title_request()
        if conv is None:
            return
        settings = self.settings
        sampling = Sampling(temperature=0.7, top_p=1.0, seed=settings.seed, max_tokens=384)
        message: Message | None = None
        for ev in run_turn(
            engine,
            conv,
            effort="low",
            sampling=sampling,
            cancel=cancel,
            identity=settings.model_identity or None,
            date=date,
            grammar=grammar,
        ):
            if isinstance(ev, TurnFinished):
                message = ev.message
        if message is None or message.stop_reason not in ("return", "eos") or self.conversation_id is None:
            return
        if self.store.set_generated_title(self.conversation_id, message.content):
            yield self.store.get_conversation(self.conversation_id).title


class _AnswerRows:
    """Stores what one generate() call produces as it streams: answer rows (tail saved as it grows,
    committed when done) and, in the tool loop, a tool row under each call.

    When the store cannot write (a full disk), nothing stops: the answer goes on, and each row that
    cannot be written is deferred to the store (``MessageKept`` instead of ``MessageSaved``), to be
    written in order when the store can write again; later rows name earlier ones by RowRef."""

    def __init__(
        self,
        store: Store,
        cid: int,
        parent: int | None,
        resume_id: int | None,
        effort: str | None,
        tool_finished: type[Any] | None,
    ) -> None:
        self.store = store
        self.cid = cid
        self.resume_id = resume_id
        self.effort = effort
        self.tool_finished = tool_finished
        self.mid: int | None = None  # the row of the answer in progress, once there is one
        self.streaming = False  # whether that row is marked "streaming" in the store
        self.in_progress = False  # an answer was started and is not saved or kept yet
        self.last_row: int | RowRef | None = parent  # where the next row goes
        self.live: Message | None = None
        self.saver: StreamSaver | None = None

    def on_event(self, ev: Any) -> list[Any]:
        """Store what `ev` brings; returns the events to pass on (it, and MessageSaved or MessageKept after a row)."""
        if isinstance(ev, TurnStarted):
            self._begin(ev.message)
        elif isinstance(ev, (ReasoningDelta, FinalDelta, PreambleDelta)):
            if self.saver is not None and self.live is not None:
                self.saver.feed(self.live.content, self.live.thinking)
        elif isinstance(ev, TurnFinished):
            status = "interrupted" if ev.message.stop_reason in CUT_SHORT else "complete"
            return [ev, self._save(ev.message, status)]
        elif self.tool_finished is not None and isinstance(ev, self.tool_finished):
            values: dict[str, Any] = {
                "role": "tool",
                "content": ev.message.content,
                "tool_name": ev.message.name,
                "extra": {"tool_run": ev.run.to_dict()},
            }
            try:
                row = self.store.add_message(self.cid, parent_id=self.last_row, **values)
            except StoreUnavailableError:
                ref = self._keep("a tool result", self.last_row, values)
                self.last_row = ref
                return [ev, MessageKept(ref, ev.message)]
            self.last_row = row.id
            return [ev, MessageSaved(row, ev.message)]
        return [ev]

    def _begin(self, live: Message) -> None:
        self.live, self.saver, self.in_progress = live, None, True
        self.mid, self.streaming = self.resume_id, False
        try:
            if self.resume_id is not None:
                self.store.resume_stream(self.resume_id)
            else:
                self.mid = self.store.begin_stream(
                    self.cid, parent_id=self.last_row, effort=self.effort, model=live.model
                )
        except StoreUnavailableError:
            return  # the answer is generated all the same, and kept in memory when it finishes
        assert self.mid is not None
        self.streaming = True
        self.saver = StreamSaver(self.store, self.mid, TAIL_SAVE_INTERVAL_S)

    def _save(self, message: Message, status: str) -> MessageSaved | MessageKept:
        mid, streaming = self.mid, self.streaming
        self.mid, self.streaming, self.in_progress = None, False, False
        if mid is not None and streaming:
            try:
                row = self.store.finish_stream_from(mid, message, status=status)
            except StoreUnavailableError:
                pass
            else:
                self.last_row = row.id
                return MessageSaved(row, message)
        kept = copy.deepcopy(message)  # the turn may go on changing the live message
        store = self.store
        if mid is None:  # no row yet: the whole answer is added later
            values = message_fields(kept)
            values.update(status=status, effort=values["effort"] or self.effort)
            ref = self._keep("an answer", self.last_row, values)
        else:  # the row exists (with the tail saved so far, or cut short before a Continue)
            ref = RowRef()

            def finish() -> None:
                if not streaming:
                    store.resume_stream(mid)
                ref.id = store.finish_stream_from(mid, kept, status=status).id

            store.defer("an answer", finish)
        self.last_row = ref
        return MessageKept(ref, message)

    def _keep(self, what: str, parent: int | RowRef | None, values: dict[str, Any]) -> RowRef:
        """Defer a new row under `parent` (which may itself be kept); returns its RowRef."""
        ref = RowRef()
        cid, store = self.cid, self.store

        def add() -> None:
            ref.id = store.add_message(cid, parent_id=parent, **values).id

        store.defer(what, add)
        return ref

    def interrupted(self) -> None:
        """The generation failed or was stopped: commit the answer in progress as interrupted."""
        if self.in_progress and self.live is not None:
            self._save(self.live, "interrupted")


def trim_to_fit(
    engine: EngineLike,
    conv: Conversation,
    *,
    resume: Message | None = None,
    **prompt_kw: Any,
) -> tuple[int, int]:
    """Drop the oldest turns of `conv` (in place) until its prompt leaves room for an answer.

    A turn is a user message and everything up to the next one; the latest turn is never
    dropped. Returns (messages dropped, prompt tokens after trimming).
    """
    from app.core.chat import continuation_prefix

    n_ctx = engine.n_ctx
    suffix = continuation_prefix(resume.thinking, resume.content) if resume is not None else ""
    dropped = 0
    while True:
        prompt = build_prompt(conv, engine.info, **prompt_kw) + suffix
        n = len(engine.tokenize(prompt, special=True))
        if not n_ctx or n + MIN_ANSWER_TOKENS <= n_ctx:
            return dropped, n
        users = [i for i, m in enumerate(conv.messages) if m.role == "user"]
        if len(users) < 2:
            return dropped, n  # only the current turn is left; run_turn reports the overflow
        start, end = users[0], users[1]
        del conv.messages[start:end]
        dropped += end - start


def context_fraction(used_tokens: int, n_ctx: int) -> float:
    return used_tokens / n_ctx if n_ctx else 0.0
