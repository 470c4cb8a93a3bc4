"""The store when its disk cannot be written: full (for real: SQLite's page limit and a filled tmpfs), read-only,
locked by another Harmonica, a folder in the way, no permission; the read-only state, writes kept, recovery."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.core import export
from app.core.runtime import Runtime
from app.core.scripted_engine import ScriptedEngine
from app.core.session import ChatSession, MessageKept, MessageSaved
from app.core.settings import Settings
from app.core.store import (
    ConversationSettings,
    Store,
    StoreProblem,
    StoreUnavailableError,
)
from app.core.store.health import (
    FULL,
    IN_USE,
    IO_ERROR,
    NO_FOLDER,
    NO_PERMISSION,
    NOT_A_FILE,
    READ_ONLY,
    UNREADABLE,
)
from tests.fixtures.small_disk import small_disk
from tests.fixtures.unprivileged import NOBODY, as_nobody, shared_folder

REPO_ROOT = Path(__file__).resolve().parents[2]
LONG = "word " * 40_000  # 200 KB: more than the pages a full database has left
# The same text as an engine script of 2 KB pieces (one token each: far below any token limit).
LONG_ANSWER = [
    "<|channel|>",
    "final",
    "<|message|>",
    *(LONG[i : i + 2000] for i in range(0, len(LONG), 2000)),
    "<|return|>",
]
NO_LIMIT = 1_073_741_823


def fill_up(store: Store) -> None:
    """Make the database full for real: SQLite refuses to grow it by one page (SQLITE_FULL)."""
    pages = store.db.execute("PRAGMA page_count").fetchone()[0]
    store.db.execute(f"PRAGMA max_page_count = {pages}")


def free_up(store: Store) -> None:
    store.db.execute(f"PRAGMA max_page_count = {NO_LIMIT}")


def make_read_only(store: Store, cid: int) -> StoreProblem:
    """A real full-disk failure: the store turns read-only."""
    fill_up(store)
    with pytest.raises(StoreUnavailableError) as e:
        store.add_message(cid, "user", LONG)
    return e.value.problem


def engine(*scripts: str | list[str]) -> ScriptedEngine:
    e = ScriptedEngine(list(scripts))
    e.load("scripted:gpt-oss-20b")
    return e


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store.open(tmp_path / "c.sqlite3")
    yield s
    s.close()


def _chat(store: Store) -> tuple[int, list[str]]:
    cid = store.create_conversation("Tides").id
    texts = ["Why are there tides?", "The moon pulls the oceans.", "And the sun?"]
    for role, text in zip(("user", "assistant", "user"), texts, strict=True):
        store.add_message(cid, role, text)
    return cid, texts


# --- a full disk while saving -----------------------------------------------------------------------


def test_a_full_disk_makes_the_store_read_only_and_keeps_everything_saved_before(store: Store) -> None:
    cid, texts = _chat(store)
    heard: list[StoreProblem | None] = []
    store.add_listener(heard.append)
    problem = make_read_only(store, cid)

    assert problem.kind == FULL and store.read_only and heard == [problem]
    message = problem.message
    assert str(store.path.parent) in message and "full" in message
    assert "Free up space" in message and "Try again" in message and "saved chats are safe" in message
    assert not store.db.in_transaction
    # Reading, searching and listing go on; every message written before is there.
    assert [m.content for m in store.conversation_messages(cid)] == texts
    assert [h.message_id for h in store.search("moon")] and store.list_conversations()[0].id == cid
    assert [m.content for m, _ in store.active_path_with_branches(cid)] == texts


def test_writes_are_refused_at_once_while_read_only(store: Store, tmp_path: Path) -> None:
    cid, texts = _chat(store)
    first = store.conversation_messages(cid)[0].id
    exported = export.write_json(store, tmp_path / "all.json")
    make_read_only(store, cid)
    statements: list[str] = []
    store.db.set_trace_callback(statements.append)
    refused = {
        "a user message": lambda: store.add_message(cid, "user", "more"),
        "an answer": lambda: store.begin_stream(cid),
        "a rename": lambda: store.rename_conversation(cid, "New name"),
        "a delete": lambda: store.delete_conversation(cid),
        "an edit": lambda: store.edit_user_message(first, "edited"),
        "a preset": lambda: store.save_preset("p", ConversationSettings()),
        "an import": lambda: export.import_json(store, exported),
        "a new chat": lambda: store.create_conversation(),
    }
    for what, attempt in refused.items():
        with pytest.raises(StoreUnavailableError, match="is full"):
            attempt()
        assert statements == [], f"{what} ran SQL while read-only"
    assert store.count_conversations() == 1 and [m.content for m in store.conversation_messages(cid)] == texts


def test_settings_and_branch_choices_are_kept_while_read_only_and_saved_on_recovery(store: Store) -> None:
    cid, _ = _chat(store)
    first = store.conversation_messages(cid)[0]
    edited = store.edit_user_message(first.id, "Why do tides happen?")  # a second version of the question
    settings = Settings.read(store)
    make_read_only(store, cid)

    # Switching versions is reading: it works, and is remembered.
    assert store.navigate_sibling(edited.id, -1)[0].id == first.id
    assert store.active_path(cid)[-1].content == "And the sun?"

    settings.window.sidebar_visible = False
    settings.save("window")  # never fails for the caller
    store.set_conversation_settings(cid, ConversationSettings(reasoning_effort="high"))
    store.delete_setting("gone")
    assert Settings.read(store).window.sidebar_visible is False  # read back from memory
    assert store.conversation_settings(cid).reasoning_effort == "high"

    free_up(store)
    assert store.retry() and not store.read_only
    fresh = sqlite3.connect(store.path)
    try:
        leaf = fresh.execute("SELECT active_leaf_id FROM conversations WHERE id = ?", (cid,)).fetchone()[0]
        assert leaf == store.active_path(cid)[-1].id
        stored = dict(fresh.execute("SELECT key, value FROM settings").fetchall())
        assert '"sidebar_visible":false' in stored["settings.window"]
        assert '"reasoning_effort":"high"' in fresh.execute("SELECT settings FROM conversations").fetchone()[0]
    finally:
        fresh.close()


def test_a_failed_commit_leaves_no_transaction_open(store: Store) -> None:
    cid, _ = _chat(store)
    fill_up(store)
    rows = store.conversation_messages(cid)
    with pytest.raises(StoreUnavailableError):  # one transaction of many rows; SQLite rolls it back itself
        store.insert_conversation_tree(
            uid=None,
            title="big",
            title_source="user",
            created=1.0,
            updated=1.0,
            settings=ConversationSettings(),
            messages=[*rows[:2], *[type(rows[0])(**{**r.__dict__, "content": LONG}) for r in rows[2:]]],
            active_leaf_id=None,
        )
    assert not store.db.in_transaction and store.count_conversations() == 1


def test_recovery_is_heard_and_later_writes_work_again(store: Store) -> None:
    cid, _ = _chat(store)
    heard: list[StoreProblem | None] = []
    store.add_listener(heard.append)
    make_read_only(store, cid)
    free_up(store)
    assert store.retry() and heard[-1] is None and store.problem is None
    assert store.add_message(cid, "user", LONG).content == LONG


# --- the answer the disk could not take --------------------------------------------------------------


def _answer_while_the_disk_fills(store: Store, session: ChatSession, script: list[str]) -> list[object]:
    events: list[object] = []
    for ev in session.generate(engine(script)):
        if type(ev).__name__ == "TurnStarted":
            fill_up(store)  # the disk fills up while the answer streams
        events.append(ev)
    return events


def test_an_answer_streaming_when_the_disk_fills_is_kept_and_saved_when_space_returns(store: Store) -> None:
    session = ChatSession(store)
    question = session.add_user("Tell me a long story")
    events = _answer_while_the_disk_fills(store, session, LONG_ANSWER)

    kept = events[-1]
    assert isinstance(kept, MessageKept) and kept.message.content == LONG  # the whole answer, in memory
    assert store.read_only and store.pending == ("an answer",)
    streaming = store.active_path(session.conversation_id)[-1]
    assert streaming.status == "streaming" and len(streaming.content) < len(LONG)  # the tail saved before
    assert not store.retry()  # still full

    free_up(store)
    assert store.retry() and store.pending == ()
    row = store.get_message(kept.ref.id or -1)
    assert (row.id, row.status, row.content, row.parent_id) == (streaming.id, "complete", LONG, question.id)
    assert [m.role for m in store.active_path(session.conversation_id)] == ["user", "assistant"]


def test_an_answer_begun_while_read_only_is_added_whole_on_recovery(store: Store) -> None:
    session = ChatSession(store)
    question = session.add_user("What is 2+2?")
    make_read_only(store, session.ensure())
    script = "<|channel|>analysis<|message|>Add.<|end|><|start|>assistant<|channel|>final<|message|>4.<|return|>"
    events = list(session.generate(engine(script), effort="high"))
    kept = events[-1]
    assert isinstance(kept, MessageKept) and kept.message.content == "4."
    assert [m.role for m in store.active_path(session.conversation_id)] == ["user"]  # nothing half-written

    free_up(store)
    assert store.retry()
    row = store.get_message(kept.ref.id or -1)
    assert (row.role, row.content, row.thinking, row.status, row.effort, row.parent_id) == (
        "assistant",
        "4.",
        "Add.",
        "complete",
        "high",
        question.id,
    )


def test_a_tool_loop_turn_is_kept_row_by_row_and_saved_in_order(store: Store, tmp_path: Path) -> None:
    from app.core.tools.registry import ToolRegistry, ToolSession

    calc = (
        "<|channel|>analysis<|message|>Need math.<|end|><|start|>assistant"
        '<|channel|>commentary to=functions.calculate <|constrain|>json<|message|>{"expression":"6*7"}<|call|>'
    )
    final = "<|channel|>final<|message|>It is 42.<|return|>"
    reg = ToolRegistry(tools_dir=tmp_path / "tools", settings_file=tmp_path / "tools.json")
    tools = ToolSession(reg, "c1", scratch=tmp_path / "scratch")
    try:
        session = ChatSession(store)
        question = session.add_user("What is six times seven?")
        make_read_only(store, session.ensure())
        events = list(session.generate(engine(calc, final), tool_session=tools))
        kept = [ev for ev in events if isinstance(ev, MessageKept)]
        assert [k.message.role for k in kept] == ["assistant", "tool", "assistant"]
        assert not any(isinstance(ev, MessageSaved) for ev in events)
        assert store.pending == ("an answer", "a tool result", "an answer")

        free_up(store)
        assert store.retry()
        call, result, answer = (store.get_message(k.ref.id or -1) for k in kept)
        assert call.parent_id == question.id and result.parent_id == call.id and answer.parent_id == result.id
        assert "42" in result.content and answer.content == "It is 42."
        path = [m.id for m in store.active_path(session.conversation_id)]
        assert path == [question.id, call.id, result.id, answer.id]
    finally:
        tools.close()
        reg.close()


class FailingDisk(sqlite3.Connection):
    """A connection whose writes fail as SQLite reports a disk input/output error (SQLITE_IOERR_WRITE).

    The one simulated failure here: this machine cannot make the kernel return EIO (no
    device-mapper or fault injection; a loop device over a full tmpfs gives ENOSPC), so SQLite's own
    error is raised where its write would be."""

    failing = False

    def execute(self, sql: str, *args: object) -> sqlite3.Cursor:  # type: ignore[override]
        if FailingDisk.failing and sql.lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE", "COMMIT")):
            exc = sqlite3.OperationalError("disk I/O error")
            exc.sqlite_errorcode = 778  # type: ignore[attr-defined]
            exc.sqlite_errorname = "SQLITE_IOERR_WRITE"  # type: ignore[attr-defined]
            raise exc
        return super().execute(sql, *args)  # type: ignore[arg-type]


def test_an_input_output_error_while_saving_an_answer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_connect = sqlite3.connect
    monkeypatch.setattr(sqlite3, "connect", lambda *a, **k: real_connect(*a, **k, factory=FailingDisk))
    monkeypatch.setattr(FailingDisk, "failing", False)
    store, _ = Store.open_app(tmp_path / "c.sqlite3")
    try:
        session = ChatSession(store)
        question = session.add_user("Tell me a long story")
        events: list[object] = []
        for ev in session.generate(engine(LONG_ANSWER)):
            if type(ev).__name__ == "TurnStarted":
                FailingDisk.failing = True  # the disk starts failing while the answer streams
            events.append(ev)
        kept = events[-1]
        assert isinstance(kept, MessageKept) and kept.message.content == LONG
        problem = store.problem
        assert problem is not None and problem.kind == IO_ERROR and store.read_only
        assert str(store.path) in problem.message and "input/output error" in problem.message
        assert "Check that the disk is connected" in problem.message
        assert store.active_path(session.conversation_id or -1)[0].content == question.content
        assert not store.retry()
        FailingDisk.failing = False  # the disk is back
        assert store.retry() and store.get_message(kept.ref.id or -1).content == LONG
    finally:
        FailingDisk.failing = False
        store.close()


# --- a real disk, really full ------------------------------------------------------------------------


def test_a_really_full_disk_then_space_again(tmp_path: Path) -> None:
    with small_disk(tmp_path / "disk", "1m") as disk:
        store, _ = Store.open_app(disk.path / "data" / "conversations.sqlite3")
        try:
            cid, texts = _chat(store)
            session = ChatSession(store, cid)
            events: list[object] = []
            for ev in session.generate(engine(LONG_ANSWER)):
                if type(ev).__name__ == "TurnStarted":
                    disk.fill()  # ENOSPC from the kernel from here on
                events.append(ev)
            kept = events[-1]
            assert isinstance(kept, MessageKept) and kept.message.content == LONG
            assert store.problem is not None and store.problem.kind == FULL
            assert str(disk.path / "data") in store.problem.message and "0 bytes free" in store.problem.message
            assert [m.content for m in store.conversation_messages(cid)][:3] == texts
            assert not store.retry()  # the disk is still full: nothing is written, nothing is lost

            disk.free_up()
            assert store.retry()
            assert store.get_message(kept.ref.id or -1).content == LONG
            assert store.db.execute("PRAGMA quick_check").fetchone()[0] == "ok"
        finally:
            store.close()


def test_a_crash_while_the_disk_is_full_loses_nothing_that_was_saved(tmp_path: Path) -> None:
    with small_disk(tmp_path / "disk", "1m") as disk:
        path = disk.path / "conversations.sqlite3"
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        child = subprocess.Popen(
            [sys.executable, "-m", "tests.core.store_full_child", str(path)],
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert child.stdin is not None and child.stdout is not None
        try:
            committed = child.stdout.readline().split()
            assert committed[0] == "STREAMING", committed
            stream_id, saved_tail = int(committed[1]), int(committed[2])
            disk.fill()
            child.stdin.write("FULL\n")
            child.stdin.flush()
            line = child.stdout.readline().split()
            assert line[:1] == ["READONLY"], line  # it went on streaming into a read-only store
        finally:
            child.kill()
            child.wait(10)
        disk.free_up()
        store = Store.open(path)
        try:
            assert store.db.execute("PRAGMA quick_check").fetchone()[0] == "ok"
            cid = store.list_conversations()[0].id
            rows = store.conversation_messages(cid)
            assert [r.content for r in rows[:3]] == ["first question", "first answer", "second question"]
            assert store.interrupted_on_open == (stream_id,)
            assert len(store.get_message(stream_id).content) >= saved_tail  # the tail saved before the disk filled
        finally:
            store.close()


# --- opening: the path, the folder, the disk, another Harmonica -----------------------------------


def _db_path() -> Path:
    from app.core.store import default_store_path

    return default_store_path()


def test_a_folder_where_the_database_should_be(tmp_path: Path) -> None:
    path = _db_path()
    path.mkdir(parents=True)
    rt = Runtime(offline=True)
    try:
        problem = rt.store.problem
        assert problem is not None and problem.kind == NOT_A_FILE and rt.store.temporary
        assert str(path) in problem.message and "is a folder" in problem.message
        assert "Move or rename" in problem.message and "kept only until Harmonica closes" in problem.message
        session = rt.new_session()
        session.add_user("written while the path is a folder")  # the app works, in memory
        assert not rt.store.retry() and rt.store.temporary

        path.rmdir()
        assert rt.store.retry() and rt.store.problem is None and not rt.store.temporary
        moved = rt.store.carried_over[session.conversation_id or -1]
        assert [m.content for m in rt.store.conversation_messages(moved)] == ["written while the path is a folder"]
        assert path.is_file()
    finally:
        rt.close()


def test_a_data_folder_that_cannot_be_made(tmp_path: Path) -> None:
    path = _db_path()
    path.parent.parent.mkdir(parents=True, exist_ok=True)
    path.parent.write_text("a file where the folder should be")
    rt = Runtime(offline=True)
    try:
        problem = rt.store.problem
        assert problem is not None and problem.kind == NO_FOLDER and rt.store.temporary
        assert str(path.parent) in problem.message and "not a folder is in the way" in problem.message
        path.parent.unlink()
        assert rt.store.retry() and path.is_file()
    finally:
        rt.close()


def test_a_read_only_disk_shows_the_conversations_read_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with small_disk(tmp_path / "disk", "2m") as disk:
        monkeypatch.setenv("HARMONICA_HOME", str(disk.path))
        first, _ = Store.open_app()
        cid, texts = _chat(first)
        first.close()
        disk.remount("ro")
        rt = Runtime(offline=True)
        try:
            problem = rt.store.problem
            assert problem is not None and problem.kind == READ_ONLY and rt.store.read_only
            assert str(disk.path / "data") in problem.message and "read-only" in problem.message
            assert [m.content for m in rt.store.conversation_messages(cid)] == texts
            with pytest.raises(StoreUnavailableError):
                rt.store.add_message(cid, "user", "more")
            rt.settings.save("window")  # settings never fail
            assert not rt.store.retry()
            disk.remount("rw")
            assert rt.store.retry() and not rt.store.read_only
            rt.store.add_message(cid, "user", "more")
        finally:
            rt.close()


def test_a_full_disk_at_start_still_opens_the_conversations(tmp_path: Path) -> None:
    with small_disk(tmp_path / "disk", "1m") as disk:
        path = disk.path / "conversations.sqlite3"
        s = Store.open(path)
        cid, texts = _chat(s)
        mid = s.begin_stream(cid)
        s.update_stream(mid, "cut off by a crash")
        s.db.close()  # the app died mid-answer
        s._db = None
        disk.fill()
        store, _ = Store.open_app(path)
        try:
            assert store.problem is not None and store.problem.kind == FULL
            assert [m.content for m in store.conversation_messages(cid)][:3] == texts
            disk.free_up()
            assert store.retry()
            assert store.get_message(mid).status == "interrupted" and store.interrupted_on_open == (mid,)
        finally:
            store.close()


def test_another_harmonica_using_the_database(tmp_path: Path) -> None:
    path = _db_path()
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    code = (
        "import sys\nfrom app.core.store import Store\n"
        f"s, _ = Store.open_app({str(path)!r})\n"
        "c = s.create_conversation('From the other window')\ns.add_message(c.id, 'user', 'hello')\n"
        "print('READY', flush=True)\nsys.stdin.read()\ns.close()\n"
    )
    other = subprocess.Popen(
        [sys.executable, "-c", code], cwd=REPO_ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert other.stdin is not None and other.stdout is not None
    try:
        assert other.stdout.readline().strip() == "READY"
        started = time.monotonic()
        rt = Runtime(offline=True)
        assert time.monotonic() - started < 5  # no wait on the other's lock
        try:
            problem = rt.store.problem
            assert problem is not None and problem.kind == IN_USE and rt.store.read_only
            assert str(path) in problem.message and "Close the other Harmonica" in problem.message
            assert [c.title for c in rt.store.list_conversations()] == ["From the other window"]
            assert rt.store.interrupted_on_open == ()  # the other one's answers are not ours to mark
            with pytest.raises(StoreUnavailableError):
                rt.store.create_conversation()
            assert not rt.store.retry()
            other.stdin.close()
            other.wait(10)
            assert rt.store.retry() and not rt.store.read_only
            rt.store.create_conversation("Mine now")
        finally:
            rt.close()
    finally:
        other.kill()
        other.wait(10)


def test_an_unreadable_database_as_an_unprivileged_user() -> None:
    folder = shared_folder(owner=NOBODY)
    path = folder / "conversations.sqlite3"
    s = Store.open(path)
    _chat(s)
    s.close()
    for leftover in folder.iterdir():
        os.chown(leftover, NOBODY, NOBODY)
    os.chown(path, 0, 0)
    path.chmod(0o600)  # root's alone

    def attempt() -> tuple[str, str, bool, int]:
        store, _ = Store.open_app(path)
        try:
            assert store.problem is not None
            cid = store.create_conversation("in memory").id  # the app still works this session
            return store.problem.kind, store.problem.message, store.temporary, cid
        finally:
            store.close()

    kind, message, temporary, cid = as_nobody(attempt)
    assert kind == UNREADABLE and temporary and cid == 1
    assert str(path) in message and "not allowed to read" in message and "permission" in message


def test_a_folder_that_cannot_be_written_as_an_unprivileged_user() -> None:
    folder = shared_folder(owner=0, mode=0o755)
    path = folder / "conversations.sqlite3"
    s = Store.open(path)
    cid, texts = _chat(s)
    s.close()
    path.chmod(0o644)

    def attempt() -> tuple[str, str, list[str]]:
        store, _ = Store.open_app(path)
        try:
            assert store.problem is not None and store.read_only
            try:
                store.add_message(cid, "user", "more")
            except StoreUnavailableError:
                pass
            else:
                raise AssertionError("a write got through")
            return store.problem.kind, store.problem.message, [m.content for m in store.conversation_messages(cid)]
        finally:
            store.close()

    kind, message, seen = as_nobody(attempt)
    assert kind == NO_PERMISSION and seen == texts
    assert str(path) in message and "write permission" in message


def test_listeners_hear_the_problem_from_a_worker_thread(store: Store) -> None:
    cid, _ = _chat(store)
    heard: list[tuple[str, StoreProblem | None]] = []
    store.add_listener(lambda p: heard.append((threading.current_thread().name, p)))
    fill_up(store)

    def write() -> None:
        try:
            store.add_message(cid, "user", LONG)
        except StoreUnavailableError:
            pass

    t = threading.Thread(target=write, name="answer-worker")
    t.start()
    t.join()
    assert [(name, p.kind if p else None) for name, p in heard] == [("answer-worker", FULL)]


def test_a_file_system_that_cannot_lock_still_opens_for_writing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno
    import fcntl

    def no_locks(fd: int, op: int) -> None:
        raise OSError(errno.ENOLCK, "No locks available")  # what some network shares answer

    monkeypatch.setattr(fcntl, "flock", no_locks)
    store, _ = Store.open_app(tmp_path / "c.sqlite3")
    try:
        assert store.problem is None and store.create_conversation().id == 1
    finally:
        store.close()
