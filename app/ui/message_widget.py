"""Widgets for one chat message: user bubble, assistant message (reasoning, preamble, tools, answer)."""

from __future__ import annotations

import json
import time

from PySide6.QtCore import QEvent, QObject, QSize, Qt, QTimer, Signal
from PySide6.QtGui import QKeyEvent, QTextBlockFormat, QTextCursor
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QSizePolicy,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from app.core.chat import Message, ToolCallRecord
from app.core.store import BranchInfo
from app.core.tools.loop import ToolRun
from app.ui import style
from app.ui.markdown_view import MarkdownView, PlainStreamView, Throttle
from app.ui.message_actions import MessageActions
from app.ui.tool_card import ToolCard
from app.ui.wrap_label import WrapLabel

UPDATE_INTERVAL_MS = 50

_STOP_NOTES = {
    "cancelled": "Stopped.",
    "length": "The answer was cut off: it reached the token limit or the end of the context window.",
    "error": "Generation failed before the answer was complete.",
    "call": "",
    "return": "",
    "eos": "",
}


def format_seconds(s: float) -> str:
    if s < 1:
        return "less than a second"
    if s < 90:
        n = round(s)
        return f"{n} second" + ("s" if n != 1 else "")
    return f"{s / 60:.1f} minutes"


class _Hoverable:
    """Messages show their action row while the pointer is over them."""

    actions: MessageActions

    def enterEvent(self, e: object) -> None:
        self.actions.set_hovered(True)
        super().enterEvent(e)  # type: ignore[misc]

    def leaveEvent(self, e: object) -> None:
        self.actions.set_hovered(False)
        super().leaveEvent(e)  # type: ignore[misc]


class UserMessageWidget(_Hoverable, QWidget):  # type: ignore[misc]  # `actions` shadows QWidget.actions()
    """The user's message: a right-aligned bubble of plain, selectable text, editable in place."""

    action = Signal(str)  # MessageActions names
    edit_submitted = Signal(str)

    def __init__(self, message: Message, parent: QWidget | None = None, *, row_id: int | None = None) -> None:
        super().__init__(parent)
        self.message = message
        self.row_id = row_id
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 6, 0, 2)
        outer.setSpacing(2)
        row = QHBoxLayout()
        row.addStretch(1)
        self.bubble = QFrame(objectName="UserBubble")
        self.bubble.setSizePolicy(QSizePolicy.Policy.Maximum, QSizePolicy.Policy.Preferred)
        lay = QVBoxLayout(self.bubble)
        lay.setContentsMargins(16, 10, 16, 10)
        self.label = WrapLabel(message.content, name="UserText")
        self.label.setCursor(Qt.CursorShape.IBeamCursor)
        lay.addWidget(self.label)
        row.addWidget(self.bubble)
        outer.addLayout(row)

        self.editor = QFrame(objectName="EditFrame")
        ed = QVBoxLayout(self.editor)
        ed.setContentsMargins(12, 10, 12, 10)
        self.edit_box = QPlainTextEdit(objectName="EditBox")
        self.edit_box.setMinimumHeight(70)
        self.edit_box.setAccessibleName("Edit your message")
        self.edit_box.setTabChangesFocus(True)  # Tab goes on to Cancel and Send
        self.edit_box.installEventFilter(self)  # Ctrl+Enter sends, Esc cancels
        ed.addWidget(self.edit_box)
        buttons = QHBoxLayout()
        hint = QLabel("Sending an edit keeps the original as another version.", objectName="EditHint")
        hint.setWordWrap(True)  # narrow windows: two lines, not cut off
        buttons.addWidget(hint, 1)
        self.edit_cancel = QPushButton("Cancel", objectName="SecondaryButton")
        self.edit_cancel.clicked.connect(self.cancel_edit)
        self.edit_send = QPushButton("Send", objectName="PrimaryButton")
        self.edit_send.clicked.connect(self._submit_edit)
        buttons.addWidget(self.edit_cancel)
        buttons.addWidget(self.edit_send)
        ed.addLayout(buttons)
        self.editor.hide()
        outer.addWidget(self.editor)

        self.actions = MessageActions(("copy", "edit", "delete"), align_right=True)
        self.actions.triggered.connect(self._on_action)
        outer.addWidget(self.actions)
        self._natural = (
            max(
                (self.label.fontMetrics().horizontalAdvance(line) for line in message.content.splitlines() or [""]),
                default=0,
            )
            + 4
        )

    @property
    def editing(self) -> bool:
        return not self.editor.isHidden()

    def set_branch(self, info: BranchInfo | None) -> None:
        self.actions.set_branch(info)

    def _on_action(self, name: str) -> None:
        if name == "edit":
            self.start_edit()
        else:
            self.action.emit(name)

    def start_edit(self) -> None:
        self.edit_box.setPlainText(self.message.content)
        self.bubble.hide()
        self.editor.show()
        self.edit_box.setFocus()
        self.edit_box.moveCursor(QTextCursor.MoveOperation.End)

    def cancel_edit(self) -> None:
        self.editor.hide()
        self.bubble.show()

    def eventFilter(self, obj: QObject, e: QEvent) -> bool:
        if obj is self.edit_box and isinstance(e, QKeyEvent):
            send = e.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter) and bool(
                e.modifiers() & Qt.KeyboardModifier.ControlModifier
            )
            cancel = e.key() == Qt.Key.Key_Escape
            if send or cancel:
                e.accept()  # ShortcutOverride: the key is ours, not the window's Esc (Stop)
                if e.type() != QEvent.Type.KeyPress:
                    return False
                if send:
                    self._submit_edit()
                else:
                    self.cancel_edit()
                return True
        return super().eventFilter(obj, e)

    def _submit_edit(self) -> None:
        text = self.edit_box.toPlainText().strip()
        if not text:
            return
        self.cancel_edit()
        if text != self.message.content:
            self.edit_submitted.emit(text)

    def minimumSizeHint(self) -> QSize:
        # The bubble's width follows ours (resizeEvent), so ours must not follow the bubble's: a
        # narrower chat column could never shrink the bubble otherwise.
        return QSize(min(super().minimumSizeHint().width(), 160), super().minimumSizeHint().height())

    def resizeEvent(self, e: object) -> None:  # type: ignore[override]
        # Short messages hug their text; long ones wrap at three quarters of the column.
        limit = max(120, int(self.width() * 0.75) - 32)
        self.label.setFixedWidth(min(self._natural, limit))
        super().resizeEvent(e)  # type: ignore[arg-type]


