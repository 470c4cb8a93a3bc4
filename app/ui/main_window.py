"""The main window: chat, composer, model loading, status; forwards user intent to workers."""

from __future__ import annotations

import dataclasses
import os
import queue
import threading
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, QSize, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QCloseEvent, QDragEnterEvent, QDropEvent, QGuiApplication, QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QDialog,
    QFileDialog,
    QFrame,
    QHBoxLayout,
    QLabel,
    QMainWindow,
    QMenu,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QSplitter,
    QStackedWidget,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from app import __version__ as APP_VERSION
from app.core.chat import ChatError, Conversation, EngineLike, Message, ToolCallRecord, TurnFinished, TurnStarted
from app.core.engine import EngineError, LoadSettings, Sampling
from app.core.harmony import FinalDelta, PreambleDelta, ReasoningDelta, ToolCall
from app.core.scheduler import EngineScheduler, QueueState
from app.core.session import CONTEXT_WARN_FRACTION, ChatSession, ContextTrimmed, MessageSaved
from app.core.store import (
    ACTIVE,
    DEFAULT_TITLE,
    ConversationSettings,
    MessageRow,
    Store,
    StoreError,
    message_from_row,
)
from app.core.tools.chat_files import ChatToolFiles  # tool-files hook (issue 13 item 8)
from app.ui import style
from app.ui.chat_view import ChatView
from app.ui.composer import Composer
from app.ui.conversation_settings import ConversationSettingsDialog
from app.ui.message_widget import AssistantMessageWidget
from app.ui.sidebar import Sidebar
from app.ui.workers import GeneratorWorker, start_worker


# --- Jobs (plain generators; GeneratorWorker runs them off the UI thread) -------------------------
@dataclass(frozen=True)
class LoadProgress:
    fraction: float


@dataclass(frozen=True)
class LoadDone:
    info: Any


@dataclass(frozen=True)
class LoadPlanned:
    """The planner's choice for this load (shown while loading, and in the status bar)."""

    plan: Any


def plan_load(path: str, profile: Any, wishes: Any) -> Any:
    """The automatic load settings for `path` on this machine, or EngineError saying why nothing
    fits and what would help: a load that cannot fit is never started."""
    from app.core import planner
    from app.core.engine import check_model_file

    check_model_file(path)  # a damaged or foreign file is reported as such, not as "does not fit"
    plan = planner.plan_for_file(path, profile, wishes)
    if not plan.fits:
        why = " ".join(plan.reasons[-2:]) if plan.reasons else "It does not fit in this computer's memory."
        helps = (" What would help: " + "; ".join(plan.suggestions) + ".") if plan.suggestions else ""
        raise EngineError(f"{why}{helps}")
    return plan


def load_model_job(
    engine: Any,
    path: str,
    settings: LoadSettings | None,
    *,
    cancel: threading.Event,
    scheduler: EngineScheduler | None = None,
    profile: Callable[[], Any] | None = None,
    wishes: Any = None,
) -> Iterator[LoadProgress | LoadDone | LoadPlanned]:
    """Load a model, yielding progress; llama.cpp reports progress by callback, so the load runs
    on a helper thread and its callbacks are turned into yields here. With a scheduler, the load
    waits for (and then excludes) every generation and tokenization of the shared engine.
    `settings` None: the planner chooses them for this machine (`profile()` gives its hardware)."""
    if settings is None:
        from app.core import hardware

        plan = plan_load(path, profile() if profile is not None else hardware.detect(), wishes)
        settings = plan.to_load_settings()
        yield LoadPlanned(plan)
    events: queue.Queue[tuple[str, Any]] = queue.Queue()

    def progress(fraction: float) -> bool:
        events.put(("progress", float(fraction)))
        return not cancel.is_set()

    def load() -> Any:
        if getattr(engine, "loaded", False):
            engine.unload()  # freeing gigabytes takes a moment: not on the UI thread
        return engine.load(path, settings, progress)

    def target() -> None:
        try:
            if scheduler is None:
                info = load()
            else:
                scheduler.cancel("api")  # a new model: API requests in flight end now
                with scheduler.exclusive("loader", cancel):
                    info = load()
                    scheduler.engine = engine
            events.put(("done", info))
        except BaseException as exc:  # noqa: BLE001 - handed to the worker's errored signal
            events.put(("error", exc))

    threading.Thread(target=target, name="model-load", daemon=True).start()
    last = -1.0
    while True:
        kind, value = events.get()
        if kind == "progress":
            if value - last >= 0.01 or value >= 1.0:  # llama.cpp calls back thousands of times
                last = value
                yield LoadProgress(value)
        elif kind == "done":
            if cancel.is_set():
                raise EngineError("Loading was cancelled.")
            yield LoadDone(value)
            return
        else:
            raise value


def answer_job(
    session: ChatSession, engine: Any, tools: Callable[[], Any] | None, *, cancel: threading.Event, **kwargs: Any
) -> Iterator[Any]:
    """One answer, with the tool loop when tools are on; the tool session (and, the first time, the
    tool registry with the user's tool files) is made here, off the UI thread."""
    tool_session = tools() if tools is not None else None
    yield from session.generate(engine, cancel=cancel, tool_session=tool_session, **kwargs)


def warm_up_job(theme: Any, *, cancel: threading.Event) -> Iterator[None]:
    """Import pygments lexers off the UI thread so the first code block does not stall it."""
    from app.core.markdown import warm_up

    warm_up(theme)
    yield None


def default_engine_factory() -> EngineLike:
    from app.core.engine import Engine  # imported late: llama_cpp is heavy and may be missing

    return Engine()  # type: ignore[no-any-return]


# --- Small widgets -------------------------------------------------------------------------------
class _QueueBridge(QObject):
    """Scheduler state changes arrive on whichever thread made them; this brings them to the UI."""

    changed = Signal(object)


