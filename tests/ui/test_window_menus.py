"""Menus built from the declared actions, settings kept by the window, and the Help menu's log and diagnostics."""

from __future__ import annotations

from pathlib import Path

import pytest
from PySide6.QtCore import Qt, QUrl
from PySide6.QtGui import QDesktopServices, QGuiApplication, QKeySequence
from PySide6.QtWidgets import QApplication, QMainWindow

from app.core import logs
from app.core.runtime import Runtime
from app.ui import style
from app.ui.actions import ACTIONS, resolve
from app.ui.main_window import MainWindow


def _menu_texts(w: MainWindow) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for action in w.menuBar().actions():
        menu = action.menu()
        out[action.text()] = [a.text() for a in menu.actions() if not a.isSeparator()]  # type: ignore[union-attr]
    return out


def test_every_declared_action_is_built_and_reaches_its_handler(make_window) -> None:  # type: ignore[no-untyped-def]
    w, _ = make_window()
    assert set(w.menu_actions) == {spec.id for spec in ACTIONS}
    for spec in ACTIONS:
        assert callable(resolve(w, spec.handler)), spec.id
    menus = _menu_texts(w)
    assert list(menus) == ["&File", "&Chat", "&Tools", "&Connections", "&View", "&Help"]
    assert menus["&File"][:2] == ["&Open model…", "&Models…"] and menus["&File"][-1] == "&Quit"
    assert "&Theme" in menus["&View"] and "Show &log folder" in menus["&Help"] and "&Copy diagnostics" in menus["&Help"]
    keys = {
        i: w.menu_actions[i].shortcut() for i in ("open_model", "models", "new_chat", "chat_settings", "lab", "sidebar")
    }
    assert keys["open_model"] == QKeySequence(QKeySequence.StandardKey.Open)
    assert keys["models"] == QKeySequence("Ctrl+Shift+M") and keys["lab"] == QKeySequence("Ctrl+L")
    assert keys["sidebar"] == QKeySequence("Ctrl+B") and keys["chat_settings"] == QKeySequence("Ctrl+,")
    stop = w.menu_actions["stop"]
    assert stop.shortcut() == QKeySequence("Esc") and stop in QMainWindow.actions(w)  # a shortcut of the window
    assert all(stop not in a.menu().actions() for a in w.menuBar().actions())  # type: ignore[union-attr]


