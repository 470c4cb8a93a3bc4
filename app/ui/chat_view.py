"""The scrolling list of messages; stays pinned to the bottom only while the user is there."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from functools import partial

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QResizeEvent
from PySide6.QtWidgets import (
    QApplication,
    QHBoxLayout,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from app.core.chat import Conversation, Message
from app.core.store import BranchInfo, MessageRow, message_from_row
from app.ui.message_widget import AssistantMessageWidget, UserMessageWidget

MAX_CONTENT_WIDTH = 820
SIDE_MARGIN = 24
_BOTTOM_SLACK_PX = 24
# Opening a long conversation builds widgets only for its latest messages: FIRST_BATCH at once
# (more than a screenful), the rest of the first PAGE in CHUNKs while the event loop is idle, and
# earlier ones a page at a time when the user scrolls up (a widget costs a markdown render).
PAGE = 40
FIRST_BATCH = 8
CHUNK = 4
ANCHOR_HOLD_MS = 3000  # at most this long a rebuilt chat holds the reader's place while it settles


class _Column(QWidget):
    """Centres the messages in a column of at most MAX_CONTENT_WIDTH pixels that shrinks with the
    window (a fixed width here once kept the chat from ever getting narrower)."""

    def __init__(self) -> None:
        super().__init__(objectName="ChatContent")
        self.column = QWidget(self)
        self.column.setObjectName("ChatContent")
        self.column.setMaximumWidth(MAX_CONTENT_WIDTH)
        self.column.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.list = QVBoxLayout(self.column)
        self.list.setContentsMargins(0, 16, 0, 24)
        self.list.setSpacing(4)
        self.list.addStretch(1)
        self.outer = QHBoxLayout(self)
        self.outer.setContentsMargins(SIDE_MARGIN, 0, SIDE_MARGIN, 0)
        self.outer.setSpacing(0)
        self.outer.addStretch(1)
        self.outer.addWidget(self.column, 100)
        self.outer.addStretch(1)

    def resizeEvent(self, e: QResizeEvent) -> None:
        # Narrow windows keep more of their width for the text.
        side = SIDE_MARGIN if e.size().width() >= 560 else SIDE_MARGIN // 2
        if self.outer.contentsMargins().left() != side:
            self.outer.setContentsMargins(side, 0, side, 0)
        super().resizeEvent(e)


class ChatView(QScrollArea):
    """Shows a conversation; new content keeps the view at the bottom if it was at the bottom.

    Messages from the store carry their row id; their actions come out as
    `message_action(name, row_id)` and edits as `edit_submitted(row_id, text)`.
    """

    message_action = Signal(str, int)
    edit_submitted = Signal(int, str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent, objectName="ChatScroll")
        self.setWidgetResizable(True)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self._content = _Column()
        self.setWidget(self._content)
        self.widgets: list[QWidget] = []
        self._pinned = True
        self._rows: list[tuple[MessageRow, BranchInfo]] = []
        self._first_shown = 0  # index in _rows of the first message with a widget
        self._fill_to = 0  # idle-time building stops at this index
        self._generation = 0  # bumped on every set_rows/clear; stale idle work checks it
        # (row id, its distance from the view's top) held while a rebuilt chat settles its layout
        self._anchor: tuple[int, int] | None = None
        self._anchor_timer = QTimer(self, singleShot=True, interval=ANCHOR_HOLD_MS)
        self._anchor_timer.timeout.connect(self._release_anchor)
        self.earlier = QPushButton("Show earlier messages", objectName="SecondaryButton")
        self.earlier.clicked.connect(lambda: self.show_earlier())
        self.earlier.hide()
        self._content.list.insertWidget(0, self.earlier, 0, Qt.AlignmentFlag.AlignHCenter)
        bar = self.verticalScrollBar()
        bar.valueChanged.connect(self._on_scrolled)
        bar.rangeChanged.connect(self._on_range)
        bar.actionTriggered.connect(lambda _action: self._release_anchor())  # the user scrolls: theirs now
        self.setFocusPolicy(Qt.FocusPolicy.NoFocus)  # Tab goes to the messages' own controls
        self._tab_before: QWidget | None = None
        self._tab_after: QWidget | None = None
        self._tab_timer = QTimer(self, singleShot=True, interval=0)
        self._tab_timer.timeout.connect(self.order_tabs)

    # --- keyboard order ----------------------------------------------------------------------------
    def set_tab_neighbours(self, before: QWidget | None, after: QWidget | None) -> None:
        """Tab goes `before` → the messages, top to bottom → `after` (the header, the composer)."""
        self._tab_before, self._tab_after = before, after
        self.order_tabs()

    def tab_order_changed(self) -> None:
        """Messages or their controls were added: put them in reading order once the event loop runs."""
        self._tab_timer.start()

    def order_tabs(self) -> None:
        """Qt's Tab order is the order widgets were made in, so a message added later came after the
        composer; this puts every message's controls between the header and the composer again."""
        chain = [self._tab_before] if self._tab_before is not None else []
        chain.append(self.earlier)
        for w in self.widgets:
            chain.extend(
                c for c in w.findChildren(QWidget) if c.focusPolicy() & Qt.FocusPolicy.TabFocus and not c.isWindow()
            )
        if self._tab_after is not None:
            chain.append(self._tab_after)
        for a, b in itertools.pairwise(chain):
            QWidget.setTabOrder(a, b)

    # --- content ---------------------------------------------------------------------------------
    def clear(self) -> None:
        for w in self.widgets:
            self._content.list.removeWidget(w)
            w.deleteLater()
        self.widgets = []
        self._rows = []
        self._first_shown = 0
        self._fill_to = 0
        self._generation += 1
        self.earlier.hide()
        self._pinned = True
        self._anchor = None

    def set_conversation(self, conversation: Conversation) -> None:
        """Show an in-memory conversation (no store ids: no message actions)."""
        self.clear()
        for m in conversation.messages:
            self.add_message(m)

    def set_rows(self, rows: Sequence[tuple[MessageRow, BranchInfo]]) -> None:
        """Show a stored path: the latest messages at once, the rest of the first page when idle,
        earlier pages when the user scrolls up."""
        self.clear()
        self._rows = list(rows)
        self._fill_to = self._page_start(len(self._rows), PAGE)
        first = self._page_start(len(self._rows), FIRST_BATCH)
        for w in self._widgets_for(first, len(self._rows)):
            self._append(w)
        self._first_shown = first
        self.earlier.setVisible(first > 0)
        self.pin_latest()
        self._generation += 1
        if first > self._fill_to:
            gen = self._generation
            QTimer.singleShot(0, lambda: self._fill(gen))

    def rebuild_keeping_place(self, rows: Sequence[tuple[MessageRow, BranchInfo]]) -> None:
        """Rebuild the same path (e.g. after a theme change) without moving the reader: the message
        at the top of the view stays there and keyboard focus returns to the same control of the
        same message, so a keyboard or screen-reader user does not land back at the composer."""
        bar = self.verticalScrollBar()
        pinned = self._pinned
        self._anchor = None
        anchor = self._top_message()
        anchor_row = getattr(anchor, "row_id", None) if anchor is not None else None
        offset = anchor.y() - bar.value() if anchor is not None else 0
        focus = _focus_path(self.widgets)
        # An edit in progress is typed text: it must survive the rebuild, still open.
        edits = {
            w.row_id: w.edit_box.toPlainText()
            for w in self.widgets
            if isinstance(w, UserMessageWidget) and w.editing and w.row_id is not None
        }
        self.set_rows(rows)
        present = {r.id for r, _ in self._rows}  # a row that is gone is not searched for page by page
        for row_id in (anchor_row, focus[0] if focus else None, *edits):
            while row_id in present and self.widget_for_row(row_id) is None and self._first_shown > 0:
                self.show_earlier(now=True)
        for row_id, text in edits.items():
            w = self.widget_for_row(row_id)
            if isinstance(w, UserMessageWidget):
                w.start_edit()
                w.edit_box.setPlainText(text)

        if not pinned and anchor_row is not None:
            # Messages re-render and grow for a while after a rebuild (longer on a busy machine): the
            # anchor is re-applied on every change of the scroll range until the user scrolls.
            self._anchor = (anchor_row, offset)
            self._anchor_timer.start()
            self._hold_anchor()

        def restore() -> None:
            self._hold_anchor()
            if focus:
                target = _find_focus(self.widget_for_row(focus[0]), focus[1])
                if target is not None:
                    target.setFocus(Qt.FocusReason.OtherFocusReason)

        QTimer.singleShot(0, restore)

    def _hold_anchor(self) -> None:
        if self._anchor is None:
            return
        w = self.widget_for_row(self._anchor[0])
        if w is not None:
            self._pinned = False
            self.verticalScrollBar().setValue(w.y() - self._anchor[1])

    def _release_anchor(self) -> None:
        self._anchor = None

    def _top_message(self) -> QWidget | None:
        top = self.verticalScrollBar().value()
        return next((w for w in self.widgets if w.y() + w.height() > top), None)

    def _page_start(self, end: int, count: int) -> int:
        """The index from which rows[:end] holds `count` displayed messages (0 if fewer)."""
        shown = [i for i, (r, _) in enumerate(self._rows[:end]) if _displayed(r)]
        return shown[-count] if len(shown) > count else 0

    def _fill(self, generation: int) -> None:
        if generation != self._generation or self._first_shown <= self._fill_to:
            return
        self._prepend(max(self._fill_to, self._page_start(self._first_shown, CHUNK)))
        if self._first_shown > self._fill_to:
            QTimer.singleShot(0, lambda: self._fill(generation))

    def show_earlier(self, *, now: bool = False) -> None:
        """Build the previous page of messages above the current ones, keeping the view still:
        a first batch at once, the rest while idle (all at once with `now`)."""
        if self._first_shown == 0:
            return
        self._fill_to = min(self._fill_to, self._page_start(self._first_shown, PAGE))
        if now:
            self._prepend(self._fill_to)
            return
        self._prepend(max(self._fill_to, self._page_start(self._first_shown, FIRST_BATCH)))
        if self._first_shown > self._fill_to:
            gen = self._generation
            QTimer.singleShot(0, lambda: self._fill(gen))

    def _prepend(self, start: int) -> None:
        """Build rows[start:_first_shown] above what is shown; the visible part does not move."""
        if start >= self._first_shown:
            return
        bar = self.verticalScrollBar()
        old_max, old_value, pinned = bar.maximum(), bar.value(), self._pinned
        new = self._widgets_for(start, self._first_shown)
        for k, w in enumerate(new):
            self._content.list.insertWidget(1 + k, w)
        self.widgets[0:0] = new
        self._first_shown = start
        self.tab_order_changed()
        self.earlier.setVisible(start > 0)
        if not pinned:
            # Keep the message that was at the top where it was once the layout has grown.
            self._pinned = False
            QTimer.singleShot(0, lambda: bar.setValue(old_value + bar.maximum() - old_max))

    def _widgets_for(self, start: int, end: int) -> list[QWidget]:
        """Widgets for rows[start:end]. A tool result fills in its call's card on the answer before
        it; the answer's next generation continues below (no second header), and citations of
        pages the browser opened in the turn link to them."""
        out: list[QWidget] = []
        last: AssistantMessageWidget | None = None
        browsed: list[str] = []
        for k in range(start, end):
            row, info = self._rows[k]
            if row.role == "tool":
                if last is not None and isinstance(row.extra.get("tool_run"), dict):
                    from app.core.tools.loop import ToolRun

                    last.add_tool_run(ToolRun.from_dict(row.extra["tool_run"]))
                if (row.tool_name or "").startswith("browser."):
                    browsed.append(row.content)
                continue
            if not _displayed(row):
                continue
            message = message_from_row(row)
            if row.role == "user":
                u = UserMessageWidget(message, row_id=row.id)
                u.set_branch(info)
                self._wire_user(u)
                out.append(u)
                last, browsed = None, []
                continue
            prev = self._rows[k - 1][0] if k > 0 else None
            urls: dict[int, str] = {}
            if browsed:
                from app.core.tools.browser import cursor_urls_from_results

                urls = cursor_urls_from_results(browsed)
            a = AssistantMessageWidget.from_message(
                message, continuation=prev is not None and prev.role == "tool", citation_urls=urls
            )
            a.set_stored(row.id, row.status, info)
            self._wire_assistant(a)
            out.append(a)
            last = a
        return out

    def _wire_user(self, w: UserMessageWidget) -> None:
        self._wire_actions(w)
        w.edit_submitted.connect(partial(self._on_edit_submitted, w))

    def _wire_assistant(self, w: AssistantMessageWidget) -> None:
        self._wire_actions(w)

    def _wire_actions(self, w: UserMessageWidget | AssistantMessageWidget) -> None:
        w.action.connect(partial(self._on_action, w))

    def _on_action(self, w: UserMessageWidget | AssistantMessageWidget, name: str) -> None:
        if w.row_id is not None:  # a message not stored yet has nothing to act on
            self.message_action.emit(name, w.row_id)

    def _on_edit_submitted(self, w: UserMessageWidget, text: str) -> None:
        if w.row_id is not None:
            self.edit_submitted.emit(w.row_id, text)

    def pin_latest(self) -> None:
        """Only the latest answer shows its actions without hovering."""
        last = next((w for w in reversed(self.widgets) if isinstance(w, AssistantMessageWidget)), None)
        for w in self.widgets:
            actions = getattr(w, "actions", None)
            if actions is not None:
                actions.set_pinned(w is last)

    def add_message(self, message: Message) -> QWidget | None:
        if message.role == "user":
            w: QWidget = UserMessageWidget(message)
        elif message.role == "assistant":
            w = AssistantMessageWidget.from_message(message)
        else:
            return None  # tool results get their own cards with the tools work
        return self._append(w)

    def add_user(
        self, message: Message, row_id: int | None = None, branch: BranchInfo | None = None
    ) -> UserMessageWidget:
        self._pinned = True  # sending a message always brings the view down
        self._anchor = None
        w = UserMessageWidget(message, row_id=row_id)
        w.set_branch(branch)
        self._wire_user(w)
        self._append(w)
        return w

    def start_assistant(
        self, *, model: str | None, effort: str | None, continuation: bool = False
    ) -> AssistantMessageWidget:
        w = AssistantMessageWidget(model=model, effort=effort, continuation=continuation)
        self._wire_assistant(w)
        self._append(w)
        self.pin_latest()
        return w

    def remove_widget(self, w: QWidget) -> None:
        if w in self.widgets:
            self.widgets.remove(w)
            self._content.list.removeWidget(w)
            w.deleteLater()

    def widget_for_row(self, row_id: int) -> QWidget | None:
        return next((w for w in self.widgets if getattr(w, "row_id", None) == row_id), None)

    def show_widget(self, w: QWidget) -> None:
        """Scroll so that `w` (e.g. a tool card asking for approval) is fully in view, after layout."""
        QTimer.singleShot(0, lambda: self._ensure_visible(w))

    def _ensure_visible(self, w: QWidget) -> None:
        try:
            self.ensureWidgetVisible(w, 0, 24)
        except RuntimeError:  # deleted meanwhile
            pass

    def scroll_to_row(self, row_id: int) -> bool:
        """Bring a message into view (building earlier pages if needed) and flash it."""
        while self.widget_for_row(row_id) is None and self._first_shown > 0:
            self.show_earlier(now=True)
        w = self.widget_for_row(row_id)
        if w is None:
            return False
        self._pinned = False
        QTimer.singleShot(0, lambda: self.ensureWidgetVisible(w, 0, 80))
        w.setProperty("flash", True)
        w.style().unpolish(w)
        w.style().polish(w)

        def unflash() -> None:
            try:
                w.setProperty("flash", False)
                w.style().unpolish(w)
                w.style().polish(w)
            except RuntimeError:  # the widget was deleted meanwhile
                pass

        QTimer.singleShot(1600, unflash)
        return True

    def _append(self, w: QWidget | None) -> QWidget | None:
        if w is None:
            return None
        self._content.list.insertWidget(self._content.list.count() - 1, w)
        self.widgets.append(w)
        self.tab_order_changed()
        return w

    # --- scroll pinning --------------------------------------------------------------------------
    @property
    def pinned(self) -> bool:
        return self._pinned

    def at_bottom(self) -> bool:
        bar = self.verticalScrollBar()
        return bar.value() >= bar.maximum() - _BOTTOM_SLACK_PX

    def _on_scrolled(self, value: int) -> None:
        self._pinned = self.at_bottom()
        if value == 0 and self._first_shown > 0 and self.verticalScrollBar().maximum() > 0:
            self.show_earlier()

    def _on_range(self, _lo: int, hi: int) -> None:
        if self._anchor is not None:
            self._hold_anchor()
        elif self._pinned:
            self.verticalScrollBar().setValue(hi)

    def scroll_to_bottom(self) -> None:
        self._anchor = None
        self._pinned = True
        self.verticalScrollBar().setValue(self.verticalScrollBar().maximum())


