"""The message composer: multi-line input, Send/Stop button and the reasoning-effort slider."""

from __future__ import annotations

from PySide6.QtCore import QEvent, QObject, QPointF, QSize, Qt, Signal
from PySide6.QtGui import QColor, QKeyEvent, QMouseEvent, QPainter, QPaintEvent, QPen, QResizeEvent
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QSizePolicy,
    QSlider,
    QVBoxLayout,
    QWidget,
)

from app.core.chat import EFFORTS
from app.ui import style

MAX_LINES = 8

# What each stop does, in the words the tooltip uses.
EFFORT_HELP = {
    "low": "Thinks briefly: fastest answers, fine for chat and simple questions.",
    "medium": "Thinks a moderate amount: the balanced default.",
    "high": "Thinks longest: slowest, best for maths, logic and code.",
}


def effort_tooltip(current: str) -> str:
    """Rich-text tooltip: what reasoning effort is, each stop explained, the current one in bold."""
    rows = "".join(
        f"<tr><td style='padding-right:8px'>{'<b>' if e == current else ''}{e.capitalize()}"
        f"{'</b>' if e == current else ''}</td><td>{EFFORT_HELP[e]}</td></tr>"
        for e in EFFORTS
    )
    return (
        "<p style='white-space:pre'><b>Reasoning effort</b> for the next message: how long gpt-oss thinks before it answers.</p>"
        f"<table>{rows}</table><p style='color:gray'>Drag, click a stop, or use ← → when focused.</p>"
    )


class EffortSlider(QSlider):
    """A three-stop slider (low, medium, high) drawn to match the composer.

    Qt's own slider ignores style-sheet tick marks once its groove is styled, so this one paints
    the track, the stops and the handle itself; keys, wheel and accessibility stay QSlider's.
    Clicking anywhere jumps to the nearest stop (QSlider would only page towards it).
    """

    HANDLE_R = 6.5
    STOP_R = 2.5

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(Qt.Orientation.Horizontal, parent)
        self.setObjectName("EffortSlider")
        self.setRange(0, len(EFFORTS) - 1)
        self.setSingleStep(1)
        self.setPageStep(1)
        self.setTracking(True)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.setCursor(Qt.CursorShape.PointingHandCursor)
        self.setAttribute(Qt.WidgetAttribute.WA_Hover, True)
        self.setFixedSize(78, 20)
        self.setAccessibleName("Reasoning effort")
        self.setProperty("ownFocusRing", True)  # its halo is its focus ring (app/ui/focus_ring.py)

    def sizeHint(self) -> QSize:
        return QSize(78, 20)

    def _stop_x(self, index: int) -> float:
        left = self.HANDLE_R + 3
        right = self.width() - self.HANDLE_R - 3
        return left + (right - left) * index / max(1, self.maximum())

    def _nearest(self, x: float) -> int:
        return min(range(self.maximum() + 1), key=lambda i: abs(self._stop_x(i) - x))

    def mousePressEvent(self, e: QMouseEvent) -> None:
        if e.button() == Qt.MouseButton.LeftButton and self.isEnabled():
            self.setFocus(Qt.FocusReason.MouseFocusReason)
            self.setSliderDown(True)
            self.setValue(self._nearest(e.position().x()))
            e.accept()
            return
        super().mousePressEvent(e)

    def mouseMoveEvent(self, e: QMouseEvent) -> None:
        if self.isSliderDown():
            self.setValue(self._nearest(e.position().x()))
            e.accept()
            return
        super().mouseMoveEvent(e)

    def mouseReleaseEvent(self, e: QMouseEvent) -> None:
        if self.isSliderDown():
            self.setSliderDown(False)
            e.accept()
            return
        super().mouseReleaseEvent(e)

    def paintEvent(self, e: QPaintEvent) -> None:
        pal = style.current()
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        y = self.height() / 2
        on = QColor(pal.accent if self.isEnabled() else pal.disabled)
        off = QColor(pal.scroll)
        x_first, x_last, x_now = self._stop_x(0), self._stop_x(self.maximum()), self._stop_x(self.value())
        pen = QPen(off, 2.0)
        pen.setCapStyle(Qt.PenCapStyle.RoundCap)
        p.setPen(pen)
        p.drawLine(QPointF(x_first, y), QPointF(x_last, y))
        if x_now > x_first:
            pen.setColor(on)
            p.setPen(pen)
            p.drawLine(QPointF(x_first, y), QPointF(x_now, y))
        p.setPen(Qt.PenStyle.NoPen)
        for i in range(self.maximum() + 1):
            p.setBrush(on if i <= self.value() else off)
            p.drawEllipse(QPointF(self._stop_x(i), y), self.STOP_R, self.STOP_R)
        if self.hasFocus():
            halo = QColor(pal.accent)
            halo.setAlpha(70)
            p.setBrush(halo)
            p.drawEllipse(QPointF(x_now, y), self.HANDLE_R + 3, self.HANDLE_R + 3)
        r = self.HANDLE_R + (0.5 if self.underMouse() and self.isEnabled() else 0.0)
        p.setBrush(QColor(pal.surface))
        p.setPen(QPen(on, 2.0))
        p.drawEllipse(QPointF(x_now, y), r - 1, r - 1)
        p.end()