class Banner(QFrame):
    """An inline message above the composer (errors and notices) with optional action buttons."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent, objectName="Banner")
        lay = QHBoxLayout(self)
        lay.setContentsMargins(14, 10, 8, 10)
        self.text = QLabel("", objectName="BannerText")
        self.text.setWordWrap(True)
        self.text.setTextFormat(Qt.TextFormat.PlainText)
        self.text.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        lay.addWidget(self.text, 1)
        self._actions = QHBoxLayout()
        self._actions.setSpacing(6)
        lay.addLayout(self._actions)
        self.buttons: list[QPushButton] = []
        close = QToolButton(objectName="BannerClose")
        close.setIcon(style.icon("close"))
        close.setToolTip("Dismiss")
        close.clicked.connect(self.hide)
        lay.addWidget(close, 0, Qt.AlignmentFlag.AlignTop)
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.timeout.connect(self.hide)
        self.kind = ""
        self.hide()

    def show_message(
        self,
        text: str,
        kind: str = "error",
        actions: Sequence[tuple[str, Callable[[], None]]] = (),
        timeout_ms: int = 0,
    ) -> None:
        self.kind = kind
        self.setProperty("kind", kind)
        self.style().unpolish(self)
        self.style().polish(self)
        self.text.setText(text)
        for b in self.buttons:
            self._actions.removeWidget(b)
            b.deleteLater()
        self.buttons = []
        for label, fn in actions:
            b = QPushButton(label, objectName="BannerButton")
            b.clicked.connect(lambda _=False, fn=fn: (self.hide(), fn()))
            self._actions.addWidget(b, 0, Qt.AlignmentFlag.AlignVCenter)
            self.buttons.append(b)
        self._timer.stop()
        if timeout_ms:
            self._timer.start(timeout_ms)
        self.show()

    def button(self, label: str) -> QPushButton | None:
        return next((b for b in self.buttons if b.text() == label), None)


class ChatHeader(QFrame):
    """Above the chat: the conversation's title, what its settings change, and its actions."""

    settings_requested = Signal()
    export_requested = Signal(str)  # "md", "md-reasoning", "json"
    sidebar_toggled = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent, objectName="ChatHeader")
        lay = QHBoxLayout(self)
        lay.setContentsMargins(10, 6, 12, 6)
        lay.setSpacing(6)
        self.sidebar_button = QToolButton(objectName="HeaderButton")
        self.sidebar_button.setIcon(style.icon("sidebar"))
        self.sidebar_button.setToolTip("Show or hide the conversation list (Ctrl+B)")
        self.sidebar_button.clicked.connect(self.sidebar_toggled)
        lay.addWidget(self.sidebar_button)
        self.title = QLabel("New chat", objectName="ChatTitle")
        self.title.setTextFormat(Qt.TextFormat.PlainText)
        lay.addWidget(self.title)
        self.badges = QLabel("", objectName="ChatBadges")
        self.badges.setTextFormat(Qt.TextFormat.PlainText)
        lay.addWidget(self.badges, 1)
        self.export_button = QToolButton(objectName="HeaderButton")
        self.export_button.setIcon(style.icon("export"))
        self.export_button.setToolTip("Export this chat")
        self.export_button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        menu = QMenu(self.export_button)
        for label, fmt in (
            ("Markdown…", "md"),
            ("Markdown with reasoning…", "md-reasoning"),
            ("JSON (complete)…", "json"),
        ):
            menu.addAction(label, lambda fmt=fmt: self.export_requested.emit(fmt))
        self.export_button.setMenu(menu)
        lay.addWidget(self.export_button)
        self.settings_button = QToolButton(objectName="HeaderButton")
        self.settings_button.setIcon(style.icon("settings"))
        self.settings_button.setToolTip("Chat settings: instructions, sampling, context (Ctrl+,)")
        self.settings_button.clicked.connect(self.settings_requested)
        lay.addWidget(self.settings_button)

    def set_state(
        self, title: str, settings: ConversationSettings | None, stored: bool, extra: Sequence[str] = ()
    ) -> None:
        self.title.setText(title or DEFAULT_TITLE)
        self.title.setToolTip(title)
        badges: list[str] = list(extra)
        if settings is not None:
            if settings.developer_instructions.strip():
                badges.append("instructions")
            if settings.model_identity:
                badges.append("custom identity")
            if settings.trim_oldest:
                badges.append("oldest turns left out when too long")
        self.badges.setText(("  ·  " + " · ".join(badges)) if badges else "")
        self.export_button.setEnabled(stored)


class LoadPanel(QFrame):
    """Progress of a model load, with Cancel."""

    cancel_requested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent, objectName="LoadPanel")
        lay = QVBoxLayout(self)
        lay.setContentsMargins(16, 12, 16, 12)
        top = QHBoxLayout()
        self.label = QLabel("Loading model…")
        top.addWidget(self.label, 1)
        self.cancel = QPushButton("Cancel", objectName="SecondaryButton")
        self.cancel.clicked.connect(self.cancel_requested)
        top.addWidget(self.cancel)
        lay.addLayout(top)
        self.bar = QProgressBar()
        self.bar.setRange(0, 1000)
        self.bar.setTextVisible(False)
        lay.addWidget(self.bar)
        self.hide()

    def start(self, name: str) -> None:
        self._name = name
        self.bar.setValue(0)
        self.label.setText(f"Loading {name}…")
        self.cancel.setEnabled(True)
        self.show()

    def set_fraction(self, f: float) -> None:
        self.bar.setValue(int(max(0.0, min(1.0, f)) * 1000))
        self.label.setText(f"Loading {self._name}… {int(f * 100)}%")


class EmptyState(QWidget):
    """Shown instead of the chat when there is nothing to show yet."""

    open_requested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent, objectName="EmptyState")
        lay = QVBoxLayout(self)
        lay.addStretch(3)
        logo = QLabel()
        logo.setPixmap(style.icon("harmonica").pixmap(QSize(72, 72)))
        logo.setAlignment(Qt.AlignmentFlag.AlignCenter)
        lay.addWidget(logo)
        self.title = QLabel("", objectName="EmptyTitle")
        self.title.setAlignment(Qt.AlignmentFlag.AlignCenter)
        f = self.title.font()
        f.setPointSizeF(f.pointSizeF() + 6)
        self.title.setFont(f)
        lay.addWidget(self.title)
        self.hint = QLabel("", objectName="EmptyHint")
        self.hint.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.hint.setWordWrap(True)
        lay.addWidget(self.hint)
        row = QHBoxLayout()
        row.addStretch(1)
        self.button = QPushButton("Open model…", objectName="PrimaryButton")
        self.button.setCursor(Qt.CursorShape.PointingHandCursor)
        self.button.clicked.connect(self.open_requested)
        row.addWidget(self.button)
        row.addStretch(1)
        lay.addSpacing(8)
        lay.addLayout(row)
        lay.addStretch(4)
        self.set_model_loaded(None)

    def set_model_loaded(self, name: str | None) -> None:
        if name:
            self.title.setText("What can I help with?")
            self.hint.setText(f"{name} is ready. Everything you type stays on this computer.")
            self.button.hide()
        else:
            self.title.setText("No model loaded")
            self.hint.setText("Open a gpt-oss model file (.gguf) to start — or drop one onto this window.")
            self.button.show()


