"""The scrolling list of messages; stays pinned to the bottom only while the user is there."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QScrollArea, QSizePolicy, QVBoxLayout, QWidget

from app.core.chat import Conversation, Message
from app.ui.message_widget import AssistantMessageWidget, UserMessageWidget

MAX_CONTENT_WIDTH = 820
_BOTTOM_SLACK_PX = 24


class _Column(QWidget):
    """Centres the messages in a column of at most MAX_CONTENT_WIDTH pixels."""

    def __init__(self) -> None:
        super().__init__(objectName="ChatContent")
        self.column = QWidget(self)
        self.column.setObjectName("ChatContent")
        self.list = QVBoxLayout(self.column)
        self.list.setContentsMargins(0, 16, 0, 24)
        self.list.setSpacing(4)
        self.list.addStretch(1)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(24, 0, 24, 0)
        outer.addWidget(self.column, 0, Qt.AlignmentFlag.AlignHCenter)
        self.column.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Expanding)

    def resizeEvent(self, e: object) -> None:  # type: ignore[override]
        self.column.setFixedWidth(min(MAX_CONTENT_WIDTH, max(200, self.width() - 48)))
        super().resizeEvent(e)  # type: ignore[arg-type]


class ChatView(QScrollArea):
    """Shows a conversation; new content keeps the view at the bottom if it was at the bottom."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent, objectName="ChatScroll")
        self.setWidgetResizable(True)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self._content = _Column()
        self.setWidget(self._content)
        self.widgets: list[QWidget] = []
        self._pinned = True
        bar = self.verticalScrollBar()
        bar.valueChanged.connect(self._on_scrolled)
        bar.rangeChanged.connect(self._on_range)

    # --- content ---------------------------------------------------------------------------------
    def clear(self) -> None:
        for w in self.widgets:
            self._content.list.removeWidget(w)
            w.deleteLater()
        self.widgets = []
        self._pinned = True

    def set_conversation(self, conversation: Conversation) -> None:
        self.clear()
        for m in conversation.messages:
            self.add_message(m)

    def add_message(self, message: Message) -> QWidget | None:
        if message.role == "user":
            w: QWidget = UserMessageWidget(message)
        elif message.role == "assistant":
            w = AssistantMessageWidget.from_message(message)
        else:
            return None  # tool results get their own cards with the tools work
        return self._append(w)

    def add_user(self, message: Message) -> UserMessageWidget:
        self._pinned = True  # sending a message always brings the view down
        w = UserMessageWidget(message)
        self._append(w)
        return w

    def start_assistant(self, *, model: str | None, effort: str | None) -> AssistantMessageWidget:
        w = AssistantMessageWidget(model=model, effort=effort)
        self._append(w)
        return w

    def _append(self, w: QWidget) -> QWidget:
        self._content.list.insertWidget(self._content.list.count() - 1, w)
        self.widgets.append(w)
        return w

    # --- scroll pinning --------------------------------------------------------------------------
    @property
    def pinned(self) -> bool:
        return self._pinned

    def at_bottom(self) -> bool:
        bar = self.verticalScrollBar()
        return bar.value() >= bar.maximum() - _BOTTOM_SLACK_PX

    def _on_scrolled(self, _value: int) -> None:
        self._pinned = self.at_bottom()

    def _on_range(self, _lo: int, hi: int) -> None:
        if self._pinned:
            self.verticalScrollBar().setValue(hi)

    def scroll_to_bottom(self) -> None:
        self._pinned = True
        self.verticalScrollBar().setValue(self.verticalScrollBar().maximum())
