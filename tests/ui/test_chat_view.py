"""Chat view: follows new content only while the user is at the bottom."""

from __future__ import annotations

from PySide6.QtCore import QMimeData, QPointF, Qt, QUrl
from PySide6.QtGui import QDragEnterEvent

from app.core.chat import Conversation, Message
from app.ui.chat_view import ChatView


def _grow(view: ChatView, qtbot, lines: int = 30) -> None:  # type: ignore[no-untyped-def]
    w = view.widgets[-1]
    w.append_answer("\n\n".join(f"paragraph {i}" for i in range(lines)) + "\n\n")  # type: ignore[attr-defined]
    w.flush()  # type: ignore[attr-defined]
    qtbot.wait(20)


def test_pinned_to_bottom_only_when_user_is_there(qtbot) -> None:  # type: ignore[no-untyped-def]
    view = ChatView()
    qtbot.addWidget(view)
    view.resize(600, 300)
    view.show()
    view.add_user(Message(role="user", content="question"))
    view.start_assistant(model="m", effort="low")
    _grow(view, qtbot)
    bar = view.verticalScrollBar()
    # Layout settles on the event loop: wait for it rather than for a fixed time (slow under load).
    qtbot.waitUntil(lambda: bar.maximum() > 0 and bar.value() == bar.maximum())  # followed the answer
    bar.setValue(0)  # the user scrolls up to read
    assert not view.pinned
    _grow(view, qtbot)
    assert bar.value() == 0  # not yanked back down
    bar.setValue(bar.maximum())
    assert view.pinned
    _grow(view, qtbot)
    qtbot.waitUntil(lambda: bar.value() == bar.maximum())
    bar.setValue(0)
    view.add_user(Message(role="user", content="next"))  # sending always scrolls down
    qtbot.waitUntil(lambda: bar.value() == bar.maximum())


def test_set_conversation_replaces_widgets(qtbot) -> None:  # type: ignore[no-untyped-def]
    view = ChatView()
    qtbot.addWidget(view)
    c = Conversation()
    c.add_user("a")
    c.add(Message(role="assistant", content="b"))
    c.add_tool_result("functions.f", "{}")
    view.set_conversation(c)
    assert len(view.widgets) == 2
    view.set_conversation(Conversation())
    assert view.widgets == []


def test_drag_enter_accepts_local_files_only(make_window, tmp_path) -> None:  # type: ignore[no-untyped-def]
    w, _ = make_window(loaded=False)
    for urls, accepted in (
        ([QUrl.fromLocalFile(str(tmp_path / "m.gguf"))], True),
        ([QUrl("https://x.org/m.gguf")], False),
    ):
        mime = QMimeData()
        mime.setUrls(urls)
        ev = QDragEnterEvent(
            QPointF(5, 5), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier
        )
        w.dragEnterEvent(ev)
        assert ev.isAccepted() is accepted
