"""A collapsible card for one tool call: arguments, status, duration, output, images, approval buttons.

Approval buttons cannot be pressed by accident or by a trick: they never take the keyboard focus
(the composer keeps it, so typing Enter or Space there never answers the card), they reach focus
only by a deliberate Tab, and they ignore every click and key for ARM_DELAY_MS after the question
appears, the card is shown again, or the window becomes active again (as browsers do for permission
prompts: a click aimed at what was there before must not land on Allow).
Images are shown from checked bytes (data: URIs), or from files inside the scratch folders read
without following links or opening FIFOs; double-click opens a copy the app wrote, never a path a
chat named.
"""

from __future__ import annotations

import hashlib
import html
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import QEvent, QObject, QSize, Qt, QTimer, QUrl, Signal
from PySide6.QtGui import QDesktopServices, QPixmap
from PySide6.QtWidgets import (
    QFileDialog,
    QFrame,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSizePolicy,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from app.core import paths
from app.core.markdown import MONO
from app.core.tools.base import Decision
from app.core.tools.loop import ApprovalRequest, FileRequest, ToolRun
from app.core.tools.safe_files import EXTENSION, load_image
from app.ui import style
from app.ui.markdown_view import AutoHeightBrowser

ARM_DELAY_MS = 500  # approval buttons ignore input this long after they appear
FOLD_LINES = 14  # longer output is folded behind "Show more"
FOLD_CHARS = 2000
IMAGE_WIDTH = 460

STATUS_TEXT = {
    "waiting": "Waiting for approval",
    "running": "Running…",
    "done": "Done",
    "error": "Error",
    "denied": "Denied",
    "cancelled": "Stopped",
    "skipped": "Not run",
    "called": "",  # known only from the message: nothing to say about its result
}


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 90:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.1f} min"


def highlight_html(code: str, language: str) -> str:
    """Code as highlighted rich text (Pygments, inline styles), in the theme of the answers."""
    from pygments import highlight
    from pygments.formatters import HtmlFormatter

    from app.core.markdown import _lexer, _pygments_style

    lexer = _lexer(language)
    theme = style.current().markdown
    if lexer is None:
        body = html.escape(code, quote=False)
    else:
        formatter = HtmlFormatter(noclasses=True, nowrap=True, style=_pygments_style(theme.pygments_style))
        body = highlight(code, lexer, formatter).rstrip("\n")
    return f'<pre style="font-family:{MONO}; margin:0; white-space:pre-wrap; color:{theme.text};">{body}</pre>'


def _default_pick_file(parent: QWidget, purpose: str, suggested: str | None) -> str | None:
    start = ""
    if suggested:
        p = Path(suggested).expanduser()
        start = str(p if p.is_absolute() else Path.home() / p)
    caption = "Choose a file to share with the model" + (f" ({purpose})" if purpose else "")
    path, _ = QFileDialog.getOpenFileName(parent, caption, start)
    return path or None