# --- The window ----------------------------------------------------------------------------------
class MainWindow(QMainWindow):
    """Chat window over the conversation store.

    `engine_factory` makes the engine (tests pass a ScriptedEngine); `store` defaults to the
    user's conversation database (opened, or recovered when damaged).
    """

    model_loaded = Signal(object)
    turn_finished = Signal(object)

    def __init__(
        self,
        engine_factory: Callable[[], EngineLike] | None = None,
        parent: QWidget | None = None,
        *,
        store: Store | None = None,
    ) -> None:
        super().__init__(parent)
        self._engine_factory = engine_factory or default_engine_factory
        self.engine: Any = None
        self.sampling: Sampling | None = None  # None: the conversation's own settings
        # None: the planner chooses (the normal case); tests and the hardware panel's Advanced
        # section set explicit settings.
        self.load_settings: LoadSettings | None = None
        self.plan: Any = None  # the planner's choice for the loaded model
        self._profile: Any = None  # HardwareProfile, detected once, off the UI thread
        self._profile_lock = threading.Lock()
        self.autoload = True  # load the last used model at start
        self.grammar: str | None = None  # tests force harmony-shaped output from random weights
        self.date: Any = None
        self._gen_worker: GeneratorWorker | None = None
        self._load_worker: GeneratorWorker | None = None
        self._title_worker: GeneratorWorker | None = None
        self._live: AssistantMessageWidget | None = None
        self._live_message: Message | None = None
        self._live_saved = False
        self._error_dialog_open = False
        self.auto_title = True
        self.tools_enabled = True
        # HF_HUB_OFFLINE: no downloads, and the browser tool is hidden. Read from the environment
        # here (download.is_offline would import huggingface_hub at start-up).
        self.offline = any(
            os.environ.get(n, "").strip().upper() in {"1", "ON", "YES", "TRUE"}
            for n in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
        )
        self._tool_registry: Any = None
        self._tool_sessions: dict[int, Any] = {}
        self._tools_lock = threading.Lock()
        self._tools_dialog: QDialog | None = None
        self._downloads: Any = None
        self._models_dialog: Any = None
        self._hardware_dialog: QDialog | None = None
        self.hardware_panel: Any = None
        self.first_run: Any = None
        self.lab: Any = None
        # One engine, shared fairly by the chat, the API server and the lab (one generation at a time).
        self.scheduler = EngineScheduler()
        self._queue_bridge = _QueueBridge()
        self._queue_bridge.changed.connect(self._on_queue)
        self.scheduler.add_listener(self._queue_bridge.changed.emit)
        self._server_dialog: QDialog | None = None
        self._closing = False
        self._autoloading = False
        self.server_panel: Any = None
        self._owns_store = store is None
        self.store, startup_note = self._open_store(store)
        self.session = ChatSession(self.store)
        # tool-files hook (issue 13 item 8): scratch folders by chat uid; a crash's leftovers go now.
        self.tool_files = ChatToolFiles(self.store)
        self.tool_files.sweep()

        self.setWindowTitle("Harmonica")
        self.setWindowIcon(style.icon("harmonica"))
        self.resize(1240, 800)
        self.setAcceptDrops(True)

        self.sidebar = Sidebar(self.store)
        self.sidebar.new_chat_requested.connect(self.new_chat)
        self.sidebar.conversation_selected.connect(self.open_conversation)
        self.sidebar.hit_selected.connect(self.open_hit)
        self.sidebar.rename_requested.connect(self.rename_conversation)
        self.sidebar.delete_requested.connect(self.delete_conversation)
        self.sidebar.export_requested.connect(lambda cid: self.choose_export("md", cid))

        central = QWidget(objectName="ChatPage")
        lay = QVBoxLayout(central)
        lay.setContentsMargins(0, 0, 0, 8)
        lay.setSpacing(0)
        self.header = ChatHeader()
        self.header.settings_requested.connect(self.edit_settings)
        self.header.export_requested.connect(lambda fmt: self.choose_export(fmt))
        self.header.sidebar_toggled.connect(self.toggle_sidebar)
        lay.addWidget(self.header)
        self.stack = QStackedWidget()
        self.empty = EmptyState()
        self.empty.open_requested.connect(self.choose_model)
        self.chat = ChatView()
        self.chat.message_action.connect(self._on_message_action)
        self.chat.edit_submitted.connect(self.edit_and_resend)
        self.stack.addWidget(self.empty)
        self.stack.addWidget(self.chat)
        lay.addWidget(self.stack, 1)

        self.load_panel = LoadPanel()
        self.load_panel.cancel_requested.connect(self.cancel_load)
        self.banner = Banner()
        self.context_banner = Banner()
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
        self.composer.send.connect(self.send)
        self.composer.stop_requested.connect(self.stop)
        self.composer.set_can_send(False)
        lay.addWidget(self.composer)

        self.splitter = QSplitter(Qt.Orientation.Horizontal, objectName="MainSplitter")
        self.splitter.addWidget(self.sidebar)
        self.splitter.addWidget(central)
        self.splitter.setCollapsible(1, False)
        self.splitter.setStretchFactor(1, 1)
        self.splitter.setSizes([260, 980])
        self.setCentralWidget(self.splitter)

        self._build_menu()
        stop_shortcut = QShortcut(QKeySequence(Qt.Key.Key_Escape), self)
        stop_shortcut.activated.connect(self.stop)
        sb = self.statusBar()
        sb.setSizeGripEnabled(False)
        self.status_model = QLabel("No model")
        self.status_speed = QLabel("")
        self.status_context = QLabel("")
        self.status_server = QLabel("", objectName="StatusServer")
        self.status_server.hide()
        sb.addWidget(self.status_model, 1)
        sb.addPermanentWidget(self.status_server)
        sb.addPermanentWidget(self.status_speed)
        sb.addPermanentWidget(self.status_context)
        start_worker(GeneratorWorker(warm_up_job, style.current().markdown))
        last = self.store.get_setting("last_model")
        # The last model loads at start; meanwhile the empty page shows, not the first-run page.
        self._autoloading = self.autoload and isinstance(last, str) and Path(last).is_file()
        self._show_session()
        if startup_note:
            self.show_notice(startup_note)
        self._offer_interrupted()
        if self._server_settings().get("enabled"):
            QTimer.singleShot(0, lambda: self.server(start=True))
        if self._autoloading:
            QTimer.singleShot(0, lambda: self._autoload(str(self.store.get_setting("last_model"))))

    # --- store -----------------------------------------------------------------------------------
    def _open_store(self, store: Store | None) -> tuple[Store, str]:
        """The user's store; a damaged one is moved aside and salvaged; an unusable one is replaced
        by a temporary store so the app still starts, with a message saying so."""
        if store is not None:
            return store, ""
        try:
            opened, report = Store.open_or_recover()
            return opened, report.message if report is not None else ""
        except (StoreError, OSError) as exc:
            import tempfile

            tmp = Path(tempfile.mkdtemp(prefix="harmonica-")) / "conversations.sqlite3"
            return Store.open(tmp), f"{exc} Conversations are kept only until Harmonica closes."

    def _offer_interrupted(self) -> None:
        """After a crash: open the conversation whose answer was cut off, and say what happened."""
        ids = self.store.interrupted_on_open
        if not ids:
            return
        try:
            row = self.store.get_message(ids[-1])
        except StoreError:
            return
        self.open_conversation(row.conversation_id)
        self.show_notice(
            "Harmonica closed while an answer was being written. The partial answer is kept and marked "
            "“interrupted”: Continue it, or Regenerate it."
        )

    # --- menus -----------------------------------------------------------------------------------
    def _build_menu(self) -> None:
        m = self.menuBar().addMenu("&File")
        self.open_action = QAction("&Open model…", self, shortcut=QKeySequence.StandardKey.Open)
        self.open_action.triggered.connect(self.choose_model)
        m.addAction(self.open_action)
        models = QAction("&Models…", self, shortcut=QKeySequence("Ctrl+Shift+M"))
        models.setToolTip("Download gpt-oss, manage and choose model files")
        models.triggered.connect(lambda: self.show_models())
        m.addAction(models)
        hw = QAction("&Hardware and load settings…", self)
        hw.triggered.connect(lambda: self.show_hardware())
        m.addAction(hw)
        self.new_action = QAction("&New chat", self, shortcut=QKeySequence.StandardKey.New)
        self.new_action.triggered.connect(self.new_chat)
        m.addAction(self.new_action)
        m.addSeparator()
        imp = QAction("&Import conversations…", self)
        imp.triggered.connect(self.choose_import)
        m.addAction(imp)
        exp_all = QAction("Export &all conversations…", self)
        exp_all.triggered.connect(self.choose_export_all)
        m.addAction(exp_all)
        m.addSeparator()
        quit_action = QAction("&Quit", self, shortcut=QKeySequence.StandardKey.Quit)
        quit_action.triggered.connect(self.close)
        m.addAction(quit_action)

        c = self.menuBar().addMenu("&Chat")
        settings = QAction("Chat &settings…", self, shortcut=QKeySequence("Ctrl+,"))
        settings.triggered.connect(self.edit_settings)
        c.addAction(settings)
        find = QAction("&Search conversations", self, shortcut=QKeySequence.StandardKey.Find)
        find.triggered.connect(self.focus_search)
        c.addAction(find)
        rename = QAction("&Rename chat", self)
        rename.triggered.connect(
            lambda: self.session.conversation_id and self.sidebar.start_rename(self.session.conversation_id)
        )
        c.addAction(rename)
        delete = QAction("&Delete chat", self)
        delete.triggered.connect(
            lambda: self.session.conversation_id and self.delete_conversation(self.session.conversation_id)
        )
        c.addAction(delete)

        t = self.menuBar().addMenu("&Tools")
        tools = QAction("&Tools the model can use…", self)
        tools.triggered.connect(lambda: self.show_tools())
        t.addAction(tools)
        lab = QAction("&Effort lab…", self, shortcut=QKeySequence("Ctrl+L"))
        lab.setToolTip("Compare low, medium and high reasoning effort on your own prompts")
        lab.triggered.connect(lambda: self.show_lab())
        t.addAction(lab)
        server = QAction("Local &API server…", self)
        server.setToolTip("Serve the loaded model to your own scripts through the OpenAI API")
        server.triggered.connect(lambda: self.server())
        t.addAction(server)

        v = self.menuBar().addMenu("&View")
        toggle = QAction("Show &conversations", self, shortcut=QKeySequence("Ctrl+B"), checkable=True, checked=True)
        toggle.triggered.connect(lambda on: self.sidebar.setVisible(on))
        self.sidebar_action = toggle
        v.addAction(toggle)

        h = self.menuBar().addMenu("&Help")
        about = QAction("&About Harmonica", self)
        about.triggered.connect(self._about)
        h.addAction(about)

    def _about(self) -> None:
        QMessageBox.about(
            self,
            "About Harmonica",
            f"<b>Harmonica {APP_VERSION}</b><br>Private, offline chat with OpenAI's open-weight gpt-oss models.",
        )

    def toggle_sidebar(self) -> None:
        self.sidebar.setVisible(not self.sidebar.isVisible())
        self.sidebar_action.setChecked(self.sidebar.isVisible())

    def focus_search(self) -> None:
        if not self.sidebar.isVisible():
            self.toggle_sidebar()
        self.sidebar.search.setFocus()
        self.sidebar.search.selectAll()

    # --- state helpers ---------------------------------------------------------------------------
    @property
    def generating(self) -> bool:
        return self._gen_worker is not None

    @property
    def loading(self) -> bool:
        return self._load_worker is not None

    @property
    def conversation(self) -> Conversation:
        """The visible conversation (the active branch) as chat messages."""
        return Conversation(messages=[message_from_row(r) for r, _ in self.session.view()])

    def _model_name(self) -> str | None:
        info = getattr(self.engine, "info", None) if self.engine is not None else None
        return getattr(info, "name", None) if info is not None else None

    def _refresh_view(self) -> None:
        has_messages = bool(self.chat.widgets)
        name = self._model_name()
        if has_messages:
            self.stack.setCurrentWidget(self.chat)
        elif name is None and not self.loading and not self._autoloading:
            self.stack.setCurrentWidget(self._ensure_first_run())  # no model yet: help get one
        else:
            self.stack.setCurrentWidget(self.empty)
        self.empty.set_model_loaded(name)
        self.composer.set_can_send(name is not None and not self.loading)
        cid = self.session.conversation_id
        extra = []
        reg = self._tool_registry
        if self.tools_enabled and reg is not None and reg.is_enabled("browser") and reg.browser_available(self.offline):
            extra.append("web browsing on")  # the one tool that reaches the network: always said
        self.header.set_state(
            self.session.title if cid else DEFAULT_TITLE, self.session.settings, cid is not None, extra
        )

    def _show_session(self) -> None:
        """Rebuild the chat from the store (after switching conversation or branch)."""
        self.chat.set_rows(self.session.view())
        self.sidebar.set_current(self.session.conversation_id)
        self.composer.set_effort(self.session.settings.reasoning_effort)
        self.context_banner.hide()
        self._refresh_view()

    def show_error(self, text: str) -> None:
        self.banner.show_message(text, "error")

    def show_notice(
        self, text: str, actions: Sequence[tuple[str, Callable[[], None]]] = (), timeout_ms: int = 0
    ) -> None:
        self.banner.show_message(text, "info", actions, timeout_ms)

    def _busy(self, what: str) -> bool:
        if self.generating:
            self.show_error(f"Stop the current answer before {what}.")
            return True
        return False

    # --- loading ---------------------------------------------------------------------------------
    def choose_model(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "Open a gpt-oss model", str(Path.home()), "GGUF models (*.gguf);;All files (*)"
        )
        if path:
            self.open_model(path)

    def open_model(self, path: str | Path) -> bool:
        """Start loading `path` in the background; False (with a message) if that can't start."""
        p = Path(path)
        if self._busy("loading another model"):
            return False
        if self.loading:
            self.show_error("A model is already loading. Cancel it first to open another one.")
            return False
        if not str(path).startswith("scripted:"):
            if p.suffix.lower() != ".gguf":
                self.show_error(f"“{p.name}” is not a GGUF model file. Harmonica opens gpt-oss models in .gguf format.")
                return False
            if not p.is_file():
                self.show_error(f"The file “{p}” does not exist or cannot be read.")
                return False
        try:
            if self.engine is None:
                self.engine = self._engine_factory()
        except Exception as exc:  # noqa: BLE001 - e.g. llama-cpp-python missing or broken
            self.show_error(f"The inference engine could not start: {exc}")
            return False
        self._cancel_title()
        self.banner.hide()
        name = p.stem if not str(path).startswith("scripted:") else "model"
        self.load_panel.start(name)
        self.open_action.setEnabled(False)
        self.status_model.setText(f"Loading {name}…")
        self.composer.set_can_send(False, "Loading the model…")
        settings = self.load_settings
        wanted = self.session.settings.context_size
        if settings is not None and wanted and wanted != settings.n_ctx:
            settings = dataclasses.replace(settings, n_ctx=wanted)
        w = GeneratorWorker(
            load_model_job,
            self.engine,
            str(path),
            settings,
            scheduler=self.scheduler,
            profile=self.hardware_profile,
            wishes=self._wishes(),
        )
        w.yielded.connect(self._on_load_event)
        w.errored.connect(self._on_load_error)
        w.finished.connect(self._on_load_finished)
        self._load_worker = w
        self._loading_path = str(path)
        start_worker(w)
        return True

    def _autoload(self, path: str) -> None:
        self._autoloading = False
        if self.autoload and self.engine is None and not self.loading:
            self.open_model(path)
        else:
            self._refresh_view()

    def cancel_load(self) -> None:
        if self._load_worker is not None:
            self._load_worker.quit()
            self.load_panel.cancel.setEnabled(False)
            self.load_panel.label.setText("Cancelling…")

    def _on_load_event(self, ev: object) -> None:
        if isinstance(ev, LoadPlanned):
            self.plan = ev.plan
            self.load_panel.label.setText(f"Loading {self.load_panel._name}: {ev.plan.summary()}…")
            self.load_panel.label.setToolTip("\n".join(ev.plan.reasons))
        elif isinstance(ev, LoadProgress):
            self.load_panel.set_fraction(ev.fraction)
        elif isinstance(ev, LoadDone):
            info = ev.info
            self.status_model.setText(f"{info.name}")
            self.status_model.setToolTip(str(info.path))
            self.status_context.setText(f"Context 0 / {info.n_ctx:,}")
            self.status_speed.setText("")
            self.setWindowTitle(f"{info.name} — Harmonica")
            if not str(info.path).startswith("scripted:"):
                self.store.set_setting("last_model", str(info.path))
            plan = self.plan if self.load_settings is None else None
            where = plan.summary().split(";")[0] if plan is not None else "your settings"
            backend = f"{plan.backend} · " if plan is not None else ""
            self.status_model.setToolTip(
                f"{info.path}\n{backend}{where}" + ("\n\n" + "\n".join(plan.reasons) if plan is not None else "")
            )
            if plan is not None:
                self.status_model.setText(f"{info.name} · {plan.backend}")
            if self.lab is not None:
                self.lab.refresh_model()
            self.model_loaded.emit(info)

    def _on_load_error(self, exc: BaseException) -> None:
        self.status_model.setText("No model")
        self.setWindowTitle("Harmonica")
        if isinstance(exc, EngineError):
            self.show_error(f"The model could not be loaded. {exc}")
        else:
            self.show_error(f"The model could not be loaded: {exc}")

    def _on_load_finished(self) -> None:
        self._load_worker = None
        self.load_panel.hide()
        self.open_action.setEnabled(True)
        self._refresh_view()

    def adopt_engine(self, engine: Any) -> None:
        """Use an engine that is already loaded (demo mode, the lab, tests)."""
        self.engine = engine
        self.scheduler.engine = engine
        if getattr(engine, "info", None) is not None:
            self._on_load_event(LoadDone(engine.info))
        self._refresh_view()

    # --- conversations ---------------------------------------------------------------------------
    def new_chat(self) -> None:
        if self._busy("starting a new chat"):
            return
        self.session = ChatSession(self.store)
        self._show_session()
        self.composer.edit.setFocus()

    def open_conversation(self, conversation_id: int) -> bool:
        if conversation_id == self.session.conversation_id:
            return True
        if self._busy("switching conversations"):
            self.sidebar.set_current(self.session.conversation_id)
            return False
        try:
            self.session = ChatSession(self.store, conversation_id)
        except StoreError as exc:
            self.show_error(str(exc))
            return False
        self.banner.hide()
        self._show_session()
        return True

    def set_conversation(self, conversation: Conversation) -> None:
        """Show an in-memory conversation by storing it as a new chat (demo mode, imports of old data)."""
        if self._busy("switching conversations"):
            return
        session = ChatSession(self.store)
        for m in conversation.messages:
            session.ensure()
            self.store.add_message_from(session.conversation_id, m)  # type: ignore[arg-type]
        self.session = session
        self.sidebar.refresh()
        self._show_session()

    def open_hit(self, conversation_id: int, message_id: int) -> None:
        """A search hit: open its conversation on the branch that holds it and show the message."""
        if self._busy("switching conversations"):
            return
        try:
            self.store.switch_branch(message_id)
        except StoreError as exc:
            self.show_error(str(exc))
            return
        if conversation_id == self.session.conversation_id:
            self._show_session()
        else:
            self.open_conversation(conversation_id)
        self.chat.scroll_to_row(message_id)

    def rename_conversation(self, conversation_id: int, title: str) -> None:
        try:
            self.store.rename_conversation(conversation_id, title)
        except StoreError as exc:
            self.show_error(str(exc))
        self.sidebar.refresh()
        self._refresh_view()

    def delete_conversation(self, conversation_id: int) -> None:
        """Soft delete with Undo (the store purges deleted chats after 30 days)."""
        if conversation_id == self.session.conversation_id and self._busy("deleting this chat"):
            return
        try:
            title = self.store.get_conversation(conversation_id).display_title
            self.store.delete_conversation(conversation_id)
        except StoreError as exc:
            self.show_error(str(exc))
            return
        if conversation_id == self.session.conversation_id:
            self.session = ChatSession(self.store)
            self._show_session()
        with self._tools_lock:  # tool-files hook: files go when the deletion is final (Undo gone)
            self.tool_files.deleted(conversation_id, self._tool_sessions.pop(conversation_id, None))
        QTimer.singleShot(self.tool_files.grace_ms, self.tool_files.finalize)
        self.sidebar.refresh()
        self.show_notice(f"Deleted “{title}”.", [("Undo", lambda: self.undo_delete(conversation_id))], timeout_ms=12000)

    def undo_delete(self, conversation_id: int) -> None:
        restored = self.tool_files.restored(conversation_id)  # tool-files hook
        if restored is not None:
            with self._tools_lock:
                self._tool_sessions[conversation_id] = restored
        self.store.restore_conversation(conversation_id)
        self.sidebar.refresh()
        self.open_conversation(conversation_id)

    def edit_settings(self) -> None:
        dlg = ConversationSettingsDialog(self.session.settings, self.store, getattr(self.engine, "n_ctx", None), self)
        if dlg.exec() == QDialog.DialogCode.Accepted:
            self.apply_settings(dlg.settings())

    def apply_settings(self, settings: ConversationSettings) -> None:
        old = self.session.settings
        self.session.set_settings(settings)
        self.composer.set_effort(settings.reasoning_effort)
        self._refresh_view()
        n_ctx = getattr(self.engine, "n_ctx", 0)
        if (
            settings.context_size
            and n_ctx
            and settings.context_size != n_ctx
            and settings.context_size != old.context_size
        ):
            path = getattr(getattr(self.engine, "info", None), "path", None)
            actions = (
                [("Reload model", lambda: self.open_model(path))]
                if path and not str(path).startswith("scripted:")
                else []
            )
            self.show_notice(
                f"This chat asks for a {settings.context_size:,}-token context; the model is loaded with {n_ctx:,}. "
                "Reload the model to use it.",
                actions,
            )

    # --- export / import -------------------------------------------------------------------------
    def choose_export(self, fmt: str, conversation_id: int | None = None) -> None:
        cid = conversation_id or self.session.conversation_id
        if cid is None:
            self.show_error("There is nothing to export yet: this chat has no messages.")
            return
        title = self.store.get_conversation(cid).display_title
        suffix, filt = (".json", "JSON (*.json)") if fmt == "json" else (".md", "Markdown (*.md)")
        name = "".join(ch if ch.isalnum() or ch in " -_" else "_" for ch in title).strip() or "conversation"
        path, _ = QFileDialog.getSaveFileName(self, "Export chat", str(Path.home() / f"{name}{suffix}"), filt)
        if path:
            self.export_conversation(path, fmt, cid)

    def export_conversation(self, path: str | Path, fmt: str, conversation_id: int | None = None) -> bool:
        from app.core import export

        cid = conversation_id or self.session.conversation_id
        if cid is None:
            return False
        try:
            if fmt == "json":
                export.write_json(self.store, path, [cid])
            else:
                export.export_markdown(self.store, cid, include_reasoning=fmt == "md-reasoning", path=path)
        except (OSError, StoreError) as exc:
            self.show_error(f"The chat could not be exported: {exc}")
            return False
        self.show_notice(f"Exported to {path}.", timeout_ms=8000)
        return True

    def choose_export_all(self) -> None:
        path, _ = QFileDialog.getSaveFileName(
            self, "Export all conversations", str(Path.home() / "harmonica-conversations.json"), "JSON (*.json)"
        )
        if path:
            from app.core import export

            try:
                export.write_json(self.store, path)
            except (OSError, StoreError) as exc:
                self.show_error(f"The conversations could not be exported: {exc}")
                return
            self.show_notice(f"Exported {self.store.count_conversations()} conversations to {path}.", timeout_ms=8000)

    def choose_import(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "Import conversations", str(Path.home()), "Harmonica export (*.json);;All files (*)"
        )
        if path:
            self.import_conversations(path)

    def import_conversations(self, path: str | Path) -> list[int]:
        from app.core import export

        try:
            ids = export.import_json(self.store, path)
        except (export.ImportFormatError, OSError, StoreError) as exc:
            self.show_error(f"Nothing was imported: {exc}")
            return []
        self.sidebar.refresh()
        if ids and not self.generating:
            self.open_conversation(ids[0])
        self.show_notice(f"Imported {len(ids)} conversation{'s' if len(ids) != 1 else ''}.", timeout_ms=8000)
        return ids

    # --- chatting --------------------------------------------------------------------------------
    def _can_generate(self) -> bool:
        if self.generating or self.loading:
            return False
        if self.engine is None or not getattr(self.engine, "loaded", False):
            self.show_error("Open a model first: File → Open model…, or drop a .gguf file onto the window.")
            return False
        return True

    def send(self, text: str, effort: str) -> bool:
        if not self._can_generate():
            return False
        self.banner.hide()
        self._cancel_title()
        try:
            row = self.session.add_user(text)
        except StoreError as exc:
            self.show_error(f"The message could not be saved: {exc}")
            self.composer.edit.setPlainText(text)  # nothing typed is lost
            return False
        self.chat.add_user(message_from_row(row), row.id, self.store.siblings(row.id))
        self.sidebar.refresh()
        return self._generate(effort=effort)

    def edit_and_resend(self, row_id: int, text: str) -> bool:
        if not self._can_generate():
            return False
        self._cancel_title()
        try:
            row = self.session.edit_user(row_id, text)
        except StoreError as exc:
            self.show_error(str(exc))
            return False
        self._truncate_from(row_id)
        self.chat.add_user(message_from_row(row), row.id, self.store.siblings(row.id))
        return self._generate(effort=self.composer.current_effort())

    def regenerate(self, row_id: int) -> bool:
        if not self._can_generate():
            return False
        self._cancel_title()
        parent = self.session.regenerate_parent(row_id)
        turn_start = self._turn_start(row_id)
        if turn_start is not None:
            self._truncate_from(turn_start)
        row = self.store.get_message(row_id)
        return self._generate(effort=row.effort or self.composer.current_effort(), parent_id=parent)

    def continue_answer(self, row_id: int) -> bool:
        if not self._can_generate():
            return False
        self._cancel_title()
        row = self.store.get_message(row_id)
        self._truncate_from(row_id)
        ok = self._generate(effort=row.effort or self.composer.current_effort(), resume_id=row_id)
        if ok and self._live is not None:
            # The old text is shown at once; the new text streams after it.
            if row.thinking:
                self._live.append_reasoning(row.thinking)
            if row.content:
                self._live.append_answer(row.content)
        return ok

    def _turn_start(self, row_id: int) -> int | None:
        """The first assistant message of the turn that `row_id` belongs to (what regenerating replaces)."""
        path = self.store.path_to(row_id)
        start = None
        for r in reversed(path):
            if r.role in ("user", "system", "developer"):
                break
            start = r.id
        return start

    def _truncate_from(self, row_id: int) -> None:
        """Remove the widgets of `row_id` and everything after it (that branch is being replaced)."""
        w = self.chat.widget_for_row(row_id)
        if w is None:
            return
        i = self.chat.widgets.index(w)
        for x in list(self.chat.widgets[i:]):
            self.chat.remove_widget(x)

    def _generate(self, *, effort: str, parent_id: Any = ACTIVE, resume_id: int | None = None) -> bool:
        self._refresh_view()
        self._live = self.chat.start_assistant(model=self._model_name(), effort=effort)
        self._live_message = None
        self._live_saved = False
        self.composer.set_generating(True)
        self.status_speed.setText("Generating…")
        cid = self.session.ensure()
        w = GeneratorWorker(
            answer_job,
            self.session,
            self.scheduler.client("chat"),
            (lambda: self.tool_session(cid)) if self.tools_enabled else None,
            parent_id=parent_id,
            resume_id=resume_id,
            effort=effort,
            sampling=self.sampling,
            date=self.date,
            grammar=self.grammar,
        )
        w.yielded.connect(self._on_turn_event)
        w.errored.connect(self._on_turn_error)
        w.finished.connect(self._on_turn_finished)
        self._gen_worker = w
        start_worker(w)
        return True

    def stop(self) -> None:
        if self._gen_worker is not None:
            self._gen_worker.quit()
            self.status_speed.setText("Stopping…")

    def _on_turn_event(self, ev: object) -> None:
        if isinstance(ev, MessageSaved):
            self._on_saved(ev.row)
            return
        if isinstance(ev, TurnStarted) and self._live is not None and self._live.message is not None:
            # The next generation of a tool loop: it continues the same answer below the tool cards.
            self._live = self.chat.start_assistant(
                model=self._model_name(), effort=self._live.effort, continuation=True
            )
            self._live_saved = False
        w = self._live
        if self._on_tool_event(ev):
            return
        if isinstance(ev, ContextTrimmed):
            self.show_notice(
                f"{ev.dropped} of the oldest messages were left out of the prompt so this chat fits the "
                "model's context window.",
                timeout_ms=10000,
            )
            return
        if w is None:
            return
        if isinstance(ev, ReasoningDelta):
            w.append_reasoning(ev.text)
        elif isinstance(ev, FinalDelta):
            w.append_answer(ev.text)
        elif isinstance(ev, PreambleDelta):
            w.append_preamble(ev.text)
        elif isinstance(ev, ToolCall):
            w.add_tool_call(ToolCallRecord(ev.recipient, ev.arguments, ev.content_type, ev.channel))
        elif isinstance(ev, TurnStarted):
            self._live_message = ev.message
            self.status_context.setText(f"Context {ev.prompt_tokens:,} / {ev.n_ctx:,}")
        elif isinstance(ev, TurnFinished):
            self._finish_live(ev.message)

    def _finish_live(self, message: Message) -> None:
        if self._live is None:
            return
        self._live.finish(message)
        st = message.stats
        if st is not None:
            self.status_speed.setText(f"{st.tokens_per_s:.1f} tok/s" if st.tokens_per_s else "")
            n_ctx = getattr(self.engine, "n_ctx", 0)
            used = st.prompt_tokens + st.generated_tokens
            self.status_context.setText(f"Context {used:,} / {n_ctx:,}")
            self._check_context(used, n_ctx)
        self.turn_finished.emit(message)

    def _on_saved(self, row: MessageRow) -> None:
        if row.role != "assistant":
            return  # a tool result: its card already shows it
        self._live_saved = True
        if self._live is not None:
            self._live.set_stored(row.id, row.status, self.store.siblings(row.id))
        self.chat._pin_latest()
        self.sidebar.refresh()
        self._refresh_view()

    def _on_tool_event(self, ev: object) -> bool:
        """Tool-loop events → cards on the live answer. Returns whether `ev` was one."""
        from app.core.tools import loop

        w = self._live
        if isinstance(ev, (loop.ToolCallStarted, loop.ToolRunning, loop.ToolFinished)):
            if w is not None:
                card = w.add_tool_run(ev.run)
                self._wire_card(card)
            return True
        if isinstance(ev, (loop.ApprovalRequest, loop.FileRequest)):
            if w is not None:
                card = w.add_tool_run(ev.run)
                self._wire_card(card)
                if isinstance(ev, loop.ApprovalRequest):
                    card.attach_approval(ev)
                    self.status_speed.setText("Waiting for your approval…")
                else:
                    card.attach_file_request(ev)
                    self.status_speed.setText("Waiting for you to pick a file…")
                # The question must be in view: bring the card's buttons up once it is laid out.
                self.chat.show_widget(card)
            return True
        if isinstance(ev, loop.RoundLimitReached):
            self.show_notice(ev.text)
            return True
        return isinstance(ev, loop.LoopFinished)

    def _wire_card(self, card: Any) -> None:
        if getattr(card, "_harmonica_wired", False):
            return
        card._harmonica_wired = True
        cid = self.session.conversation_id
        if hasattr(card, "restart_requested") and cid is not None:
            card.restart_requested.connect(lambda cid=cid: self.restart_kernel(cid))

    def _check_context(self, used: int, n_ctx: int) -> None:
        """Warn before the context window is full; offer a new chat or trimming (said in the UI)."""
        if not n_ctx or used < CONTEXT_WARN_FRACTION * n_ctx or self.session.settings.trim_oldest:
            self.context_banner.hide()
            return
        pct = round(100 * used / n_ctx)
        self.context_banner.show_message(
            f"This chat uses {pct}% of the model's context window ({used:,} of {n_ctx:,} tokens). "
            "When it is full the model cannot answer: start a new chat, or let Harmonica leave the oldest "
            "turns out of the prompt.",
            "info",
            [("New chat", self.new_chat), ("Trim oldest turns", self.enable_trimming)],
        )

    def enable_trimming(self) -> None:
        s = dataclasses.replace(self.session.settings, trim_oldest=True)
        self.apply_settings(s)
        self.show_notice(
            "From now on the oldest turns of this chat are left out of the prompt when it is too long.", timeout_ms=8000
        )

    def _on_turn_error(self, exc: BaseException) -> None:
        live_msg = self._live_message
        if self._live is not None:
            if live_msg is not None:
                self._finish_live(live_msg)
            else:
                # Nothing was generated: drop the empty message widget; the unanswered question
                # stays visible so the user can retry after fixing the cause.
                self.chat.remove_widget(self._live)
                self._live = None
        self.status_speed.setText("")
        if isinstance(exc, (EngineError, ChatError, StoreError)):
            self.show_error(str(exc))
        else:
            self.show_exception(exc)

    def _on_turn_finished(self) -> None:
        self._gen_worker = None
        QTimer.singleShot(0, self._maybe_title)
        if self._live is not None and self._live_message is not None and not self._live_saved:
            # Generation ended without the stored row (an error): reload the branch from the store.
            self._show_session()
        self._live = None
        self.composer.set_generating(False)
        if self.status_speed.text() in ("Generating…", "Stopping…"):
            self.status_speed.setText("")

    # --- message actions -------------------------------------------------------------------------
    def _on_message_action(self, name: str, row_id: int) -> None:
        if name in ("copy", "copy_text"):
            self.copy_message(row_id, plain=name == "copy_text")
        elif name == "regenerate":
            self.regenerate(row_id)
        elif name == "continue":
            self.continue_answer(row_id)
        elif name == "delete":
            self.delete_message(row_id)
        elif name in ("prev", "next"):
            self.navigate_branch(row_id, -1 if name == "prev" else 1)

    def copy_message(self, row_id: int, *, plain: bool = False) -> str:
        from app.core import export

        row = self.store.get_message(row_id)
        text = (
            export.markdown_to_text(row.content)
            if plain and row.role == "assistant"
            else export.message_markdown(row)
            if row.role == "assistant"
            else row.content
        )
        QGuiApplication.clipboard().setText(text)
        self.statusBar().showMessage("Copied.", 2000)
        return text

    def navigate_branch(self, row_id: int, delta: int) -> None:
        if self._busy("switching to another version"):
            return
        self.session.navigate(row_id, delta)
        self._show_session()

    def confirm(self, title: str, text: str, ok: str) -> bool:
        box = QMessageBox(QMessageBox.Icon.Question, title, text, parent=self)
        yes = box.addButton(ok, QMessageBox.ButtonRole.DestructiveRole)
        box.addButton(QMessageBox.StandardButton.Cancel)
        box.exec()
        return box.clickedButton() is yes

    def delete_message(self, row_id: int) -> None:
        if self._busy("deleting a message"):
            return
        if not self.confirm("Delete message", "Delete this message? Replies to it are kept.", "Delete"):
            return
        try:
            self.session.delete(row_id)
        except StoreError as exc:
            self.show_error(str(exc))
            return
        self._show_session()
        self.sidebar.refresh()

    # --- model-written titles --------------------------------------------------------------------
    def _maybe_title(self) -> None:
        """After the first answer of a chat, ask the model for a short title (in the background)."""
        if self._closing or not self.auto_title or self._title_worker is not None or self.engine is None:
            return
        view = self.session.view()
        answers = [r for r, _ in view if r.role == "assistant" and r.status == "complete" and not r.tool_calls]
        if len(answers) != 1 or self.generating or self.session.title_request() is None:
            return
        w = GeneratorWorker(self.session.generate_title, self.scheduler.client("chat"), date=self.date, grammar=None)
        w.yielded.connect(self._on_title)
        w.errored.connect(lambda _exc: None)  # a title is a nicety: the first-line title stays
        w.finished.connect(self._on_title_finished)
        self._title_worker = w
        start_worker(w)

    def _on_title(self, _title: str) -> None:
        if not self._closing:  # a title that arrives after the window closed has nowhere to go
            self.sidebar.refresh()
            self._refresh_view()

    def _on_title_finished(self) -> None:
        self._title_worker = None

    def _cancel_title(self) -> None:
        """The user's next action comes first: stop a title being written and wait for the engine."""
        w = self._title_worker
        if w is not None:
            w.quit()
            w.wait(5.0)

    def _panel_dialog(self, panel: QWidget, title: str, name: str, size: tuple[int, int]) -> QDialog:
        """A modeless window around one of the app's panels (kept and shown again, not rebuilt)."""
        dlg = QDialog(self, objectName=name)
        dlg.setWindowTitle(title)
        dlg.resize(*size)
        lay = QVBoxLayout(dlg)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(panel)
        return dlg

    # --- hardware, plans and models ----------------------------------------------------------------
    def hardware_profile(self) -> Any:
        """This machine (detected on first use, from a worker thread; probes can take a second)."""
        with self._profile_lock:
            if self._profile is None:
                from app.core import hardware

                self._profile = hardware.detect()
            return self._profile

    def _wishes(self) -> Any:
        """The user's saved load preferences (the hardware panel), with this chat's context size."""
        from app.core.planner import Wishes

        saved = self.store.get_setting("load_wishes", {})
        known = {f.name for f in dataclasses.fields(Wishes)}
        try:
            wishes = Wishes(**{k: v for k, v in (saved if isinstance(saved, dict) else {}).items() if k in known})
        except TypeError:
            wishes = Wishes()
        ctx = self.session.settings.context_size
        return dataclasses.replace(wishes, n_ctx=ctx) if ctx else wishes

    def show_hardware(self) -> Any:
        """What this computer has, how the model will run and why; Advanced overrides."""
        from app.core.planner import model_info_for_file
        from app.ui.hardware_panel import HardwarePanel

        path = self._current_model_path()
        info = None
        if path is not None:
            try:
                info = model_info_for_file(path)
            except Exception:  # noqa: BLE001 - the panel shows "no model chosen"
                info = None
        if self._hardware_dialog is None:
            panel = HardwarePanel(
                self.hardware_profile, info, wishes=self._wishes(), load_label="Reload with these settings"
            )
            panel.load_requested.connect(self._load_with)
            panel.profile_ready.connect(lambda p: setattr(self, "_profile", p))
            self.hardware_panel = panel
            self._hardware_dialog = self._panel_dialog(
                panel, "Hardware and load settings", "HardwareDialog", (860, 760)
            )
        else:
            self.hardware_panel.set_model(info)
        self._hardware_dialog.show()
        self._hardware_dialog.raise_()
        return self.hardware_panel

    def _load_with(self, settings: LoadSettings) -> None:
        """The hardware panel's Load: keep its overrides (or none) and reload the current model."""
        panel = self.hardware_panel
        wishes = panel.wishes() if panel is not None else None
        if wishes is not None:
            self.store.set_setting(
                "load_wishes", {k: v for k, v in dataclasses.asdict(wishes).items() if v is not None}
            )
        overridden = wishes is not None and any(
            getattr(wishes, f) is not None
            for f in (
                "n_gpu_layers",
                "n_cpu_moe",
                "flash_attn",
                "kv_type",
                "n_threads",
                "use_mmap",
                "use_mlock",
                "backend",
            )
        )
        self.load_settings = settings if overridden else None
        path = self._current_model_path()
        if self._hardware_dialog is not None:
            self._hardware_dialog.hide()
        if path is not None:
            self.open_model(path)

    def _current_model_path(self) -> str | None:
        info = getattr(self.engine, "info", None)
        path = getattr(info, "path", None)
        if path is not None and not str(path).startswith("scripted:"):
            return str(path)
        last = self.store.get_setting("last_model")
        return str(last) if last else None

    @property
    def downloads(self) -> Any:
        """The app's download controller, shared by the model manager and the first-run page."""
        if self._downloads is None:
            from app.ui.downloads import DownloadController

            self._downloads = DownloadController(parent=self)
        return self._downloads

    def show_models(self) -> Any:
        """Download gpt-oss, manage the model files on this computer, choose one to load."""
        from app.ui.model_manager import ModelManagerDialog

        if self._models_dialog is None:
            dlg = ModelManagerDialog(self.downloads, parent=self, current_model=self._current_model_path())
            dlg.model_chosen.connect(self.open_model)
            self._models_dialog = dlg
        else:
            self._models_dialog.set_current_model(self._current_model_path())
            self._models_dialog.refresh_models()
        self._models_dialog.show()
        self._models_dialog.raise_()
        return self._models_dialog

    def _ensure_first_run(self) -> Any:
        if self.first_run is None:
            from app.ui.first_run import FirstRunPage

            page = FirstRunPage(self.downloads, hardware=self._profile)
            page.model_ready.connect(self.open_model)
            page.manage_requested.connect(self.show_models)
            self.stack.addWidget(page)
            self.first_run = page
        return self.first_run

    def show_lab(self) -> Any:
        """The effort lab: one prompt or a problem set at low/medium/high, measured and charted."""
        if self.lab is None:
            from app.ui.compare import CompareWindow

            self.lab = CompareWindow(
                lambda: (
                    self.scheduler.client("lab") if getattr(self.scheduler.engine, "info", None) is not None else None
                )
            )
        self.lab.refresh_model()
        self.lab.show()
        self.lab.raise_()
        return self.lab

    # --- tools -----------------------------------------------------------------------------------
    @property
    def tool_registry(self) -> Any:
        """The app's tools (built on first use: it loads the user's tool files)."""
        with self._tools_lock:
            if self._tool_registry is None:
                from app.core.tools.registry import ToolRegistry

                self._tool_registry = ToolRegistry()
            return self._tool_registry

    def tool_session(self, conversation_id: int) -> Any:
        """The tools of one chat (its python kernel keeps state between calls). Any thread."""
        registry = self.tool_registry
        with self._tools_lock:
            ts = self._tool_sessions.get(conversation_id)
            if ts is None:
                from app.core.tools.registry import ToolSession

                ts = self._tool_sessions[conversation_id] = ToolSession(
                    registry,
                    str(conversation_id),
                    offline=self.offline,
                    scratch=self.tool_files.scratch(conversation_id),  # tool-files hook
                )
            return ts

    def restart_kernel(self, conversation_id: int) -> None:
        ts = self._tool_sessions.get(conversation_id)
        if ts is not None:
            ts.restart_kernel()
            self.show_notice("The python kernel of this chat was restarted: its variables are gone.", timeout_ms=6000)

    def show_tools(self) -> Any:
        """Settings for tools: on/off, approvals, user tool files, sandbox guarantees, browser."""
        from app.ui.tools_page import ToolsPage

        if self._tools_dialog is None:
            page = ToolsPage(self.tool_registry, offline=self.offline)
            page.settings_changed.connect(self._refresh_view)
            self.tools_page = page
            self._tools_dialog = self._panel_dialog(page, "Tools", "ToolsDialog", (760, 720))
        self._tools_dialog.show()
        self._tools_dialog.raise_()
        return self.tools_page

    # --- sharing the engine: queue state and the API server ---------------------------------------
    def _on_queue(self, state: QueueState) -> None:
        """While the chat waits for its turn behind another user of the model, say so."""
        if self._gen_worker is None or self._live is None:
            return
        if state.running not in (None, "chat") and state.waiting.get("chat"):
            self.status_speed.setText(f"Waiting for the model ({state.describe()})…")
        elif self.status_speed.text().startswith("Waiting for the model"):
            self.status_speed.setText("Generating…")

    def _server_settings(self) -> dict[str, Any]:
        value = self.store.get_setting("api_server", {})
        return value if isinstance(value, dict) else {}

    def server(self, *, start: bool = False) -> Any:
        """Show the API server panel (built on first use); `start` switches the server on."""
        if self.server_panel is None:
            from app.core.server import ServerSettings
            from app.ui.server_panel import ServerPanel

            saved = self._server_settings()
            try:
                settings = ServerSettings(
                    port=int(saved.get("port", ServerSettings.port)),
                    api_key=str(saved.get("api_key", "")),
                    allow_network=bool(saved.get("allow_network", False)),
                )
            except (TypeError, ValueError):
                settings = ServerSettings()
            panel = ServerPanel(self.scheduler, settings=settings)
            panel.settings_changed.connect(self._save_server_settings)
            panel.running_changed.connect(self._on_server_running)
            self.server_panel = panel
            self._server_dialog = self._panel_dialog(panel, "Local API server", "ServerDialog", (720, 680))
        if start:
            self.server_panel.start()
        else:
            assert self._server_dialog is not None
            self._server_dialog.show()
            self._server_dialog.raise_()
        return self.server_panel

    def _save_server_settings(self, settings: Any) -> None:
        saved = self._server_settings()
        saved.update(port=settings.port, api_key=settings.api_key, allow_network=settings.allow_network)
        self.store.set_setting("api_server", saved)

    def _on_server_running(self, running: bool) -> None:
        if not self._closing:  # quitting stops the server but must not forget that it was on
            saved = self._server_settings()
            saved["enabled"] = running  # on again at the next start, as the user left it
            self.store.set_setting("api_server", saved)
        panel = self.server_panel
        if running and panel is not None:
            exposed = getattr(panel.server, "exposed", False)
            self.status_server.setText(f"API {panel.base_url}" + (" · network" if exposed else ""))
            self.status_server.setToolTip("The local OpenAI-compatible server is on (Tools → Local API server…)")
            self.status_server.show()
        else:
            self.status_server.hide()

    # --- errors ----------------------------------------------------------------------------------
    def show_exception(self, exc: BaseException, tb_text: str | None = None) -> None:
        """An unexpected error: a dialog with details; the app keeps running."""
        if self._error_dialog_open:
            return
        self._error_dialog_open = True
        try:
            text = tb_text or getattr(exc, "__traceback_text__", None) or "".join(traceback.format_exception(exc))
            box = QMessageBox(
                QMessageBox.Icon.Critical,
                "Something went wrong",
                f"Harmonica hit an unexpected error and recovered:\n\n{type(exc).__name__}: {exc}",
                parent=self,
            )
            box.setDetailedText(text)
            box.exec()
        finally:
            self._error_dialog_open = False

    # --- drag & drop -----------------------------------------------------------------------------
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
            self.show_error("Only gpt-oss model files in .gguf format can be dropped here.")
            e.ignore()
            return
        e.acceptProposedAction()
        self.open_model(ggufs[0])

    # --- shutdown --------------------------------------------------------------------------------
    def closeEvent(self, e: QCloseEvent) -> None:
        self._closing = True
        if self.lab is not None:
            self.lab.shutdown()
            self.lab.close()
        if self._downloads is not None:
            self._downloads.shutdown()
        if self.server_panel is not None:
            self.server_panel.shutdown()
        workers = (self._gen_worker, self._load_worker, self._title_worker)
        for w in workers:
            if w is not None:
                w.quit()
        for w in workers:
            if w is not None:
                w.wait(10.0)
        self.scheduler.close()
        for ts in self._tool_sessions.values():
            ts.close()
        self.tool_files.finalize(everything=True)  # tool-files hook: no Undo after closing
        if self._tool_registry is not None:
            self._tool_registry.close()
        if self._owns_store:
            self.store.close()
        super().closeEvent(e)
