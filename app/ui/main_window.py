"""The main window: chat, composer, model loading, status; forwards user intent to workers."""

from __future__ import annotations

import queue
import threading
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QAction, QCloseEvent, QDragEnterEvent, QDropEvent, QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QFileDialog,
    QFrame,
    QHBoxLayout,
    QLabel,
    QMainWindow,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QStackedWidget,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from app import __version__ as APP_VERSION
from app.core.chat import ChatError, Conversation, EngineLike, Message, ToolCallRecord, TurnFinished, TurnStarted, run_turn
from app.core.engine import EngineError, LoadSettings, Sampling
from app.core.harmony import FinalDelta, PreambleDelta, ReasoningDelta, ToolCall
from app.ui import style
from app.ui.chat_view import ChatView
from app.ui.composer import Composer
from app.ui.message_widget import AssistantMessageWidget
from app.ui.workers import GeneratorWorker, start_worker


# --- Jobs (plain generators; GeneratorWorker runs them off the UI thread) -------------------------
@dataclass(frozen=True)
class LoadProgress:
    fraction: float


@dataclass(frozen=True)
class LoadDone:
    info: Any


def load_model_job(engine: Any, path: str, settings: LoadSettings, *, cancel: threading.Event) -> Iterator[LoadProgress | LoadDone]:
    """Load a model, yielding progress; llama.cpp reports progress by callback, so the load runs
    on a helper thread and its callbacks are turned into yields here."""
    events: queue.Queue[tuple[str, Any]] = queue.Queue()

    def progress(fraction: float) -> bool:
        events.put(("progress", float(fraction)))
        return not cancel.is_set()

    def target() -> None:
        try:
            if getattr(engine, "loaded", False):
                engine.unload()  # freeing gigabytes takes a moment: not on the UI thread
            events.put(("done", engine.load(path, settings, progress)))
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


def warm_up_job(theme: Any, *, cancel: threading.Event) -> Iterator[None]:
    """Import pygments lexers off the UI thread so the first code block does not stall it."""
    from app.core.markdown import warm_up

    warm_up(theme)
    yield None


def default_engine_factory() -> EngineLike:
    from app.core.engine import Engine  # imported late: llama_cpp is heavy and may be missing

    return Engine()  # type: ignore[no-any-return]


