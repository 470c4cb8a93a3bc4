"""The message composer: multi-line input, Send/Stop button and the reasoning-effort selector."""

from __future__ import annotations

from PySide6.QtCore import QEvent, QObject, QSize, Qt, Signal
from PySide6.QtGui import QKeyEvent
from PySide6.QtWidgets import QComboBox, QFrame, QHBoxLayout, QLabel, QPlainTextEdit, QPushButton, QVBoxLayout, QWidget

from app.core.chat import EFFORTS
from app.ui import style

MAX_LINES = 8


class ComposerEdit(QPlainTextEdit):
    """Enter sends, Shift+Enter inserts a newline; grows with its text up to MAX_LINES."""

    submit = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent, objectName="ComposerEdit")
        self.setPlaceholderText("Message gpt-oss…")
        self.setTabChangesFocus(True)
        self.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)
        self.document().setDocumentMargin(4)
        self.textChanged.connect(self._fit)
        self._fit()

    def keyPressEvent(self, e: QKeyEvent) -> None:
        if e.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter) and not (
            e.modifiers() & (Qt.KeyboardModifier.ShiftModifier | Qt.KeyboardModifier.AltModifier)
        ):
            self.submit.emit()
            return
        super().keyPressEvent(e)

    def _fit(self) -> None:
        line = self.fontMetrics().lineSpacing()
        lines = max(1, min(MAX_LINES, int(self.document().size().height())))  # block count with wrap
        h = int(lines * line + 2 * self.document().documentMargin() + 6)
        self.setFixedHeight(h)

    def resizeEvent(self, e: object) -> None:  # type: ignore[override]
        super().resizeEvent(e)  # type: ignore[arg-type]
        self._fit()


class Composer(QWidget):
    """Emits send(text, effort) and stop_requested(); `generating` swaps Send for Stop."""

    send = Signal(str, str)
    stop_requested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._generating = False
        outer = QVBoxLayout(self)
        outer.setContentsMargins(24, 8, 24, 6)
        outer.setSpacing(4)
        self.frame = QFrame(objectName="ComposerFrame")
        self.frame.setMaximumWidth(820)
        row = QHBoxLayout(self.frame)
        row.setContentsMargins(14, 8, 8, 8)
        row.setSpacing(8)
        self.edit = ComposerEdit()
        self.edit.submit.connect(self._on_submit)
        self.edit.installEventFilter(self)
        row.addWidget(self.edit, 1)
        self.effort = QComboBox(objectName="EffortBox")
        for e in EFFORTS:
            self.effort.addItem(f"{e.capitalize()} effort", e)
        self.effort.setCurrentIndex(EFFORTS.index("medium"))
        self.effort.setToolTip(
            "Reasoning effort for the next message: how long the model thinks before answering.\n"
            "Low is fastest; high thinks longest and is best for hard problems."
        )
        row.addWidget(self.effort, 0, Qt.AlignmentFlag.AlignBottom)
        self.button = QPushButton(objectName="SendButton")
        self.button.setIconSize(QSize(18, 18))
        self.button.setCursor(Qt.CursorShape.PointingHandCursor)
        self.button.clicked.connect(self._on_button)
        row.addWidget(self.button, 0, Qt.AlignmentFlag.AlignBottom)
        wrap = QHBoxLayout()
        wrap.addStretch(1)
        wrap.addWidget(self.frame, 100)
        wrap.addStretch(1)
        outer.addLayout(wrap)
        self.hint = QLabel("Enter to send · Shift+Enter for a new line · Everything stays on this computer",
                           objectName="ComposerHint")
        self.hint.setAlignment(Qt.AlignmentFlag.AlignCenter)
        f = self.hint.font()
        f.setPointSizeF(f.pointSizeF() - 1.5)
        self.hint.setFont(f)
        outer.addWidget(self.hint)
        self.edit.textChanged.connect(self._update_button)
        self._can_send = True
        self._update_button()

    # --- state ----------------------------------------------------------------------------------
    @property
    def generating(self) -> bool:
        return self._generating

    def set_generating(self, on: bool) -> None:
        self._generating = on
        self._update_button()

    def set_can_send(self, ok: bool, reason: str = "") -> None:
        self._can_send = ok
        self.edit.setPlaceholderText("Message gpt-oss…" if ok else (reason or "Open a model to start chatting"))
        self._update_button()

    def current_effort(self) -> str:
        return str(self.effort.currentData())

    def set_effort(self, effort: str) -> None:
        self.effort.setCurrentIndex(EFFORTS.index(effort))

    def _update_button(self) -> None:
        if self._generating:
            self.button.setProperty("mode", "stop")
            self.button.setIcon(style.icon("stop"))
            self.button.setToolTip("Stop generating (Esc)")
            self.button.setEnabled(True)
        else:
            self.button.setProperty("mode", "send")
            self.button.setIcon(style.icon("send"))
            self.button.setToolTip("Send (Enter)")
            self.button.setEnabled(self._can_send and bool(self.edit.toPlainText().strip()))
        self.button.style().unpolish(self.button)
        self.button.style().polish(self.button)

    # --- actions --------------------------------------------------------------------------------
    def _on_button(self) -> None:
        if self._generating:
            self.stop_requested.emit()
        else:
            self._on_submit()

    def _on_submit(self) -> None:
        text = self.edit.toPlainText().strip()
        if self._generating or not self._can_send or not text:
            return
        self.edit.clear()
        self.send.emit(text, self.current_effort())

    def eventFilter(self, obj: QObject, e: QEvent) -> bool:
        if obj is self.edit and e.type() in (QEvent.Type.FocusIn, QEvent.Type.FocusOut):
            self.frame.setProperty("focused", e.type() == QEvent.Type.FocusIn)
            self.frame.style().unpolish(self.frame)
            self.frame.style().polish(self.frame)
        return False
