"""The main window: lays out the chat, sidebar, composer and status bar, and wires them to the runtime's controllers."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QCloseEvent, QDragEnterEvent, QDropEvent
from PySide6.QtWidgets import (
    QFileDialog,
    QHBoxLayout,
    QMainWindow,
    QSplitter,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from app.core import logs
from app.core.chat import Conversation
from app.core.engine import LoadableEngine
from app.core.runtime import Runtime
from app.core.session import ChatSession
from app.core.store import DEFAULT_TITLE, message_from_row
from app.ui import help_menu, style
from app.ui.actions import build_actions, update_actions
from app.ui.chat_controller import ChatController
from app.ui.chat_page import ChatHeader, EmptyState, LoadPanel, StatusLine
from app.ui.chat_view import ChatView
from app.ui.composer import Composer
from app.ui.conversations import ConversationActions
from app.ui.events import ConversationEvents
from app.ui.model_loader import ModelLoader
from app.ui.notice import Notice, NoticeBar, NoticeChannel, log_notice
from app.ui.panels import Panels
from app.ui.sidebar import Sidebar
from app.ui.workers import GeneratorWorker, start_worker


def warm_up_job(theme: Any, *, cancel: threading.Event) -> Iterator[None]:
    """Import pygments lexers off the UI thread so the first code block does not stall it."""
    from app.core.markdown import warm_up

    warm_up(theme)
    yield None


class MainWindow(QMainWindow):
    """The chat window over a Runtime (a new one over the user's data when none is given).

    Its parts: `answers` (ChatController: the live answer and the open chat), `conversations`
    (ConversationActions), `loader` (ModelLoader), `panels` (the dialogs), `notices` (the notice
    channel) and `events` (ConversationEvents). Closing the window closes the runtime.
    """

    model_loaded = Signal(object)
    turn_finished = Signal(object)

    def __init__(self, runtime: Runtime | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.runtime = rt = runtime if runtime is not None else Runtime()
        self.notices = NoticeChannel(self)
        self.events = ConversationEvents(self)
        self.setWindowTitle("Harmonica")
        self.setWindowIcon(style.icon("harmonica"))
        self.resize(1240, 800)
        self.setAcceptDrops(True)

        self.sidebar = Sidebar(rt.store)
        central = QWidget(objectName="ChatPage")
        lay = QVBoxLayout(central)
        lay.setContentsMargins(0, 0, 0, 8)
        lay.setSpacing(0)
        self.header = ChatHeader()
        lay.addWidget(self.header)
        self.stack = QStackedWidget()
        self.empty = EmptyState()
        self.chat = ChatView()
        self.stack.addWidget(self.empty)
        self.stack.addWidget(self.chat)
        lay.addWidget(self.stack, 1)
        self.load_panel = LoadPanel()
        self.banner = NoticeBar()
        self.context_banner = NoticeBar()
        for w in (self.load_panel, self.banner, self.context_banner):
            # Centred at the composer's width; stretches (not alignment) keep word wrap working.
            w.setMaximumWidth(820)
            row = QHBoxLayout()
            row.setContentsMargins(24, 4, 24, 0)
            row.addStretch(1)
            row.addWidget(w, 100)
            row.addStretch(1)
            lay.addLayout(row)
        self.composer = Composer()
        self.composer.set_can_send(False)
        lay.addWidget(self.composer)
        self.splitter = QSplitter(Qt.Orientation.Horizontal, objectName="MainSplitter")
        self.splitter.addWidget(self.sidebar)
        self.splitter.addWidget(central)
        self.splitter.setCollapsible(1, False)
        self.splitter.setStretchFactor(1, 1)
        self.splitter.setSizes([260, 980])
        self.setCentralWidget(self.splitter)
        self.sidebar.setVisible(rt.settings.window.sidebar_visible)
        self.status = StatusLine(self.statusBar())
        self.status_model, self.status_speed = self.status.model, self.status.speed
        self.status_context, self.status_server = self.status.context, self.status.server

        self.answers = ChatController(rt, self.chat, self.composer, self.notices, self.events, self)
        self.conversations = ConversationActions(
            rt, self.answers, self.sidebar, self.chat, self.notices, self.events, self
        )
        self.loader = ModelLoader(rt, self.notices, self)
        self.panels = Panels(rt, self)
        self.menu_actions = build_actions(self)
        self._error_dialog_open = False
        self._wire()

        start_worker(GeneratorWorker(warm_up_job, style.current().markdown))
        last = rt.settings.load.last_model
        # The last model loads at start; meanwhile the empty page shows, not the first-run page.
        self._autoloading = rt.settings.load.autoload and last is not None and Path(last).is_file()
        self._show_session()
        if rt.startup_note:
            self.notices.info(rt.startup_note)
        self.conversations.offer_interrupted()
        if rt.settings.server.enabled:
            QTimer.singleShot(0, lambda: self.panels.server(start=True))
        remote = rt.last_remote() if rt.settings.load.autoload else None
        if remote is not None:  # the model used last runs on another computer: use it again
            self._autoloading = True
            QTimer.singleShot(0, lambda: self._autoload_remote(*remote))
        elif self._autoloading and last is not None:
            QTimer.singleShot(0, lambda: self._autoload(last))

    def _wire(self) -> None:
        ev, ans, loader = self.events, self.answers, self.loader
        ev.list_changed.connect(self.sidebar.refresh)
        ev.session_changed.connect(self._show_session)
        ev.state_changed.connect(self.refresh)
        self.notices.posted.connect(self._on_notice)
        self.notices.cleared.connect(lambda slot: self._bar(slot).hide())
        self.header.settings_requested.connect(self.conversations.edit_settings)
        self.header.export_requested.connect(lambda fmt: self.conversations.choose_export(fmt))
        self.header.sidebar_toggled.connect(self.toggle_sidebar)
        self.empty.open_requested.connect(self.choose_model)
        self.load_panel.cancel_requested.connect(self.cancel_load)
        ans.speed.connect(self.status_speed.setText)
        ans.context.connect(self.status_context.setText)
        ans.unexpected.connect(lambda exc: self.show_exception(exc))
        ans.turn_finished.connect(self.turn_finished)
        ans.reload_requested.connect(lambda path: self.open_model(path))
        self.conversations.status.connect(lambda text, ms: self.statusBar().showMessage(text, ms))
        loader.started.connect(self._on_load_started)
        loader.planned.connect(self.load_panel.set_plan)
        loader.progress.connect(self.load_panel.set_fraction)
        loader.loaded.connect(self._on_loaded)
        loader.failed.connect(self._on_load_failed)
        loader.finished.connect(self._on_load_finished)
        self.panels.open_requested.connect(lambda path: self.open_model(path))
        self.panels.connect_requested.connect(self.use_remote_model)
        self.panels.tools_changed.connect(self.refresh)
        self.panels.server_running.connect(self._on_server_running)

    # --- what tests, the demo and other parts call --------------------------------------------------
    @property
    def session(self) -> ChatSession:
        return self.answers.session

    @property
    def generating(self) -> bool:
        return self.answers.generating

    @property
    def loading(self) -> bool:
        return self.loader.loading

    @property
    def can_open_model(self) -> bool:
        return not self.loading

    @property
    def conversation(self) -> Conversation:
        """The visible conversation (the active branch) as chat messages."""
        return Conversation(messages=[message_from_row(r) for r, _ in self.session.view()])

    def send(self, text: str, effort: str) -> bool:
        return self.answers.send(text, effort)

    def new_chat(self) -> None:
        self.conversations.new_chat()

    def open_conversation(self, conversation_id: int) -> bool:
        return self.conversations.open_conversation(conversation_id)

    def set_conversation(self, conversation: Conversation) -> None:
        self.conversations.set_conversation(conversation)

    def show_hardware(self) -> Any:
        return self.panels.show_hardware(self.session.settings.context_size)

    def show_server(self) -> Any:
        return self.panels.server()

    # --- showing state ------------------------------------------------------------------------------
    def refresh(self) -> None:
        """Page, composer, header and menus from the current state (ConversationEvents.state_changed)."""
        name = self.runtime.model_name
        if self.chat.widgets:
            self.stack.setCurrentWidget(self.chat)
        elif name is None and not self.loading and not self._autoloading:
            page = self.panels.ensure_first_run()  # no model yet: help get one
            if self.stack.indexOf(page) < 0:
                self.stack.addWidget(page)
            self.stack.setCurrentWidget(page)
        else:
            self.stack.setCurrentWidget(self.empty)
        self.empty.set_model_loaded(name, self.runtime.where_it_runs())
        self.composer.set_can_send(name is not None and not self.loading)
        cid = self.session.conversation_id
        extra = ["web browsing on"] if self.runtime.browsing_on() else []  # the one tool that reaches the web
        self.header.set_state(
            self.session.title if cid else DEFAULT_TITLE, self.session.settings, cid is not None, extra
        )
        self.header.set_remote(self.runtime.where_it_runs())
        self.composer.set_remote(self.runtime.where_it_runs())
        update_actions(self, self.menu_actions)

    def _show_session(self) -> None:
        """Rebuild the chat from the store (ConversationEvents.session_changed)."""
        session = self.session
        self.chat.set_rows(session.view())
        self.sidebar.set_current(session.conversation_id)
        self.answers.show_effort(session.settings.reasoning_effort)
        self.context_banner.hide()
        self.refresh()

    def _bar(self, slot: str) -> NoticeBar:
        return self.context_banner if slot == "context" else self.banner

    def _on_notice(self, notice: Notice) -> None:
        self._bar(notice.slot).show_notice(notice)

    def show_error(self, text: str) -> None:
        self.notices.error(text)

    def show_notice(
        self, text: str, actions: Sequence[tuple[str, Callable[[], None]]] = (), timeout_ms: int = 0
    ) -> None:
        self.notices.info(text, actions, timeout_ms)

    def show_exception(self, exc: BaseException, tb_text: str | None = None) -> None:
        """An unexpected error: logged, and a dialog with details (one at a time); the app keeps running."""
        if not getattr(exc, "__harmonica_logged__", False):
            log_notice(Notice(f"Unexpected error: {type(exc).__name__}: {exc}", "error", exc=exc))
        if not self._error_dialog_open:
            self._error_dialog_open = True
            try:
                help_menu.error_dialog(self, exc, tb_text)
            finally:
                self._error_dialog_open = False

    # --- loading ------------------------------------------------------------------------------------
    def choose_model(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "Open a gpt-oss model", str(Path.home()), "GGUF models (*.gguf);;All files (*)"
        )
        if path:
            self.open_model(path)

    def open_model(self, path: str | Path) -> bool:
        """Start loading `path` in the background; False (with a message) if that can't start."""
        if self.answers.busy("loading another model"):
            return False
        return self.loader.open(path, context_size=self.session.settings.context_size)

    def use_remote_model(self, connection_id: str, model: str) -> bool:
        """Chats run on `model` of a saved server from now on (Connections, the Models dialog)."""
        if self.answers.busy("switching to another model"):
            return False
        return self.loader.connect_remote(connection_id, model)

    def cancel_load(self) -> None:
        if self.loading:
            self.loader.cancel()
            self.load_panel.set_cancelling()

    def adopt_engine(self, engine: LoadableEngine) -> None:
        """Use an engine that is already loaded (demo mode, the lab, tests)."""
        self.loader.adopt(engine)
        self.refresh()

    def _autoload_remote(self, connection_id: str, model: str) -> None:
        self._autoloading = False
        if self.runtime.engine is None and not self.loading:
            self.use_remote_model(connection_id, model)
        self.refresh()

    def _autoload(self, path: str) -> None:
        self._autoloading = False
        if self.runtime.settings.load.autoload and self.runtime.engine is None and not self.loading:
            self.open_model(path)
        else:
            self.refresh()

    def _on_load_started(self, name: str) -> None:
        self.answers.cancel_title()
        self.notices.clear()
        self.load_panel.start(name)
        self.status.set_loading(name)
        self.composer.set_can_send(False, "Loading the model…")
        update_actions(self, self.menu_actions)

    def _on_loaded(self, info: Any) -> None:
        self.status.set_model(info, self.runtime.active_plan)
        self.setWindowTitle(f"{info.name} — Harmonica")
        self.panels.model_changed()
        self.model_loaded.emit(info)

    def _on_load_failed(self) -> None:
        self.status.set_no_model()
        self.setWindowTitle("Harmonica")

    def _on_load_finished(self) -> None:
        self.load_panel.hide()
        self.refresh()

    def _on_server_running(self, running: bool) -> None:
        panel = self.panels.server_panel
        if running and panel is not None:
            self.status.set_server(panel.base_url, bool(getattr(panel.server, "exposed", False)))
        else:
            self.status.set_server(None)

    # --- view and help menu commands ----------------------------------------------------------------
    @property
    def sidebar_visible(self) -> bool:
        return self.runtime.settings.window.sidebar_visible

    def set_sidebar_visible(self, on: bool) -> None:
        self.sidebar.setVisible(on)
        self.runtime.settings.window.sidebar_visible = on
        self.runtime.settings.save("window")
        update_actions(self, self.menu_actions)

    def toggle_sidebar(self) -> None:
        self.set_sidebar_visible(not self.sidebar.isVisible())

    def focus_search(self) -> None:
        if not self.sidebar.isVisible():
            self.toggle_sidebar()
        self.sidebar.search.setFocus()
        self.sidebar.search.selectAll()

    def theme_is(self, name: str) -> bool:
        return self.runtime.settings.window.theme == name

    def set_theme(self, name: str) -> None:
        self.runtime.settings.window.theme = name
        self.runtime.settings.save("window")
        update_actions(self, self.menu_actions)
        self.notices.info("The new theme is used from the next start of Harmonica.", timeout_ms=8000)

    @property
    def debug_logging(self) -> bool:
        return self.runtime.settings.logging.debug

    def set_debug_logging(self, on: bool) -> None:
        self.runtime.settings.logging.debug = on
        self.runtime.settings.save("logging")
        logs.set_debug(on)

    def show_log_folder(self) -> None:
        if not help_menu.show_log_folder():
            self.notices.error(f"The log folder could not be opened. It is {logs.log_dir()}.")

    def copy_diagnostics(self) -> None:
        help_menu.copy_diagnostics(self.runtime)
        self.statusBar().showMessage("Diagnostics copied to the clipboard (no conversation text).", 4000)

    def about(self) -> None:
        help_menu.about(self)

    # --- drag & drop --------------------------------------------------------------------------------
    def dragEnterEvent(self, e: QDragEnterEvent) -> None:
        urls = e.mimeData().urls() if e.mimeData().hasUrls() else []
        if any(u.isLocalFile() for u in urls):
            e.acceptProposedAction()
        else:
            e.ignore()

    def dropEvent(self, e: QDropEvent) -> None:
        files = [u.toLocalFile() for u in e.mimeData().urls() if u.isLocalFile()]
        ggufs = [f for f in files if f.lower().endswith(".gguf")]
        if not ggufs:
            self.notices.error("Only gpt-oss model files in .gguf format can be dropped here.")
            e.ignore()
            return
        e.acceptProposedAction()
        self.open_model(ggufs[0])

    # --- shutdown -----------------------------------------------------------------------------------
    def closeEvent(self, e: QCloseEvent) -> None:
        self.answers.closing = True
        self.panels.shutdown()
        self.answers.shutdown()
        self.loader.shutdown()
        self.runtime.close()
        super().closeEvent(e)
