"""Issue 13 item 8: deleting a chat deletes its tool files, and a new chat never inherits another's.

Attacked through the window as a user would hit it: delete then Undo (the files and the kernel
must survive), delete for good (they must go), a deletion the app never finished (a crash), a new
chat that gets a purged chat's row id (SQLite reuses the highest id), and an imported chat whose
uid tries to name a folder outside the scratch root.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from PySide6.QtCore import Qt

from app.core import paths
from app.core.store import Store

REASON = "<|channel|>analysis<|message|>{}<|end|><|start|>assistant"
FINAL = REASON.format("Done.") + "<|channel|>final<|message|>{}<|return|>"


def _new_chat(w: Any, qtbot: Any, text: str = "hello") -> int:
    w.new_chat()
    w.composer.edit.setPlainText(text)
    qtbot.keyClick(w.composer.edit, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: not w.generating, timeout=20000)
    cid = w.session.conversation_id
    assert cid is not None
    return int(cid)


def _short_grace(w: Any, seconds: float) -> None:
    """Shorten the Undo grace (12 s in the app) so the deletion becomes final within the test."""
    w.runtime.tool_files.grace_s = seconds


def _finalize_all(w: Any) -> None:
    w.runtime.tool_files.finalize(everything=True)


def _python_leaves_traces(w: Any, cid: int) -> Path:
    ts = w.runtime.tool_session(cid)
    r = ts.kernel.execute("secret = 'kernel state of the old chat'\nopen('notes.txt', 'w').write('old chat files')")
    assert not r.is_error, r.error
    assert (ts.scratch / "notes.txt").exists()
    return Path(ts.scratch)


def test_undo_keeps_the_files_and_the_kernel(make_window: Any, qtbot: Any) -> None:
    w, _ = make_window(FINAL.format("hi"))
    cid = _new_chat(w, qtbot)
    scratch = _python_leaves_traces(w, cid)
    w.conversations.delete_conversation(cid)
    qtbot.mouseClick(w.banner.button("Undo"), Qt.MouseButton.LeftButton)
    _finalize_all(w)  # nothing is pending any more
    assert (scratch / "notes.txt").read_text() == "old chat files"
    assert w.runtime.tool_session(cid).kernel.execute("secret").output == "'kernel state of the old chat'\n"


def test_files_go_when_the_deletion_is_final(make_window: Any, qtbot: Any) -> None:
    w, _ = make_window(FINAL.format("hi"))
    _short_grace(w, 0.3)
    cid = _new_chat(w, qtbot)
    scratch = _python_leaves_traces(w, cid)
    kernel = w.runtime.tool_session(cid).kernel
    w.conversations.delete_conversation(cid)
    assert scratch.exists()  # Undo is still possible
    qtbot.waitUntil(lambda: not scratch.exists(), timeout=5000)
    assert not kernel.alive


def test_closing_the_app_makes_a_deletion_final(make_window: Any, qtbot: Any) -> None:
    w, _ = make_window(FINAL.format("hi"))
    cid = _new_chat(w, qtbot)
    scratch = _python_leaves_traces(w, cid)
    w.conversations.delete_conversation(cid)
    w.close()
    assert not scratch.exists()


def test_a_new_chat_with_a_reused_id_starts_empty(make_window: Any, qtbot: Any) -> None:
    w, _ = make_window(FINAL.format("one"), FINAL.format("two"))
    _short_grace(w, 0.2)
    old = _new_chat(w, qtbot, "first")
    old_scratch = _python_leaves_traces(w, old)
    w.conversations.delete_conversation(old)
    qtbot.wait(600)
    w.runtime.store.purge_deleted()  # what the store does 30 days later, at a start
    new = _new_chat(w, qtbot, "second")
    assert new == old  # SQLite gave the purged chat's id to the new one
    ts = w.runtime.tool_session(new)
    assert not (Path(ts.scratch) / "notes.txt").exists() and not old_scratch.exists()
    assert ts.kernel.execute("'secret' in globals()").output == "False\n"


def test_a_chat_deleted_before_a_crash_loses_its_files_at_the_next_start(make_window: Any, qtbot: Any) -> None:
    store = Store.open()
    try:
        kept = store.create_conversation("kept")
        gone = store.create_conversation("deleted, then the app crashed")
        store.delete_conversation(gone.id)
        kept_uid, gone_uid = kept.uid, gone.uid
    finally:
        store.close()
    root = paths.scratch_root()
    for uid in (kept_uid, gone_uid):
        (root / uid).mkdir(parents=True)
        (root / uid / "notes.txt").write_text(uid)
    make_window(FINAL.format("hi"))
    assert (root / kept_uid / "notes.txt").exists()
    assert not (root / gone_uid).exists()


def test_an_imported_uid_cannot_name_a_folder_outside_the_scratch_root(
    make_window: Any, qtbot: Any, tmp_path: Path
) -> None:
    from app.core.export import EXPORT_FORMAT, import_json

    victim = paths.scratch_root().parent / "victim"
    victim.mkdir(parents=True, exist_ok=True)
    (victim / "precious.txt").write_text("keep me")
    w, _ = make_window(FINAL.format("hi"))
    _short_grace(w, 0.1)
    doc = {
        "format": EXPORT_FORMAT,
        "version": 1,
        "conversations": [
            {"uid": "../victim", "title": "imported", "messages": [{"id": 1, "role": "user", "content": "hi"}]}
        ],
    }
    (cid,) = import_json(w.runtime.store, doc)
    scratch = Path(w.runtime.tool_session(cid).scratch)
    assert scratch.parent == paths.scratch_root() and scratch.name.startswith("u")
    scratch.mkdir(parents=True, exist_ok=True)
    w.conversations.delete_conversation(cid)
    qtbot.wait(400)
    _finalize_all(w)
    assert (victim / "precious.txt").read_text() == "keep me"


@pytest.mark.parametrize("age_s", [0, 3600])
def test_folders_named_by_row_id_move_to_the_uid_or_go(make_window: Any, qtbot: Any, age_s: int) -> None:
    """Before uid names, folders were named by row id: the chat's own is kept (renamed), one older
    than the chat (left by a purged chat that had the same id) is deleted."""
    import os
    import time

    store = Store.open()
    try:
        conv = store.create_conversation("from an earlier version")
    finally:
        store.close()
    legacy = paths.scratch_root() / str(conv.id)
    legacy.mkdir(parents=True)
    (legacy / "notes.txt").write_text("files")
    if age_s:
        past = conv.created - age_s
        os.utime(legacy / "notes.txt", (past, past))
    else:
        later = time.time() + 1
        os.utime(legacy / "notes.txt", (later, later))
    make_window(FINAL.format("hi"))
    assert not legacy.exists()
    moved = paths.scratch_root() / conv.uid / "notes.txt"
    assert moved.exists() == (age_s == 0)
