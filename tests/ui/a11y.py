"""Accessibility and layout checks shared by the UI tests: unnamed controls, clipped widgets, Tab stops."""

from __future__ import annotations

from PySide6.QtCore import QPoint, QRect
from PySide6.QtGui import QAccessible
from PySide6.QtWidgets import (
    QAbstractButton,
    QAbstractItemView,
    QAbstractScrollArea,
    QAbstractSlider,
    QAbstractSpinBox,
    QComboBox,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QScrollArea,
    QTabBar,
    QTextEdit,
    QWidget,
)

INTERACTIVE = (
    QAbstractButton,
    QLineEdit,
    QPlainTextEdit,
    QTextEdit,
    QComboBox,
    QAbstractSpinBox,
    QAbstractSlider,
    QAbstractItemView,
    QTabBar,
)


def accessible_name(w: QWidget) -> str:
    """What a screen reader announces as the control's name (Qt's own accessibility interface)."""
    iface = QAccessible.queryAccessibleInterface(w)
    return (iface.text(QAccessible.Text.Name) if iface is not None else "").strip()


def _is_scrollbar_part(w: QWidget) -> bool:
    parent = w.parentWidget()
    while parent is not None:
        if isinstance(parent, QAbstractScrollArea) and w in (
            parent.verticalScrollBar(),
            parent.horizontalScrollBar(),
        ):
            return True
        parent = parent.parentWidget()
    return type(w).__name__ in ("QScrollBar",) or w.objectName().startswith("qt_")


def _is_internal(w: QWidget) -> bool:
    """Parts Qt builds inside a control, which screen readers reach through the control: a combo
    box's popup list, a table's headers, a line edit's clear button."""
    if isinstance(w, QHeaderView) or w.window().inherits("QComboBoxPrivateContainer"):
        return True
    parent = w.parentWidget()
    return isinstance(parent, QLineEdit) or (parent is not None and parent.inherits("QComboBoxPrivateContainer"))


def unnamed_controls(root: QWidget) -> list[str]:
    """Interactive widgets under `root` (shown or not) that a screen reader could not name."""
    out = []
    for w in [root, *root.findChildren(QWidget)]:
        if not isinstance(w, INTERACTIVE) or _is_scrollbar_part(w) or _is_internal(w):
            continue
        if not accessible_name(w):
            where = w.parentWidget().objectName() if w.parentWidget() is not None else ""
            out.append(f"{type(w).__name__}(objectName={w.objectName()!r}, in {where!r}, tip={w.toolTip()!r})")
    return out


def visible_rect(w: QWidget) -> QRect:
    """The part of `w` (in its own coordinates) not cut off by any ancestor, scroll viewports included."""
    rect = w.rect()
    child = w
    parent = w.parentWidget()
    offset = QPoint(0, 0)
    while parent is not None:
        offset += child.pos()
        rect = rect.intersected(parent.rect().translated(-offset))
        if parent.isWindow():
            break
        child, parent = parent, parent.parentWidget()
    return rect


def clipped_widgets(root: QWidget) -> list[str]:
    """Visible widgets under `root` whose own content does not fit: a child sticking out of its
    parent sideways (not counting scroll areas' content, which scrolls up and down), a one-line
    label or a button narrower than its text, a rich-text view whose document is wider than it."""
    out = []
    for w in root.findChildren(QWidget):
        if not w.isVisibleTo(root) or w.isWindow() or w.width() <= 0:
            continue
        parent = w.parentWidget()
        in_scroll = (
            parent is not None
            and isinstance(parent.parentWidget(), QScrollArea)
            and (
                parent is parent.parentWidget().viewport()  # type: ignore[union-attr]
            )
        )
        if parent is not None and not in_scroll:
            g = w.geometry()
            if g.left() < 0 or g.right() > parent.width() - 1 + 1:
                out.append(f"{_name(w)} sticks out of {_name(parent)}: {g.getRect()} in width {parent.width()}")
                continue
        if isinstance(w, QLabel) and not w.wordWrap() and w.text() and w.pixmap().isNull():
            need = w.sizeHint().width()
            if need > w.width() + 1 and not hasattr(w, "shown_text"):
                out.append(f"{_name(w)} text {w.text()[:40]!r} needs {need}px, has {w.width()}")
        elif isinstance(w, QAbstractButton) and w.text():
            need = w.minimumSizeHint().width()
            if need > w.width() + 1:
                out.append(f"{_name(w)} {w.text()!r} needs {need}px, has {w.width()}")
        elif isinstance(w, QTextEdit) and w.isReadOnly():
            doc_w = w.document().size().width()
            if doc_w > w.viewport().width() + 2:
                out.append(f"{_name(w)} document {doc_w:.0f}px wide in a {w.viewport().width()}px view")
    return out


def _name(w: QWidget) -> str:
    return f"{type(w).__name__}({w.objectName()!r})"