def tool_run_from_call(call: ToolCallRecord, index: int = 0) -> ToolRun:
    """A card's data for a call known only from the message (no stored result yet, or an old chat)."""
    kind = (
        "python" if call.recipient == "python" else "browser" if call.recipient.startswith("browser.") else "function"
    )
    return ToolRun(call.recipient, call.arguments, kind=kind, status="called", id=f"call:{index}:{call.recipient}")


def pretty_json(text: str) -> str:
    try:
        return json.dumps(json.loads(text), indent=2, ensure_ascii=False)
    except (ValueError, TypeError):
        return text


class AssistantMessageWidget(_Hoverable, QFrame):  # type: ignore[misc]  # as above
    """An assistant message that can be filled in live from stream events.

    Reasoning streams into an expanded section; when visible output starts it collapses to
    "Thought for N s" and toggles on click. The answer is markdown, re-rendered at most every
    UPDATE_INTERVAL_MS with only its tail rebuilt.
    """

    reasoning_toggled = Signal(bool)
    action = Signal(str)  # MessageActions names

    def __init__(
        self, *, model: str | None, effort: str | None, parent: QWidget | None = None, continuation: bool = False
    ) -> None:
        super().__init__(parent, objectName="AssistantMessage")
        self.row_id: int | None = None
        self.effort = effort
        self.continuation = continuation  # a later generation of the same answer (after tool calls)
        self._cite_urls: dict[int, str] = {}
        self.status = "streaming"
        pal = style.current()
        self._reasoning = ""
        self._answer = ""
        self._preamble = ""
        self._think_start: float | None = None
        self._thinking_done = False
        self._finished = False
        self.message: Message | None = None

        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 10, 0, 10)
        lay.setSpacing(6)

        head = QHBoxLayout()
        head.setSpacing(8)
        self.model_label = QLabel(model or "Assistant", objectName="ModelName")
        head.addWidget(self.model_label)
        # Parented at once: shown while still parentless it would flash as its own window and take
        # the keyboard from the composer (issue 13: nothing may steal focus while the user types).
        self.effort_chip = QLabel(f"{effort} effort" if effort else "", self, objectName="EffortChip")
        self.effort_chip.setVisible(bool(effort))
        head.addWidget(self.effort_chip)
        self.meta = QLabel("", objectName="MessageMeta")
        # It takes the row's free width (right-aligned), so it stays on one line and only breaks in
        # a narrow column instead of widening it.
        self.meta.setWordWrap(True)
        self.meta.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        head.addWidget(self.meta, 1)
        lay.addLayout(head)
        if continuation:
            # The same answer goes on below the tool cards: no second name and effort chip.
            self.model_label.hide()
            self.effort_chip.hide()
            lay.setContentsMargins(0, 0, 0, 10)

        # "Reading your message… 40%" while the engine reads a long prompt (set_reading).
        self.reading_note = QLabel("", objectName="ReadingNote")
        self.reading_note.hide()
        lay.addWidget(self.reading_note)

        self.reasoning_toggle = QToolButton(objectName="ReasoningToggle")
        self.reasoning_toggle.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.reasoning_toggle.setCursor(Qt.CursorShape.PointingHandCursor)
        self.reasoning_toggle.setIconSize(QSize(14, 14))
        self.reasoning_toggle.clicked.connect(self.toggle_reasoning)
        self.reasoning_toggle.hide()
        lay.addWidget(self.reasoning_toggle)

        # The reasoning view is built when first shown: most messages in history stay collapsed,
        # and a text view per message is the costliest part of opening a long conversation.
        self._reasoning_body: QFrame | None = None
        self._reasoning_view: PlainStreamView | None = None
        self._layout = lay

        self.preamble_label = QLabel("", objectName="Preamble")
        self.preamble_label.setWordWrap(True)
        self.preamble_label.setTextFormat(Qt.TextFormat.PlainText)
        self.preamble_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.preamble_label.hide()
        lay.addWidget(self.preamble_label)

        self.tools_box = QVBoxLayout()
        self.tools_box.setSpacing(6)
        lay.addLayout(self.tools_box)
        self.tool_cards: list[ToolCard] = []

        self.answer_view = MarkdownView(pal.markdown)
        self.answer_view.setAccessibleName("Answer")
        self.answer_view.hide()
        lay.addWidget(self.answer_view)

        self.stop_note = QLabel("", objectName="StopNote")
        self.stop_note.setWordWrap(True)
        self.stop_note.hide()
        lay.addWidget(self.stop_note)

        self.actions = MessageActions(("copy", "regenerate", "delete"))
        self.actions.triggered.connect(self.action)
        self.actions.hide()  # until the answer is complete
        lay.addWidget(self.actions)

        self._throttle = Throttle(self.flush, UPDATE_INTERVAL_MS, self)
        self._tick = QTimer(self)  # keeps "Thinking… N s" current while reasoning streams
        self._tick.setInterval(1000)
        self._tick.timeout.connect(self._update_toggle_text)
        self._shown_reasoning = 0
        self._shown_answer: str | None = ""

    # --- state ----------------------------------------------------------------------------------
    @property
    def reasoning_expanded(self) -> bool:
        return self._reasoning_body is not None and not self._reasoning_body.isHidden()

    @property
    def reasoning_body(self) -> QFrame:
        self._build_reasoning_view()
        assert self._reasoning_body is not None
        return self._reasoning_body

    @property
    def reasoning_view(self) -> PlainStreamView:
        self._build_reasoning_view()
        assert self._reasoning_view is not None
        return self._reasoning_view

    def _build_reasoning_view(self) -> None:
        if self._reasoning_body is not None:
            return
        body = QFrame(objectName="ReasoningBody")
        rb = QHBoxLayout(body)
        rb.setContentsMargins(8, 0, 0, 8)
        rb.setSpacing(10)
        bar = QFrame(objectName="ReasoningBar")
        bar.setFixedWidth(2)
        rb.addWidget(bar)
        view = PlainStreamView(objectName="ReasoningText")
        view.setAccessibleName("Reasoning")
        f = view.font()
        f.setPointSizeF(max(8.0, f.pointSizeF() - 0.5))
        view.setFont(f)
        fmt = QTextBlockFormat()
        fmt.setLineHeight(130.0, QTextBlockFormat.LineHeightTypes.ProportionalHeight.value)
        QTextCursor(view.document()).setBlockFormat(fmt)  # new blocks inherit it
        rb.addWidget(view)
        body.hide()
        self._layout.insertWidget(self._layout.indexOf(self.reasoning_toggle) + 1, body)
        self._reasoning_body, self._reasoning_view = body, view

    @property
    def reasoning_text(self) -> str:
        return self._reasoning

    @property
    def answer_text(self) -> str:
        return self._answer

    @property
    def thinking(self) -> bool:
        return self._think_start is not None and not self._thinking_done

    # --- streaming input -----------------------------------------------------------------------
    def set_reading(self, text: str | None) -> None:
        """Say what happens before the first token ("Reading your message… 40%"); None hides it."""
        self.reading_note.setText(text or "")
        self.reading_note.setVisible(bool(text))

    def append_reasoning(self, text: str) -> None:
        if self._think_start is None:
            self._think_start = time.monotonic()
            self.reasoning_toggle.show()
            self.set_reasoning_expanded(True)
            self._tick.start()
        self._reasoning += text
        self._update_toggle_text()
        self._throttle()

    def append_preamble(self, text: str) -> None:
        self._end_thinking()
        self._preamble += text
        self._throttle()

    def append_answer(self, text: str) -> None:
        self._end_thinking()
        self._answer += text
        self._throttle()

    def add_tool_call(self, call: ToolCallRecord) -> ToolCard:
        """A card for a call seen in the stream or in history; a later add_tool_run fills it in."""
        return self.add_tool_run(tool_run_from_call(call, len(self.tool_cards)))

    def add_tool_run(self, run: ToolRun) -> ToolCard:
        """Show a tool run (ToolCallStarted/ToolRunning/ToolFinished from the tool loop, or a stored
        one): updates its card when it is already shown, else adds one."""
        self._end_thinking()
        self.flush()
        card = self.tool_card(run.id)
        if card is None:  # the bare card of the same call, shown before the loop said more
            card = next(
                (
                    c
                    for c in self.tool_cards
                    if c.run.status == "called"
                    and c.run.recipient == run.recipient
                    and c.run.arguments == run.arguments
                ),
                None,
            )
        if card is not None:
            card.update_run(run)
            if run.status in ("waiting", "running"):
                card.set_expanded(True)
            return card
        card = ToolCard(run)
        self.tool_cards.append(card)
        self.tools_box.addWidget(card)
        return card

    def tool_card(self, run_id: str) -> ToolCard | None:
        return next((c for c in self.tool_cards if c.run.id == run_id), None)

    def flush(self) -> None:
        """Show pending text now (the throttle calls this; tests and the benchmark may too)."""
        self._throttle.stop()
        if self.reasoning_expanded:
            self.flush_reasoning_only()
        if self._preamble and self.preamble_label.text() != self._preamble:
            self.preamble_label.setText(self._preamble)
            self.preamble_label.show()
        if self._answer != self._shown_answer:
            self.answer_view.show()
            self.answer_view.set_markdown(self._linked(self._answer), final=self._finished)
            self._shown_answer = self._answer

    def finish(self, message: Message) -> None:
        """The message is complete: final render, stats, stop note."""
        self.message = message
        self._finished = True
        if message.thinking and not self._reasoning:
            self._reasoning = message.thinking
        if message.content != self._answer:
            self._answer = message.content
        self._end_thinking(message.thinking_s)
        if self._answer:
            self._shown_answer = None  # one last render with final=True: the tail becomes final
        self.flush()
        for call in message.tool_calls[len(self.tool_cards) :]:
            self.add_tool_call(call)
        self._tick.stop()
        note = _STOP_NOTES.get(message.stop_reason or "", "")
        if message.stop_reason == "cancelled" and not (self._answer or self._reasoning):
            note = "Stopped before any answer."
        self.stop_note.setText(note)
        self.stop_note.setVisible(bool(note))
        st = message.stats
        if st is not None and st.generated_tokens:
            parts = [f"{st.generated_tokens:,} tokens"]
            if st.tokens_per_s:
                parts.append(f"{st.tokens_per_s:.1f} tok/s")
            self.meta.setText(" · ".join(parts))
            self.meta.setToolTip(
                f"Prompt: {st.prompt_tokens:,} tokens ({st.cached_tokens:,} reused from cache)\n"
                f"Time to first token: {st.ttft_s:.2f} s\nTotal: {st.total_s:.2f} s"
            )
        if not self._reasoning:
            self.reasoning_toggle.hide()
        self.actions.show()

    def set_stored(self, row_id: int, status: str, branch: BranchInfo | None = None) -> None:
        """Where this message lives in the store; an answer cut short offers Continue."""
        self.row_id = row_id
        self.status = status
        self.actions.set_branch(branch)
        cut_short = status in ("interrupted", "error")
        self.actions.set_can_continue(cut_short)
        if cut_short and self.message is not None and not self.message.stop_reason:
            # No stop reason: the app closed (or crashed) while this answer was being written.
            self.stop_note.setText("Interrupted: Harmonica closed before this answer was finished.")
            self.stop_note.show()

    def set_branch(self, info: BranchInfo | None) -> None:
        self.actions.set_branch(info)

    def set_citation_urls(self, urls: dict[int, str]) -> None:
        """Pages the browser tool opened in this turn (cursor → URL): 【3†L9-L11】 citations link there."""
        if urls != self._cite_urls:
            self._cite_urls = dict(urls)
            if self._answer:
                self._shown_answer = None
                self.flush()

    def _linked(self, text: str) -> str:
        if not self._cite_urls or "【" not in text:
            return text
        from app.core.tools.browser import link_citations

        return link_citations(text, self._cite_urls)

    @classmethod
    def from_message(
        cls,
        message: Message,
        parent: QWidget | None = None,
        *,
        continuation: bool = False,
        citation_urls: dict[int, str] | None = None,
    ) -> AssistantMessageWidget:
        """A finished message from history (reasoning collapsed)."""
        w = cls(model=message.model, effort=message.effort, parent=parent, continuation=continuation)
        w._cite_urls = dict(citation_urls or {})
        w._reasoning = message.thinking
        w._preamble = message.preamble
        w._answer = message.content
        if message.thinking:
            w._think_start = time.monotonic()
            w.reasoning_toggle.show()
        w.finish(message)
        return w

    # --- reasoning section ----------------------------------------------------------------------
    def _end_thinking(self, seconds: float | None = None) -> None:
        if self._think_start is None:
            return
        if not self._thinking_done:
            self._thinking_done = True
            self._think_seconds = seconds if seconds is not None else time.monotonic() - self._think_start
            self.set_reasoning_expanded(False)
            self._tick.stop()
        elif seconds is not None:
            self._think_seconds = seconds
        self._update_toggle_text()

    def toggle_reasoning(self) -> None:
        self.set_reasoning_expanded(not self.reasoning_expanded)

    def set_reasoning_expanded(self, expanded: bool) -> None:
        if expanded:
            self.flush_reasoning_only()
            self.reasoning_body.show()
        elif self._reasoning_body is not None:
            self._reasoning_body.hide()
        self.reasoning_toggle.setIcon(style.icon("chevron-down" if expanded else "chevron-right"))
        self.reasoning_toggled.emit(expanded)

    def flush_reasoning_only(self) -> None:
        if len(self._reasoning) > self._shown_reasoning:
            self.reasoning_view.append_text(self._reasoning[self._shown_reasoning :])
            self._shown_reasoning = len(self._reasoning)

    def _update_toggle_text(self) -> None:
        if self._think_start is None:
            return
        if self._thinking_done:
            self.reasoning_toggle.setText(f"Thought for {format_seconds(self._think_seconds)}")
        else:
            secs = int(time.monotonic() - self._think_start)
            self.reasoning_toggle.setText("Thinking…" + (f" {secs} s" if secs >= 1 else ""))
