"""The one notice bar (errors and notices inline, with actions) and the channel that routes notices to it; every notice shown is logged."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial

from PySide6.QtCore import QObject, Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QFrame,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from app.core.store import StoreUnavailableError
from app.ui import style

log = logging.getLogger("app.ui.notice")

Action = tuple[str, Callable[[], None]]


@dataclass(frozen=True)
class Notice:
    """One message for the user. `kind` "error" or "info"; `exc` the exception behind an error
    (logged with its traceback); `log_text` what the log gets instead of `text` when `text`
    holds conversation text (a chat's title, say); `slot` which bar shows it."""

    text: str
    kind: str = "info"
    actions: tuple[Action, ...] = ()
    timeout_ms: int = 0
    details: tuple[str, ...] = ()
    headline: str = ""
    exc: BaseException | None = field(default=None, compare=False)
    log_text: str | None = None
    slot: str = "main"


def log_notice(notice: Notice) -> None:
    """Write a shown notice down: errors behind an exception with its traceback, other errors as warnings."""
    text = notice.log_text if notice.log_text is not None else notice.text
    if notice.headline:
        text = f"{notice.headline}: {text}"
    if notice.kind == "error":
        exc = notice.exc
        if exc is not None:
            log.error("Shown to the user: %s", text, exc_info=(type(exc), exc, exc.__traceback__))
        else:
            log.warning("Shown to the user: %s", text)
    else:
        log.info("Shown to the user: %s", text)


class NoticeBar(QFrame):
    """An inline message (errors tinted, notices plain) with optional action buttons, a Details
    button for long lists, a close button and an optional timeout. Used by the window, the model
    manager, the first-run page, downloads and the effort lab alike."""

    def __init__(
        self,
        parent: QWidget | None = None,
        *,
        closable: bool = True,
        compact: bool = False,
        button_style: str = "BannerButton",
    ) -> None:
        super().__init__(parent, objectName="Banner")
        self.setProperty("compact", compact)  # narrow places (the lab's setup column): tighter margins
        self._button_style = button_style  # a card's own button look where the bar sits in a card
        lay = QHBoxLayout(self)
        lay.setContentsMargins(*((10, 8, 6, 8) if compact else (14, 10, 8, 10)))
        if compact:
            lay.setSpacing(6)
        column = QVBoxLayout()
        column.setSpacing(2)
        self.headline = QLabel("", objectName="BannerHeadline")
        self.headline.setTextFormat(Qt.TextFormat.PlainText)
        self.headline.hide()
        column.addWidget(self.headline)
        self.text = QLabel("", objectName="BannerText")
        self.text.setWordWrap(True)
        self.text.setTextFormat(Qt.TextFormat.PlainText)
        self.text.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        column.addWidget(self.text)
        lay.addLayout(column, 1)
        self._actions = QHBoxLayout()
        self._actions.setSpacing(6)
        lay.addLayout(self._actions)
        self.buttons: list[QPushButton] = []
        self.details = QToolButton(objectName="LinkButton")
        self.details.setText("Details")
        self.details.setCursor(Qt.CursorShape.PointingHandCursor)
        self.details.clicked.connect(self._show_details)
        self.details.hide()
        lay.addWidget(self.details, 0, Qt.AlignmentFlag.AlignTop)
        if closable:
            close = QToolButton(objectName="BannerClose")
            close.setIcon(style.icon("close"))
            close.setToolTip("Dismiss")
            close.setAccessibleName("Dismiss")
            close.clicked.connect(self.hide)
            lay.addWidget(close, 0, Qt.AlignmentFlag.AlignTop)
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.timeout.connect(self.hide)
        self.kind = ""
        self.detail_lines: list[str] = []
        self._dialog: QDialog | None = None
        self.hide()

    def show_notice(self, notice: Notice) -> None:
        log_notice(notice)
        self.kind = notice.kind
        self.setProperty("kind", notice.kind)
        self.style().unpolish(self)
        self.style().polish(self)
        self.headline.setText(notice.headline)
        self.headline.setVisible(bool(notice.headline))
        self.text.setText(notice.text)
        for b in self.buttons:
            self._actions.removeWidget(b)
            b.deleteLater()
        self.buttons = []
        for label, fn in notice.actions:
            b = QPushButton(label, objectName=self._button_style)
            b.clicked.connect(partial(self._run_action, fn))
            self._actions.addWidget(b, 0, Qt.AlignmentFlag.AlignVCenter)
            self.buttons.append(b)
        self.detail_lines = list(notice.details)
        self.details.setVisible(bool(self.detail_lines))
        self._timer.stop()
        if notice.timeout_ms:
            self._timer.start(notice.timeout_ms)
        self.show()

    def show_message(
        self,
        text: str,
        kind: str = "error",
        actions: Sequence[Action] = (),
        timeout_ms: int = 0,
        *,
        details: Sequence[str] = (),
        headline: str = "",
        exc: BaseException | None = None,
        log_text: str | None = None,
    ) -> None:
        self.show_notice(Notice(text, kind, tuple(actions), timeout_ms, tuple(details), headline, exc, log_text))

    def _run_action(self, fn: Callable[[], None]) -> None:
        self.hide()  # the action answers the notice
        fn()

    def button(self, label: str) -> QPushButton | None:
        return next((b for b in self.buttons if b.text() == label), None)

    def _show_details(self) -> None:
        dlg = QDialog(self.window())
        dlg.setWindowTitle("Details")
        dlg.resize(560, 360)
        lay = QVBoxLayout(dlg)
        view = QPlainTextEdit()
        view.setReadOnly(True)
        view.setPlainText("\n".join(self.detail_lines))
        lay.addWidget(view)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(dlg.close)
        lay.addWidget(buttons)
        self._dialog = dlg
        dlg.show()


class NoticeChannel(QObject):
    """Where the window's parts post notices; the window's bars show them (and so log them).

    `slot` picks the bar: "main" above the composer, "context" for the context-window warning,
    "store" for the conversation store's lasting notice (ui/store_status.py). An error that is the
    store refusing a write while it cannot write goes to `unavailable` instead: the store's own
    notice answers it, so a click on a read-only chat is not an error of its own each time.
    """

    posted = Signal(object)  # Notice
    cleared = Signal(str)  # slot
    unavailable = Signal(object)  # StoreUnavailableError

    def post(self, notice: Notice) -> None:
        self.posted.emit(notice)

    def error(
        self,
        text: str,
        exc: BaseException | None = None,
        *,
        actions: Sequence[Action] = (),
        log_text: str | None = None,
        slot: str = "main",
    ) -> None:
        if isinstance(exc, StoreUnavailableError):
            self.unavailable.emit(exc)
            return
        self.post(Notice(text, "error", tuple(actions), exc=exc, log_text=log_text, slot=slot))

    def info(
        self,
        text: str,
        actions: Sequence[Action] = (),
        timeout_ms: int = 0,
        *,
        log_text: str | None = None,
        slot: str = "main",
    ) -> None:
        self.post(Notice(text, "info", tuple(actions), timeout_ms, log_text=log_text, slot=slot))

    def clear(self, slot: str = "main") -> None:
        self.cleared.emit(slot)
