"""Read-only rich-text views that size themselves to their content; the markdown answer view."""

from __future__ import annotations

import math
from typing import Any

from PySide6.QtCore import QSize, Qt, QTimer, QUrl, Signal
from PySide6.QtGui import (
    QDesktopServices,
    QGuiApplication,
    QTextBlockFormat,
    QTextCharFormat,
    QTextCursor,
    QTextDocument,
    QWheelEvent,
)
from PySide6.QtWidgets import QFrame, QSizePolicy, QTextBrowser, QToolTip, QWidget

from app.core.markdown import SAFE_LINK_SCHEMES, IncrementalMarkdown, Theme, shared_renderer

_ref_doc: QTextDocument | None = None
_first_formats: dict[str, QTextBlockFormat] = {}


def _first_block_format(html: str) -> QTextBlockFormat:
    """The block format Qt gives a paragraph or heading that starts with `html`'s first tag."""
    global _ref_doc
    tag = html[: html.find(">") + 1]
    fmt = _first_formats.get(tag)
    if fmt is None:
        if _ref_doc is None:
            _ref_doc = QTextDocument()
        name = tag[1:].split(">")[0].split()[0]
        _ref_doc.setHtml(f"{tag}x</{name}>")
        fmt = _first_formats[tag] = _ref_doc.begin().blockFormat()
    return fmt


def _spacer_format() -> QTextBlockFormat:
    """An empty block Qt leaves before a table or list: keep it nearly invisible."""
    fmt = QTextBlockFormat()
    fmt.setLineHeight(2.0, QTextBlockFormat.LineHeightTypes.FixedHeight.value)
    return fmt


def open_external(url: QUrl) -> bool:
    """Hand an http(s)/mailto link to the system browser; anything else is refused."""
    if not url.toString().lower().startswith(SAFE_LINK_SCHEMES):
        return False
    return bool(QDesktopServices.openUrl(url))


class AutoHeightBrowser(QTextBrowser):
    """A QTextBrowser with no scroll bars whose height follows its document (for chat messages)."""

    def __init__(self, parent: QWidget | None = None, *, objectName: str = "") -> None:  # noqa: N803 - Qt's name
        super().__init__(parent)
        if objectName:
            self.setObjectName(objectName)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.setOpenLinks(False)
        self.setOpenExternalLinks(False)
        self.setUndoRedoEnabled(False)
        self.viewport().setAutoFillBackground(False)
        self.setStyleSheet("QTextBrowser { background: transparent; }")
        self.document().setDocumentMargin(0)
        self.document().documentLayout().documentSizeChanged.connect(self._fit)
        self.setFixedHeight(1)

    def _fit(self, size: Any = None) -> None:
        h = math.ceil(self.document().size().height()) + self.contentsMargins().top() + self.contentsMargins().bottom()
        h = max(h, 1)
        if h != self.height():
            self.setFixedHeight(h)

    def sizeHint(self) -> QSize:
        return QSize(200, self.height())

    def minimumSizeHint(self) -> QSize:
        return QSize(50, self.height())

    def wheelEvent(self, e: QWheelEvent) -> None:
        e.ignore()  # nothing to scroll here: let the chat's scroll area have it

    def loadResource(self, type_: int, name: QUrl) -> Any:  # type: ignore[override]  # Qt passes a QUrl here
        return None  # never load images or other resources named by model output

    def resizeEvent(self, e: Any) -> None:
        super().resizeEvent(e)
        self._fit()


class PlainStreamView(AutoHeightBrowser):
    """Plain text that grows by appending (reasoning); cost per append is O(appended text)."""

    def append_text(self, text: str) -> None:
        if not text:
            return
        c = QTextCursor(self.document())
        c.movePosition(QTextCursor.MoveOperation.End)
        c.insertText(text)

    def set_text(self, text: str) -> None:
        c = QTextCursor(self.document())
        c.select(QTextCursor.SelectionType.Document)
        c.insertText(text)  # unlike setPlainText, keeps the block format (line height)


