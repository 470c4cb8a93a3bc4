"""The API server panel: on/off, port, API key, network exposure, example code and the live request log."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from typing import Any

from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtGui import QColor, QGuiApplication
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QSpinBox,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.core.plain_errors import describe_error
from app.core.scheduler import EngineScheduler, QueueState
from app.core.server import ApiServer, RequestRecord, ServerError, ServerSettings, example_code, generate_api_key
from app.ui import style
from app.ui.workers import GeneratorWorker, start_worker

MAX_LOG_ROWS = 200
STATES = ("stopped", "starting", "running", "stopping", "error")


class _Bridge(QObject):
    """Carries callbacks from the server's and the scheduler's threads to the UI thread."""

    record = Signal(object)
    queue = Signal(object)


def _start_job(server: ApiServer, *, cancel: Any) -> Iterator[str]:
    server.start()
    yield "running"


def _stop_job(server: ApiServer, *, cancel: Any) -> Iterator[str]:
    server.stop()
    yield "stopped"


class ServerPanel(QWidget):
    """Controls Harmonica's local OpenAI-compatible server; starting and stopping run off the UI thread.

    Construct with the shared EngineScheduler (or a `server_factory(settings) -> ApiServer`, which
    tests use). The same ApiServer object is kept across restarts, so the request log survives.

    Signals: state_changed(str) with one of STATES; running_changed(bool); error(str) with a
    message for people; settings_changed(ServerSettings) whenever the user edits a setting (the
    owner persists it); request_logged(RequestRecord) on the UI thread.
    """

    code: QPlainTextEdit  # the example code and the request log are made after the buttons that use them
    log: QTreeWidget

    state_changed = Signal(str)
    running_changed = Signal(bool)
    error = Signal(str)
    settings_changed = Signal(object)
    request_logged = Signal(object)

    def __init__(
        self,
        scheduler: EngineScheduler | None = None,
        *,
        settings: ServerSettings | None = None,
        server_factory: Callable[[ServerSettings], ApiServer] | None = None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent, objectName="ServerPanel")
        if server_factory is None:
            if scheduler is None:
                raise ValueError("ServerPanel needs a scheduler or a server_factory")
            server_factory = lambda s: ApiServer(scheduler, s)  # noqa: E731
        self._factory = server_factory
        self._scheduler = scheduler
        self._settings = settings or ServerSettings()
        self._server: ApiServer | None = None
        self._state = "stopped"
        self._error = ""
        self._worker: GeneratorWorker | None = None
        self._remove_log: Callable[[], None] | None = None
        self._remove_queue: Callable[[], None] | None = None
        self._bridge = _Bridge(self)
        self._bridge.record.connect(self._on_record)
        self._bridge.queue.connect(self._on_queue)
        self._build()
        self._load_settings()
        # Listeners are removed when the widget goes away (the closure must not hold self).
        self._removers: list[Callable[[], None]] = []
        removers = self._removers
        self.destroyed.connect(lambda *_: [r() for r in removers])
        if scheduler is not None:
            self._remove_queue = scheduler.add_listener(self._bridge.queue.emit)
            removers.append(self._remove_queue)
            self._on_queue(scheduler.state)
        self._refresh()

    # --- layout ----------------------------------------------------------------------------------
    def _apply_style(self) -> None:
        pal = style.current()
        self.setStyleSheet(
            f"""
            #ServerPanel {{ background: {pal.window}; }}
            #ServerTitle {{ font-size: 15pt; font-weight: 600; }}
            #ServerHint, #ServerFieldHint {{ color: {pal.muted}; }}
            #ServerCard {{ background: {pal.surface}; border: 1px solid {pal.border}; border-radius: 10px; }}
            #ServerStatus[state="running"] {{ color: {pal.text}; }}
            #ServerStatus[state="error"] {{ color: #c93c37; }}
            #ServerDot {{ border-radius: 5px; min-width: 10px; max-width: 10px; min-height: 10px; max-height: 10px; background: {pal.disabled}; }}
            #ServerDot[state="running"] {{ background: #2da44e; }}
            #ServerDot[state="starting"], #ServerDot[state="stopping"] {{ background: {pal.warning}; }}
            #ServerDot[state="error"] {{ background: #c93c37; }}
            #ServerWarning {{ background: {pal.error_bg}; border: 1px solid {pal.error_border}; border-radius: 8px; padding: 8px 10px; }}
            QPushButton#ServerToggle {{ background: {pal.accent}; color: white; border: none; border-radius: 8px; padding: 7px 18px; font-weight: 600; }}
            QPushButton#ServerToggle:hover {{ background: {pal.accent_hover}; }}
            QPushButton#ServerToggle:checked {{ background: {pal.surface}; color: {pal.text}; border: 1px solid {pal.border}; }}
            QPushButton#ServerToggle:disabled {{ background: {pal.disabled}; }}
            QPushButton#ServerSmall {{ background: {pal.surface}; border: 1px solid {pal.border}; border-radius: 6px; padding: 4px 10px; }}
            QPushButton#ServerSmall:hover {{ background: {pal.hover}; }}
            QLineEdit {{ background: {pal.surface}; border: 1px solid {pal.border}; border-radius: 6px; padding: 4px 6px; }}
            QPlainTextEdit#ServerCode {{ background: {pal.bubble}; border: none; border-radius: 8px; padding: 6px; }}
            QTreeWidget#ServerLog {{ background: {pal.surface}; border: 1px solid {pal.border}; border-radius: 8px; }}
            """
        )

    def theme_changed(self, _palette: object) -> None:
        """View → Theme (style.apply): this panel's own colours follow."""
        self._apply_style()

    def _build(self) -> None:
        self._apply_style()
        outer = QVBoxLayout(self)
        outer.setContentsMargins(20, 18, 20, 18)
        outer.setSpacing(12)

        head = QHBoxLayout()
        titles = QVBoxLayout()
        titles.setSpacing(2)
        titles.addWidget(QLabel("API server", objectName="ServerTitle"))
        hint = QLabel(
            "Let your own scripts and tools use the loaded model through the OpenAI API, on this computer.",
            objectName="ServerHint",
        )
        hint.setWordWrap(True)
        titles.addWidget(hint)
        head.addLayout(titles, 1)
        self.toggle = QPushButton("Start server", objectName="ServerToggle")
        self.toggle.setCheckable(True)
        self.toggle.setCursor(Qt.CursorShape.PointingHandCursor)
        self.toggle.clicked.connect(self._on_toggle)
        head.addWidget(self.toggle, 0, Qt.AlignmentFlag.AlignTop)
        outer.addLayout(head)

        status_row = QHBoxLayout()
        status_row.setSpacing(8)
        self.dot = QLabel(objectName="ServerDot")
        status_row.addWidget(self.dot, 0, Qt.AlignmentFlag.AlignVCenter)
        self.status = QLabel("Stopped", objectName="ServerStatus")
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.status.setWordWrap(True)
        status_row.addWidget(self.status, 1)
        self.copy_url = QPushButton("Copy URL", objectName="ServerSmall")
        self.copy_url.clicked.connect(lambda: self._copy(self.base_url))
        status_row.addWidget(self.copy_url)
        outer.addLayout(status_row)
        self.queue_label = QLabel("", objectName="ServerHint")
        outer.addWidget(self.queue_label)

        card = QFrame(objectName="ServerCard")
        grid = QGridLayout(card)
        grid.setContentsMargins(14, 12, 14, 12)
        grid.setHorizontalSpacing(10)
        grid.setVerticalSpacing(8)
        grid.addWidget(QLabel("Port"), 0, 0)
        self.port = QSpinBox()
        self.port.setAccessibleName("Port")
        self.port.setRange(0, 65535)
        self.port.setSpecialValueText("any free port")
        self.port.setToolTip("0 picks any free port")
        self.port.valueChanged.connect(self._on_edit)
        grid.addWidget(self.port, 0, 1)
        self.port_hint = QLabel("", objectName="ServerFieldHint")
        grid.addWidget(self.port_hint, 0, 2, 1, 2)
        grid.addWidget(QLabel("API key"), 1, 0)
        self.key = QLineEdit()
        self.key.setAccessibleName("API key")
        self.key.setPlaceholderText("none: any key is accepted")
        self.key.textEdited.connect(self._on_key)
        grid.addWidget(self.key, 1, 1, 1, 2)
        keys = QHBoxLayout()
        self.generate = QPushButton("Generate", objectName="ServerSmall")
        self.generate.clicked.connect(self._on_generate)
        keys.addWidget(self.generate)
        self.copy_key = QPushButton("Copy", objectName="ServerSmall")
        self.copy_key.clicked.connect(lambda: self._copy(self.key.text()))
        keys.addWidget(self.copy_key)
        grid.addLayout(keys, 1, 3)
        self.network = QCheckBox("Allow other devices on my network")
        self.network.toggled.connect(self._on_edit)
        grid.addWidget(self.network, 2, 0, 1, 4)
        self.web_search = QCheckBox("Let programs use web search (Harmonica's browser, while web browsing is on)")
        self.web_search.setToolTip(
            "A program that sends a web_search tool then gets pages fetched by Harmonica's browser, "
            "without an approval card. Off: such tools are left out of its requests."
        )
        self.web_search.toggled.connect(self._on_edit)
        grid.addWidget(self.web_search, 3, 0, 1, 4)
        self.warning = QLabel("", objectName="ServerWarning")
        self.warning.setWordWrap(True)
        grid.addWidget(self.warning, 4, 0, 1, 4)
        grid.setColumnStretch(2, 1)
        outer.addWidget(card)

        code_head = QHBoxLayout()
        code_head.addWidget(QLabel("Use it from Python (pip install openai)"), 1)
        self.copy_code = QPushButton("Copy code", objectName="ServerSmall")
        self.copy_code.clicked.connect(lambda: self._copy(self.code.toPlainText()))
        code_head.addWidget(self.copy_code)
        outer.addLayout(code_head)
        self.code = QPlainTextEdit(objectName="ServerCode")
        self.code.setAccessibleName("Example code")
        self.code.setReadOnly(True)
        self.code.setFont(style.mono_font(9.5))
        self.code.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        self.code.setMinimumHeight(self.code.fontMetrics().lineSpacing() * 22 + 24)
        outer.addWidget(self.code)

        log_head = QHBoxLayout()
        log_head.addWidget(QLabel("Recent requests"), 1)
        self.clear_log = QPushButton("Clear", objectName="ServerSmall")
        self.clear_log.clicked.connect(lambda: self.log.clear())
        log_head.addWidget(self.clear_log)
        outer.addLayout(log_head)
        self.log = QTreeWidget(objectName="ServerLog")
        self.log.setAccessibleName("Recent requests")
        self.log.setHeaderLabels(["Time", "Request", "Status", "Tokens in / out", "Duration", "From", "Result"])
        self.log.setRootIsDecorated(False)
        self.log.setUniformRowHeights(True)
        self.log.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        header = self.log.header()
        header.setStretchLastSection(True)
        for col in range(6):
            header.setSectionResizeMode(col, QHeaderView.ResizeMode.ResizeToContents)
        self.log.setMinimumHeight(140)
        outer.addWidget(self.log, 1)

    # --- public API --------------------------------------------------------------------------------
    @property
    def state(self) -> str:
        return self._state

    @property
    def is_running(self) -> bool:
        return self._state == "running"

    @property
    def server(self) -> ApiServer | None:
        return self._server

    @property
    def base_url(self) -> str:
        if self._server is not None and self._server.running:
            return self._server.base_url
        port = self._settings.port or 8321
        return f"http://127.0.0.1:{port}/v1"

    @property
    def last_error(self) -> str:
        return self._error

    def settings(self) -> ServerSettings:
        return dataclasses.replace(self._settings)

    def set_settings(self, settings: ServerSettings) -> None:
        """Show saved settings; a running server keeps its port and exposure until restarted."""
        self._settings = dataclasses.replace(settings)
        self._load_settings()
        if self._server is not None:
            self._server.set_api_key(self._settings.api_key)
        self._refresh()

    def start(self) -> None:
        """Start serving in the background; state goes starting → running (or error)."""
        if self._state in ("starting", "running", "stopping"):
            return
        if self._server is None:
            self._server = self._factory(self.settings())
            self._remove_log = self._server.add_log_listener(self._bridge.record.emit)
            self._removers.append(self._remove_log)
        else:
            self._server.settings = self.settings()
        self._error = ""
        self._set_state("starting")
        self._run(_start_job, "running")

    def stop(self) -> None:
        """Stop serving in the background (running API generations are cancelled)."""
        if self._state not in ("running",) or self._server is None:
            return
        self._set_state("stopping")
        self._run(_stop_job, "stopped")

    def shutdown(self, timeout_s: float = 8.0) -> None:
        """Stop at once, blocking (application exit); also detaches the listeners."""
        if self._worker is not None:
            self._worker.wait(timeout_s)
        if self._server is not None:
            self._server.stop(timeout_s)
        for remove in (self._remove_log, self._remove_queue):
            if remove is not None:
                remove()
        self._remove_log = self._remove_queue = None
        if self._state != "stopped":
            self._set_state("stopped")

    # --- work off the UI thread ------------------------------------------------------------------
    def _run(self, job: Callable[..., Iterator[str]], target: str) -> None:
        assert self._server is not None
        w = GeneratorWorker(job, self._server)
        w.yielded.connect(lambda s: self._set_state(str(s)))
        w.errored.connect(self._on_failed)
        w.finished.connect(lambda: self._on_job_done(w))
        self._worker = w
        start_worker(w)

    def _on_job_done(self, w: GeneratorWorker) -> None:
        if self._worker is w:
            self._worker = None
        if self._state in ("starting", "stopping"):  # neither yielded nor failed: treat as stopped
            self._set_state("stopped")

    def _on_failed(self, exc: BaseException) -> None:
        self._error = str(exc) if isinstance(exc, ServerError) else f"The API server failed: {describe_error(exc)}"
        self._set_state("error")
        self.error.emit(self._error)

    def _set_state(self, state: str) -> None:
        was_running = self._state == "running"
        self._state = state
        self._refresh()
        self.state_changed.emit(state)
        if was_running != (state == "running"):
            self.running_changed.emit(state == "running")

    # --- user edits ------------------------------------------------------------------------------
    def _load_settings(self) -> None:
        for w in (self.port, self.network, self.key, self.web_search):
            w.blockSignals(True)
        self.port.setValue(self._settings.port)
        self.key.setText(self._settings.api_key)
        self.network.setChecked(self._settings.allow_network)
        self.web_search.setChecked(self._settings.web_search)
        for w in (self.port, self.network, self.key, self.web_search):
            w.blockSignals(False)

    def _on_toggle(self) -> None:
        if self._state in ("running", "starting"):
            self.stop()
        else:
            self.start()
        self._refresh()

    def _on_edit(self, *_args: object) -> None:
        self._settings.port = int(self.port.value())
        self._settings.allow_network = bool(self.network.isChecked())
        self._settings.web_search = bool(self.web_search.isChecked())  # asked at each request: no restart
        self.settings_changed.emit(self.settings())
        self._refresh()

    def _on_key(self, text: str) -> None:
        self._settings.api_key = text.strip()
        if self._server is not None:
            self._server.set_api_key(self._settings.api_key)  # takes effect for the next request
        self.settings_changed.emit(self.settings())
        self._refresh()

    def _on_generate(self) -> None:
        self.key.setText(generate_api_key())
        self._on_key(self.key.text())

    def _copy(self, text: str) -> None:
        QGuiApplication.clipboard().setText(text)

    # --- live state ---------------------------------------------------------------------------------
    def _on_queue(self, state: QueueState) -> None:
        self.queue_label.setText("Model: " + state.describe())

    def _on_record(self, rec: RequestRecord) -> None:
        when = time.strftime("%H:%M:%S", time.localtime(rec.time))
        tokens = (
            f"{rec.prompt_tokens:,} / {rec.completion_tokens:,}" if rec.prompt_tokens or rec.completion_tokens else ""
        )
        request = f"{rec.method} {rec.path}" + (" (stream)" if rec.stream else "")
        item = QTreeWidgetItem(
            [when, request, str(rec.status), tokens, f"{rec.duration_s:.2f} s", rec.client, rec.note]
        )
        item.setToolTip(6, rec.note)
        if rec.status >= 400:
            colour = QColor("#c93c37" if rec.status >= 500 or rec.status in (401, 403) else style.current().warning)
            for col in (2, 6):
                item.setForeground(col, colour)
        self.log.insertTopLevelItem(0, item)
        while self.log.topLevelItemCount() > MAX_LOG_ROWS:
            self.log.takeTopLevelItem(self.log.topLevelItemCount() - 1)
        self.request_logged.emit(rec)

    def _refresh(self) -> None:
        state, s = self._state, self._settings
        busy = state in ("starting", "stopping")
        self.toggle.blockSignals(True)
        self.toggle.setChecked(state in ("running", "starting"))
        self.toggle.blockSignals(False)
        self.toggle.setText(
            {"running": "Stop server", "starting": "Starting…", "stopping": "Stopping…"}.get(state, "Start server")
        )
        self.toggle.setEnabled(not busy)
        # Port and exposure apply when the server starts; the key applies at once.
        editable = state in ("stopped", "error")
        self.port.setEnabled(editable)
        self.network.setEnabled(editable)
        self.port_hint.setText("" if editable else "Stop the server to change the port.")
        server = self._server
        if state == "running" and server is not None:
            text = f"Running on <b>{server.base_url}</b>"
            if server.exposed:
                urls = server.network_urls()
                if urls:
                    text += "<br>Other devices: " + ", ".join(urls)
        elif state == "error":
            text = self._error or "The server stopped with an error."
        else:
            text = {"starting": "Starting…", "stopping": "Stopping…"}.get(state, "Stopped")
        self.status.setText(text)
        for w in (self.status, self.dot):
            w.setProperty("state", state)
            w.style().unpolish(w)
            w.style().polish(w)
        self.copy_url.setEnabled(state == "running")
        exposed = s.allow_network
        self.warning.setVisible(exposed)
        if exposed:
            warn = (
                "⚠ Any device on your network that can reach this computer will be able to use the model "
                "(and see its answers), including on shared or public Wi-Fi."
            )
            warn += (
                " Anyone who knows the API key can send requests."
                if s.api_key
                else " Set an API key so that only your own tools can connect."
            )
            self.warning.setText(warn)
        model = "gpt-oss-20b"
        if server is not None and server.model_id():
            model = server.model_id() or model
        self.code.setPlainText(example_code(self.base_url, s.api_key, model))


__all__ = ["STATES", "ServerPanel"]
