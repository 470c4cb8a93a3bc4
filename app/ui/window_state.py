"""Window sizes and places: every window fits the screen it opens on, and comes back where the user left it.

`GeometryKeeper` remembers each tracked window's normal geometry (and whether it was maximized)
in the window settings, keyed by a name, when it is hidden or closed, and puts it back when it
is shown again, checked against the screens there are now: a window saved on a monitor that is
gone, or larger than this screen (a laptop after a 4K monitor, or QT_SCALE_FACTOR=2), is moved
and shrunk to fit rather than restored off-screen. `NarrowSidebar` hides the main window's
conversation list while the window is too narrow for both, without changing the user's choice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QEvent, QMargins, QObject, QPoint, QRect, QSize, Qt, QTimer
from PySide6.QtGui import QGuiApplication, QScreen
from PySide6.QtWidgets import QApplication, QWidget
from shiboken6 import isValid

from app.core.errors import HarmonicaError
from app.core.settings import Settings

log = logging.getLogger(__name__)

# A saved window counts as visible on a screen when this much of it (each way) is on that screen.
MIN_VISIBLE_PX = 120
# The window manager's frame before it is known (a window not shown yet): a title bar and thin
# borders. Placing the inside of the window within the screen less this keeps the title bar on it.
ASSUMED_FRAME = QMargins(4, 32, 4, 4)


def available_rects() -> list[QRect]:
    """The usable area (without task bars and docks) of every screen, in Qt's logical pixels."""
    return [s.availableGeometry() for s in QGuiApplication.screens()]


def frame_margins(widget: QWidget) -> QMargins:
    """The window frame around `widget`'s inside: the real one once shown, else ASSUMED_FRAME."""
    if not widget.isWindow():
        return QMargins()
    frame, inner = widget.frameGeometry(), widget.geometry()
    if frame == inner:
        return ASSUMED_FRAME
    return QMargins(
        inner.x() - frame.x(), inner.y() - frame.y(), frame.right() - inner.right(), frame.bottom() - inner.bottom()
    )


def inside_areas(widget: QWidget, areas: list[QRect]) -> list[QRect]:
    """Where `widget`'s inside may go on each screen so that its frame is on the screen too."""
    margins = frame_margins(widget)
    return [a.marginsRemoved(margins) for a in areas]


def screen_for(widget: QWidget) -> QScreen | None:
    parent = widget.parentWidget()
    screen = (parent.window().screen() if parent is not None else None) or widget.screen()
    return screen or QGuiApplication.primaryScreen()


def fitted(rect: QRect, area: QRect) -> QRect:
    """`rect` moved and shrunk as little as possible to lie inside `area`."""
    w, h = min(rect.width(), area.width()), min(rect.height(), area.height())
    x = min(max(rect.x(), area.x()), area.x() + area.width() - w)
    y = min(max(rect.y(), area.y()), area.y() + area.height() - h)
    return QRect(x, y, w, h)


def _overlap(a: QRect, b: QRect) -> QRect:
    return a.intersected(b)


