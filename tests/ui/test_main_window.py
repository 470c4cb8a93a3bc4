"""Main window with a scripted model: sending, streaming, stop, effort, loading, errors, drops."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QEvent, QMimeData, QObject, QPointF, Qt, QUrl
from PySide6.QtGui import QDropEvent

from app.core.chat import Message
from app.core.engine import EngineError, LoadSettings
from app.core.runtime import Runtime
from app.core.scripted_engine import ScriptedEngine
from app.ui.main_window import MainWindow
from app.ui.message_widget import AssistantMessageWidget
from tests.ui.conftest import ANSWER, REASONING, SCRIPT


def _send(w: MainWindow, qtbot, text: str = "hello", effort: str | None = None) -> None:  # type: ignore[no-untyped-def]
    if effort:
        w.composer.set_effort(effort)
    w.composer.edit.setPlainText(text)
    qtbot.keyClick(w.composer.edit, Qt.Key.Key_Return)


def _assistant(w: MainWindow) -> AssistantMessageWidget:
    widgets = [x for x in w.chat.widgets if isinstance(x, AssistantMessageWidget)]
    assert widgets
    return widgets[-1]


def test_first_run_page_without_model(make_window) -> None:  # type: ignore[no-untyped-def]
    w, _ = make_window(loaded=False)
    assert w.panels.first_run is not None and w.stack.currentWidget() is w.panels.first_run  # help to get a model
    assert not w.composer.button.isEnabled()
    assert not w.send("hi", "medium")
    assert "Open a model first" in w.banner.text.text()


def test_send_streams_reasoning_then_answer_then_collapses(make_window, qtbot) -> None:  # type: ignore[no-untyped-def]
    w, _engine = make_window(SCRIPT, delay_s=0.004)
    assert w.stack.currentWidget() is w.empty and "ready" in w.empty.hint.text()
    _send(w, qtbot)
    assert w.composer.edit.toPlainText() == ""
    assert w.generating and w.composer.button.property("mode") == "stop"
    a = _assistant(w)
    qtbot.waitUntil(lambda: a.reasoning_view.toPlainText() != "", timeout=3000)
    assert a.reasoning_expanded and a.answer_text == ""  # live reasoning, expanded
    assert a.reasoning_toggle.text().startswith("Thinking")
    qtbot.waitUntil(lambda: not w.generating, timeout=5000)
    assert not a.reasoning_expanded and a.reasoning_toggle.text().startswith("Thought for")
    assert a.reasoning_text == REASONING
    assert a.answer_view.markdown == ANSWER
    assert "print('hi')" in a.answer_view.toPlainText() and "```" not in a.answer_view.toPlainText()
    qtbot.mouseClick(a.reasoning_toggle, Qt.MouseButton.LeftButton)
    assert a.reasoning_expanded and a.reasoning_view.toPlainText() == REASONING
    # the conversation holds both messages; the status bar shows speed and context
    roles = [m.role for m in w.conversation.messages]
    assert roles == ["user", "assistant"] and w.conversation.messages[1].content == ANSWER
    assert "tok/s" in w.status_speed.text()
    assert w.status_context.text().startswith("Context ") and "/ 8,192" in w.status_context.text()
    assert w.composer.button.property("mode") == "send"


def test_stop_interrupts_generation(make_window, qtbot) -> None:  # type: ignore[no-untyped-def]
    long_script = (
        "<|channel|>analysis<|message|>"
        + "thinking hard " * 2000
        + "<|end|><|start|>assistant<|channel|>final<|message|>never<|return|>"
    )
    w, engine = make_window(long_script, delay_s=0.002)
    _send(w, qtbot)
    a = _assistant(w)
    qtbot.waitUntil(lambda: len(a.reasoning_text) > 20, timeout=3000)
    qtbot.mouseClick(w.composer.button, Qt.MouseButton.LeftButton)  # the Send button is Stop now
    qtbot.waitUntil(lambda: not w.generating, timeout=3000)
    assert engine.last_stats.stop_reason == "cancelled"
    assert engine.last_stats.generated_tokens < 1000
    msg = w.conversation.messages[-1]
    assert msg.role == "assistant" and msg.stop_reason == "cancelled" and msg.content == ""
    assert "Stopped" in a.stop_note.text()
    # the app is usable again: the next message gets an answer
    engine.queue(SCRIPT)
    engine._scripts = [SCRIPT]
    _send(w, qtbot, "again")
    qtbot.waitUntil(lambda: not w.generating, timeout=5000)
    assert w.conversation.messages[-1].content == ANSWER


def test_effort_selector_reaches_prompt_and_is_shown_per_message(make_window, qtbot) -> None:  # type: ignore[no-untyped-def]
    w, engine = make_window(SCRIPT)
    _send(w, qtbot, "question at high", "high")
    qtbot.waitUntil(lambda: not w.generating, timeout=5000)
    # the slider by keyboard, as a user would: high → Home → low
    w.composer.effort.slider.setFocus()
    qtbot.keyClick(w.composer.effort.slider, Qt.Key.Key_Home)
    _send(w, qtbot, "question at low")
    qtbot.waitUntil(lambda: not w.generating, timeout=5000)
    assert "Reasoning: high" in engine.prompts[0] and "Reasoning: low" in engine.prompts[1]
    msgs = [m for m in w.conversation.messages if m.role == "assistant"]
    assert [m.effort for m in msgs] == ["high", "low"]
    chips = [x.effort_chip.text() for x in w.chat.widgets if isinstance(x, AssistantMessageWidget)]
    assert chips == ["high effort", "low effort"]
    # history is rendered for the second turn, without the first turn's reasoning
    assert "question at high" in engine.prompts[1] and REASONING not in engine.prompts[1]


def test_shift_enter_inserts_newline(make_window, qtbot) -> None:  # type: ignore[no-untyped-def]
    w, _ = make_window()
    w.composer.edit.setPlainText("line one")
    w.composer.edit.moveCursor(w.composer.edit.textCursor().MoveOperation.End)
    qtbot.keyClick(w.composer.edit, Qt.Key.Key_Return, Qt.KeyboardModifier.ShiftModifier)
    qtbot.keyClicks(w.composer.edit, "line two")
    assert w.composer.edit.toPlainText() == "line one\nline two" and not w.generating


def test_loading_shows_progress_then_ready(make_window, qtbot, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    w, _engine = make_window(loaded=False, load_delay_s=0.5)
    f = tmp_path / "my-model.gguf"
    f.write_bytes(b"GGUF")
    assert w.open_model(f)
    assert w.load_panel.isVisible() and "my-model" in w.load_panel.label.text()
    qtbot.waitUntil(lambda: w.load_panel.bar.value() > 0, timeout=3000)
    assert not w.composer.button.isEnabled()
    qtbot.waitUntil(lambda: not w.loading, timeout=5000)
    assert not w.load_panel.isVisible()
    assert w.status_model.text() == "my-model" and "my-model" in w.windowTitle()
    assert "ready" in w.empty.hint.text()


def test_load_can_be_cancelled(make_window, qtbot, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    w, engine = make_window(loaded=False, load_delay_s=2.0)
    f = tmp_path / "slow.gguf"
    f.write_bytes(b"GGUF")
    w.open_model(f)
    qtbot.mouseClick(w.load_panel.cancel, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not w.loading, timeout=5000)
    assert not engine.loaded and "cancelled" in w.banner.text.text().lower()


def test_open_model_errors_are_shown_not_raised(make_window, qtbot, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    w, _ = make_window(loaded=False)
    txt = tmp_path / "notes.txt"
    txt.write_text("x")
    assert not w.open_model(txt) and "not a GGUF" in w.banner.text.text()
    assert not w.open_model(tmp_path / "missing.gguf") and "does not exist" in w.banner.text.text()

    class Broken(ScriptedEngine):
        def load(self, path, settings=None, progress=None):  # type: ignore[no-untyped-def]
            raise EngineError("This file is damaged: the header is truncated.")

    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"nope")
    w3 = MainWindow(
        Runtime(engine_factory=lambda: ScriptedEngine("x"))
    )  # automatic settings: the file is checked before planning
    qtbot.addWidget(w3)
    assert w3.open_model(bad)
    qtbot.waitUntil(lambda: not w3.loading, timeout=5000)
    assert "bad.gguf is too small to be a GGUF model" in w3.banner.text.text()

    w2 = MainWindow(Runtime(engine_factory=lambda: Broken()))
    qtbot.addWidget(w2)
    w2.runtime.load_settings = LoadSettings()
    assert w2.open_model(bad)
    qtbot.waitUntil(lambda: not w2.loading, timeout=3000)
    assert "damaged" in w2.banner.text.text() and w2.banner.isVisibleTo(w2)
    assert w2.status_model.text() == "No model"


def test_engine_that_cannot_start_is_reported(qtbot, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    def factory() -> ScriptedEngine:
        raise ImportError("No module named 'llama_cpp'")

    w = MainWindow(Runtime(engine_factory=factory))
    qtbot.addWidget(w)
    f = tmp_path / "m.gguf"
    f.write_bytes(b"GGUF")
    assert not w.open_model(f)
    assert "llama_cpp" in w.banner.text.text()


def _drop(w: MainWindow, paths: list[Path]) -> QDropEvent:
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(p)) for p in paths])
    ev = QDropEvent(
        QPointF(10, 10), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier
    )
    w.dropEvent(ev)
    return ev


def test_drag_and_drop_gguf_loads_it(make_window, qtbot, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    w, engine = make_window(loaded=False)
    f = tmp_path / "dropped.gguf"
    f.write_bytes(b"GGUF")
    _drop(w, [tmp_path / "readme.md", f])
    qtbot.waitUntil(lambda: engine.loaded and not w.loading, timeout=3000)
    assert engine.info.name == "dropped"
    _drop(w, [tmp_path / "photo.png"])
    assert "gguf" in w.banner.text.text()


def test_generation_error_is_shown_and_app_keeps_working(make_window, qtbot) -> None:  # type: ignore[no-untyped-def]
    w, engine = make_window(SCRIPT, n_ctx=120)
    engine.load("scripted:x")  # n_ctx 120: the prompt (~80 tokens) leaves too little room
    _send(w, qtbot, "hello " * 20)
    qtbot.waitUntil(lambda: not w.generating, timeout=3000)
    assert "too long" in w.banner.text.text()
    assert not [x for x in w.chat.widgets if isinstance(x, AssistantMessageWidget)]  # no empty answer left
    assert w.composer.button.property("mode") == "send"


def test_unexpected_error_opens_dialog_not_crash(make_window, qtbot, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    w, engine = make_window(SCRIPT)
    shown: list[BaseException] = []
    monkeypatch.setattr(w, "show_exception", lambda exc, tb=None: shown.append(exc))

    def boom(*a, **k):  # type: ignore[no-untyped-def]
        raise RuntimeError("kaboom")

    monkeypatch.setattr(engine, "tokenize", boom)
    _send(w, qtbot)
    qtbot.waitUntil(lambda: not w.generating, timeout=3000)
    assert len(shown) == 1 and "kaboom" in str(shown[0])


def test_set_conversation_shows_history(make_window) -> None:  # type: ignore[no-untyped-def]
    from app.core.chat import Conversation

    w, _ = make_window()
    c = Conversation()
    c.add_user("old question")
    c.add(Message(role="assistant", content="old **answer**", thinking="old thoughts", thinking_s=1.0, effort="low"))
    w.set_conversation(c)
    assert w.stack.currentWidget() is w.chat
    a = _assistant(w)
    assert not a.reasoning_expanded and a.answer_view.toPlainText() == "old answer"
    w.new_chat()
    assert w.stack.currentWidget() is w.empty and w.conversation.messages == []


def test_opening_another_model_replaces_the_loaded_one(make_window, qtbot, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    w, engine = make_window()
    assert engine.loaded
    f = tmp_path / "second-model.gguf"
    f.write_bytes(b"GGUF")
    assert w.open_model(f)
    qtbot.waitUntil(lambda: not w.loading, timeout=3000)
    assert engine.info.name == "second-model" and w.status_model.text() == "second-model"
    _send(w, qtbot)
    qtbot.waitUntil(lambda: not w.generating, timeout=5000)
    assert w.conversation.messages[-1].model == "second-model"
    # a second load while busy is refused with a message instead of racing the first
    w2, _e2 = make_window(loaded=False, load_delay_s=1.0)
    w2.open_model(f)
    assert not w2.open_model(f) and "already loading" in w2.banner.text.text()


def test_escape_stops_generation(make_window, qtbot) -> None:  # type: ignore[no-untyped-def]
    w, engine = make_window("<|channel|>final<|message|>" + "word " * 3000 + "<|return|>", delay_s=0.002)
    _send(w, qtbot)
    a = _assistant(w)
    qtbot.waitUntil(lambda: len(a.answer_text) > 10, timeout=3000)
    w.activateWindow()
    qtbot.waitUntil(lambda: w.isActiveWindow(), timeout=2000)  # shortcuts need the active window
    qtbot.keyClick(w.composer.edit, Qt.Key.Key_Escape)
    qtbot.waitUntil(lambda: not w.generating, timeout=3000)
    assert engine.last_stats.stop_reason == "cancelled" and w.conversation.messages[-1].content


def test_a_failed_open_or_drop_keeps_the_loaded_model_in_the_status_bar_and_title(
    make_window, qtbot, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    w, engine = make_window()
    model, title = w.status_model.text(), w.windowTitle()
    assert model.startswith("gpt-oss-20b") and title.startswith("gpt-oss-20b")
    w.runtime.load_settings = None  # automatic settings: the file is checked before anything is unloaded
    wrong = tmp_path / "wrong.gguf"
    wrong.write_bytes(b"nope")
    assert w.open_model(wrong)
    qtbot.waitUntil(lambda: not w.loading, timeout=5000)
    assert "too small to be a GGUF model" in w.banner.text.text()
    assert engine.loaded and w.runtime.model_loaded  # the old model still answers …
    assert w.status_model.text() == model and w.windowTitle() == title  # … and the window says so
    assert w.composer.button.isEnabled() or w.composer.edit.placeholderText() == "Message gpt-oss…"
    # The same for a dropped file.
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(wrong))])
    drop = QDropEvent(
        QPointF(10, 10), Qt.DropAction.CopyAction, mime, Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier
    )
    w.dropEvent(drop)
    qtbot.waitUntil(lambda: not w.loading, timeout=5000)
    assert w.status_model.text() == model and w.windowTitle() == title
    _send(w, qtbot)
    qtbot.waitUntil(lambda: not w.generating, timeout=5000)
    assert w.conversation.messages[-1].content == ANSWER


def test_the_composer_says_ready_after_a_load_without_a_click(make_window, qtbot, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    w, _ = make_window(loaded=False, load_delay_s=0.3)
    f = tmp_path / "my-model.gguf"
    f.write_bytes(b"GGUF")
    w.open_model(f)
    assert w.composer.edit.placeholderText() == "Loading the model…"
    painted: list[str] = []

    class Spy(QObject):
        def eventFilter(self, obj, e):  # type: ignore[no-untyped-def]
            if e.type() == QEvent.Type.Paint:
                painted.append(w.composer.edit.placeholderText())
            return False

    spy = Spy()
    w.composer.edit.viewport().installEventFilter(spy)
    qtbot.waitUntil(lambda: not w.loading, timeout=5000)
    assert w.composer.edit.placeholderText() == "Message gpt-oss…"
    qtbot.waitUntil(lambda: "Message gpt-oss…" in painted, timeout=2000)  # repainted, not only changed


def test_reading_your_message_shows_prompt_progress_before_the_first_token(make_window, qtbot) -> None:  # type: ignore[no-untyped-def]
    w, _ = make_window(SCRIPT, prompt_delay_s=1.2, delay_s=0.01)
    shown: list[str] = []
    w.status_speed.setText("")
    w.answers.speed.connect(shown.append)
    _send(w, qtbot, "please read all of this carefully " * 400)  # ~3,000 tokens: several batches
    a = _assistant(w)
    qtbot.waitUntil(lambda: a.reading_note.isVisible(), timeout=3000)
    assert a.reading_note.text().startswith("Reading your message…") and a.answer_text == ""
    qtbot.waitUntil(lambda: "%" in a.reading_note.text(), timeout=3000)
    qtbot.waitUntil(lambda: not w.generating, timeout=8000)
    assert not a.reading_note.isVisible() and a.answer_text == ANSWER
    reading = [t for t in shown if t.startswith("Reading your message…")]
    percents = [int(t.rsplit(" ", 1)[1].rstrip("%")) for t in reading if t.endswith("%")]
    assert percents and percents == sorted(percents) and 0 < percents[0] < 100  # it moves forward
    assert shown.index(reading[-1]) < len(shown) - 1  # and gives way to the answer


def test_a_short_cached_prompt_shows_no_reading_note(make_window, qtbot) -> None:  # type: ignore[no-untyped-def]
    w, _ = make_window(SCRIPT)
    shown: list[str] = []
    w.answers.speed.connect(shown.append)
    _send(w, qtbot, "hi")
    qtbot.waitUntil(lambda: not w.generating, timeout=5000)
    assert not any(t.startswith("Reading") for t in shown) and not _assistant(w).reading_note.isVisible()


def test_the_composer_waits_for_a_model_on_the_first_run_page(make_window, qtbot) -> None:  # type: ignore[no-untyped-def]
    w, engine = make_window(loaded=False)
    assert w.stack.currentWidget() is w.panels.first_run and not w.composer.isVisible()
    engine.load("scripted:gpt-oss-20b")
    w.adopt_engine(engine)
    assert w.stack.currentWidget() is w.empty and w.composer.isVisible()


def test_a_missing_last_model_says_so_with_locate_and_download(qtbot, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from PySide6.QtWidgets import QFileDialog

    gone = tmp_path / "moved-away" / "gpt-oss-20b-mxfp4.gguf"
    first = Runtime(engine_factory=lambda: ScriptedEngine("x"))
    first.settings.load.last_model = str(gone)
    first.settings.save("load")
    store = first.store
    w = MainWindow(Runtime(store=store, engine_factory=lambda: ScriptedEngine("x")))
    qtbot.addWidget(w)
    assert w.banner.isVisibleTo(w) and w.banner.kind == "error"
    assert str(gone) in w.banner.text.text() and "no longer" in w.banner.text.text()
    assert [b.text() for b in w.banner.buttons] == ["Locate…", "Download…"]
    assert not w.loading  # nothing is tried with a file that is not there
    found = tmp_path / "found.gguf"
    found.write_bytes(b"GGUF")
    monkeypatch.setattr(QFileDialog, "getOpenFileName", staticmethod(lambda *a, **k: (str(found), "")))
    w.runtime.load_settings = LoadSettings()
    w.banner.button("Locate…").click()  # type: ignore[union-attr]
    qtbot.waitUntil(lambda: not w.loading, timeout=5000)
    assert w.runtime.model_name == "found" and w.runtime.settings.load.last_model == str(found)


def test_when_the_first_model_is_ready_the_keyboard_is_in_the_message_box(make_window, qtbot, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    w, _ = make_window(loaded=False, load_delay_s=0.2)
    w.activateWindow()
    qtbot.waitUntil(lambda: w.isActiveWindow(), timeout=3000)
    assert not w.sidebar.isVisible()  # a first start: nothing to list yet
    w.panels.first_run.have_button.setFocus()  # where the keyboard was on the first-run page
    f = tmp_path / "first.gguf"
    f.write_bytes(b"GGUF")
    assert w.open_model(f)
    qtbot.waitUntil(lambda: not w.loading, timeout=5000)
    assert w.composer.edit.hasFocus()  # typing goes to the message, a space presses no button
    assert w.sidebar.isVisible() and w.runtime.settings.window.sidebar_visible
    qtbot.keyClicks(w.composer.edit, "hello there")
    assert w.composer.edit.toPlainText() == "hello there"
