"""View → Theme: System, Light and Dark apply at once to every window and dialog, follow the desktop, and are remembered."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from PySide6.QtCore import Qt
from PySide6.QtGui import QGuiApplication, QImage
from PySide6.QtWidgets import QApplication, QWidget

from app.core.runtime import Runtime
from app.ui import style
from app.ui.conversation_settings import ConversationSettingsDialog
from app.ui.main_window import MainWindow
from app.ui.message_widget import AssistantMessageWidget
from tests.ui.conftest import SCRIPT


@pytest.fixture(autouse=True)
def _light_again() -> Iterator[None]:
    yield
    style.apply(QApplication.instance(), False)  # type: ignore[arg-type]  # the other tests' look


def _lightness(w: QWidget) -> float:
    """Mean lightness (0–255) of what `w` looks like now."""
    img: QImage = w.grab().toImage().scaled(48, 48)
    values = [img.pixelColor(x, y).lightness() for x in range(img.width()) for y in range(img.height())]
    return sum(values) / len(values)


def test_light_and_dark_apply_at_once_to_every_window(make_window, qtbot) -> None:  # type: ignore[no-untyped-def]
    w, _ = make_window(SCRIPT)
    w.composer.edit.setPlainText("hello")
    qtbot.keyClick(w.composer.edit, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: not w.generating, timeout=5000)
    hardware = w.show_hardware()
    server = w.show_server()
    settings = ConversationSettingsDialog(w.session.settings, w.runtime.store, 8192, w)
    settings.show()
    windows = {"chat": w, "hardware": hardware, "server": server.window(), "chat settings": settings}
    for name, win in windows.items():
        assert _lightness(win) > 180, f"{name} starts light"
    answer = next(x for x in w.chat.widgets if isinstance(x, AssistantMessageWidget))
    light_text = answer.answer_view.palette().text().color().lightness()

    w.menu_actions["theme_dark"].trigger()
    assert style.current().dark and w.runtime.settings.window.theme == "dark"
    for name, win in windows.items():
        assert _lightness(win) < 90, f"{name} did not turn dark"
    answer = next(x for x in w.chat.widgets if isinstance(x, AssistantMessageWidget))  # re-rendered
    assert answer.answer_view.palette().text().color().lightness() > light_text
    assert style.current().markdown.text in answer.answer_view.toHtml()
    settings.close()


def test_the_theme_is_remembered(make_window, qtbot) -> None:  # type: ignore[no-untyped-def]
    w, engine = make_window()
    w.menu_actions["theme_dark"].trigger()
    w2 = MainWindow(Runtime(store=w.runtime.store, engine_factory=lambda: engine))
    qtbot.addWidget(w2)
    assert w2.runtime.settings.window.theme == "dark" and w2.menu_actions["theme_dark"].isChecked()


def test_like_the_system_follows_the_desktop(make_window, qtbot, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    w, _ = make_window()
    desktop = {"dark": False}
    monkeypatch.setattr(style, "system_prefers_dark", lambda: desktop["dark"])
    style.follow_desktop(QApplication.instance(), lambda: w.runtime.settings.window.theme)  # type: ignore[arg-type]
    w.menu_actions["theme_system"].trigger()
    assert not style.current().dark
    desktop["dark"] = True
    QGuiApplication.styleHints().colorSchemeChanged.emit(Qt.ColorScheme.Dark)
    assert style.current().dark and _lightness(w) < 90
    w.menu_actions["theme_light"].trigger()  # a fixed choice no longer follows the desktop
    QGuiApplication.styleHints().colorSchemeChanged.emit(Qt.ColorScheme.Dark)
    assert not style.current().dark


def test_switching_theme_keeps_the_reader_s_place_and_keyboard_focus(make_window, qtbot) -> None:  # type: ignore[no-untyped-def]
    from app.ui.message_widget import UserMessageWidget

    w, _ = make_window(SCRIPT, SCRIPT, SCRIPT, SCRIPT)
    w.resize(800, 480)
    for text in ("one", "two", "three", "four"):
        w.composer.edit.setPlainText(text)
        qtbot.keyClick(w.composer.edit, Qt.Key.Key_Return)
        qtbot.waitUntil(lambda: not w.generating, timeout=5000)
    qtbot.waitUntil(lambda: all(getattr(x, "row_id", None) is not None for x in w.chat.widgets), timeout=3000)
    bar = w.chat.verticalScrollBar()
    assert bar.maximum() > 200, "the chat must scroll for this test"
    second = [x for x in w.chat.widgets if isinstance(x, UserMessageWidget)][1]
    w.chat.ensureWidgetVisible(second, 0, 0)
    qtbot.waitUntil(lambda: not w.chat.pinned)
    before = bar.value()
    row_id = second.row_id
    second.actions.buttons["edit"].setFocus(Qt.FocusReason.TabFocusReason)

    w.menu_actions["theme_dark"].trigger()
    qtbot.waitUntil(lambda: w.chat.widget_for_row(row_id) is not second, timeout=3000)  # rebuilt
    rebuilt = w.chat.widget_for_row(row_id)
    assert isinstance(rebuilt, UserMessageWidget)
    qtbot.waitUntil(lambda: QApplication.focusWidget() is rebuilt.actions.buttons["edit"], timeout=3000)
    qtbot.waitUntil(lambda: abs(bar.value() - before) <= 4, timeout=3000)  # once the rebuilt chat has laid out
    qtbot.wait(300)
    assert abs(bar.value() - before) <= 4, "the view jumped"
    assert not w.chat.pinned and QApplication.focusWidget() is rebuilt.actions.buttons["edit"]


def test_switching_theme_keeps_an_edit_in_progress(make_window, qtbot) -> None:  # type: ignore[no-untyped-def]
    from app.ui.message_widget import UserMessageWidget

    w, _ = make_window(SCRIPT)
    w.composer.edit.setPlainText("one")
    qtbot.keyClick(w.composer.edit, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: not w.generating, timeout=5000)
    question = next(x for x in w.chat.widgets if isinstance(x, UserMessageWidget))
    qtbot.waitUntil(lambda: question.row_id is not None, timeout=3000)
    question.start_edit()
    question.edit_box.setPlainText("one, but better worded")
    row_id = question.row_id

    w.menu_actions["theme_dark"].trigger()
    qtbot.waitUntil(lambda: w.chat.widget_for_row(row_id) is not question, timeout=3000)
    rebuilt = w.chat.widget_for_row(row_id)
    assert isinstance(rebuilt, UserMessageWidget) and rebuilt.editing
    assert rebuilt.edit_box.toPlainText() == "one, but better worded"  # nothing typed is lost
    qtbot.waitUntil(lambda: QApplication.focusWidget() is rebuilt.edit_box, timeout=3000)
