"""A plain-text label that also wraps inside long unbroken words (URLs, hashes, base64) and copies the original."""

from __future__ import annotations

import re

from PySide6.QtCore import Qt
from PySide6.QtGui import QContextMenuEvent, QGuiApplication, QKeyEvent, QKeySequence
from PySide6.QtWidgets import QLabel, QMenu, QWidget

# QLabel wraps only at word boundaries, so one 300-character URL overflows its bubble and is cut
# off. A zero-width space is a break opportunity that draws nothing; it is inserted only for display,
# and every copy path maps the selection back to the original text, so nothing copied is altered.
ZWSP = "\u200b"
_LONG_RUN = re.compile(r"\S{24,}")
_STEP = 8


def breakable(text: str) -> tuple[str, list[int]]:
    """The text to show and, for each shown character, its index in `text` (-1 for an inserted break)."""
    shown: list[str] = []
    index: list[int] = []
    pos = 0
    for m in _LONG_RUN.finditer(text):
        for i in range(pos, m.start()):
            shown.append(text[i])
            index.append(i)
        for n, i in enumerate(range(m.start(), m.end())):
            if n and n % _STEP == 0:
                shown.append(ZWSP)
                index.append(-1)
            shown.append(text[i])
            index.append(i)
        pos = m.end()
    for i in range(pos, len(text)):
        shown.append(text[i])
        index.append(i)
    return "".join(shown), index


class WrapLabel(QLabel):
    """Selectable plain text that never overflows its width; `original()` and Copy give the real text."""

    def __init__(self, text: str = "", parent: QWidget | None = None, *, name: str = "") -> None:
        super().__init__(parent, objectName=name)
        self._text = ""
        self._index: list[int] = []
        self.setWordWrap(True)
        self.setTextFormat(Qt.TextFormat.PlainText)
        self.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.set_original(text)

    def set_original(self, text: str) -> None:
        self._text = text
        shown, self._index = breakable(text)
        self.setText(shown)

    def original(self) -> str:
        return self._text

    def original_selection(self) -> str:
        """The selected part of the original text (breaks inserted for display left out)."""
        start = self.selectionStart()
        if start < 0:
            return ""
        end = start + len(self.selectedText())
        return "".join(self._text[i] for i in self._index[start:end] if i >= 0)

    def _copy(self) -> None:
        chosen = self.original_selection()
        if chosen:
            QGuiApplication.clipboard().setText(chosen)

    def keyPressEvent(self, e: QKeyEvent) -> None:
        if e.matches(QKeySequence.StandardKey.Copy):
            self._copy()
            e.accept()
            return
        super().keyPressEvent(e)

    def contextMenuEvent(self, e: QContextMenuEvent) -> None:
        # QLabel's own menu would copy the display text, inserted breaks included.
        menu = QMenu(self)
        copy = menu.addAction("Copy")
        copy.setEnabled(self.hasSelectedText())
        copy.triggered.connect(self._copy)
        select_all = menu.addAction("Select All")
        select_all.triggered.connect(lambda: self.setSelection(0, len(self.text())))
        menu.exec(e.globalPos())
