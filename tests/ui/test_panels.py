"""The window's dialogs (app/ui/panels.py): built once, shown again whole, scrolling on small screens."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication

from app.ui.hardware_panel import HardwarePanel


def test_hardware_panel_comes_back_whole_after_close_and_esc(make_window, qtbot) -> None:  # type: ignore[no-untyped-def]
    w, _ = make_window()
    panel = w.show_hardware()
    dialog = panel.window()
    assert isinstance(panel, HardwarePanel) and dialog.isVisible() and panel.isVisible()
    qtbot.mouseClick(panel.close_button, Qt.MouseButton.LeftButton)
    assert not dialog.isVisible()
    again = w.show_hardware()
    assert again is panel and panel.isVisible() and panel.window().isVisible()
    assert panel.load_button.isVisible() and panel.close_button.isVisible()  # not an empty window
    panel.activateWindow()
    qtbot.waitUntil(lambda: QApplication.activeWindow() is panel, timeout=3000)
    qtbot.keyClick(panel, Qt.Key.Key_Escape)
    assert not panel.isVisible()
    w.menu_actions["hardware"].trigger()
    assert panel.isVisible() and panel.load_button.isVisible()
    assert panel.window() is panel  # one window: a dialog inside a dialog was what went blank


def test_the_other_panels_come_back_after_esc(make_window, qtbot) -> None:  # type: ignore[no-untyped-def]
    w, _ = make_window()
    for open_panel in (w.panels.show_tools, w.show_server, w.panels.show_models):
        panel = open_panel()
        top = panel.window()
        top.activateWindow()
        qtbot.waitUntil(lambda top=top: QApplication.activeWindow() is top, timeout=3000)
        qtbot.keyClick(top, Qt.Key.Key_Escape)
        assert not top.isVisible()
        again = open_panel()
        assert again is panel and again.isVisible() and again.window().isVisible()
        again.window().close()
