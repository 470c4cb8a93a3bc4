"""Read-only rich-text views that size themselves to their content; the markdown answer view."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator
from typing import Any

from PySide6.QtCore import QSize, Qt, QTimer, QUrl, Signal
from PySide6.QtGui import (
    QDesktopServices,
    QFontDatabase,
    QGuiApplication,
    QTextBlockFormat,
    QTextCharFormat,
    QTextCursor,
    QTextDocument,
    QWheelEvent,
)
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QFrame,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QSizePolicy,
    QTextBrowser,
    QToolTip,
    QVBoxLayout,
    QWidget,
)

from app.core.download import human_bytes
from app.core.markdown import (
    SAFE_LINK_SCHEMES,
    DisplayBounds,
    DisplayText,
    IncrementalMarkdown,
    Theme,
    shared_renderer,
)

# Qt lays out rich text on the UI thread: a long answer is inserted a slice of blocks at a time,
# each slice aiming at this many seconds, with the event loop running in between.
SLICE_S = 0.03
BATCH_CHARS = 3_000  # a batch of blocks holds at most this much text (bounds its Qt cost)

_ref_doc: QTextDocument | None = None
_first_formats: dict[str, QTextBlockFormat] = {}


def warm_up_job(theme: Any, *, cancel: threading.Event) -> Iterator[None]:
    """Import pygments lexers off the UI thread so the first code block does not stall it."""
    from app.core.markdown import warm_up

    warm_up(theme)
    yield None


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
        self._theme = theme
        self._inc = IncrementalMarkdown(shared_renderer(theme))
        self._tail_start = 0
        self._has_stable = False
        self._full = ""
        self._shown = DisplayText("", False, 0)
        self._bounds = DisplayBounds()
        self._full_view: FullTextDialog | None = None
        self._final = False
        self._batch = 8  # blocks per insertion, adapted to how long insertions take
        self._continue = QTimer(self)
        self._continue.setSingleShot(True)
        self._continue.setInterval(0)
        self._continue.timeout.connect(self._next_slice)
        self.anchorClicked.connect(self._on_anchor)
        self.setTextInteractionFlags(
            Qt.TextInteractionFlag.TextSelectableByMouse
            | Qt.TextInteractionFlag.LinksAccessibleByMouse
            | Qt.TextInteractionFlag.LinksAccessibleByKeyboard
        )

    @property
    def markdown(self) -> str:
        """The whole text, also the part that is only in "Show all"."""
        return self._full

    @property
    def is_cut(self) -> bool:
        """Whether part of the text is shown only through "Show all" (too long or too complex)."""
        return self._shown.cut

    @property
    def rendering(self) -> bool:
        """Whether blocks of the text are still waiting to be inserted (a long answer)."""
        return self._continue.isActive()

    @property
    def code_blocks(self) -> list[str]:
        return self._inc.code_blocks

    def set_markdown(self, text: str, *, final: bool = False) -> None:
        # Only a bounded part is laid out as rich text (app.core.markdown.bound_for_display), so
        # no answer, however long or nested, blocks the UI thread; the rest is in "Show all".
        self._full = text
        self._final = final
        self._shown = self._bounds.bound(text)
        self._next_slice()

    def _next_slice(self) -> None:
        """Insert finished blocks until SLICE_S has passed, then the tail; if blocks remain, let
        the event loop run and come back (a long answer never blocks the UI for long)."""
        deadline = time.perf_counter() + SLICE_S
        doc = self.document()
        c = QTextCursor(doc)
        c.beginEditBlock()
        while True:
            started = time.perf_counter()
            update = self._inc.update(
                self._shown.text, final=self._final, max_blocks=self._batch, max_chars=BATCH_CHARS
            )
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
            # Aim each batch at a third of a slice (a slice then holds about three of them).
            took = max(time.perf_counter() - started, 1e-4)
            self._batch = max(1, min(2 * self._batch, 256, int(self._batch * SLICE_S / 3 / took)))
            if not update.pending or time.perf_counter() > deadline:
                break
        if update.tail:
            self._insert_block(c, update.tail, stable=False)
        if self._shown.cut and not update.pending:
            self._insert_block(c, self._show_all_html(), stable=False)
        c.endEditBlock()
        if update.pending:
            self._continue.start()
        if self._full_view is not None and self._full_view.isVisible():
            self._full_view.set_text(self._full)

    def _show_all_html(self) -> str:
        size = human_bytes(len(self._full.encode("utf-8", "surrogatepass")))
        t = self._theme
        return (
            f'<p style="margin-top:4px; margin-bottom:10px; color:{t.muted};">'
            f'<a href="showall:" style="color:{t.link}; text-decoration:none;">Show all</a>'
            f" — this answer ({size}) is too long or too deeply nested to show here in full.</p>"
        )

    def show_all(self) -> FullTextDialog:
        """The whole text in a paged plain-text window (any size opens at once)."""
        if self._full_view is None:
            self._full_view = FullTextDialog(self.window())
        self._full_view.set_text(self._full)
        self._full_view.show()
        self._full_view.raise_()
        return self._full_view

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
        if url.scheme() == "showall":
            self.show_all()
            return
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


class FullTextDialog(QDialog):
    """A whole answer as plain text, a page at a time: a page is small enough for Qt to lay out
    at once whatever the text is (a 1 MB single line, a 1,000-row table), and Copy takes it all."""

    PAGE_CHARS = 20_000

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Whole answer")
        self.resize(820, 640)
        self._text = ""
        self._page = 0
        self.view = QPlainTextEdit(self)
        self.view.setReadOnly(True)
        self.view.setLineWrapMode(QPlainTextEdit.LineWrapMode.WidgetWidth)
        self.view.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))  # tables line up
        self.prev_button = QPushButton("‹ Previous", self)
        self.next_button = QPushButton("Next ›", self)
        self.page_label = QLabel(self)
        self.copy_button = QPushButton("Copy all", self)
        self.prev_button.clicked.connect(lambda: self.show_page(self._page - 1))
        self.next_button.clicked.connect(lambda: self.show_page(self._page + 1))
        self.copy_button.clicked.connect(lambda: QGuiApplication.clipboard().setText(self._text))
        pager = QHBoxLayout()
        pager.addWidget(self.prev_button)
        pager.addWidget(self.page_label, 1, Qt.AlignmentFlag.AlignCenter)
        pager.addWidget(self.next_button)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close, self)
        buttons.addButton(self.copy_button, QDialogButtonBox.ButtonRole.ActionRole)
        buttons.rejected.connect(self.close)
        layout = QVBoxLayout(self)
        layout.addWidget(self.view, 1)
        layout.addLayout(pager)
        layout.addWidget(buttons)

    @property
    def pages(self) -> int:
        return max(1, math.ceil(len(self._text) / self.PAGE_CHARS))

    def set_text(self, text: str) -> None:
        if text != self._text:
            self._text = text
            self.show_page(min(self._page, self.pages - 1))

    def show_page(self, index: int) -> None:
        self._page = max(0, min(index, self.pages - 1))
        start = self._page * self.PAGE_CHARS
        self.view.setPlainText(self._text[start : start + self.PAGE_CHARS])
        self.page_label.setText(f"Part {self._page + 1} of {self.pages}" if self.pages > 1 else "")
        self.prev_button.setEnabled(self._page > 0)
        self.next_button.setEnabled(self._page < self.pages - 1)
        self.prev_button.setVisible(self.pages > 1)
        self.next_button.setVisible(self.pages > 1)


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