def test_open_model_is_disabled_while_a_model_loads(make_window, qtbot, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    w, _ = make_window(loaded=False, load_delay_s=0.5)
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")
    assert w.menu_actions["open_model"].isEnabled()
    assert w.open_model(model)
    assert not w.menu_actions["open_model"].isEnabled()
    qtbot.waitUntil(lambda: not w.loading, timeout=5000)
    assert w.menu_actions["open_model"].isEnabled()


def test_the_sidebar_and_the_theme_are_remembered(make_window, qtbot) -> None:  # type: ignore[no-untyped-def]
    w, engine = make_window()
    w.menu_actions["sidebar"].trigger()
    assert not w.sidebar.isVisibleTo(w) and not w.menu_actions["sidebar"].isChecked()
    w.header.sidebar_button.click()  # the header's button and the menu agree
    assert w.sidebar.isVisibleTo(w) and w.menu_actions["sidebar"].isChecked()
    w.menu_actions["sidebar"].trigger()
    assert w.menu_actions["theme_system"].isChecked()
    w.menu_actions["theme_dark"].trigger()
    assert w.menu_actions["theme_dark"].isChecked() and not w.menu_actions["theme_system"].isChecked()
    assert style.current().dark  # applied at once (tests/ui/test_theme.py looks closer)
    w.menu_actions["theme_light"].trigger()
    w.menu_actions["theme_dark"].trigger()
    assert style.current().dark
    style.apply(QApplication.instance(), False)  # type: ignore[arg-type]  # the other tests' light look
    store = w.runtime.store
    w2 = MainWindow(Runtime(store=store, engine_factory=lambda: engine))
    qtbot.addWidget(w2)
    assert w2.runtime.settings.window.theme == "dark" and not w2.runtime.settings.window.sidebar_visible
    assert not w2.sidebar.isVisibleTo(w2) and w2.menu_actions["theme_dark"].isChecked()


def test_the_slider_sets_the_effort_new_chats_start_with(make_window, qtbot) -> None:  # type: ignore[no-untyped-def]
    w, _ = make_window()
    w.composer.edit.setPlainText("first")
    qtbot.keyClick(w.composer.edit, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: not w.generating, timeout=5000)
    old = w.session.conversation_id
    w.composer.effort.slider.setFocus()
    qtbot.keyClick(w.composer.effort.slider, Qt.Key.Key_End)  # high
    assert w.session.settings.reasoning_effort == "high" and w.runtime.settings.chat.reasoning_effort == "high"
    w.new_chat()
    assert w.composer.current_effort() == "high" and w.session.settings.reasoning_effort == "high"
    w.composer.effort.slider.setFocus()
    qtbot.keyClick(w.composer.effort.slider, Qt.Key.Key_Home)  # low, for new chats too
    assert old is not None and w.open_conversation(old)
    assert w.composer.current_effort() == "high"  # the chat's own effort is shown again …
    assert w.runtime.settings.chat.reasoning_effort == "low"  # … and showing it is not choosing it


@pytest.fixture
def log_file(tmp_path: Path):  # type: ignore[no-untyped-def]
    logs.shutdown()
    path = logs.configure(folder=tmp_path / "logs")
    yield path
    logs.shutdown()


def test_help_menu_log_folder_diagnostics_and_debug_logging(
    make_window, qtbot, monkeypatch: pytest.MonkeyPatch, log_file: Path
) -> None:  # type: ignore[no-untyped-def]
    w, _ = make_window()
    opened: list[QUrl] = []
    monkeypatch.setattr(QDesktopServices, "openUrl", staticmethod(lambda url: opened.append(url) or True))
    w.menu_actions["log_folder"].trigger()
    assert opened and Path(opened[0].toLocalFile()) == logs.log_dir()

    w.composer.edit.setPlainText("my very private question")
    qtbot.keyClick(w.composer.edit, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: not w.generating, timeout=5000)
    try:
        raise ValueError("the disk said no")
    except ValueError as exc:
        w.notices.error("The chat could not be exported: the disk said no", exc)
    w.menu_actions["diagnostics"].trigger()
    text = QGuiApplication.clipboard().text()
    assert text.startswith("Harmonica diagnostics") and "Qt" in text and "gpt-oss-20b (scripted)" in text
    assert "The chat could not be exported" in text and "ValueError: the disk said no" in text
    assert "private question" not in text and "private question" not in log_file.read_text(encoding="utf-8")

    assert not w.menu_actions["debug_logging"].isChecked() and not logs.debug_enabled()
    w.menu_actions["debug_logging"].trigger()
    assert w.runtime.settings.logging.debug and logs.debug_enabled()
    w.menu_actions["debug_logging"].trigger()
    assert not w.runtime.settings.logging.debug and not logs.debug_enabled()


def test_a_new_context_size_offers_to_reload_the_model_file(make_window, qtbot, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import dataclasses

    w, engine = make_window(loaded=False)
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")
    assert w.open_model(model)
    qtbot.waitUntil(lambda: not w.loading and engine.loaded, timeout=5000)
    w.answers.apply_settings(dataclasses.replace(w.session.settings, context_size=4096))
    assert "4,096-token context" in w.banner.text.text()
    reload = w.banner.button("Reload model")
    assert reload is not None
    reload.click()
    assert w.loading  # the same file, now with the chat's context size
    qtbot.waitUntil(lambda: not w.loading, timeout=5000)
    assert engine.n_ctx == 4096

    w2, _ = make_window()  # a scripted model has no file to reload
    w2.answers.apply_settings(dataclasses.replace(w2.session.settings, context_size=4096))
    assert "4,096-token context" in w2.banner.text.text() and w2.banner.button("Reload model") is None
