"""The window when conversations cannot be saved: the lasting notice, the read-only state, the composer still usable,
the answer kept and saved when space returns; a folder in the way; another Harmonica; the retry timer."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import Qt

from app.core.fsutil import FileWriteError
from app.core.store import StoreUnavailableError, default_store_path
from app.core.store.health import full
from app.ui.main_window import MainWindow
from app.ui.message_widget import AssistantMessageWidget

REPO_ROOT = Path(__file__).resolve().parents[2]
PARAGRAPH = "The tide comes in and goes out again, pulled by the moon. " * 8
ANSWER = "\n\n".join(f"{i}. {PARAGRAPH}" for i in range(40))  # ~20 KB: more than a full database can take
SCRIPT = ["<|channel|>", "final", "<|message|>", *(f"{i}. {PARAGRAPH}\n\n" for i in range(39)), f"39. {PARAGRAPH}"]
SCRIPT.append("<|return|>")
NO_LIMIT = 1_073_741_823
Make = Callable[..., tuple[MainWindow, object]]


def fill_up(w: MainWindow) -> None:
    """The database is full for real: SQLite will not grow it by one more page."""
    db = w.runtime.store.db
    db.execute(f"PRAGMA max_page_count = {db.execute('PRAGMA page_count').fetchone()[0]}")


def free_up(w: MainWindow) -> None:
    w.runtime.store.db.execute(f"PRAGMA max_page_count = {NO_LIMIT}")


def assistants(w: MainWindow) -> list[AssistantMessageWidget]:
    return [x for x in w.chat.widgets if isinstance(x, AssistantMessageWidget)]


def test_the_disk_fills_during_an_answer(make_window: Make, qtbot) -> None:  # type: ignore[no-untyped-def]
    w, _ = make_window(SCRIPT, delay_s=0.02)
    store = w.runtime.store
    assert w.send("Tell me about tides", "medium")
    qtbot.waitUntil(lambda: any(m.content for m in store.active_path(w.session.conversation_id or -1)), timeout=5000)
    fill_up(w)  # the disk fills while the answer streams
    qtbot.waitUntil(lambda: not w.generating, timeout=10000)

    # The lasting notice: where, why, what to do; the status bar says read-only.
    bar = w.store_banner
    assert bar.isVisible() and bar.kind == "error" and bar.button("Try again") is not None
    assert str(store.path.parent) in bar.text.text() and "is full" in bar.text.text()
    assert "Waiting to be saved: the last answer." in bar.text.text()
    assert w.store_status.indicator.isVisible() and w.store_status.indicator.text() == "Read-only"
    assert not w.banner.isVisible()  # no error of its own beside it
    # The whole answer is on screen; the composer is usable again.
    live = assistants(w)[-1]
    assert live.answer_text == ANSWER and "Not saved yet" in live.stop_note.text() and live.stop_note.isVisible()
    assert not w.composer.generating
    w.composer.edit.setPlainText("One more question")
    assert w.composer.button.isEnabled()

    # Writing is refused with the same notice, and nothing typed is lost.
    qtbot.keyClick(w.composer.edit, Qt.Key.Key_Return)
    assert w.composer.edit.toPlainText() == "One more question" and not w.generating
    assert w.store_banner.isVisible() and not w.banner.isVisible()
    cid = w.session.conversation_id or -1
    w.conversations.rename_conversation(cid, "Renamed")
    assert store.get_conversation(cid).title == "Tell me about tides" and not w.banner.isVisible()
    # Reading goes on: search finds what was saved before.
    assert [h.conversation_id for h in store.search("tides")] == [cid]

    # Try again while still full: the notice stays.
    qtbot.mouseClick(bar.button("Try again"), Qt.MouseButton.LeftButton)
    assert w.store_banner.isVisible() and store.read_only

    free_up(w)
    qtbot.mouseClick(w.store_banner.button("Try again"), Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not w.store_banner.isVisible(), timeout=3000)
    assert not store.read_only and not w.store_status.indicator.isVisible()
    assert "Saving works again" in w.banner.text.text()
    rows = store.active_path(cid)
    assert [(r.role, r.status) for r in rows] == [("user", "complete"), ("assistant", "complete")]
    assert rows[-1].content == ANSWER
    qtbot.waitUntil(lambda: assistants(w)[-1].row_id == rows[-1].id, timeout=3000)  # shown from the store
    assert "Not saved yet" not in assistants(w)[-1].stop_note.text()
    assert w.send(w.composer.edit.toPlainText(), "medium")  # and sending works again
    qtbot.waitUntil(lambda: not w.generating, timeout=10000)


def test_space_returning_is_noticed_without_a_click(make_window: Make, qtbot) -> None:  # type: ignore[no-untyped-def]
    w, _ = make_window()
    store = w.runtime.store
    assert w.send("Hello", "medium")
    qtbot.waitUntil(lambda: not w.generating, timeout=5000)
    cid = w.session.conversation_id or -1
    fill_up(w)
    w.conversations.rename_conversation(cid, "A much longer title " * 400)  # this write meets the full disk
    assert store.read_only and w.store_banner.isVisible() and w.store_status.timer.isActive()
    w.composer.effort.set_effort("high")  # settings still change (kept in memory until saved)
    w.store_status.timer.setInterval(50)
    free_up(w)
    qtbot.waitUntil(lambda: not store.read_only, timeout=3000)
    assert not w.store_banner.isVisible() and not w.store_status.timer.isActive()
    assert store.get_setting("settings.chat")["reasoning_effort"] == "high"


def test_a_folder_where_the_database_should_be(make_window: Make, qtbot) -> None:  # type: ignore[no-untyped-def]
    path = default_store_path()
    path.mkdir(parents=True)
    w, _ = make_window()
    bar = w.store_banner
    assert bar.isVisible() and str(path) in bar.text.text() and "is a folder" in bar.text.text()
    assert "kept only until Harmonica closes" in bar.text.text()
    assert w.store_status.indicator.text() == "Not saving"
    # The app works all the same (in memory this session).
    assert w.send("Written while the path is a folder", "medium")
    qtbot.waitUntil(lambda: not w.generating, timeout=5000)
    assert len(assistants(w)) == 1

    path.rmdir()
    qtbot.mouseClick(bar.button("Try again"), Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not w.store_banner.isVisible(), timeout=3000)
    assert "1 conversation from this session was saved" in w.banner.text.text()
    assert path.is_file()
    assert w.conversation.messages[0].content == "Written while the path is a folder"
    assert w.session.conversation_id in w.runtime.store.carried_over.values()


def test_another_harmonica_has_the_conversations(make_window: Make, qtbot) -> None:  # type: ignore[no-untyped-def]
    path = default_store_path()
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    code = (
        "import sys\nfrom app.core.store import Store\n"
        f"s, _ = Store.open_app({str(path)!r})\n"
        "c = s.create_conversation('Started in the other window')\ns.add_message(c.id, 'user', 'hello')\n"
        "print('READY', flush=True)\nsys.stdin.read()\ns.close()\n"
    )
    other = subprocess.Popen(
        [sys.executable, "-c", code], cwd=REPO_ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert other.stdin is not None and other.stdout is not None
    try:
        assert other.stdout.readline().strip() == "READY"
        w, _ = make_window()
        assert w.store_banner.isVisible() and "Another Harmonica is already using" in w.store_banner.text.text()
        assert len(w.sidebar.conversation_ids()) == 1  # its conversations, read-only
        w.open_conversation(w.sidebar.conversation_ids()[0])
        assert [m.content for m in w.conversation.messages] == ["hello"]
        w.composer.edit.setPlainText("Can I write?")
        qtbot.keyClick(w.composer.edit, Qt.Key.Key_Return)
        assert w.composer.edit.toPlainText() == "Can I write?" and not w.generating
        other.stdin.close()
        other.wait(10)
        qtbot.mouseClick(w.store_banner.button("Try again"), Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda: not w.store_banner.isVisible(), timeout=3000)
        qtbot.keyClick(w.composer.edit, Qt.Key.Key_Return)
        qtbot.waitUntil(lambda: not w.generating, timeout=5000)
        assert [m.content for m in w.conversation.messages][:2] == ["hello", "Can I write?"]
    finally:
        other.kill()
        other.wait(10)


def test_a_refusal_or_a_failed_file_anywhere_is_a_notice_not_a_dialog(make_window: Make, qtbot) -> None:  # type: ignore[no-untyped-def]
    w, _ = make_window()
    problem = full(default_store_path())
    w.show_exception(StoreUnavailableError(problem))  # e.g. from an Undo button's handler
    assert w.store_banner.isVisible() is False  # not read-only: the store itself is fine
    target = Path(w.runtime.store.path).parent / "tools.json"
    w.show_exception(FileWriteError(target, OSError(28, "No space left on device")))
    assert w.banner.isVisible() and str(target) in w.banner.text.text() and "free up space" in w.banner.text.text()


def test_closing_with_an_answer_not_saved_yet_asks_first(make_window: Make, qtbot) -> None:  # type: ignore[no-untyped-def]
    w, _ = make_window(SCRIPT, delay_s=0.01)
    store = w.runtime.store
    assert w.send("Tell me about tides", "medium")
    qtbot.waitUntil(lambda: any(m.content for m in store.active_path(w.session.conversation_id or -1)), timeout=5000)
    fill_up(w)
    qtbot.waitUntil(lambda: not w.generating, timeout=10000)
    assert store.pending == ("an answer",)

    assert not w.close()  # refused: closing would lose the answer
    assert w.isVisible() and "closing Harmonica now loses it" in w.banner.text.text()
    free_up(w)  # space returns: closing saves nothing more and just closes
    w.store_status.retry()
    assert store.pending == () and store.active_path(w.session.conversation_id or -1)[-1].content == ANSWER
    assert w.close()


def test_close_anyway_closes(make_window: Make, qtbot) -> None:  # type: ignore[no-untyped-def]
    path = default_store_path()
    path.mkdir(parents=True)
    w, _ = make_window()
    assert w.send("Only in memory", "medium")
    qtbot.waitUntil(lambda: not w.generating, timeout=5000)
    assert not w.close() and "1 conversation of this session is not saved anywhere" in w.banner.text.text()
    qtbot.mouseClick(w.banner.button("Close anyway"), Qt.MouseButton.LeftButton)
    assert not w.isVisible() and w.runtime.closed
