"""A one-line label that shortens its text with "…" to the width it gets, so a narrow window never cuts text off."""

from __future__ import annotations

from PySide6.QtCore import QSize, Qt
from PySide6.QtGui import QPainter, QPaintEvent
from PySide6.QtWidgets import QLabel, QSizePolicy, QStyle, QStyleOption, QWidget


class ElidedLabel(QLabel):
    """Plain text on one line; when it does not fit, the end (or `mode`) is elided and the whole
    text is in the tooltip. Its minimum width is a few characters, so layouts can shrink it."""

    def __init__(
        self,
        text: str = "",
        parent: QWidget | None = None,
        *,
        mode: Qt.TextElideMode = Qt.TextElideMode.ElideRight,
        objectName: str = "",  # noqa: N803 - Qt's own name for it
    ) -> None:
        super().__init__(parent)
        if objectName:
            self.setObjectName(objectName)
        self._mode = mode
        self._tip_is_text = True
        self.setTextFormat(Qt.TextFormat.PlainText)
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Fixed)
        self.setText(text)

    def setText(self, text: str) -> None:
        super().setText(text)
        if self._tip_is_text:
            super().setToolTip(text if self.elided else "")
        self.updateGeometry()
        self.update()

    def setToolTip(self, tip: str) -> None:
        """An explicit tooltip replaces the automatic one (the full text when elided)."""
        self._tip_is_text = not tip
        super().setToolTip(tip or (self.text() if self.elided else ""))

    @property
    def elided(self) -> bool:
        """Whether the text is shortened now."""
        return self.fontMetrics().horizontalAdvance(self.text()) > self.contentsRect().width()

    def shown_text(self) -> str:
        """The text as painted (with "…" when it does not fit)."""
        return self.fontMetrics().elidedText(self.text(), self._mode, max(0, self.contentsRect().width()))

    def minimumSizeHint(self) -> QSize:
        m = self.contentsMargins()
        width = self.fontMetrics().horizontalAdvance("Wwww…") + m.left() + m.right()
        return QSize(min(width, super().sizeHint().width()), super().minimumSizeHint().height())

    def resizeEvent(self, e: object) -> None:  # type: ignore[override]
        super().resizeEvent(e)  # type: ignore[arg-type]
        if self._tip_is_text:
            super().setToolTip(self.text() if self.elided else "")

    def paintEvent(self, e: QPaintEvent) -> None:
        p = QPainter(self)
        opt = QStyleOption()
        opt.initFrom(self)
        self.style().drawPrimitive(QStyle.PrimitiveElement.PE_Widget, opt, p, self)
        p.setPen(self.palette().color(self.foregroundRole()))
        p.drawText(self.contentsRect(), int(self.alignment()) | int(Qt.AlignmentFlag.AlignVCenter), self.shown_text())
        p.end()
