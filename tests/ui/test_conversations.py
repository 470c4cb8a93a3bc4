"""Stored conversations in the window: history, search, edit/regenerate/branches, settings, export, recovery."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PySide6.QtCore import Qt
from PySide6.QtGui import QGuiApplication

from app.core import export
from app.core.runtime import Runtime
from app.core.store import ConversationSettings, Store, default_store_path
from app.ui import chat_view
from app.ui.main_window import MainWindow
from app.ui.message_widget import AssistantMessageWidget, UserMessageWidget
from tests.ui.conftest import ANSWER


def _send(w: MainWindow, qtbot, text: str = "hello") -> None:  # type: ignore[no-untyped-def]
    w.composer.edit.setPlainText(text)
    qtbot.keyClick(w.composer.edit, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: not w.generating, timeout=5000)


def _final(text: str) -> str:
    return f"<|channel|>analysis<|message|>Thinking about it.<|end|><|start|>assistant<|channel|>final<|message|>{text}<|return|>"


def _assistants(w: MainWindow) -> list[AssistantMessageWidget]:
    return [x for x in w.chat.widgets if isinstance(x, AssistantMessageWidget)]


def _users(w: MainWindow) -> list[UserMessageWidget]:
    return [x for x in w.chat.widgets if isinstance(x, UserMessageWidget)]


def test_conversations_persist_and_reopen(make_window, qtbot) -> None:  # type: ignore[no-untyped-def]
    w, engine = make_window(_final("First answer."), _final("Second answer."))
    _send(w, qtbot, "What is a harmonica?")
    cid = w.session.conversation_id
    assert cid is not None and w.sidebar.conversation_ids() == [cid]
    assert w.sidebar.item_for(cid).text() == "What is a harmonica?"  # the first line is the title
    assert w.header.title.text() == "What is a harmonica?"
    a = _assistants(w)[-1]
    assert a.row_id is not None and a.status == "complete"
    w.new_chat()
    assert w.chat.widgets == [] and w.session.conversation_id is None
    _send(w, qtbot, "Another chat")
    assert len(w.sidebar.conversation_ids()) == 2 and w.sidebar.conversation_ids()[0] == w.session.conversation_id

    # A new window over the same database (an app restart) lists both, newest first.
    w.close()
    w2 = MainWindow(Runtime(engine_factory=lambda: engine))
    qtbot.addWidget(w2)
    assert len(w2.sidebar.conversation_ids()) == 2
    item = w2.sidebar.item_for(cid)
    w2.sidebar.list.itemClicked.emit(item)
    assert w2.session.conversation_id == cid
    assert [m.content for m in w2.conversation.messages] == ["What is a harmonica?", "First answer."]
    assert _assistants(w2)[-1].answer_view.toPlainText() == "First answer."
    w2.close()


def test_edit_user_message_creates_a_branch(make_window, qtbot) -> None:  # type: ignore[no-untyped-def]
    w, engine = make_window(_final("About cats."), _final("About dogs."))
    _send(w, qtbot, "Tell me about cats")
    user = _users(w)[0]
    user.start_edit()
    assert user.editing and user.edit_box.toPlainText() == "Tell me about cats"
    user.edit_box.setPlainText("Tell me about dogs")
    qtbot.mouseClick(user.edit_send, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not w.generating, timeout=5000)
    assert "Tell me about dogs" in engine.prompts[-1] and "cats" not in engine.prompts[-1]
    users = _users(w)
    assert [u.message.content for u in users] == ["Tell me about dogs"]
    nav = users[0].actions.branch
    assert nav.isVisibleTo(users[0]) and nav.label.text() == "2/2"
    assert _assistants(w)[-1].answer_text == "About dogs."
    # ‹ goes back to the original question and its answer
    qtbot.mouseClick(nav.prev, Qt.MouseButton.LeftButton)
    assert [m.content for m in w.conversation.messages] == ["Tell me about cats", "About cats."]
    assert _users(w)[0].actions.branch.label.text() == "1/2"
    qtbot.mouseClick(_users(w)[0].actions.branch.next, Qt.MouseButton.LeftButton)
    assert [m.content for m in w.conversation.messages] == ["Tell me about dogs", "About dogs."]


def test_regenerate_creates_a_branch_of_the_answer(make_window, qtbot) -> None:  # type: ignore[no-untyped-def]
    w, engine = make_window(_final("Answer one."), _final("Answer two."))
    _send(w, qtbot, "Question")
    a = _assistants(w)[-1]
    assert a.actions.tools_visible  # the latest answer shows its actions without hovering
    qtbot.mouseClick(a.actions.buttons["regenerate"], Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not w.generating, timeout=5000)
    assert len(_assistants(w)) == 1
    b = _assistants(w)[-1]
    assert b.answer_text == "Answer two." and b.actions.branch.label.text() == "2/2"
    assert engine.prompts[-1].count("Question") == 1  # the old answer is not in the new prompt
    assert "Answer one." not in engine.prompts[-1]
    qtbot.mouseClick(b.actions.branch.prev, Qt.MouseButton.LeftButton)
    assert _assistants(w)[-1].answer_text == "Answer one."
    assert len(w.runtime.store.conversation_messages(w.session.conversation_id)) == 3


def test_stop_then_continue_completes_the_answer(make_window, qtbot) -> None:  # type: ignore[no-untyped-def]
    long = "<|channel|>final<|message|>" + "word " * 2000 + "<|return|>"
    w, engine = make_window(long, delay_s=0.002)
    w.composer.edit.setPlainText("Write a lot")
    qtbot.keyClick(w.composer.edit, Qt.Key.Key_Return)
    a = _assistants(w)[-1]
    qtbot.waitUntil(lambda: len(a.answer_text) > 30, timeout=3000)
    w.answers.stop()
    qtbot.waitUntil(lambda: not w.generating, timeout=3000)
    a = _assistants(w)[-1]
    assert a.status == "interrupted" and a.actions.continue_button.isVisibleTo(a)
    partial = w.conversation.messages[-1].content
    engine._scripts = [" THE END.<|return|>"]
    engine.delay_s = 0
    qtbot.mouseClick(a.actions.continue_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not w.generating, timeout=5000)
    b = _assistants(w)[-1]
    assert b.answer_text == partial + " THE END." and b.status == "complete"
    assert not b.actions.continue_button.isVisibleTo(b)
    assert engine.prompts[-1].endswith(partial)
    assert w.conversation.messages[-1].content == partial + " THE END."


def test_search_finds_messages_and_opens_the_hit(make_window, qtbot) -> None:  # type: ignore[no-untyped-def]
    w, _engine = make_window(_final("Zanzibar is an archipelago."), _final("Bread needs time."))
    _send(w, qtbot, "Where is Zanzibar?")
    first = w.session.conversation_id
    w.new_chat()
    _send(w, qtbot, "How do I bake bread?")
    w.sidebar.search.setText("zanzibar")
    qtbot.waitUntil(lambda: w.sidebar.searching, timeout=2000)
    assert w.sidebar.hit_count() == 2  # the question and the answer
    snippet = w.sidebar.hit_html(0)
    assert "<b>Zanzibar</b>" in snippet
    w.sidebar.results.itemClicked.emit(w.sidebar.results.item(1))
    assert w.session.conversation_id == first
    assert w.chat.widget_for_row(w.sidebar.results.item(1).data(Qt.ItemDataRole.UserRole + 1)).property("flash")
    w.sidebar.search.setText("nothingmatchesthis")
    w.sidebar.run_search()
    assert w.sidebar.hit_count() == 0 and "No messages match" in w.sidebar.no_results.text()
    w.sidebar.search.clear()
    assert not w.sidebar.searching


def test_search_hit_on_another_branch_switches_to_it(make_window, qtbot) -> None:  # type: ignore[no-untyped-def]
    w, _engine = make_window(_final("Quokkas are marsupials."), _final("Otters are mustelids."))
    _send(w, qtbot, "Tell me about quokkas")
    a = _assistants(w)[-1]
    w.answers.regenerate(a.row_id)
    qtbot.waitUntil(lambda: not w.generating, timeout=5000)
    assert _assistants(w)[-1].answer_text == "Otters are mustelids."
    hits = w.runtime.store.search("quokkas marsupials")
    w.conversations.open_hit(hits[0].conversation_id, hits[0].message_id)
    assert _assistants(w)[-1].answer_text == "Quokkas are marsupials."


def test_rename_and_delete_with_undo(make_window, qtbot) -> None:  # type: ignore[no-untyped-def]
    w, _ = make_window()
    _send(w, qtbot, "Original title")
    cid = w.session.conversation_id
    w.sidebar.start_rename(cid)
    item = w.sidebar.item_for(cid)
    item.setText("My renamed chat")  # what the inline editor commits
    assert w.runtime.store.get_conversation(cid).title == "My renamed chat"
    assert w.header.title.text() == "My renamed chat"
    w.conversations.delete_conversation(cid)
    assert w.sidebar.conversation_ids() == [] and w.session.conversation_id is None
    assert "Deleted" in w.banner.text.text()
    qtbot.mouseClick(w.banner.button("Undo"), Qt.MouseButton.LeftButton)
    assert w.sidebar.conversation_ids() == [cid] and w.session.conversation_id == cid
    assert w.conversation.messages[0].content == "Original title"


def test_delete_message_after_confirmation(make_window, qtbot, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    w, _ = make_window()
    _send(w, qtbot, "one")
    a = _assistants(w)[-1]
    monkeypatch.setattr(w.conversations, "confirm", lambda *a: False)
    w.conversations.delete_message(a.row_id)
    assert len(w.conversation.messages) == 2
    monkeypatch.setattr(w.conversations, "confirm", lambda *a: True)
    qtbot.mouseClick(a.actions.buttons["delete"], Qt.MouseButton.LeftButton)
    assert [m.role for m in w.conversation.messages] == ["user"]


def test_copy_as_markdown_and_text(make_window, qtbot) -> None:  # type: ignore[no-untyped-def]
    w, _ = make_window()
    _send(w, qtbot)
    a = _assistants(w)[-1]
    w.conversations.copy_message(a.row_id)
    assert QGuiApplication.clipboard().text() == ANSWER
    text = w.conversations.copy_message(a.row_id, plain=True)
    assert "```" not in text and "print('hi')" in text and QGuiApplication.clipboard().text() == text


def test_settings_dialog_presets_and_prompt(make_window, qtbot) -> None:  # type: ignore[no-untyped-def]
    from app.ui.conversation_settings import ConversationSettingsDialog

    w, engine = make_window()
    dlg = ConversationSettingsDialog(w.session.settings, w.runtime.store)
    qtbot.addWidget(dlg)
    dlg.instructions.setPlainText("Always answer like a pirate.")
    dlg.temperature.setValue(0.7)
    dlg.effort.setCurrentIndex(2)
    dlg.seed.setValue(42)
    assert dlg.save_as_preset("Pirate")
    s = dlg.settings()
    assert (s.developer_instructions, s.temperature, s.reasoning_effort, s.seed) == (
        "Always answer like a pirate.",
        0.7,
        "high",
        42,
    )
    w.answers.apply_settings(s)
    assert w.composer.current_effort() == "high" and "instructions" in w.header.badges.text()
    _send(w, qtbot, "Hi")
    prompt = engine.prompts[-1]
    assert "# Instructions\n\nAlways answer like a pirate." in prompt and "Reasoning: high" in prompt
    assert w.runtime.store.conversation_settings(w.session.conversation_id).seed == 42
    # The preset applies to another chat.
    w.new_chat()
    dlg2 = ConversationSettingsDialog(w.session.settings, w.runtime.store)
    qtbot.addWidget(dlg2)
    assert dlg2.preset_box.currentText() == "Pirate"
    dlg2._apply_preset()
    assert dlg2.settings().developer_instructions == "Always answer like a pirate."
    dlg2._delete_preset()
    assert w.runtime.store.list_presets() == []


def test_context_warning_offers_new_chat_and_trimming(make_window, qtbot) -> None:  # type: ignore[no-untyped-def]
    w, engine = make_window(_final("a long answer " * 20), _final("short"), n_ctx=240)
    w.runtime.settings.tools.enabled = False  # this test counts tokens; tool definitions would fill the tiny window
    _send(w, qtbot, "tell me " * 30)  # ~156 prompt tokens + ~65 generated of 240: over 85%
    assert w.context_banner.isVisibleTo(w) and "context window" in w.context_banner.text.text()
    qtbot.mouseClick(w.context_banner.button("Trim oldest turns"), Qt.MouseButton.LeftButton)
    assert w.session.settings.trim_oldest and "oldest turns" in w.header.badges.text()
    _send(w, qtbot, "next question")
    assert "next question" in engine.prompts[-1] and "tell me tell me" not in engine.prompts[-1]
    assert "left out of the prompt" in w.banner.text.text()


def test_export_markdown_json_and_import(make_window, qtbot, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    w, _ = make_window()
    _send(w, qtbot, "Export me")
    md = tmp_path / "chat.md"
    assert w.conversations.export_conversation(md, "md-reasoning")
    text = md.read_text(encoding="utf-8")
    assert text.startswith("# Export me") and "<summary>Reasoning</summary>" in text and "print('hi')" in text
    js = tmp_path / "chat.json"
    assert w.conversations.export_conversation(js, "json")
    data = json.loads(js.read_text(encoding="utf-8"))
    assert data["format"] == export.EXPORT_FORMAT and len(data["conversations"]) == 1
    ids = w.conversations.import_conversations(js)
    assert len(ids) == 1 and w.session.conversation_id == ids[0]
    assert [m.content for m in w.conversation.messages] == ["Export me", ANSWER]
    assert len(w.sidebar.conversation_ids()) == 2
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "something else"}', encoding="utf-8")
    assert w.conversations.import_conversations(bad) == [] and "Nothing was imported" in w.banner.text.text()
    assert len(w.sidebar.conversation_ids()) == 2


def test_crash_mid_answer_is_offered_for_continue(qtbot) -> None:  # type: ignore[no-untyped-def]
    from app.core.scripted_engine import ScriptedEngine

    store = Store.open(default_store_path())
    cid = store.create_conversation().id
    store.add_message(cid, "user", "Explain tides")
    mid = store.begin_stream(cid, effort="medium", model="gpt-oss-20b")
    store.update_stream(mid, "Tides are caused by", "The moon pulls.")
    store.db.close()  # the process "dies": no finish_stream, no clean close
    store._db = None

    engine = ScriptedEngine([" the moon's gravity.<|return|>"])
    engine.load("scripted:gpt-oss-20b")
    w = MainWindow(Runtime(engine_factory=lambda: engine))
    qtbot.addWidget(w)
    w.adopt_engine(engine)
    assert w.session.conversation_id == cid and "interrupted" in w.banner.text.text()
    a = _assistants(w)[-1]
    assert a.status == "interrupted" and "Interrupted" in a.stop_note.text()
    assert a.answer_text == "Tides are caused by"
    qtbot.mouseClick(a.actions.continue_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not w.generating, timeout=5000)
    assert w.conversation.messages[-1].content == "Tides are caused by the moon's gravity."
    w.close()


def test_corrupt_database_is_set_aside_and_the_app_starts(qtbot) -> None:  # type: ignore[no-untyped-def]
    path = default_store_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"SQLite format 3\x00" + b"\xff" * 5000)
    w = MainWindow()
    qtbot.addWidget(w)
    assert "damaged" in w.banner.text.text() and "moved to" in w.banner.text.text()
    backups = [p for p in path.parent.iterdir() if p.name != path.name and "conversations" in p.name]
    assert backups
    assert w.sidebar.conversation_ids() == []
    w.close()


def test_long_conversation_builds_widgets_a_page_at_a_time(make_window, qtbot) -> None:  # type: ignore[no-untyped-def]
    w, _ = make_window()
    store = w.runtime.store
    cid = store.create_conversation("long").id
    for i in range(120):
        store.add_message(cid, "user", f"question {i}")
        store.add_message(cid, "assistant", f"answer {i}")
    w.open_conversation(cid)
    assert len(w.chat.widgets) == chat_view.FIRST_BATCH  # what fits on screen, at once
    assert _assistants(w)[-1].answer_text == "answer 119" and w.chat.earlier.isVisibleTo(w.chat)
    qtbot.waitUntil(lambda: len(w.chat.widgets) == chat_view.PAGE, timeout=5000)  # the rest when idle
    assert [u.message.content for u in _users(w)][:2] == ["question 100", "question 101"]
    w.chat.show_earlier()
    assert len(w.chat.widgets) == chat_view.PAGE + chat_view.FIRST_BATCH
    qtbot.waitUntil(lambda: len(w.chat.widgets) == 2 * chat_view.PAGE, timeout=5000)
    assert w.chat.scroll_to_row(store.active_path(cid)[0].id)  # builds the rest to reach it
    assert len(w.chat.widgets) == 240 and not w.chat.earlier.isVisibleTo(w.chat)


def test_model_writes_the_title_after_the_first_answer(make_window, qtbot) -> None:  # type: ignore[no-untyped-def]
    w, engine = make_window(_final("It rains a lot."), _final("Rainy Seattle weather"), auto_title=True)
    _send(w, qtbot, "why does it rain so much in seattle")
    cid = w.session.conversation_id
    qtbot.waitUntil(lambda: w.runtime.store.get_conversation(cid).title == "Rainy Seattle weather", timeout=20000)
    qtbot.waitUntil(lambda: not w.answers.title_pending, timeout=20000)
    assert w.sidebar.item_for(cid).text() == "Rainy Seattle weather"
    assert "title" in engine.prompts[-1] and "Reasoning: low" in engine.prompts[-1]


@pytest.mark.parametrize("plain", [False, True])
def test_settings_round_trip_in_store(plain: bool, tmp_path: Path) -> None:
    s = Store.open(tmp_path / "x.sqlite3")
    cid = s.create_conversation(settings=ConversationSettings(trim_oldest=not plain, top_k=5)).id
    back = s.conversation_settings(cid)
    assert back.trim_oldest is (not plain) and back.top_k == 5
    s.close()
