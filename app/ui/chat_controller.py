"""The live answer: send, edit-and-resend, regenerate, continue and stop; streamed events onto the chat; tool
cards and approvals; the model-written title; the context-window warning. The open chat (`session`) lives here.

Like ui/downloads.py's DownloadController: a QObject that runs core jobs in workers and turns
their events into widget updates, so the window only lays widgets out and wires them.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from PySide6.QtCore import QObject, QTimer, Signal

from app.core.chat import ChatError, Message, PromptProgress, ToolCallRecord, TurnFinished, TurnStarted
from app.core.engine import EngineError, Sampling
from app.core.harmony import FinalDelta, PreambleDelta, ReasoningDelta, ToolCall
from app.core.runtime import Runtime
from app.core.scheduler import QueueState
from app.core.session import CONTEXT_WARN_FRACTION, ChatSession, ContextTrimmed, MessageKept, MessageSaved
from app.core.store import ACTIVE, ConversationSettings, MessageRow, StoreError, message_from_row
from app.ui.chat_view import ChatView
from app.ui.composer import Composer
from app.ui.events import ConversationEvents
from app.ui.message_widget import AssistantMessageWidget
from app.ui.notice import NoticeChannel
from app.ui.workers import GeneratorWorker, start_worker

GENERATING = "Generating…"
STOPPING = "Stopping…"
WAITING = "Waiting for the model"
KEPT_NOTE = "Not saved yet: kept in memory until Harmonica can write again."
READING = "Reading your message…"
READING_AFTER_MS = 300  # a prompt read faster than this (a cached chat) shows no "Reading" at all


class _QueueBridge(QObject):
    """Scheduler state changes arrive on whichever thread made them; this brings them to the UI."""

    changed = Signal(object)


class ChatController(QObject):
    """Runs answers into the open chat. Signals: `speed(str)` and `context(str)` for the status
    bar, `unexpected(exc)` for an error no one planned for (the window shows a dialog),
    `turn_finished(Message)` after each answer, `idle()` when an answer's worker is done,
    `reload_requested(str)` when the user asks to reload the model with the chat's context size."""

    speed = Signal(str)
    context = Signal(str)
    unexpected = Signal(object)
    turn_finished = Signal(object)
    idle = Signal()
    reload_requested = Signal(str)

    def __init__(
        self,
        runtime: Runtime,
        chat: ChatView,
        composer: Composer,
        notices: NoticeChannel,
        events: ConversationEvents,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self.runtime = runtime
        self.chat = chat
        self.composer = composer
        self.notices = notices
        self.events = events
        self.session: ChatSession = runtime.new_session()
        self.sampling: Sampling | None = None  # None: the conversation's own settings
        self.grammar: str | None = None  # tests force harmony-shaped output from random weights
        self.date: Any = None
        self.closing = False
        self.speed_text = ""
        self._gen_worker: GeneratorWorker | None = None
        self._title_worker: GeneratorWorker | None = None
        self._live: AssistantMessageWidget | None = None
        self._live_message: Message | None = None
        self._live_saved = False
        self._refresh_after = False  # show the chat from the store once this answer is done
        self._queue_bridge = _QueueBridge(self)
        self._queue_bridge.changed.connect(self._on_queue)
        # Prompt progress arrives while the worker is inside the engine (a callback, not a yield).
        self._progress_bridge = _QueueBridge(self)
        self._progress_bridge.changed.connect(self._on_prompt_progress)
        self._reading: PromptProgress | None = None  # the latest report, until the first token
        self._reading_timer = QTimer(self, singleShot=True, interval=READING_AFTER_MS)
        self._reading_timer.timeout.connect(self._show_reading)
        runtime.scheduler.add_listener(self._queue_bridge.changed.emit)
        composer.send.connect(self.send)
        composer.stop_requested.connect(self.stop)
        composer.effort.changed.connect(self._on_effort)

    # --- state ------------------------------------------------------------------------------------
    @property
    def generating(self) -> bool:
        return self._gen_worker is not None

    @property
    def title_pending(self) -> bool:
        """Whether the model is writing a title now."""
        return self._title_worker is not None

    def set_session(self, session: ChatSession) -> None:
        """Open another chat (or branch): the chat view and everything around it follow."""
        self.session = session
        self.events.session_changed.emit()

    def busy(self, what: str) -> bool:
        """True (and says so) while an answer runs: `what` cannot happen now."""
        if self.generating:
            self.notices.error(f"Stop the current answer before {what}.")
            return True
        return False

    def _set_speed(self, text: str) -> None:
        self.speed_text = text
        self.speed.emit(text)

    def _on_effort(self, effort: str) -> None:
        if not self.closing:  # the user moved the slider (show_effort does not come here)
            self.runtime.set_effort(self.session, effort)

    def show_effort(self, effort: str) -> None:
        """Put the slider where the open chat's effort is, without taking it as the user's choice."""
        control = self.composer.effort
        control.blockSignals(True)
        try:
            self.composer.set_effort(effort)
        finally:
            control.blockSignals(False)

    # --- user intent ------------------------------------------------------------------------------
    def _can_generate(self, loading: bool = False) -> bool:
        if self.generating or loading:
            return False
        if self.runtime.store.read_only:  # nothing could be saved: the store's notice says why
            self.notices.error("", self.runtime.store.refusal())
            return False
        if not self.runtime.model_loaded:
            self.notices.error("Open a model first: File → Open model…, or drop a .gguf file onto the window.")
            return False
        return True

    def send(self, text: str, effort: str) -> bool:
        if not self._can_generate():
            if self.runtime.store.read_only:
                self.composer.edit.setPlainText(text)  # not sent: what was typed stays in the box
            return False
        self.notices.clear()
        self.cancel_title()
        try:
            row = self.session.add_user(text)
        except StoreError as exc:
            self.notices.error(f"The message could not be saved: {exc}", exc)
            self.composer.edit.setPlainText(text)  # nothing typed is lost
            return False
        self.chat.add_user(message_from_row(row), row.id, self.runtime.store.siblings(row.id))
        self.events.list_changed.emit()
        return self._generate(effort=effort)

    def edit_and_resend(self, row_id: int, text: str) -> bool:
        if not self._can_generate():
            return False
        self.cancel_title()
        try:
            row = self.session.edit_user(row_id, text)
        except StoreError as exc:
            self.notices.error(str(exc), exc)
            return False
        self._truncate_from(row_id)
        self.chat.add_user(message_from_row(row), row.id, self.runtime.store.siblings(row.id))
        return self._generate(effort=self.composer.current_effort())

    def regenerate(self, row_id: int) -> bool:
        if not self._can_generate():
            return False
        self.cancel_title()
        parent = self.session.regenerate_parent(row_id)
        turn_start = self._turn_start(row_id)
        if turn_start is not None:
            self._truncate_from(turn_start)
        row = self.runtime.store.get_message(row_id)
        return self._generate(effort=row.effort or self.composer.current_effort(), parent_id=parent)

    def continue_answer(self, row_id: int) -> bool:
        if not self._can_generate():
            return False
        self.cancel_title()
        row = self.runtime.store.get_message(row_id)
        self._truncate_from(row_id)
        ok = self._generate(effort=row.effort or self.composer.current_effort(), resume_id=row_id)
        if ok and self._live is not None:
            # The old text is shown at once; the new text streams after it.
            if row.thinking:
                self._live.append_reasoning(row.thinking)
            if row.content:
                self._live.append_answer(row.content)
        return ok

    def stop(self) -> None:
        if self._gen_worker is not None:
            self._gen_worker.quit()
            self._set_speed(STOPPING)

    def apply_settings(self, settings: ConversationSettings) -> None:
        """New settings for the open chat; a context size the model was not loaded with offers a reload."""
        old = self.session.settings
        self.session.set_settings(settings)
        self.show_effort(settings.reasoning_effort)
        self.events.state_changed.emit()
        n_ctx = self.runtime.n_ctx
        if (
            settings.context_size
            and n_ctx
            and settings.context_size != n_ctx
            and settings.context_size != old.context_size
        ):
            info = self.runtime.model_info
            actions = (
                [("Reload model", lambda: self.reload_requested.emit(str(info.path)))]
                if info is not None and info.source == "file"
                else []
            )
            self.notices.info(
                f"This chat asks for a {settings.context_size:,}-token context; the model is loaded with {n_ctx:,}. "
                "Reload the model to use it.",
                actions,
            )

    def enable_trimming(self) -> None:
        self.apply_settings(dataclasses.replace(self.session.settings, trim_oldest=True))
        self.notices.info(
            "From now on the oldest turns of this chat are left out of the prompt when it is too long.", timeout_ms=8000
        )

    # --- one answer -------------------------------------------------------------------------------
    def _turn_start(self, row_id: int) -> int | None:
        """The first assistant message of the turn that `row_id` belongs to (what regenerating replaces)."""
        start = None
        for r in reversed(self.runtime.store.path_to(row_id)):
            if r.role in ("user", "system", "developer"):
                break
            start = r.id
        return start

    def _truncate_from(self, row_id: int) -> None:
        """Remove the widgets of `row_id` and everything after it (that branch is being replaced)."""
        w = self.chat.widget_for_row(row_id)
        if w is None:
            return
        i = self.chat.widgets.index(w)
        for x in list(self.chat.widgets[i:]):
            self.chat.remove_widget(x)

    def _generate(self, *, effort: str, parent_id: Any = ACTIVE, resume_id: int | None = None) -> bool:
        self.events.state_changed.emit()
        self._live = self.chat.start_assistant(model=self.runtime.model_name, effort=effort)
        self._live_message = None
        self._live_saved = False
        self.composer.set_generating(True)
        self._set_speed(GENERATING)
        self.session.ensure()
        w = GeneratorWorker(
            self.runtime.answer_job,
            self.session,
            parent_id=parent_id,
            resume_id=resume_id,
            effort=effort,
            sampling=self.sampling,
            date=self.date,
            grammar=self.grammar,
            progress=self._progress_bridge.changed.emit,
        )
        w.yielded.connect(self._on_turn_event)
        w.errored.connect(self._on_turn_error)
        w.finished.connect(self._on_turn_finished)
        self._gen_worker = w
        start_worker(w)
        return True

    def _on_queue(self, state: QueueState) -> None:
        """While the chat waits for its turn behind another user of the model, say so."""
        if self._gen_worker is None or self._live is None:
            return
        if state.running not in (None, "chat") and state.waiting.get("chat"):
            self._set_speed(f"{WAITING} ({state.describe()})…")
        elif self.speed_text.startswith(WAITING):
            self._set_speed(GENERATING)

    # --- reading the prompt ------------------------------------------------------------------------
    def _on_prompt_progress(self, ev: object) -> None:
        if isinstance(ev, PromptProgress) and self._gen_worker is not None and self._reading is not None:
            self._reading = ev
            if not self._reading_timer.isActive():
                self._show_reading()

    def _show_reading(self) -> None:
        """ "Reading your message… 40%" on the live answer and in the status bar, until the first token."""
        r = self._reading
        if r is None or self._live is None:
            return
        pct = f" {int(r.fraction * 100)}%" if 0 < r.done < r.total else ""
        text = READING + pct
        self._live.set_reading(text)
        if not self.speed_text.startswith(WAITING):
            self._set_speed(text)

    def _stop_reading(self) -> None:
        if self._reading is None:
            return
        self._reading = None
        self._reading_timer.stop()
        if self._live is not None:
            self._live.set_reading(None)
        if self.speed_text.startswith(READING):
            self._set_speed(GENERATING)

    def _on_turn_event(self, ev: object) -> None:
        if isinstance(ev, MessageSaved):
            self._on_saved(ev.row)
            return
        if isinstance(ev, MessageKept):
            # The store cannot write now: the answer stays on screen as it is, kept in memory by the
            # store, and is shown from the store once it is saved (refresh_when_idle).
            self._live_saved = True
            if self._live is not None and ev.message.role == "assistant":
                note = self._live.stop_note
                note.setText(" ".join(filter(None, (note.text(), KEPT_NOTE))))
                note.show()
            return
        if isinstance(ev, TurnStarted) and self._live is not None and self._live.message is not None:
            # The next generation of a tool loop: it continues the same answer below the tool cards.
            self._live = self.chat.start_assistant(
                model=self.runtime.model_name, effort=self._live.effort, continuation=True
            )
            self._live_saved = False
        w = self._live
        if self._on_tool_event(ev):
            return
        if isinstance(ev, ContextTrimmed):
            self.notices.info(
                f"{ev.dropped} of the oldest messages were left out of the prompt so this chat fits the "
                "model's context window.",
                timeout_ms=10000,
            )
            return
        if w is None:
            return
        if isinstance(ev, (ReasoningDelta, FinalDelta, PreambleDelta, ToolCall, TurnFinished)):
            self._stop_reading()  # the first token is here
        if isinstance(ev, ReasoningDelta):
            w.append_reasoning(ev.text)
        elif isinstance(ev, FinalDelta):
            w.append_answer(ev.text)
        elif isinstance(ev, PreambleDelta):
            w.append_preamble(ev.text)
        elif isinstance(ev, ToolCall):
            w.add_tool_call(ToolCallRecord(ev.recipient, ev.arguments, ev.content_type, ev.channel))
        elif isinstance(ev, TurnStarted):
            self._live_message = ev.message
            self.context.emit(f"Context {ev.prompt_tokens:,} / {ev.n_ctx:,}")
            self._reading = PromptProgress(0, ev.prompt_tokens)
            self._reading_timer.start()
        elif isinstance(ev, TurnFinished):
            self._finish_live(ev.message)

    def _finish_live(self, message: Message) -> None:
        if self._live is None:
            return
        self._live.finish(message)
        st = message.stats
        if st is not None:
            self._set_speed(f"{st.tokens_per_s:.1f} tok/s" if st.tokens_per_s else "")
            n_ctx = self.runtime.n_ctx
            used = st.prompt_tokens + st.generated_tokens
            self.context.emit(f"Context {used:,} / {n_ctx:,}")
            self._check_context(used, n_ctx)
        self.turn_finished.emit(message)

    def _on_saved(self, row: MessageRow) -> None:
        if row.role != "assistant":
            return  # a tool result: its card already shows it
        self._live_saved = True
        if self._live is not None:
            self._live.set_stored(row.id, row.status, self.runtime.store.siblings(row.id))
        self.chat.pin_latest()
        self.events.list_changed.emit()
        self.events.state_changed.emit()

    def _on_tool_event(self, ev: object) -> bool:
        """Tool-loop events → cards on the live answer. Returns whether `ev` was one."""
        from app.core.tools import loop

        w = self._live
        if isinstance(ev, (loop.ToolCallStarted, loop.ToolRunning, loop.ToolFinished)):
            if w is not None:
                self._wire_card(w.add_tool_run(ev.run))
            return True
        if isinstance(ev, (loop.ApprovalRequest, loop.FileRequest)):
            if w is not None:
                card = w.add_tool_run(ev.run)
                self._wire_card(card)
                if isinstance(ev, loop.ApprovalRequest):
                    card.attach_approval(ev)
                    self._set_speed("Waiting for your approval…")
                else:
                    card.attach_file_request(ev)
                    self._set_speed("Waiting for you to pick a file…")
                # The question must be in view: bring the card's buttons up once it is laid out.
                self.chat.show_widget(card)
            return True
        if isinstance(ev, loop.RoundLimitReached):
            self.notices.info(ev.text)
            return True
        return isinstance(ev, loop.LoopFinished)

    def _wire_card(self, card: Any) -> None:
        if getattr(card, "_harmonica_wired", False):
            return
        card._harmonica_wired = True
        cid = self.session.conversation_id
        if hasattr(card, "restart_requested") and cid is not None:
            card.restart_requested.connect(lambda cid=cid: self.restart_kernel(cid))

    def restart_kernel(self, conversation_id: int) -> None:
        if self.runtime.restart_kernel(conversation_id):
            self.notices.info("The python kernel of this chat was restarted: its variables are gone.", timeout_ms=6000)

    def _check_context(self, used: int, n_ctx: int) -> None:
        """Warn before the context window is full; offer a new chat or trimming (said in the UI)."""
        if not n_ctx or used < CONTEXT_WARN_FRACTION * n_ctx or self.session.settings.trim_oldest:
            self.notices.clear("context")
            return
        pct = round(100 * used / n_ctx)
        self.notices.info(
            f"This chat uses {pct}% of the model's context window ({used:,} of {n_ctx:,} tokens). "
            "When it is full the model cannot answer: start a new chat, or let Harmonica leave the oldest "
            "turns out of the prompt.",
            [("New chat", self.new_chat_requested), ("Trim oldest turns", self.enable_trimming)],
            slot="context",
        )

    def new_chat_requested(self) -> None:
        if not self.busy("starting a new chat"):
            self.set_session(self.runtime.new_session())
            self.composer.edit.setFocus()

    def _on_turn_error(self, exc: BaseException) -> None:
        self._stop_reading()
        live_msg = self._live_message
        if self._live is not None:
            if live_msg is not None:
                self._finish_live(live_msg)
            else:
                # Nothing was generated: drop the empty message widget; the unanswered question
                # stays visible so the user can retry after fixing the cause.
                self.chat.remove_widget(self._live)
                self._live = None
        self._set_speed("")
        if isinstance(exc, (EngineError, ChatError, StoreError)):
            self.notices.error(str(exc), exc)
        else:
            self.unexpected.emit(exc)

    def refresh_when_idle(self) -> None:
        """Show the open chat again from the store, now or when the answer being written is done."""
        if self.generating:
            self._refresh_after = True
        else:
            self.events.session_changed.emit()

    def _on_turn_finished(self) -> None:
        self._stop_reading()
        self._gen_worker = None
        if self._refresh_after:
            self._refresh_after = False
            QTimer.singleShot(0, self.events.session_changed.emit)
        QTimer.singleShot(0, self._maybe_title)
        if self._live is not None and self._live_message is not None and not self._live_saved:
            # Generation ended without the stored row (an error): reload the branch from the store.
            self.events.session_changed.emit()
        self._live = None
        self.composer.set_generating(False)
        self.chat.tab_order_changed()  # tool cards and the answer's controls, in reading order
        if self.speed_text in (GENERATING, STOPPING):
            self._set_speed("")
        self.events.state_changed.emit()
        self.idle.emit()

    # --- model-written titles ---------------------------------------------------------------------
    def _maybe_title(self) -> None:
        """After the first answer of a chat, ask the model for a short title (in the background)."""
        if self.closing or not self.runtime.settings.chat.auto_title or self._title_worker is not None:
            return
        if self.runtime.engine is None or self.generating or self.runtime.store.read_only:
            return  # (a title could not be saved now)
        view = self.session.view()
        answers = [r for r, _ in view if r.role == "assistant" and r.status == "complete" and not r.tool_calls]
        if len(answers) != 1 or self.session.title_request() is None:
            return
        w = GeneratorWorker(self.runtime.title_job, self.session, date=self.date)
        w.yielded.connect(self._on_title)
        w.errored.connect(lambda _exc: None)  # a title is a nicety: the first-line title stays
        w.finished.connect(self._on_title_finished)
        self._title_worker = w
        start_worker(w)

    def _on_title(self, _title: str) -> None:
        if not self.closing:  # a title that arrives after the window closed has nowhere to go
            self.events.list_changed.emit()
            self.events.state_changed.emit()

    def _on_title_finished(self) -> None:
        self._title_worker = None

    def cancel_title(self) -> None:
        """The user's next action comes first: stop a title being written and wait for the engine."""
        w = self._title_worker
        if w is not None:
            w.quit()
            w.wait(5.0)

    def shutdown(self) -> None:
        """Stop the answer and the title and wait for them (the window is closing)."""
        self.closing = True
        workers = [w for w in (self._gen_worker, self._title_worker) if w is not None]
        for w in workers:
            w.quit()
        for w in workers:
            w.wait(10.0)
