"""The chat page: the header above the chat, the chat or the empty page, the model-load panel, the notice bars, the composer; and the status line."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

from PySide6.QtCore import QObject, QSize, Qt, Signal
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QMenu,
    QProgressBar,
    QPushButton,
    QStackedWidget,
    QStatusBar,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from app.core.store import DEFAULT_TITLE, ConversationSettings
from app.ui import style
from app.ui.chat_view import MAX_CONTENT_WIDTH, ChatView
from app.ui.composer import Composer
from app.ui.elided import ElidedLabel
from app.ui.notice import NoticeBar


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
        self.sidebar_button.setAccessibleName("Show or hide the conversation list")
        self.sidebar_button.clicked.connect(self.sidebar_toggled)
        lay.addWidget(self.sidebar_button)
        self.title = ElidedLabel("New chat", objectName="ChatTitle")
        lay.addWidget(self.title, 1)
        # Where the chat runs when that is another computer: always visible, never only a tooltip.
        self.remote_badge = QLabel("", objectName="RemoteBadge")
        self.remote_badge.setTextFormat(Qt.TextFormat.PlainText)
        self.remote_badge.setStyleSheet(
            "QLabel#RemoteBadge { background: #2f6fde; color: white; border-radius: 9px; padding: 1px 8px; }"
        )
        self.remote_badge.hide()
        lay.addWidget(self.remote_badge)
        self.badges = ElidedLabel("", objectName="ChatBadges")
        lay.addWidget(self.badges)
        # Widgets others add to the header go here, before the buttons.
        self.extras = QHBoxLayout()
        self.extras.setSpacing(6)
        lay.addLayout(self.extras)
        self.export_button = QToolButton(objectName="HeaderButton")
        self.export_button.setIcon(style.icon("export"))
        self.export_button.setToolTip("Export this chat")
        self.export_button.setAccessibleName("Export this chat")
        self.export_button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        menu = QMenu(self.export_button)
        for label, fmt in (
            ("Markdown…", "md"),
            ("Markdown with reasoning…", "md-reasoning"),
            ("JSON (complete)…", "json"),
        ):
            menu.addAction(label, partial(self.export_requested.emit, fmt))
        self.export_button.setMenu(menu)
        lay.addWidget(self.export_button)
        self.settings_button = QToolButton(objectName="HeaderButton")
        self.settings_button.setIcon(style.icon("settings"))
        self.settings_button.setToolTip("Chat settings: instructions, sampling, context (Ctrl+,)")
        self.settings_button.setAccessibleName("Chat settings")
        self.settings_button.clicked.connect(self.settings_requested)
        lay.addWidget(self.settings_button)

    def set_remote(self, where: str | None) -> None:
        """ "runs on studio-pc" while the model is served by another computer; hidden otherwise."""
        self.remote_badge.setText(f"⇄ {where}" if where else "")
        self.remote_badge.setToolTip(
            "This chat is answered by another computer: what you type is sent there over the network." if where else ""
        )
        self.remote_badge.setVisible(bool(where))

    def set_state(
        self, title: str, settings: ConversationSettings | None, stored: bool, extra: Sequence[str] = ()
    ) -> None:
        self.title.setText(title or DEFAULT_TITLE)
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
        self._name = ""
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

    def set_plan(self, plan: Any) -> None:
        """The planner chose the settings: say how the model will run, and why in the tooltip."""
        self.label.setText(f"Loading {self._name}: {plan.summary()}…")
        self.label.setToolTip("\n".join(plan.reasons))

    def set_cancelling(self) -> None:
        self.cancel.setEnabled(False)
        self.label.setText("Cancelling…")

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

    def set_model_loaded(self, name: str | None, where: str | None = None) -> None:
        if name and where:  # served by another computer: never claim the text stays here
            self.title.setText("What can I help with?")
            self.hint.setText(f"{name} is ready; it {where}. What you type is sent to that computer.")
            self.button.hide()
        elif name:
            self.title.setText("What can I help with?")
            self.hint.setText(f"{name} is ready. Everything you type stays on this computer.")
            self.button.hide()
        else:
            self.title.setText("No model loaded")
            self.hint.setText("Open a gpt-oss model file (.gguf) to start — or drop one onto this window.")
            self.button.show()


class StatusLine(QObject):
    """The status bar's labels: the model (and how it runs), the server, speed and context use."""

    def __init__(self, bar: QStatusBar) -> None:
        super().__init__(bar)
        bar.setSizeGripEnabled(False)
        self.model = ElidedLabel("No model", objectName="StatusModel")
        self.speed = QLabel("")
        self.context = QLabel("")
        self.server = QLabel("", objectName="StatusServer")
        self.server.hide()
        bar.addWidget(self.model, 1)
        bar.addPermanentWidget(self.server)
        bar.addPermanentWidget(self.speed)
        bar.addPermanentWidget(self.context)

    def set_loading(self, name: str) -> None:
        self.model.setText(f"Loading {name}…")

    def set_no_model(self) -> None:
        self.model.setText("No model")

    def set_model(self, info: Any, plan: Any) -> None:
        """A model is loaded: its name and backend; the tooltip says where it runs and why."""
        self.context.setText(f"Context 0 / {info.n_ctx:,}" if info.n_ctx else "Context: the server's")
        self.speed.setText("")
        if getattr(info, "source", "file") == "remote":
            self.model.setToolTip(info.description)
            self.model.setText(f"{info.name} · {info.description.split(' (', 1)[0].split(' on ', 1)[-1]}")
            return
        where = plan.summary().split(";")[0] if plan is not None else "your settings"
        backend = f"{plan.backend} · " if plan is not None else ""
        self.model.setToolTip(
            f"{info.path}\n{backend}{where}" + ("\n\n" + "\n".join(plan.reasons) if plan is not None else "")
        )
        self.model.setText(f"{info.name} · {plan.backend}" if plan is not None else f"{info.name}")

    def set_server(self, base_url: str | None, exposed: bool = False) -> None:
        """The API server's address while it runs (None: it is off)."""
        if base_url is None:
            self.server.hide()
            return
        self.server.setText(f"API {base_url}" + (" · network" if exposed else ""))
        self.server.setToolTip("The local OpenAI-compatible server is on (Tools → Local API server…)")
        self.server.show()


class ChatPage(QWidget):
    """The window's right-hand side, top to bottom: header, the chat (or the empty page, or the
    first-run page the window adds to `stack`), the load panel, the notice bars, the composer."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent, objectName="ChatPage")
        lay = QVBoxLayout(self)
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
        self.store_banner = NoticeBar(closable=False)  # lasts while conversations cannot be saved
        for w in (self.load_panel, self.store_banner, self.banner, self.context_banner):
            # Centred at the composer's width; stretches (not alignment) keep word wrap working.
            w.setMaximumWidth(MAX_CONTENT_WIDTH)
            row = QHBoxLayout()
            row.setContentsMargins(24, 4, 24, 0)
            row.addStretch(1)
            row.addWidget(w, 100)
            row.addStretch(1)
            lay.addLayout(row)
        self.composer = Composer()
        self.composer.set_can_send(False)
        lay.addWidget(self.composer)
