"""The main window: lays out the chat, sidebar, composer and status bar, and wires them to the runtime's controllers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QCloseEvent, QDragEnterEvent, QDropEvent
from PySide6.QtWidgets import (
    QApplication,
    QFileDialog,
    QLineEdit,
    QMainWindow,
    QPlainTextEdit,
    QSplitter,
    QWidget,
)

from app.core.chat import Conversation
from app.core.engine import LoadableEngine
from app.core.fsutil import FileWriteError
from app.core.runtime import Runtime, is_model_file
from app.core.session import ChatSession
from app.core.store import DEFAULT_TITLE, StoreUnavailableError, message_from_row
from app.ui import focus_ring, help_menu, style
from app.ui.actions import build_actions, update_actions
from app.ui.chat_controller import ChatController
from app.ui.chat_page import ChatPage, StatusLine
from app.ui.conversations import ConversationActions
from app.ui.events import ConversationEvents
from app.ui.markdown_view import warm_up_job
from app.ui.model_loader import ModelLoader
from app.ui.notice import Notice, NoticeBar, NoticeChannel, log_notice
from app.ui.panels import Panels
from app.ui.sidebar import Sidebar
from app.ui.store_status import StoreStatus
from app.ui.window_state import GeometryKeeper
from app.ui.window_view import ViewCommands
from app.ui.workers import GeneratorWorker, start_worker


class MainWindow(QMainWindow):
    """The chat window over a Runtime (a new one over the user's data when none is given).

    Its parts: `answers` (ChatController: the live answer and the open chat), `conversations`
    (ConversationActions), `loader` (ModelLoader), `panels` (the dialogs), `view` (View and Help
    commands), `notices` (the notice channel) and `events` (ConversationEvents). Closing the
    window closes the runtime.
    """

    model_loaded = Signal(object)
    turn_finished = Signal(object)

    def __init__(self, runtime: Runtime | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.runtime = rt = runtime if runtime is not None else Runtime()
        app = QApplication.instance()
        if isinstance(app, QApplication):
            focus_ring.install(app)  # every Tab stop shows where the keyboard is
        self.notices = NoticeChannel(self)
        self.events = ConversationEvents(self)
        self.setWindowTitle("Harmonica")
        self.setWindowIcon(style.icon("harmonica"))
        self.setAcceptDrops(True)

        self.sidebar = Sidebar(rt.store)
        central = ChatPage()
        self.header, self.stack, self.empty, self.chat = central.header, central.stack, central.empty, central.chat
        self.load_panel, self.banner, self.context_banner = central.load_panel, central.banner, central.context_banner
        self.store_banner = central.store_banner
        self.composer = central.composer
        self.splitter = QSplitter(Qt.Orientation.Horizontal, objectName="MainSplitter")
        self.splitter.addWidget(self.sidebar)
        self.splitter.addWidget(central)
        self.splitter.setCollapsible(1, False)
        self.splitter.setStretchFactor(1, 1)
        self.splitter.setSizes([260, 980])
        self.setCentralWidget(self.splitter)
        self.status = StatusLine(self.statusBar())
        self.status_model, self.status_speed = self.status.model, self.status.speed
        self.status_context, self.status_server = self.status.context, self.status.server

        self.answers = ChatController(rt, self.chat, self.composer, self.notices, self.events, self)
        self.conversations = ConversationActions(
            rt, self.answers, self.sidebar, self.chat, self.notices, self.events, self
        )
        self.loader = ModelLoader(rt, self.notices, self)
        self.store_status = StoreStatus(rt, self.notices, self.events, self.answers, self.statusBar(), self)
        self.geometry_keeper = GeometryKeeper(rt.settings, self)
        self.geometry_keeper.track(self, "main", (1240, 800))
        self.panels = Panels(rt, self, self.geometry_keeper)
        self.view = ViewCommands(self, rt, self.sidebar, self.notices, self.refresh_actions)
        self.menu_actions = build_actions(self)
        self.chat.set_tab_neighbours(self.header.settings_button, self.composer.edit)
        self._error_dialog_open = False
        self._wire()

        start_worker(GeneratorWorker(warm_up_job, style.current().markdown))
        self._rebuild_on_idle = False  # a theme change during an answer re-renders the chat after it
        last = rt.settings.load.last_model
        # The last model loads at start; meanwhile the empty page shows, not the first-run page.
        self._autoloading = rt.settings.load.autoload and last is not None and Path(last).is_file()
        self._show_session()
        if rt.startup_note:
            self.notices.info(rt.startup_note)
        elif last is not None and is_model_file(last) and not Path(last).is_file():
            self.loader.report_missing(last, locate=self.choose_model, download=self.show_models)
        self.store_status.start()  # the store could not be opened for writing: say why, until it can
        self.conversations.offer_interrupted()
        self.composer.edit.setFocus()  # the window opens ready for typing (it gets the focus when shown)
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
        self.header.sidebar_toggled.connect(self.view.toggle_sidebar)
        self.composer.edit_last_requested.connect(self.conversations.edit_last_message)
        self.empty.open_requested.connect(self.choose_model)
        self.load_panel.cancel_requested.connect(self.cancel_load)
        ans.speed.connect(self.status_speed.setText)
        ans.context.connect(self.status_context.setText)
        ans.unexpected.connect(lambda exc: self.show_exception(exc))
        ans.turn_finished.connect(self.turn_finished)
        ans.idle.connect(self._after_answer)
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
        self.panels.server_running.connect(lambda on: self.status.set_server(*self.panels.server_address(on)))

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

    def show_models(self) -> None:
        self.panels.show_models()

    def show_hardware(self) -> Any:
        return self.panels.show_hardware(self.session.settings.context_size)

    def show_server(self) -> Any:
        return self.panels.server()

    # --- showing state ------------------------------------------------------------------------------
    def refresh(self) -> None:
        """Page, composer, header and menus from the current state (ConversationEvents.state_changed)."""
        name = self.runtime.model_name
        first_run = False
        if self.chat.widgets:
            self.stack.setCurrentWidget(self.chat)
        elif name is None and not self.loading and not self._autoloading:
            page = self.panels.ensure_first_run()  # no model yet: help get one
            if self.stack.indexOf(page) < 0:
                self.stack.addWidget(page)
            self.stack.setCurrentWidget(page)
            first_run = True
        else:
            self.stack.setCurrentWidget(self.empty)
        where = self.runtime.where_it_runs()
        self.empty.set_model_loaded(name, where)
        self.composer.setVisible(not first_run)  # nothing to type to until a model is ready
        self.view.narrow.set_suppressed(first_run and not self.sidebar.has_conversations)
        if self.loading:
            self.composer.set_can_send(False, "Loading the model…")
        else:
            self.composer.set_can_send(name is not None)
        cid = self.session.conversation_id
        extra = ["web browsing on"] if self.runtime.browsing_on() else []  # the one tool that reaches the web
        self.header.set_state(
            self.session.title if cid else DEFAULT_TITLE, self.session.settings, cid is not None, extra
        )
        self.header.set_remote(where)
        self.composer.set_remote(where)
        self.refresh_actions()

    def refresh_actions(self) -> None:
        """Menus re-read what is enabled and checked."""
        update_actions(self, self.menu_actions)

    def theme_changed(self, palette: Any) -> None:
        """View → Theme: answers are rendered with the theme's colours, so the chat is rebuilt (after
        the answer that is streaming, if one is)."""
        if self.runtime.closed:
            return  # a closed window waiting to be deleted
        start_worker(GeneratorWorker(warm_up_job, palette.markdown))
        if self.generating:
            self._rebuild_on_idle = True
        else:
            self.chat.rebuild_keeping_place(self.session.view())

    def _after_answer(self) -> None:
        if self._rebuild_on_idle:
            self._rebuild_on_idle = False
            self.chat.rebuild_keeping_place(self.session.view())

    def _show_session(self) -> None:
        """Rebuild the chat from the store (ConversationEvents.session_changed)."""
        session = self.session
        self.chat.set_rows(session.view())
        self.sidebar.set_current(session.conversation_id)
        self.answers.show_effort(session.settings.reasoning_effort)
        self.context_banner.hide()
        self.loader.offer_where_it_ran(
            session.settings.runs_on, use_file=self.open_model, use_remote=self.use_remote_model
        )
        self.refresh()

    def _bar(self, slot: str) -> NoticeBar:
        return {"context": self.context_banner, "store": self.store_banner}.get(slot, self.banner)

    def _on_notice(self, notice: Notice) -> None:
        self._bar(notice.slot).show_notice(notice)

    def show_exception(self, exc: BaseException, tb_text: str | None = None) -> None:
        """An unexpected error: logged, and a dialog with details (one at a time); the app keeps running.

        A store that cannot write, or a file that cannot be saved, is not unexpected: a notice says
        where and what to do (wherever the error came from)."""
        if isinstance(exc, (StoreUnavailableError, FileWriteError)):
            self.notices.error(str(exc), exc)
            return
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
        self.refresh_actions()

    def _on_loaded(self, info: Any) -> None:
        self._show_model_state()
        self.panels.model_changed()
        self.model_loaded.emit(info)

    def _on_load_failed(self) -> None:
        # A failed open (a wrong file, a file that does not fit) often leaves the old model loaded and
        # answering: the status bar and title say what is loaded now, not what was tried.
        self._show_model_state()

    def _show_model_state(self) -> None:
        info = self.runtime.model_info if self.runtime.model_loaded else None
        if info is None:
            self.status.set_no_model()
            self.setWindowTitle("Harmonica")
        else:
            self.status.set_model(info, self.runtime.active_plan)
            self.setWindowTitle(f"{info.name} — Harmonica")

    def _on_load_finished(self) -> None:
        self.load_panel.hide()
        self.refresh()
        focused = QApplication.focusWidget()
        typing = isinstance(focused, (QLineEdit, QPlainTextEdit)) and focused.window() is self
        if self.runtime.model_loaded and self.composer.isVisible() and not typing:
            # Ready: the keyboard goes to the message box (not to whatever button was left with
            # it when the first-run page went away: typing a space would press that button).
            self.composer.edit.setFocus(Qt.FocusReason.OtherFocusReason)

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
        unsaved = self.store_status.unsaved_on_close()
        if unsaved:  # the disk cannot take it now: say what would be lost, and offer "Close anyway"
            e.ignore()
            self.store_status.refuse_close(unsaved, self.close)
            return
        self.geometry_keeper.finish(self)  # before the settings' store closes below
        self.answers.closing = True
        self.panels.shutdown()
        self.answers.shutdown()
        self.loader.shutdown()
        self.store_status.close()
        self.runtime.close()
        super().closeEvent(e)
