"""Colours, fonts, icons and the application style sheet, in a light and a dark variant."""

from __future__ import annotations

import logging
import os
import string
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QFont, QGuiApplication, QIcon, QPalette
from PySide6.QtWidgets import QApplication, QFrame, QLayout, QScrollArea, QVBoxLayout, QWidget

from app.core.markdown import DARK, LIGHT, Theme
from app.core.paths import resources_dir

log = logging.getLogger(__name__)


@lru_cache(maxsize=64)
def icon(name: str) -> QIcon:
    return QIcon(str(resources_dir() / "icons" / f"{name}.svg"))


@dataclass(frozen=True)
class Palette:
    """UI colours; `markdown` is the matching rich-text theme for answers."""

    dark: bool
    window: str
    surface: str
    bubble: str
    text: str
    muted: str
    border: str
    hover: str
    scroll: str
    accent: str
    accent_hover: str
    accent_soft: str
    accent_text: str
    disabled: str
    warning: str
    error_bg: str
    error_border: str
    sidebar: str
    selected: str
    flash: str
    markdown: Theme
    good: str = "#1a7f37"  # right answers (effort lab)
    good_bg: str = "#dafbe1"
    bad: str = "#cf222e"  # wrong answers
    bad_bg: str = "#ffebe9"
    warning_bg: str = "#fff8c5"  # a notice to heed that is not an error (amber, not red)


LIGHT_PALETTE = Palette(
    dark=False,
    window="#ffffff",
    surface="#ffffff",
    bubble="#f0f2f5",
    text="#1f2328",
    muted="#6b7280",
    border="#e1e4e8",
    hover="#f0f2f5",
    scroll="#d0d5db",
    accent="#4f5bd5",
    accent_hover="#3f4bc4",
    accent_soft="#eceefe",
    accent_text="#3f4bc4",
    disabled="#c5c9d0",
    warning="#9a6700",
    error_bg="#fff1f0",
    error_border="#f5c2c0",
    sidebar="#f7f8fa",
    selected="#e6e8f6",
    flash="#fff6d6",
    markdown=LIGHT,
)
DARK_PALETTE = Palette(
    dark=True,
    window="#0f1115",
    surface="#171a21",
    bubble="#232833",
    text="#e6edf3",
    muted="#9198a1",
    border="#2b313c",
    hover="#232833",
    scroll="#3a414d",
    accent="#6d78f0",
    accent_hover="#8089f5",
    accent_soft="#252a4a",
    accent_text="#aab2ff",
    disabled="#3a414d",
    warning="#d29922",
    error_bg="#3a1d1f",
    error_border="#6e2c2f",
    sidebar="#13161b",
    selected="#262b45",
    flash="#3a3420",
    markdown=DARK,
    good="#3fb950",
    good_bg="#12261a",
    bad="#f85149",
    bad_bg="#3a1d1f",
    warning_bg="#2e2814",
)


def system_prefers_dark() -> bool:
    forced = os.environ.get("HARMONICA_THEME", "").strip().lower()
    if forced in ("dark", "light"):
        return forced == "dark"
    hints = QGuiApplication.styleHints()
    try:
        return hints.colorScheme() == Qt.ColorScheme.Dark
    except AttributeError:  # Qt < 6.5: judge by the window colour
        return QGuiApplication.palette().color(QPalette.ColorRole.Window).lightness() < 128


_current: Palette = LIGHT_PALETTE


def current() -> Palette:
    return _current


def qcolor(name: str) -> QColor:
    """A colour of the current palette by field name, e.g. qcolor("muted")."""
    return QColor(getattr(_current, name))


def dark_for(choice: str) -> bool | None:
    """The `dark` argument of `apply` for a theme setting: "system" (None: ask the desktop), "light", "dark"."""
    return None if choice not in ("light", "dark") else choice == "dark"


