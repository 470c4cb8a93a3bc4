"""The small controls under a message: branch navigator ‹ i/n ›, copy, edit, regenerate, delete, continue."""

from __future__ import annotations

from collections.abc import Sequence

from PySide6.QtCore import QEvent, QObject, QSize, Qt, Signal
from PySide6.QtGui import QAction
from PySide6.QtWidgets import QGraphicsOpacityEffect, QHBoxLayout, QLabel, QMenu, QPushButton, QToolButton, QWidget

from app.core.store import BranchInfo
from app.ui import style

# name → (icon, tooltip)
ACTIONS: dict[str, tuple[str, str]] = {
    "copy": ("copy", "Copy as Markdown"),
    "edit": ("edit", "Edit and resend"),
    "regenerate": ("regenerate", "Regenerate this answer"),
    "delete": ("delete", "Delete this message"),
}


class BranchNavigator(QWidget):
    """‹ 2/3 › between the versions of a message (edits and regenerations)."""

    moved = Signal(int)  # -1 or +1

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent, objectName="BranchNavigator")
        lay = QHBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(0)
        self.prev = QToolButton(objectName="BranchButton")
        self.prev.setIcon(style.icon("chevron-left"))
        self.prev.setToolTip("Previous version")
        self.prev.setAccessibleName("Previous version")
        self.prev.clicked.connect(lambda: self.moved.emit(-1))
        self.label = QLabel("", objectName="BranchLabel")
        self.next = QToolButton(objectName="BranchButton")
        self.next.setIcon(style.icon("chevron-right"))
        self.next.setToolTip("Next version")
        self.next.setAccessibleName("Next version")
        self.next.clicked.connect(lambda: self.moved.emit(1))
        for w in (self.prev, self.label, self.next):
            lay.addWidget(w)
        self.set_info(None)

    def set_info(self, info: BranchInfo | None) -> None:
        if info is None or not info.has_branches:
            self.hide()
            return
        self.label.setText(info.label())
        self.prev.setEnabled(info.index > 0)
        self.next.setEnabled(info.index < info.count - 1)
        self.show()


class MessageActions(QWidget):
    """A row of icon buttons; `triggered(name)` for each (names from ACTIONS, plus "copy_text",
    "continue", "prev" and "next"). Faded out until the message is hovered or one of them has
    keyboard focus, unless pinned; the branch navigator and Continue always show.

    Faded, not hidden: a hidden button is no Tab stop, and Copy, Edit and Regenerate must be
    reachable from the keyboard. Tab onto one and the row appears (with the focus ring on it).
    """

    triggered = Signal(str)

    def __init__(self, names: Sequence[str], parent: QWidget | None = None, *, align_right: bool = False) -> None:
        super().__init__(parent, objectName="MessageActions")
        lay = QHBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(2)
        if align_right:
            lay.addStretch(1)
        self.branch = BranchNavigator()
        self.branch.moved.connect(lambda d: self.triggered.emit("prev" if d < 0 else "next"))
        self.buttons: dict[str, QToolButton] = {}
        self._tools = QWidget()
        self._fade = QGraphicsOpacityEffect(self._tools)
        self._tools.setGraphicsEffect(self._fade)  # the row keeps its place: showing it never moves text
        tl = QHBoxLayout(self._tools)
        tl.setContentsMargins(0, 0, 0, 0)
        tl.setSpacing(2)
        for name in names:
            icon, tip = ACTIONS[name]
            b = QToolButton(objectName="ActionButton")
            b.setIcon(style.icon(icon))
            b.setIconSize(QSize(15, 15))
            b.setToolTip(tip)
            b.setAccessibleName(tip)
            b.setCursor(Qt.CursorShape.PointingHandCursor)
            b.installEventFilter(self)  # focus in and out show and fade the row
            if name == "copy":
                menu = QMenu(b)
                for label, action in (("Copy as Markdown", "copy"), ("Copy as plain text", "copy_text")):
                    act = QAction(label, menu)
                    act.triggered.connect(lambda _=False, a=action: self.triggered.emit(a))
                    menu.addAction(act)
                b.setMenu(menu)
                b.setPopupMode(QToolButton.ToolButtonPopupMode.MenuButtonPopup)
            b.clicked.connect(lambda _=False, n=name: self.triggered.emit(n))
            self.buttons[name] = b
            tl.addWidget(b)
        if align_right:
            lay.addWidget(self._tools)
            lay.addWidget(self.branch)
        else:
            lay.addWidget(self.branch)
            lay.addWidget(self._tools)
            lay.addStretch(1)
        self.continue_button = QPushButton("Continue", objectName="SecondaryButton")
        self.continue_button.setIcon(style.icon("continue"))
        self.continue_button.setToolTip("Continue this answer from where it stopped")
        self.continue_button.clicked.connect(lambda: self.triggered.emit("continue"))
        self.continue_button.hide()
        lay.insertWidget(0 if not align_right else lay.count(), self.continue_button)
        self._pinned = False
        self._hovered = False
        self._focused = False
        self._update()

    def set_branch(self, info: BranchInfo | None) -> None:
        self.branch.set_info(info)

    def set_can_continue(self, on: bool) -> None:
        self.continue_button.setVisible(on)

    def set_pinned(self, on: bool) -> None:
        """Always shown (the latest message), or only on hover."""
        self._pinned = on
        self._update()

    def set_hovered(self, on: bool) -> None:
        self._hovered = on
        self._update()

    @property
    def tools_visible(self) -> bool:
        return self._pinned or self._hovered or self._focused

    def eventFilter(self, obj: QObject, e: QEvent) -> bool:
        if e.type() in (QEvent.Type.FocusIn, QEvent.Type.FocusOut):
            self._focused = any(b.hasFocus() for b in self.buttons.values())
            self._update()
        return False

    def _update(self) -> None:
        self._fade.setOpacity(1.0 if self.tools_visible else 0.0)