class MarkdownView(AutoHeightBrowser):
    """A markdown answer, updated incrementally while streaming.

    Finished blocks are inserted once; only the growing tail is removed and re-inserted on each
    update. Copy links (copy:N) put code block N on the clipboard; web links open in the system
    browser only when clicked, and only for http, https and mailto.
    """

    copied = Signal(str)
    link_opened = Signal(QUrl)

    def __init__(self, theme: Theme, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._inc = IncrementalMarkdown(shared_renderer(theme))
        self._tail_start = 0
        self._has_stable = False
        self.anchorClicked.connect(self._on_anchor)
        self.setTextInteractionFlags(
            Qt.TextInteractionFlag.TextSelectableByMouse
            | Qt.TextInteractionFlag.LinksAccessibleByMouse
            | Qt.TextInteractionFlag.LinksAccessibleByKeyboard
        )

    @property
    def markdown(self) -> str:
        return self._inc.text

    @property
    def code_blocks(self) -> list[str]:
        return self._inc.code_blocks

    def set_markdown(self, text: str, *, final: bool = False) -> None:
        update = self._inc.update(text, final=final)
        doc = self.document()
        c = QTextCursor(doc)
        c.beginEditBlock()
        if update.reset:
            doc.clear()
            self._tail_start = 0
            self._has_stable = False
        else:
            c.setPosition(self._tail_start)
            c.movePosition(QTextCursor.MoveOperation.End, QTextCursor.MoveMode.KeepAnchor)
            c.removeSelectedText()
        # Each block starts in a fresh, unformatted paragraph: inserting HTML into the previous
        # block would merge with it (and inherit e.g. heading formatting).
        for block in update.new_blocks:
            self._insert_block(c, block)
        self._tail_start = c.position()
        if update.tail:
            self._insert_block(c, update.tail, stable=False)
        c.endEditBlock()

    def _insert_block(self, c: QTextCursor, html: str, *, stable: bool = True) -> None:
        if self._has_stable:
            c.insertBlock(QTextBlockFormat(), QTextCharFormat())
        start = c.position()
        html = html.strip()
        c.insertHtml(html)
        # insertHtml merges the fragment's first paragraph into the block the cursor is in, which
        # drops that paragraph's own format (margins, line height); put it back.
        block = self.document().findBlock(start)
        if block.isValid() and block.position() == start:
            if html.startswith(("<p", "<h")):
                QTextCursor(block).setBlockFormat(_first_block_format(html))
            elif block.length() == 1 and html.startswith(("<table", "<ul", "<ol")):
                QTextCursor(block).setBlockFormat(_spacer_format())
        if stable:
            self._has_stable = True

    def _on_anchor(self, url: QUrl) -> None:
        if url.scheme() == "copy":
            try:
                code = self.code_blocks[int(url.path())]
            except (ValueError, IndexError):
                return
            QGuiApplication.clipboard().setText(code)
            self.copied.emit(code)
            QToolTip.showText(self.cursor().pos(), "Copied", self, self.rect(), 1200)
            return
        if open_external(url):
            self.link_opened.emit(url)


class Throttle:
    """Calls `fn` at most once per `interval_ms`, always with the latest state (qutebrowser style)."""

    def __init__(self, fn: Any, interval_ms: int = 50, parent: QWidget | None = None) -> None:
        self._fn = fn
        self._timer = QTimer(parent)  # parented: it dies with its widget, never fires after
        self._timer.setSingleShot(True)
        self._timer.setInterval(interval_ms)
        self._timer.timeout.connect(self._fire)
        self._pending = False

    def __call__(self) -> None:
        self._pending = True
        if not self._timer.isActive():
            self._timer.start()

    def _fire(self) -> None:
        if self._pending:
            self._pending = False
            self._fn()

    def flush(self) -> None:
        self._timer.stop()
        self._fire()

    def stop(self) -> None:
        self._timer.stop()
        self._pending = False