def _displayed(row: MessageRow) -> bool:
    """Which stored messages get a widget of their own (tool results show inside their call's card)."""
    return row.role in ("user", "assistant")


def _signature(w: QWidget) -> tuple[str, str, str, str]:
    text = getattr(w, "text", None)
    return (type(w).__name__, w.objectName(), w.accessibleName(), text() if callable(text) else "")


def _focus_path(widgets: Sequence[QWidget]) -> tuple[int, tuple[tuple[str, str, str, str], int]] | None:
    """Which message holds keyboard focus, and which of its controls (by kind, name and text)."""
    focused = QApplication.focusWidget()
    if focused is None:
        return None
    for w in widgets:
        row_id = getattr(w, "row_id", None)
        if row_id is not None and (focused is w or w.isAncestorOf(focused)):
            sig = _signature(focused)
            same = [c for c in w.findChildren(type(focused)) if _signature(c) == sig]
            return row_id, (sig, same.index(focused) if focused in same else 0)
    return None


def _find_focus(w: QWidget | None, where: tuple[tuple[str, str, str, str], int]) -> QWidget | None:
    if w is None:
        return None
    sig, index = where
    same = [c for c in w.findChildren(QWidget) if _signature(c) == sig]
    if _signature(w) == sig:
        same.insert(0, w)
    return same[index] if index < len(same) else w