class ToolCard(QFrame):
    """One tool call. Built from a ToolRun (live or stored) and updated with newer snapshots of it.

    While the loop waits for the user, `attach_approval` / `attach_file_request` show the buttons;
    clicking one answers the request's Reply directly (thread-safe) and emits `decided` /
    `file_chosen`. Python cards have a Restart kernel button (`restart_requested`).
    """

    decided = Signal(str, str)  # run id, Decision value
    file_chosen = Signal(str, object)  # run id, path (str) or None
    restart_requested = Signal()
    toggled = Signal(bool)

    # Replaced in tests; the real one is a file dialog.
    pick_file: Callable[[QWidget, str, str | None], str | None] = staticmethod(_default_pick_file)

    def __init__(self, run: ToolRun, parent: QWidget | None = None) -> None:
        super().__init__(parent, objectName="ToolCard")
        self.run = run
        self._request: ApprovalRequest | FileRequest | None = None
        self._output_expanded = False
        self._shown_images: list[str] = []
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Maximum)

        lay = QVBoxLayout(self)
        lay.setContentsMargins(12, 6, 12, 8)
        lay.setSpacing(6)

        head = QHBoxLayout()
        head.setSpacing(8)
        self.toggle_button = QToolButton(objectName="ToolToggle")
        self.toggle_button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.toggle_button.setIconSize(QSize(14, 14))
        self.toggle_button.setCursor(Qt.CursorShape.PointingHandCursor)
        self.toggle_button.clicked.connect(self.toggle)
        head.addWidget(self.toggle_button)
        head.addStretch(1)
        self.status_label = QLabel("", objectName="ToolStatus")
        self.status_label.setSizePolicy(QSizePolicy.Policy.Maximum, QSizePolicy.Policy.Fixed)
        head.addWidget(self.status_label)
        self.duration_label = QLabel("", objectName="ToolDuration")
        head.addWidget(self.duration_label)
        lay.addLayout(head)

        self.body = QFrame(objectName="ToolBody")
        body = QVBoxLayout(self.body)
        body.setContentsMargins(0, 0, 0, 0)
        body.setSpacing(6)
        self.args_caption = QLabel("", objectName="ToolCaption")
        body.addWidget(self.args_caption)
        self.args_view = AutoHeightBrowser(objectName="ToolArgs")
        self.args_view.setAccessibleName("Tool input")
        self.args_view.setFont(style.mono_font(9.5))
        body.addWidget(self.args_view)
        self.output_caption = QLabel("Output", objectName="ToolCaption")
        body.addWidget(self.output_caption)
        self.output_view = AutoHeightBrowser(objectName="ToolOutput")
        self.output_view.setAccessibleName("Tool output")
        self.output_view.setFont(style.mono_font(9.5))
        body.addWidget(self.output_view)
        self.show_more = QToolButton(objectName="ToolShowMore")
        self.show_more.setCursor(Qt.CursorShape.PointingHandCursor)
        self.show_more.clicked.connect(self.toggle_output)
        body.addWidget(self.show_more, 0, Qt.AlignmentFlag.AlignLeft)
        self.images_box = QVBoxLayout()
        self.images_box.setSpacing(6)
        body.addLayout(self.images_box)
        self.image_labels: list[QLabel] = []
        foot = QHBoxLayout()
        foot.addStretch(1)
        self.restart_button = QPushButton("Restart kernel", objectName="SecondaryButton")
        self.restart_button.setToolTip(
            "Start a fresh Python session: variables are lost, files in the scratch folder stay"
        )
        self.restart_button.clicked.connect(self.restart_requested)
        foot.addWidget(self.restart_button)
        body.addLayout(foot)
        lay.addWidget(self.body)

        self.ask_bar = QFrame(objectName="ToolAskBar")
        ask = QHBoxLayout(self.ask_bar)
        ask.setContentsMargins(10, 8, 10, 8)
        ask.setSpacing(8)
        self.ask_label = QLabel("", objectName="ToolAskText")
        self.ask_label.setWordWrap(True)
        self.ask_label.setTextFormat(Qt.TextFormat.PlainText)
        ask.addWidget(self.ask_label, 1)
        self.allow_once_button = QPushButton("Allow once", objectName="PrimaryButton")
        self.allow_always_button = QPushButton("Always for this chat", objectName="SecondaryButton")
        self.choose_file_button = QPushButton("Choose file…", objectName="PrimaryButton")
        self.deny_button = QPushButton("Deny", objectName="SecondaryButton")
        self.ask_buttons = (self.allow_once_button, self.allow_always_button, self.choose_file_button, self.deny_button)
        for b in self.ask_buttons:
            b.setCursor(Qt.CursorShape.PointingHandCursor)
            b.setFocusPolicy(Qt.FocusPolicy.TabFocus)  # never by a click or by appearing: only a deliberate Tab
            b.setAutoDefault(False)
            b.setDefault(False)
            ask.addWidget(b)
        self._arm_timer = QTimer(self, singleShot=True)
        self._arm_timer.setInterval(ARM_DELAY_MS)
        self._arm_timer.timeout.connect(self._armed)
        self.armed_at: float | None = None  # time.monotonic() when the buttons started taking input
        self._watched: QWidget | None = None  # the window whose activation restarts the delay
        self.allow_once_button.clicked.connect(lambda: self._decide(Decision.ALLOW_ONCE))
        self.allow_always_button.clicked.connect(lambda: self._decide(Decision.ALLOW_ALWAYS))
        self.deny_button.clicked.connect(self._deny)
        self.choose_file_button.clicked.connect(self._choose_file)
        self.ask_bar.hide()
        lay.addWidget(self.ask_bar)

        self._tick = QTimer(self)  # the running time, while it runs
        self._tick.setInterval(100)
        self._tick.timeout.connect(self._update_duration)

        self._expanded = False
        self.update_run(run)
        # Live calls open while they need attention; finished ones (and stored ones) start folded.
        self.set_expanded(run.status in ("waiting", "running") or (run.kind == "python" and run.status == "error"))

    # --- state ---------------------------------------------------------------------------------
    @classmethod
    def from_stored(cls, data: dict[str, Any], parent: QWidget | None = None) -> ToolCard:
        """A card for a reopened chat, from `ToolRun.to_dict()` as the store kept it."""
        return cls(ToolRun.from_dict(data), parent)

    @property
    def expanded(self) -> bool:
        return self._expanded

    @property
    def output_folded(self) -> bool:
        return self.show_more.isVisible() and not self._output_expanded

    @property
    def waiting_for_user(self) -> bool:
        return self._request is not None and not self._request.reply.answered

    def update_run(self, run: ToolRun) -> None:
        """Show a newer snapshot of the same call (matched by id)."""
        self.run = run
        name = run.title
        self.toggle_button.setText(name)
        self.toggle_button.setToolTip(f"{run.recipient} — click to show or hide the details")
        kind_text = "Code" if run.kind == "python" else "Arguments"
        self.args_caption.setText(kind_text)
        self.args_view.setHtml(highlight_html(run.pretty_arguments(), run.language))
        status = run.status
        text = STATUS_TEXT.get(status, status)
        if status == "waiting" and run.request == "file":
            text = "Waiting for a file"
        self.status_label.setText(text)
        self.status_label.setVisible(bool(text))
        self.setProperty("state", status)
        self.status_label.setProperty("state", status)
        for w in (self, self.status_label):
            w.style().unpolish(w)
            w.style().polish(w)
        self._show_output()
        self._show_images()
        self.restart_button.setVisible(run.kind == "python" and status not in ("waiting", "running"))
        if status == "running" and run.started is not None:
            self._tick.start()
        else:
            self._tick.stop()
        self._update_duration()
        if status not in ("waiting",) and self._request is not None:
            self._request = None
            self.ask_bar.hide()

    def _update_duration(self) -> None:
        run = self.run
        if run.status == "running" and run.started is not None:
            self.duration_label.setText(format_duration(max(0.0, time.time() - run.started)))
        else:
            self.duration_label.setText(format_duration(run.duration_s))

    def _show_output(self) -> None:
        text = self.run.output
        has = bool(text) and self.run.status not in ("waiting", "running")
        self.output_caption.setVisible(has)
        self.output_view.setVisible(has)
        if not has:
            self.show_more.hide()
            return
        lines = text.split("\n")
        long = len(lines) > FOLD_LINES or len(text) > FOLD_CHARS
        if long and not self._output_expanded:
            shown = "\n".join(lines[:FOLD_LINES])[:FOLD_CHARS]
            rest = len(lines) - shown.count("\n") - 1
            self.show_more.setText(f"Show more ({rest:,} more lines)" if rest > 0 else "Show more")
        else:
            shown = text
            self.show_more.setText("Show less")
        self.show_more.setVisible(long)
        self.output_view.setPlainText(shown)
        self.output_caption.setText("Error" if self.run.is_error else "Output")

    def _show_images(self) -> None:
        if self.run.images == self._shown_images:
            return
        for label in self.image_labels:
            label.deleteLater()
        self.image_labels = []
        scratch_root = paths.scratch_root(ensure=False)
        for n, entry in enumerate(self.run.images, 1):
            label = QLabel(objectName="ToolImage")
            loaded = load_image(entry, scratch_root)
            pix = QPixmap()
            if loaded is not None:
                pix.loadFromData(loaded[0])
            if loaded is None or pix.isNull():
                label.setText(f"[image {n} is not available]")
            else:
                if pix.width() > IMAGE_WIDTH:
                    pix = pix.scaledToWidth(IMAGE_WIDTH, Qt.TransformationMode.SmoothTransformation)
                label.setPixmap(pix)
                label.setCursor(Qt.CursorShape.PointingHandCursor)
                label.setToolTip(f"Image {n} — double-click to open it in your image viewer")
                data, mime = loaded
                label.mouseDoubleClickEvent = lambda _e, d=data, m=mime: self.open_image(d, m)  # type: ignore[method-assign]
            self.images_box.addWidget(label, 0, Qt.AlignmentFlag.AlignLeft)
            self.image_labels.append(label)
        self._shown_images = list(self.run.images)

    @staticmethod
    def image_copy(data: bytes, mime: str) -> Path:
        """A copy of checked image bytes that the app wrote itself, named by their hash, with the
        extension of their real type (so the desktop opens it with an image viewer, nothing else)."""
        folder = paths.cache_dir() / "figures"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / (hashlib.sha256(data).hexdigest()[:24] + EXTENSION[mime])
        if not path.is_file() or path.is_symlink():
            tmp = folder / f".{path.name}.{os.getpid()}.tmp"
            tmp.write_bytes(data)
            os.replace(tmp, path)
        return path

    def open_image(self, data: bytes, mime: str) -> bool:
        return bool(QDesktopServices.openUrl(QUrl.fromLocalFile(str(self.image_copy(data, mime)))))

    # --- folding -------------------------------------------------------------------------------
    def toggle(self) -> None:
        self.set_expanded(not self._expanded)

    def set_expanded(self, expanded: bool) -> None:
        self._expanded = expanded
        self.body.setVisible(expanded)
        self.toggle_button.setIcon(style.icon("chevron-down" if expanded else "chevron-right"))
        self.toggled.emit(expanded)

    def toggle_output(self) -> None:
        self._output_expanded = not self._output_expanded
        self._show_output()

    # --- asking the user -----------------------------------------------------------------------
    def attach_approval(self, request: ApprovalRequest) -> None:
        self._request = request
        what = {"python": "Run this Python code in the sandbox?", "browser": f"Let the model use {request.run.title}?"}
        self.ask_label.setText(what.get(request.run.kind, f"Run {request.run.title} with these arguments?"))
        for b in (self.allow_once_button, self.allow_always_button, self.deny_button):
            b.show()
        self.choose_file_button.hide()
        self.ask_bar.show()
        self.set_expanded(True)
        self._arm()

    def attach_file_request(self, request: FileRequest) -> None:
        self._request = request
        purpose = request.purpose or "to read it"
        self.ask_label.setText(f"The model asks to read a file you choose: {purpose}.")
        self.allow_once_button.hide()
        self.allow_always_button.hide()
        self.choose_file_button.show()
        self.deny_button.show()
        self.ask_bar.show()
        self.set_expanded(True)
        self._arm()

    # --- the input delay ---------------------------------------------------------------------------
    @property
    def armed(self) -> bool:
        """Whether the approval buttons take input now."""
        return self.armed_at is not None

    def _arm(self) -> None:
        """(Re)start the delay: the buttons are disabled, so clicks and keys fall on nothing."""
        self._watch_window()
        self.armed_at = None
        for b in self.ask_buttons:
            b.setEnabled(False)
        self._arm_timer.start()

    def _armed(self) -> None:
        if self._request is None:
            return
        for b in self.ask_buttons:
            b.setEnabled(True)
        self.armed_at = time.monotonic()

    def _watch_window(self) -> None:
        win = self.window()
        if win is not self and win is not self._watched:
            if self._watched is not None:
                self._watched.removeEventFilter(self)
            win.installEventFilter(self)
            self._watched = win

    def eventFilter(self, obj: QObject, e: QEvent) -> bool:
        # Back from another window (or a dialog), the user may be clicking at what they saw there.
        if obj is self._watched and e.type() == QEvent.Type.WindowActivate and self.waiting_for_user:
            self._arm()
        return False

    def showEvent(self, e: Any) -> None:
        super().showEvent(e)
        if self.waiting_for_user:
            self._watch_window()
            self._arm()

    def _decide(self, decision: Decision) -> None:
        req = self._request
        if not isinstance(req, ApprovalRequest) or not self.armed:
            return
        req.reply.answer(decision)
        self._after_answer()
        self.decided.emit(self.run.id, decision.value)

    def _deny(self) -> None:
        req = self._request
        if not self.armed:
            return
        if isinstance(req, FileRequest):
            req.reply.answer(None)
            self._after_answer()
            self.file_chosen.emit(self.run.id, None)
        else:
            self._decide(Decision.DENY)

    def _choose_file(self) -> None:
        req = self._request
        if not isinstance(req, FileRequest) or not self.armed:
            return
        path = type(self).pick_file(self, req.purpose, req.suggested_path)
        if not path:
            return  # the dialog was closed: the question stays open
        req.reply.answer(path)
        self._after_answer()
        self.file_chosen.emit(self.run.id, path)

    def _after_answer(self) -> None:
        self.ask_bar.hide()
        self._request = None
        self._arm_timer.stop()
        self.armed_at = None


__all__ = ["ARM_DELAY_MS", "STATUS_TEXT", "ToolCard", "format_duration", "highlight_html"]