# --- Small widgets -------------------------------------------------------------------------------
class Banner(QFrame):
    """An inline message above the composer (errors and notices); dismissable."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent, objectName="Banner")
        lay = QHBoxLayout(self)
        lay.setContentsMargins(14, 10, 8, 10)
        self.text = QLabel("", objectName="BannerText")
        self.text.setWordWrap(True)
        self.text.setTextFormat(Qt.TextFormat.PlainText)
        self.text.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        lay.addWidget(self.text, 1)
        close = QToolButton(objectName="BannerClose")
        close.setIcon(style.icon("close"))
        close.setToolTip("Dismiss")
        close.clicked.connect(self.hide)
        lay.addWidget(close, 0, Qt.AlignmentFlag.AlignTop)
        self.hide()

    def show_message(self, text: str, kind: str = "error") -> None:
        self.setProperty("kind", kind)
        self.style().unpolish(self)
        self.style().polish(self)
        self.text.setText(text)
        self.show()


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
    """Chat window. `engine_factory` makes the engine (tests pass a ScriptedEngine)."""

    model_loaded = Signal(object)
    turn_finished = Signal(object)

    def __init__(self, engine_factory: Callable[[], EngineLike] | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._engine_factory = engine_factory or default_engine_factory
        self.engine: Any = None
        self.conversation = Conversation()
        self.sampling = Sampling()
        self.load_settings = LoadSettings()
        self.developer: str | None = None
        self.grammar: str | None = None  # tests force harmony-shaped output from random weights
        self.date: Any = None
        self._gen_worker: GeneratorWorker | None = None
        self._load_worker: GeneratorWorker | None = None
        self._live: AssistantMessageWidget | None = None
        self._live_message: Message | None = None
        self._error_dialog_open = False

        self.setWindowTitle("Harmonica")
        self.setWindowIcon(style.icon("harmonica"))
        self.resize(1040, 780)
        self.setAcceptDrops(True)

        central = QWidget(objectName="ChatPage")
        lay = QVBoxLayout(central)
        lay.setContentsMargins(0, 0, 0, 8)
        lay.setSpacing(0)
        self.stack = QStackedWidget()
        self.empty = EmptyState()
        self.empty.open_requested.connect(self.choose_model)
        self.chat = ChatView()
        self.stack.addWidget(self.empty)
        self.stack.addWidget(self.chat)
        lay.addWidget(self.stack, 1)

        self.load_panel = LoadPanel()
        self.load_panel.cancel_requested.connect(self.cancel_load)
        self.banner = Banner()
        for w in (self.load_panel, self.banner):
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
        self.setCentralWidget(central)

        self._build_menu()
        stop_shortcut = QShortcut(QKeySequence(Qt.Key.Key_Escape), self)
        stop_shortcut.activated.connect(self.stop)
        sb = self.statusBar()
        sb.setSizeGripEnabled(False)
        self.status_model = QLabel("No model")
        self.status_speed = QLabel("")
        self.status_context = QLabel("")
        sb.addWidget(self.status_model, 1)
        sb.addPermanentWidget(self.status_speed)
        sb.addPermanentWidget(self.status_context)
        start_worker(GeneratorWorker(warm_up_job, style.current().markdown))

    def _build_menu(self) -> None:
        m = self.menuBar().addMenu("&File")
        self.open_action = QAction("&Open model…", self, shortcut=QKeySequence.StandardKey.Open)
        self.open_action.triggered.connect(self.choose_model)
        m.addAction(self.open_action)
        self.new_action = QAction("&New chat", self, shortcut=QKeySequence.StandardKey.New)
        self.new_action.triggered.connect(self.new_chat)
        m.addAction(self.new_action)
        m.addSeparator()
        quit_action = QAction("&Quit", self, shortcut=QKeySequence.StandardKey.Quit)
        quit_action.triggered.connect(self.close)
        m.addAction(quit_action)
        h = self.menuBar().addMenu("&Help")
        about = QAction("&About Harmonica", self)
        about.triggered.connect(self._about)
        h.addAction(about)

    def _about(self) -> None:
        QMessageBox.about(
            self, "About Harmonica",
            f"<b>Harmonica {APP_VERSION}</b><br>Private, offline chat with OpenAI's open-weight gpt-oss models.",
        )

    # --- state helpers ---------------------------------------------------------------------------
    @property
    def generating(self) -> bool:
        return self._gen_worker is not None

    @property
    def loading(self) -> bool:
        return self._load_worker is not None

    def _model_name(self) -> str | None:
        info = getattr(self.engine, "info", None) if self.engine is not None else None
        return getattr(info, "name", None) if info is not None else None

    def _refresh_view(self) -> None:
        has_messages = bool(self.chat.widgets)
        self.stack.setCurrentWidget(self.chat if has_messages else self.empty)
        name = self._model_name()
        self.empty.set_model_loaded(name)
        self.composer.set_can_send(name is not None and not self.loading)

    def show_error(self, text: str) -> None:
        self.banner.show_message(text, "error")

    def show_notice(self, text: str) -> None:
        self.banner.show_message(text, "info")

    # --- loading ---------------------------------------------------------------------------------
    def choose_model(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open a gpt-oss model", str(Path.home()), "GGUF models (*.gguf);;All files (*)")
        if path:
            self.open_model(path)

    def open_model(self, path: str | Path) -> bool:
        """Start loading `path` in the background; False (with a message) if that can't start."""
        p = Path(path)
        if self.generating:
            self.show_error("Stop the current answer before loading another model.")
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
        self.banner.hide()
        name = p.stem if not str(path).startswith("scripted:") else "model"
        self.load_panel.start(name)
        self.open_action.setEnabled(False)
        self.status_model.setText(f"Loading {name}…")
        self.composer.set_can_send(False, "Loading the model…")
        w = GeneratorWorker(load_model_job, self.engine, str(path), self.load_settings)
        w.yielded.connect(self._on_load_event)
        w.errored.connect(self._on_load_error)
        w.finished.connect(self._on_load_finished)
        self._load_worker = w
        start_worker(w)
        return True

    def cancel_load(self) -> None:
        if self._load_worker is not None:
            self._load_worker.quit()
            self.load_panel.cancel.setEnabled(False)
            self.load_panel.label.setText("Cancelling…")

    def _on_load_event(self, ev: object) -> None:
        if isinstance(ev, LoadProgress):
            self.load_panel.set_fraction(ev.fraction)
        elif isinstance(ev, LoadDone):
            info = ev.info
            self.status_model.setText(f"{info.name}")
            self.status_model.setToolTip(str(info.path))
            self.status_context.setText(f"Context 0 / {info.n_ctx:,}")
            self.status_speed.setText("")
            self.setWindowTitle(f"{info.name} — Harmonica")
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

    # --- chatting --------------------------------------------------------------------------------
    def new_chat(self) -> None:
        if self.generating:
            self.show_error("Stop the current answer before starting a new chat.")
            return
        self.conversation = Conversation()
        self.chat.clear()
        self._refresh_view()
        self.composer.edit.setFocus()

    def set_conversation(self, conversation: Conversation) -> None:
        """Show another conversation (e.g. one reopened from history)."""
        if self.generating:
            self.show_error("Stop the current answer before switching conversations.")
            return
        self.conversation = conversation
        self.chat.set_conversation(conversation)
        self._refresh_view()

    def adopt_engine(self, engine: Any) -> None:
        """Use an engine that is already loaded (demo mode, the lab, tests)."""
        self.engine = engine
        if getattr(engine, "info", None) is not None:
            self._on_load_event(LoadDone(engine.info))
        self._refresh_view()

    def send(self, text: str, effort: str) -> bool:
        if self.generating or self.loading:
            return False
        if self.engine is None or not getattr(self.engine, "loaded", False):
            self.show_error("Open a model first: File → Open model…, or drop a .gguf file onto the window.")
            return False
        self.banner.hide()
        msg = self.conversation.add_user(text)
        self.chat.add_user(msg)
        self._refresh_view()
        self._live = self.chat.start_assistant(model=self._model_name(), effort=effort)
        self._live_message = None
        self.composer.set_generating(True)
        self.status_speed.setText("Generating…")
        w = GeneratorWorker(
            run_turn, self.engine, self.conversation, effort=effort, sampling=self.sampling,
            developer=self.developer, date=self.date, grammar=self.grammar,
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
        w = self._live
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
            self.status_context.setText(f"Context {st.prompt_tokens + st.generated_tokens:,} / {n_ctx:,}")
        self.turn_finished.emit(message)
        self._live = None

    def _on_turn_error(self, exc: BaseException) -> None:
        live_msg = self._live_message
        if self._live is not None:
            if live_msg is not None and live_msg in self.conversation.messages:
                self._finish_live(live_msg)
            elif live_msg is None:
                # Nothing was generated: drop the empty message widget and the unanswered question
                # stays visible so the user can retry after fixing the cause.
                self.chat.widgets.remove(self._live)
                self._live.deleteLater()
                self._live = None
        self.status_speed.setText("")
        if isinstance(exc, (EngineError, ChatError)):
            self.show_error(str(exc))
        else:
            self.show_exception(exc)

    def _on_turn_finished(self) -> None:
        self._gen_worker = None
        self._live = None
        self.composer.set_generating(False)
        if self.status_speed.text() in ("Generating…", "Stopping…"):
            self.status_speed.setText("")

    # --- errors ----------------------------------------------------------------------------------
    def show_exception(self, exc: BaseException, tb_text: str | None = None) -> None:
        """An unexpected error: a dialog with details; the app keeps running."""
        if self._error_dialog_open:
            return
        self._error_dialog_open = True
        try:
            text = tb_text or getattr(exc, "__traceback_text__", None) or "".join(traceback.format_exception(exc))
            box = QMessageBox(QMessageBox.Icon.Critical, "Something went wrong",
                              f"Harmonica hit an unexpected error and recovered:\n\n{type(exc).__name__}: {exc}", parent=self)
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
        for w in (self._gen_worker, self._load_worker):
            if w is not None:
                w.quit()
        for w in (self._gen_worker, self._load_worker):
            if w is not None:
                w.wait(10.0)
        super().closeEvent(e)