class EffortControl(QWidget):
    """The composer's effort control: a caption ("Medium effort") over a three-stop slider."""

    changed = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent, objectName="EffortControl")
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(0)
        self.caption = QLabel(objectName="EffortCaption")
        self.caption.setAlignment(Qt.AlignmentFlag.AlignHCenter | Qt.AlignmentFlag.AlignBottom)
        f = self.caption.font()
        f.setPointSizeF(f.pointSizeF() - 1.5)
        self.caption.setFont(f)
        # Wide enough for the longest caption, so the composer does not shift as the value changes.
        self.caption.setMinimumWidth(
            max(self.caption.fontMetrics().horizontalAdvance(f"{e.capitalize()} effort") for e in EFFORTS) + 4
        )
        self.slider = EffortSlider()
        self.caption.setBuddy(self.slider)
        lay.addWidget(self.caption)
        lay.addWidget(self.slider, 0, Qt.AlignmentFlag.AlignHCenter)
        self.setSizePolicy(QSizePolicy.Policy.Fixed, QSizePolicy.Policy.Fixed)
        self.slider.valueChanged.connect(self._on_value)
        self.slider.setValue(EFFORTS.index("medium"))
        self._on_value(self.slider.value())

    def effort(self) -> str:
        return EFFORTS[self.slider.value()]

    def set_effort(self, effort: str) -> None:
        if effort not in EFFORTS:
            raise ValueError(f"unknown reasoning effort {effort!r}")
        self.slider.setValue(EFFORTS.index(effort))

    def _on_value(self, value: int) -> None:
        effort = EFFORTS[value]
        self.caption.setText(f"{effort.capitalize()} effort")
        tip = effort_tooltip(effort)
        self.setToolTip(tip)
        self.slider.setToolTip(tip)
        self.slider.setAccessibleDescription(f"{effort.capitalize()}: {EFFORT_HELP[effort]}")
        self.changed.emit(effort)


class ComposerEdit(QPlainTextEdit):
    """Enter sends, Shift+Enter inserts a newline, Up in an empty box asks to edit the last message;
    grows with its text up to MAX_LINES."""

    submit = Signal()
    edit_last = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent, objectName="ComposerEdit")
        self.setPlaceholderText("Message gpt-oss…")
        self.setAccessibleName("Message")
        self.setProperty("ownFocusRing", True)  # the composer's frame lights up instead
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
        if e.key() == Qt.Key.Key_Up and not e.modifiers() and not self.toPlainText():
            self.edit_last.emit()
            return
        super().keyPressEvent(e)

    def _fit(self) -> None:
        line = self.fontMetrics().lineSpacing()
        total = int(self.document().size().height())  # lines, wrapping included
        lines = max(1, min(MAX_LINES, total))
        h = int(lines * line + 2 * self.document().documentMargin() + 6)
        self.setFixedHeight(h)
        # A scroll bar only once the text is taller than the box (one computed while the composer
        # was hidden could otherwise stay behind).
        policy = Qt.ScrollBarPolicy.ScrollBarAsNeeded if total > MAX_LINES else Qt.ScrollBarPolicy.ScrollBarAlwaysOff
        if self.verticalScrollBarPolicy() != policy:
            self.setVerticalScrollBarPolicy(policy)

    def resizeEvent(self, e: QResizeEvent) -> None:
        super().resizeEvent(e)
        self._fit()


class Composer(QWidget):
    """Emits send(text, effort), stop_requested() and edit_last_requested() (Up in an empty box);
    `generating` swaps Send for Stop."""

    send = Signal(str, str)
    stop_requested = Signal()
    edit_last_requested = Signal()

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
        self.edit.edit_last.connect(self.edit_last_requested)
        self.edit.installEventFilter(self)
        row.addWidget(self.edit, 1)
        self.effort = EffortControl()
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
        self.hint = QLabel(
            "Enter to send · Shift+Enter for a new line · Everything stays on this computer", objectName="ComposerHint"
        )
        self.hint.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.hint.setWordWrap(True)  # two lines in a narrow window rather than cut off
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
        self.edit.viewport().update()  # the placeholder is painted text: repaint it now, not at the next click
        self._update_button()

    def set_remote(self, where: str | None) -> None:
        """The hint under the box never claims privacy that does not hold: a remote model gets what you type."""
        tail = f"Sent to the model, which {where}" if where else "Everything stays on this computer"
        self.hint.setText(f"Enter to send · Shift+Enter for a new line · {tail}")

    def current_effort(self) -> str:
        return self.effort.effort()

    def set_effort(self, effort: str) -> None:
        self.effort.set_effort(effort)

    def _update_button(self) -> None:
        if self._generating:
            self.button.setProperty("mode", "stop")
            self.button.setIcon(style.icon("stop"))
            self.button.setToolTip("Stop generating (Esc)")
            self.button.setAccessibleName("Stop generating")
            self.button.setEnabled(True)
        else:
            self.button.setProperty("mode", "send")
            self.button.setIcon(style.icon("send"))
            self.button.setToolTip("Send (Enter)")
            self.button.setAccessibleName("Send")
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
