"""Keyboard and screen readers: every Tab stop shows a focus ring, Copy, Edit and Regenerate work from the
keyboard, Help lists the shortcuts, and every control has a name a screen reader can say."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QGuiApplication, QImage
from PySide6.QtWidgets import QApplication, QWidget

from app.ui.conversation_settings import ConversationSettingsDialog
from app.ui.main_window import MainWindow
from app.ui.message_widget import AssistantMessageWidget, UserMessageWidget
from tests.ui.a11y import accessible_name, unnamed_controls
from tests.ui.conftest import ANSWER, SCRIPT


def _answered(make_window, qtbot, *scripts: str):  # type: ignore[no-untyped-def]
    w, engine = make_window(*(scripts or (SCRIPT, SCRIPT)))
    w.activateWindow()
    qtbot.waitUntil(lambda: QApplication.activeWindow() is w, timeout=3000)
    assert QApplication.focusWidget() is w.composer.edit  # a new window is ready for typing
    w.composer.edit.setPlainText("hello")
    qtbot.keyClick(w.composer.edit, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: not w.generating, timeout=5000)
    qtbot.waitUntil(lambda: _latest(w, AssistantMessageWidget).row_id is not None, timeout=3000)
    _reactivate(w, qtbot)
    return w, engine


def _reactivate(w: MainWindow, qtbot) -> None:  # type: ignore[no-untyped-def]
    w.activateWindow()  # Qt's offscreen platform drops the active window while an answer streams
    qtbot.waitUntil(lambda: QApplication.activeWindow() is w, timeout=3000)


def _latest(w: MainWindow, kind: type) -> QWidget:
    return next(x for x in reversed(w.chat.widgets) if isinstance(x, kind))


def _tab(qtbot, backwards: bool = False) -> QWidget:  # type: ignore[no-untyped-def]
    focused = QApplication.focusWidget()
    assert focused is not None
    qtbot.keyClick(focused, Qt.Key.Key_Backtab if backwards else Qt.Key.Key_Tab)
    now = QApplication.focusWidget()
    assert now is not None
    return now


def _tab_chain(w: MainWindow, qtbot) -> list[QWidget]:  # type: ignore[no-untyped-def]
    """Every widget Tab reaches, starting from the composer, once round."""
    w.composer.edit.setFocus(Qt.FocusReason.TabFocusReason)
    chain: list[QWidget] = [w.composer.edit]
    for _ in range(200):
        now = _tab(qtbot)
        if now is w.composer.edit:
            return chain
        chain.append(now)
    raise AssertionError("Tab never came back to the composer")


def _ring_shows(widget: QWidget) -> bool:
    """The ring is on `widget` and changes what it looks like (a visible ring, not just a flag)."""
    from app.ui import focus_ring

    rings = focus_ring.install(QApplication.instance())  # type: ignore[arg-type]
    if rings.target is not widget:
        return False
    ring = widget.findChild(focus_ring.FocusRing)
    with_ring: QImage = widget.grab().toImage()
    ring.hide()
    without: QImage = widget.grab().toImage()
    ring.show()
    return with_ring != without


def test_tab_reaches_every_action_with_a_visible_focus_ring(make_window, qtbot) -> None:  # type: ignore[no-untyped-def]
    w, _ = _answered(make_window, qtbot)
    answer = _latest(w, AssistantMessageWidget)
    question = _latest(w, UserMessageWidget)
    answer.actions.set_pinned(False)  # not the latest answer's always-shown row: found by Tab alone
    w.composer.edit.setPlainText("a draft")  # Send is enabled (a disabled button is no Tab stop)
    chain = _tab_chain(w, qtbot)
    wanted = {
        "the sidebar button": w.header.sidebar_button,
        "Export": w.header.export_button,
        "Chat settings": w.header.settings_button,
        "New chat": w.sidebar.new_button,
        "the answer's Copy": answer.actions.buttons["copy"],
        "Regenerate": answer.actions.buttons["regenerate"],
        "the question's Copy": question.actions.buttons["copy"],
        "Edit": question.actions.buttons["edit"],
        "the effort slider": w.composer.effort.slider,
        "Send": w.composer.button,
    }
    missing = [name for name, widget in wanted.items() if widget not in chain]
    assert missing == [], f"Tab never reaches {missing}"
    at = chain.index
    # Reading order: composer, then round to the list, the header, the messages top to bottom.
    assert at(w.composer.button) < at(w.sidebar.new_button) < at(w.header.settings_button)
    assert at(w.header.settings_button) < at(question.actions.buttons["edit"]) < at(answer.actions.buttons["copy"])
    for widget in chain:
        w.chat.ensureWidgetVisible(widget) if w.chat.isAncestorOf(widget) else None
        widget.setFocus(Qt.FocusReason.TabFocusReason)
        if widget.property("ownFocusRing"):
            continue  # draws its own: checked below
        assert _ring_shows(widget), f"no visible focus ring on {type(widget).__name__} {accessible_name(widget)!r}"
        if widget in answer.actions.buttons.values():
            assert answer.actions.tools_visible  # focus brings the faded row back
    w.composer.effort.slider.setFocus(Qt.FocusReason.TabFocusReason)
    assert w.composer.effort.slider.hasFocus()  # it paints its halo when focused (composer.py)
    w.composer.edit.setFocus(Qt.FocusReason.TabFocusReason)
    assert w.composer.frame.property("focused") is True


def test_a_click_shows_no_ring(make_window, qtbot) -> None:  # type: ignore[no-untyped-def]
    w, _ = _answered(make_window, qtbot)
    qtbot.mouseClick(w.header.settings_button, Qt.MouseButton.NoButton)  # nothing yet
    qtbot.mousePress(w.composer.button, Qt.MouseButton.LeftButton)
    from app.ui import focus_ring

    rings = focus_ring.install(QApplication.instance())  # type: ignore[arg-type]
    assert rings.target is None
    qtbot.mouseRelease(w.composer.button, Qt.MouseButton.LeftButton)


def test_copy_regenerate_and_edit_from_the_keyboard(make_window, qtbot) -> None:  # type: ignore[no-untyped-def]
    w, engine = _answered(make_window, qtbot, SCRIPT, SCRIPT, SCRIPT)
    answer = _latest(w, AssistantMessageWidget)
    copy = answer.actions.buttons["copy"]
    copy.setFocus(Qt.FocusReason.TabFocusReason)
    QGuiApplication.clipboard().clear()
    qtbot.keyClick(copy, Qt.Key.Key_Space)
    assert QGuiApplication.clipboard().text().strip().endswith("Anything else?")
    regenerate = _tab(qtbot)
    assert regenerate is answer.actions.buttons["regenerate"]
    qtbot.keyClick(regenerate, Qt.Key.Key_Space)
    qtbot.waitUntil(lambda: not w.generating, timeout=5000)
    qtbot.waitUntil(lambda: _latest(w, AssistantMessageWidget).row_id is not None, timeout=3000)
    assert len(engine.prompts) == 2  # a second answer was written
    _reactivate(w, qtbot)
    question = _latest(w, UserMessageWidget)
    edit = question.actions.buttons["edit"]
    edit.setFocus(Qt.FocusReason.TabFocusReason)
    qtbot.keyClick(edit, Qt.Key.Key_Space)
    assert question.editing and question.edit_box.hasFocus()
    question.edit_box.selectAll()
    qtbot.keyClicks(question.edit_box, "hello again")
    qtbot.keyClick(question.edit_box, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)
    qtbot.waitUntil(lambda: not w.generating and len(engine.prompts) == 3, timeout=5000)
    assert "hello again" in engine.prompts[-1]


def test_the_latest_messages_have_shortcuts_and_up_edits(make_window, qtbot) -> None:  # type: ignore[no-untyped-def]
    w, _engine = _answered(make_window, qtbot, SCRIPT, SCRIPT)
    QGuiApplication.clipboard().clear()
    w.menu_actions["copy_last"].trigger()
    assert ANSWER.split("\n")[0] in QGuiApplication.clipboard().text()
    assert w.menu_actions["regenerate_last"].isEnabled() and w.menu_actions["edit_last"].isEnabled()
    w.composer.edit.setFocus()
    qtbot.keyClick(w.composer.edit, Qt.Key.Key_Up)  # an empty composer: Up edits the last message
    question = _latest(w, UserMessageWidget)
    assert question.editing and question.edit_box.hasFocus()
    qtbot.keyClick(question.edit_box, Qt.Key.Key_Escape)  # Esc cancels the edit (not Stop)
    assert not question.editing


def test_f1_lists_the_shortcuts(make_window, qtbot) -> None:  # type: ignore[no-untyped-def]
    w, _ = make_window()
    action = w.menu_actions["shortcuts"]
    assert action.shortcut().toString() == "F1" and action in w.menuBar().actions()[-1].menu().actions()  # type: ignore[union-attr]
    action.trigger()
    dlg = w.findChild(QWidget, "ShortcutsDialog")
    assert dlg is not None and dlg.isVisible()
    table = dlg.findChild(QWidget, "ShortcutsTable")
    rows = [(table.item(r, 1).text(), table.item(r, 2).text()) for r in range(table.rowCount())]  # type: ignore[attr-defined]
    assert ("F1", "Keyboard shortcuts") in rows and ("Ctrl+Shift+C", "Copy last answer") in rows
    assert ("Esc", "Stop generating") in rows and ("Enter", "Send the message") in rows
    w.menu_actions["shortcuts"].trigger()  # the same window again, not a second one
    assert len(w.findChildren(QWidget, "ShortcutsDialog")) == 1


def test_every_control_of_every_window_has_a_name(make_window, qtbot) -> None:  # type: ignore[no-untyped-def]
    w, _ = _answered(make_window, qtbot)
    _latest(w, UserMessageWidget).start_edit()  # the inline editor's controls too
    w.notices.error("Something failed.", actions=[("Try again", lambda: None)])
    windows = {"main window": w}
    for name, open_panel in (
        ("models", w.panels.show_models),
        ("hardware", w.show_hardware),
        ("tools", w.panels.show_tools),
        ("API server", w.show_server),
        ("effort lab", w.panels.show_lab),
        ("shortcuts", w.view.show_shortcuts),
    ):
        windows[name] = open_panel().window()
    windows["chat settings"] = ConversationSettingsDialog(w.session.settings, w.runtime.store, 8192, w)
    windows["first run"] = w.panels.ensure_first_run()
    for name, window in windows.items():
        assert unnamed_controls(window) == [], f"{name}: controls a screen reader cannot name"
