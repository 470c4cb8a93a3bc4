"""A visible focus ring for every control that takes keyboard focus, drawn over it in the theme's accent colour.

Qt's Fusion style shows focus faintly or not at all once a style sheet restyles a widget, and
QSS `:focus` borders would need every button style written twice (with a wider border and less
padding). Instead one small overlay follows the focus: it is a mouse-transparent child of the
focused widget that paints a rounded ring just inside its edge, so it is never clipped by the
widget's parents and never moves anything. Like the web's :focus-visible it shows for focus that
comes from the keyboard (Tab, shortcuts), not for a click or a window coming to the front. Widgets that draw
their own focus (the composer's frame, the effort slider's halo) set the property
`ownFocusRing` to true.
"""

from __future__ import annotations

from PySide6.QtCore import QEvent, QObject, QRectF, Qt
from PySide6.QtGui import QColor, QGuiApplication, QPainter, QPaintEvent, QPen
from PySide6.QtWidgets import QApplication, QWidget
from shiboken6 import isValid

from app.ui import style

RING_WIDTH = 2.0
OWN_RING = "ownFocusRing"


class FocusRing(QWidget):
    """The overlay; `FocusRings` moves it onto whichever widget has keyboard focus."""

    def __init__(self, parent: QWidget) -> None:
        super().__init__(parent)
        self.setObjectName("FocusRing")
        self.setAttribute(Qt.WidgetAttribute.WA_TransparentForMouseEvents, True)
        self.setAttribute(Qt.WidgetAttribute.WA_NoSystemBackground, True)
        self.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.setAccessibleName("")  # decoration: nothing for a screen reader

    def paintEvent(self, e: QPaintEvent) -> None:
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        p.setBrush(Qt.BrushStyle.NoBrush)
        pal = style.current()
        # Two tones: the accent ring, and just inside it a ring in the window's colour. On an
        # accent-filled button (Send, primary buttons) the accent ring alone would vanish; the inner
        # one shows there, and on ordinary surfaces it is invisible next to the accent.
        for colour, inset in ((pal.accent, RING_WIDTH / 2), (pal.window, RING_WIDTH * 1.5)):
            p.setPen(QPen(QColor(colour), RING_WIDTH))
            r = QRectF(self.rect()).adjusted(inset, inset, -inset, -inset)
            radius = min(6.0, r.height() / 2, r.width() / 2)
            p.drawRoundedRect(r, radius, radius)
        p.end()


class FocusRings(QObject):
    """Installed once per application (`install`): follows QApplication.focusChanged."""

    def __init__(self, app: QApplication) -> None:
        super().__init__(app)
        self._ring: FocusRing | None = None
        self._target: QWidget | None = None
        app.focusChanged.connect(self._on_focus)

    @property
    def target(self) -> QWidget | None:
        """The widget the ring is on (None when hidden)."""
        ring = self._ring
        if ring is None or not isValid(ring) or ring.isHidden() or self._target is None or not isValid(self._target):
            return None
        return self._target

    def _on_focus(self, old: QWidget | None, new: QWidget | None) -> None:
        self._detach()
        if new is None or not isValid(new) or new.isWindow() or bool(new.property(OWN_RING)):
            return
        if QGuiApplication.mouseButtons() != Qt.MouseButton.NoButton:
            return  # focus from a click: the pointer shows where the user is
        if old is None or not isValid(old) or old.window() is not new.window():
            return  # a window opening or coming to the front: no ring until the keyboard moves it
        ring = self._ring
        if ring is None or not isValid(ring):
            ring = self._ring = FocusRing(new)
        else:
            ring.setParent(new)
        self._target = new
        new.installEventFilter(self)
        ring.setGeometry(new.rect())
        ring.raise_()
        ring.show()

    def _detach(self) -> None:
        target = self._target
        self._target = None
        if target is not None and isValid(target):
            target.removeEventFilter(self)
        ring = self._ring
        if ring is not None and isValid(ring):
            ring.hide()

    def eventFilter(self, obj: QObject, e: QEvent) -> bool:
        ring = self._ring
        if obj is self._target and ring is not None and isValid(ring):
            if e.type() == QEvent.Type.Resize and isinstance(obj, QWidget):
                ring.setGeometry(obj.rect())
            elif e.type() == QEvent.Type.ChildAdded:
                ring.raise_()  # stay above children added later (a scroll area's viewport)
        return False


_installed: FocusRings | None = None


def install(app: QApplication) -> FocusRings:
    """Turn on focus rings for `app` (once; later calls return the same object)."""
    global _installed
    if _installed is None or not isValid(_installed):
        _installed = FocusRings(app)
    return _installed