def apply(app: QApplication, dark: bool | None = None) -> Palette:
    """Install the Fusion style, a matching QPalette, the UI font and the style sheet.

    Called again while the app runs (View → Theme, or the desktop switching between light and
    dark), it restyles every window, and every widget that paints with colours of its own gets
    `theme_changed(palette)` if it has that method (panels with their own style sheets, the chat,
    whose answers are rendered with the theme's colours).
    """
    global _current
    pal = DARK_PALETTE if (system_prefers_dark() if dark is None else dark) else LIGHT_PALETTE
    changed = pal is not _current
    _current = pal
    if not app.property("harmonicaFusion"):  # once: setting a style again re-polishes every widget
        app.setStyle("Fusion")
        app.setProperty("harmonicaFusion", True)
    qp = QPalette()
    for role, value in (
        (QPalette.ColorRole.Window, pal.window),
        (QPalette.ColorRole.Base, pal.surface),
        (QPalette.ColorRole.AlternateBase, pal.bubble),
        (QPalette.ColorRole.Text, pal.text),
        (QPalette.ColorRole.WindowText, pal.text),
        (QPalette.ColorRole.Button, pal.surface),
        (QPalette.ColorRole.ButtonText, pal.text),
        (QPalette.ColorRole.Highlight, pal.accent),
        (QPalette.ColorRole.HighlightedText, "#ffffff"),
        (QPalette.ColorRole.Link, pal.markdown.link),
        (QPalette.ColorRole.ToolTipBase, pal.surface),
        (QPalette.ColorRole.ToolTipText, pal.text),
        (QPalette.ColorRole.PlaceholderText, pal.muted),
    ):
        qp.setColor(role, QColor(value))
    qp.setColor(QPalette.ColorGroup.Disabled, QPalette.ColorRole.Text, QColor(pal.muted))
    qp.setColor(QPalette.ColorGroup.Disabled, QPalette.ColorRole.ButtonText, QColor(pal.muted))
    app.setPalette(qp)
    font = QFont()
    font.setFamilies(["Inter", "Segoe UI", "SF Pro Text", "Cantarell", "Noto Sans", "DejaVu Sans"])
    font.setPointSizeF(10.5)
    app.setFont(font)
    app.setStyleSheet(style_sheet(pal))
    from app.ui import focus_ring  # here, not at the top: it paints with this module's colours

    focus_ring.install(app)
    if changed:
        for w in QApplication.allWidgets():
            hook = getattr(w, "theme_changed", None)
            if callable(hook):
                try:
                    hook(pal)
                except Exception:  # one panel that cannot restyle must not stop the others
                    log.exception("%s could not follow the theme", type(w).__name__)
    return pal


_desktop_choice: Callable[[], str] | None = None


def follow_desktop(app: QApplication, choice: Callable[[], str]) -> None:
    """While the theme setting (`choice()`) is "system", follow the desktop's light/dark switch live.
    One connection per application: a later call only replaces `choice`."""
    global _desktop_choice
    first = _desktop_choice is None
    _desktop_choice = choice
    signal = getattr(QGuiApplication.styleHints(), "colorSchemeChanged", None)  # Qt 6.5+
    if first and signal is not None:
        signal.connect(lambda *_: _on_desktop_scheme(app))


def _on_desktop_scheme(app: QApplication) -> None:
    if _desktop_choice is not None and _desktop_choice() == "system":
        apply(app, None)


def style_sheet(pal: Palette) -> str:
    text = (resources_dir() / "style.qss").read_text(encoding="utf-8")
    values = {k: v for k, v in pal.__dict__.items() if isinstance(v, str)}
    values["icons"] = (resources_dir() / "icons").as_posix()
    return string.Template(text).safe_substitute(values)


def clear_layout(layout: QLayout) -> None:
    """Remove every item of `layout`, deleting its widgets (a page rebuilt from new data)."""
    while layout.count():
        item = layout.takeAt(0)
        widget = item.widget() if item is not None else None
        if widget is not None:
            widget.hide()  # at once: a deferred delete waits for the event loop, which may not be running yet
            widget.deleteLater()


def scroll_page(owner: QWidget, name: str) -> tuple[QVBoxLayout, QScrollArea, QWidget]:
    """Fill `owner` with a frameless scroll area whose content widget is named `name`.

    Returns (owner's own layout, the scroll area, the content widget) so a page can add rows
    below the scroll area or lay the content out its own way.
    """
    outer = QVBoxLayout(owner)
    outer.setContentsMargins(0, 0, 0, 0)
    outer.setSpacing(0)
    scroll = QScrollArea()
    scroll.setWidgetResizable(True)
    scroll.setFrameShape(QFrame.Shape.NoFrame)
    scroll.setFocusPolicy(Qt.FocusPolicy.NoFocus)  # no Tab stop of its own: focusing a control inside scrolls to it
    content = QWidget(objectName=name)
    scroll.setWidget(content)
    outer.addWidget(scroll, 1)
    return outer, scroll, content


def mono_font(point_size: float | None = None) -> QFont:
    f = QFont()
    f.setFamilies(["JetBrains Mono", "Cascadia Code", "SF Mono", "Menlo", "Consolas", "DejaVu Sans Mono", "monospace"])
    f.setStyleHint(QFont.StyleHint.Monospace)
    if point_size:
        f.setPointSizeF(point_size)
    return f