def place_rect(saved: QRect | None, default: QSize, areas: list[QRect], centre_on: QRect | None = None) -> QRect:
    """Where a window goes: `saved` on the screen that shows most of it (fitted to that screen), or,
    when no screen shows enough of it, `default` centred on `centre_on` (the first screen)."""
    if not areas:
        return saved if saved is not None else QRect(QPoint(0, 0), default)
    if saved is not None and saved.isValid():
        best = max(areas, key=lambda a: _overlap(saved, a).width() * _overlap(saved, a).height())
        seen = _overlap(saved, best)
        if seen.width() >= min(MIN_VISIBLE_PX, saved.width()) and seen.height() >= min(MIN_VISIBLE_PX, saved.height()):
            return fitted(saved, best)
        default = saved.size()  # the screen it was on is gone: keep its size, centred here
    area = centre_on if centre_on is not None else areas[0]
    size = QSize(min(default.width(), area.width()), min(default.height(), area.height()))
    top_left = area.center() - QPoint(size.width() // 2, size.height() // 2)
    return fitted(QRect(top_left, size), area)


def fit_to_screen(widget: QWidget, default: QSize | tuple[int, int] | None = None) -> None:
    """Size `widget` to `default` (or its current size), no larger than its screen, fully on it (once
    shown, `keep_on_screen` allows for the window frame)."""
    size = QSize(*default) if isinstance(default, tuple) else (default or widget.size())
    if widget.findChild(_OnScreen, options=Qt.FindChildOption.FindDirectChildrenOnly) is None:
        widget.installEventFilter(_OnScreen(widget))
    screen = screen_for(widget)
    if screen is None:
        widget.resize(size)
        return
    [area] = inside_areas(widget, [screen.availableGeometry()])
    widget.setGeometry(place_rect(None, size, [area], area))


class _OnScreen(QObject):
    """Keeps a window's frame on its screen each time it is shown."""

    def eventFilter(self, obj: QObject, e: QEvent) -> bool:
        if e.type() == QEvent.Type.Show and isinstance(obj, QWidget):
            keep_on_screen_soon(obj)
        return False


def keep_on_screen_soon(widget: QWidget) -> None:
    """keep_on_screen now and again once the window manager has framed the window (it does so
    after the window is shown, so the frame is only known a moment later); a window resized in
    the meantime (by the user, or the program) is left as it is."""
    size = widget.size()

    def check(w: QWidget = widget) -> None:
        if isValid(w) and w.size() == size:
            keep_on_screen(w)

    for ms in (0, 300):
        QTimer.singleShot(ms, widget, check)


class GeometryKeeper(QObject):
    """Remembers tracked windows' geometry in `settings.window.geometries` (saved with the window area).

    `stop()` (the app is closing, the settings' store is about to close) ends the remembering; the
    main window calls it after remembering itself."""

    NAME = "harmonica_geometry_name"

    def __init__(self, settings: Settings, parent: QObject | None = None, *, save: bool = True) -> None:
        super().__init__(parent)
        self.settings = settings
        self._save = save
        self._defaults: dict[str, QSize] = {}
        self.stopped = False

    def track(self, widget: QWidget, name: str, default: tuple[int, int]) -> None:
        """Put `widget` where it was last time (or at `default` size, centred), and remember it from now on."""
        widget.setProperty(self.NAME, name)
        self._defaults[name] = QSize(*default)
        self.restore(widget)
        widget.installEventFilter(self)

    def saved(self, name: str) -> dict[str, Any] | None:
        entry = self.settings.window.geometries.get(name)
        return entry if isinstance(entry, dict) else None

    def restore(self, widget: QWidget) -> None:
        name = str(widget.property(self.NAME))
        entry = self.saved(name)
        screen = screen_for(widget)
        areas = inside_areas(widget, available_rects())
        centre = inside_areas(widget, [screen.availableGeometry()])[0] if screen is not None else None
        default = self._defaults.get(name, widget.size())
        widget.setGeometry(place_rect(_rect_from(entry), default, areas, centre))
        if entry is not None and entry.get("maximized") is True and widget.parent() is None:
            widget.setWindowState(widget.windowState() | Qt.WindowState.WindowMaximized)

    def remember(self, widget: QWidget) -> None:
        name = widget.property(self.NAME)
        if self.stopped or not isinstance(name, str):
            return
        maximized = widget.isMaximized()
        g = widget.normalGeometry() if maximized and widget.normalGeometry().isValid() else widget.geometry()
        entry = {"x": g.x(), "y": g.y(), "w": g.width(), "h": g.height(), "maximized": maximized}
        geometries = dict(self.settings.window.geometries)
        if geometries.get(name) == entry:
            return
        geometries[name] = entry
        self.settings.window.geometries = geometries
        if self._save:
            try:
                self.settings.save("window")
            except (HarmonicaError, OSError) as exc:  # a window's place is not worth an error dialog
                log.warning("The window's size and place could not be saved: %s", exc)

    def stop(self) -> None:
        self.stopped = True

    def finish(self, main: QWidget) -> None:
        """The app is closing: remember the main window and the dialogs left open (they come back
        where they were), then stop."""
        self.remember(main)
        for w in QApplication.topLevelWidgets():
            if w.isVisible() and w is not main:
                self.remember(w)
        self.stop()

    def eventFilter(self, obj: QObject, e: QEvent) -> bool:
        if self.stopped or not isinstance(obj, QWidget):
            return False
        if e.type() in (QEvent.Type.Hide, QEvent.Type.Close):
            self.remember(obj)
        elif e.type() == QEvent.Type.Show:
            keep_on_screen_soon(obj)  # the window manager's frame is known once it is shown
        return False


def keep_on_screen(widget: QWidget) -> None:
    """Move and shrink a shown window so that its frame (title bar included) is on its screen."""
    screen = screen_for(widget)
    if screen is None or not widget.isVisible() or widget.isMaximized() or widget.isFullScreen():
        return
    area = screen.availableGeometry()
    frame, inner = widget.frameGeometry(), widget.geometry()
    if area.contains(frame):
        return
    left, top = inner.x() - frame.x(), inner.y() - frame.y()
    right, bottom = frame.right() - inner.right(), frame.bottom() - inner.bottom()
    target = fitted(frame, area)
    widget.setGeometry(
        target.x() + left, target.y() + top, target.width() - left - right, target.height() - top - bottom
    )


def _rect_from(entry: dict[str, Any] | None) -> QRect | None:
    if entry is None:
        return None
    try:
        x, y, w, h = (int(entry[k]) for k in ("x", "y", "w", "h"))
    except (KeyError, TypeError, ValueError):
        return None
    if not (100 <= w <= 100_000 and 80 <= h <= 100_000 and abs(x) <= 1_000_000 and abs(y) <= 1_000_000):
        return None  # damaged, or from nothing like a screen
    return QRect(x, y, w, h)


class NarrowSidebar(QObject):
    """Hides `sidebar` while `window` is narrower than `min_width` (or while `suppressed`: the first
    start, with nothing to list), and shows it again once that ends, if `wanted()` (the user's
    choice) says so; the user's own toggles always win."""

    def __init__(self, window: QWidget, sidebar: QWidget, wanted: Callable[[], bool], min_width: int = 720) -> None:
        super().__init__(window)
        self.window = window
        self.sidebar = sidebar
        self.wanted = wanted
        self.min_width = min_width
        self.auto_hidden = False
        self.suppressed = False
        self.user_override = False  # the user showed or hid it while narrow: leave it so until wide again
        window.installEventFilter(self)

    @property
    def narrow(self) -> bool:
        return self.window.width() < self.min_width or self.suppressed

    def set_suppressed(self, on: bool) -> None:
        if on != self.suppressed:
            self.suppressed = on
            self.update()

    def user_toggled(self) -> None:
        self.auto_hidden = False
        self.user_override = self.narrow

    def eventFilter(self, obj: QObject, e: QEvent) -> bool:
        if obj is self.window and e.type() == QEvent.Type.Resize:
            self.update()
        return False

    def update(self) -> None:
        if not self.narrow:
            self.user_override = False
        if self.user_override:
            return
        if self.narrow and self.sidebar.isVisibleTo(self.window) and not self.auto_hidden and self.wanted():
            self.auto_hidden = True
            self.sidebar.hide()
        elif not self.narrow and self.auto_hidden:
            self.auto_hidden = False
            self.sidebar.setVisible(self.wanted())
