"""Tests for the SQLite conversation store: round trips, branches, streaming, search, migrations, recovery."""

from __future__ import annotations

import itertools
import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from app.core import store as store_mod
from app.core.engine import GenerationStats, Sampling
from app.core.harmony import ToolCall
from app.core.store import (
    ConversationSettings,
    MessageRow,
    Store,
    StoreCorruptError,
    StoreError,
    StreamSaver,
    auto_title,
    build_fts_query,
    clean_generated_title,
    message_fields,
    render_messages,
    row_to_chat_dict,
    snippet_parts,
    snippet_to_html,
    snippet_to_markdown,
)
from app.core.store import schema as schema_mod
from app.core.store import search as search_mod

REPO_ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = REPO_ROOT / "tests" / "fixtures" / "chat_template_gpt_oss.jinja"


@pytest.fixture
def store(tmp_path: Path) -> Any:
    s = Store.open(tmp_path / "store.sqlite3")
    yield s
    s.close()


def _chat(s: Store, *turns: str) -> int:
    """A conversation of alternating user/assistant messages; returns its id."""
    conv = s.create_conversation()
    for i, text in enumerate(turns):
        s.add_message(conv.id, "user" if i % 2 == 0 else "assistant", text)
    return conv.id


# --- opening -----------------------------------------------------------------------------------------


def test_default_path_is_in_harmonica_home_with_wal_and_foreign_keys() -> None:
    s = Store.open()
    try:
        assert s.path == Path(os.environ["HARMONICA_HOME"]) / "data" / store_mod.DB_FILENAME
        assert s.path.is_file()
        assert s.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert s.db.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
        assert s.db.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        assert s.db.execute("PRAGMA user_version").fetchone()[0] == store_mod.SCHEMA_VERSION
    finally:
        s.close()


def test_closed_store_raises_a_clear_error(tmp_path: Path) -> None:
    s = Store.open(tmp_path / "x.sqlite3")
    s.close()
    with pytest.raises(StoreError, match="closed"):
        s.list_conversations()


# --- round trips ---------------------------------------------------------------------------------------


def test_every_message_field_round_trips_through_reopen(tmp_path: Path) -> None:
    path = tmp_path / "rt.sqlite3"
    s = Store.open(path)
    settings = ConversationSettings(developer_instructions="Be brief.", reasoning_effort="high", seed=7, top_k=40)
    conv = s.create_conversation(settings=settings)
    u = s.add_message(conv.id, "user", "What's the weather in Oslo?")
    stats = GenerationStats(
        prompt_tokens=120, generated_tokens=33, ttft_s=0.25, total_s=1.5, tokens_per_s=22.0, stop_reason="call"
    )
    call = ToolCall("functions.get_weather", '{"city":"Oslo"}', content_type="json")
    a1 = s.add_message(
        conv.id,
        "assistant",
        thinking="Need the weather tool.",
        tool_calls=[call],
        effort="high",
        stats=stats,
        model="gpt-oss-20b",
        extra={"preamble": "Checking…"},
    )
    t = s.add_message(conv.id, "tool", '{"temp": 3}', tool_name="functions.get_weather", tool_call_id="c1")
    a2 = s.add_message(
        conv.id, "assistant", "It is 3 °C in Oslo. ☃", thinking="Answer now.", effort="high", model="gpt-oss-20b"
    )
    s.close()

    s = Store.open(path)
    try:
        path_rows = s.active_path(conv.id)
        assert [m.id for m in path_rows] == [u.id, a1.id, t.id, a2.id]
        got = path_rows[1]
        assert got.role == "assistant" and got.thinking == "Need the weather tool."
        assert got.tool_calls == [
            {
                "recipient": "functions.get_weather",
                "arguments": '{"city":"Oslo"}',
                "channel": "commentary",
                "content_type": "json",
            }
        ]
        assert got.stats["prompt_tokens"] == 120 and got.stats["stop_reason"] == "call"
        assert got.effort == "high" and got.model == "gpt-oss-20b" and got.extra == {"preamble": "Checking…"}
        assert path_rows[2].tool_name == "functions.get_weather" and path_rows[2].tool_call_id == "c1"
        assert path_rows[3].content == "It is 3 °C in Oslo. ☃" and path_rows[3].status == "complete"
        assert path_rows[0].parent_id is None and path_rows[3].parent_id == t.id
        loaded = s.get_conversation(conv.id)
        assert loaded.settings == settings
        assert loaded.title == "What's the weather in Oslo?" and loaded.title_source == "auto"
        assert loaded.active_leaf_id == a2.id
    finally:
        s.close()


def test_bad_role_status_and_foreign_parent_are_refused(store: Store) -> None:
    a = store.create_conversation()
    b = store.create_conversation()
    m = store.add_message(a.id, "user", "hi")
    with pytest.raises(StoreError, match="role"):
        store.add_message(a.id, "narrator", "x")
    with pytest.raises(StoreError, match="status"):
        store.add_message(a.id, "user", "x", status="done")
    with pytest.raises(StoreError, match="not in conversation"):
        store.add_message(b.id, "assistant", "x", parent_id=m.id)
    with pytest.raises(StoreError, match="does not exist"):
        store.add_message(999, "user", "x")
    assert store.stats()["messages"] == 1  # the refused inserts left nothing behind


# --- titles, listing, delete/undo ----------------------------------------------------------------------


def test_auto_title_rules() -> None:
    assert auto_title("\n\n  # How do   I bake bread?\nMore detail") == "How do I bake bread?"
    long = "Explain the difference between mixture of experts and dense transformers in detail please"
    title = auto_title(long)
    assert title.endswith("…") and len(title) <= store_mod.TITLE_MAX_CHARS
    assert long.startswith(title[:-1])
    assert auto_title("   \n  ") == ""
    assert clean_generated_title('Title: "Baking Sourdough Bread."\nextra') == "Baking Sourdough Bread"


def test_titles_auto_model_and_user(store: Store) -> None:
    conv = store.create_conversation()
    assert store.get_conversation(conv.id).display_title == store_mod.DEFAULT_TITLE
    store.add_message(conv.id, "user", "Plan a trip to Kyoto\nwith kids")
    store.add_message(conv.id, "user", "second user message does not retitle")
    assert store.get_conversation(conv.id).title == "Plan a trip to Kyoto"
    assert store.set_generated_title(conv.id, "Kyoto family trip")
    assert store.get_conversation(conv.id).title == "Kyoto family trip"
    before = store.get_conversation(conv.id).updated
    store.rename_conversation(conv.id, "  My   trip ")
    c = store.get_conversation(conv.id)
    assert (c.title, c.title_source) == ("My trip", "user")
    assert c.updated == before  # renaming does not move it in the newest-first list
    assert not store.set_generated_title(conv.id, "Model title")  # never overrides the user's name
    assert store.get_conversation(conv.id).title == "My trip"
    store.rename_conversation(conv.id, "")  # back to automatic
    c = store.get_conversation(conv.id)
    assert (c.title, c.title_source) == ("Plan a trip to Kyoto", "auto")


def test_listing_is_newest_first_and_paginates_without_gaps(store: Store) -> None:
    ids = [store.create_conversation(f"c{i}", created=1000.0 + (i // 2)).id for i in range(23)]  # ties on purpose
    store.add_message(ids[3], "user", "activity moves a conversation to the top")
    seen: list[int] = []
    before = None
    while True:
        page = store.list_conversations(limit=5, before=before)
        if not page:
            break
        seen += [c.id for c in page]
        before = (page[-1].updated, page[-1].id)
    assert seen[0] == ids[3]
    assert sorted(seen) == sorted(ids) and len(seen) == len(set(seen))
    rest = [store.get_conversation(i) for i in seen[1:]]
    assert all((a.updated, a.id) > (b.updated, b.id) for a, b in itertools.pairwise(rest))
    assert store.count_conversations() == 23


def test_delete_hides_restore_undoes_and_purge_removes(store: Store, tmp_path: Path) -> None:
    keep = _chat(store, "keep this pumpkin")
    gone = _chat(store, "delete this pumpkin", "pumpkin answer")
    store.delete_conversation(gone)
    assert [c.id for c in store.list_conversations()] == [keep]
    assert [c.id for c in store.list_conversations(deleted=True)] == [gone]
    assert {h.conversation_id for h in store.search("pumpkin")} == {keep}
    store.restore_conversation(gone)
    assert {c.id for c in store.list_conversations()} == {keep, gone}
    assert {h.conversation_id for h in store.search("pumpkin")} == {keep, gone}

    store.delete_conversation(gone)
    assert store.purge_deleted(older_than_s=3600) == 0  # too recent
    assert store.purge_deleted(older_than_s=0) == 1
    with pytest.raises(StoreError):
        store.get_conversation(gone)
    assert store.db.execute("SELECT count(*) FROM messages WHERE conversation_id = ?", (gone,)).fetchone()[0] == 0
    assert store.db.execute("SELECT count(*) FROM messages_fts WHERE messages_fts MATCH 'delete'").fetchone()[0] == 0


def test_old_deletions_are_purged_when_the_store_opens(tmp_path: Path) -> None:
    path = tmp_path / "p.sqlite3"
    s = Store.open(path)
    old, recent = _chat(s, "old"), _chat(s, "recent")
    s.delete_conversation(old)
    s.delete_conversation(recent)
    s.db.execute("UPDATE conversations SET deleted_at = ? WHERE id = ?", (time.time() - 40 * 86400, old))
    s.close()
    s = Store.open(path)
    try:
        assert [c.id for c in s.list_conversations(deleted=True)] == [recent]
    finally:
        s.close()


# --- branches --------------------------------------------------------------------------------------------


def test_edit_and_regenerate_create_siblings_and_navigation_remembers_leaves(store: Store) -> None:
    conv = store.create_conversation()
    u1 = store.add_message(conv.id, "user", "Name a colour")
    a1 = store.add_message(conv.id, "assistant", "Blue")
    u2 = store.add_message(conv.id, "user", "Another?")
    a2 = store.add_message(conv.id, "assistant", "Red")

    # Regenerate the last answer: a sibling of a2 under u2.
    parent = store.regenerate_parent(a2.id)
    assert parent == u2.id
    a2b = store.add_message(conv.id, "assistant", "Green", parent_id=parent)
    assert [m.id for m in store.active_path(conv.id)] == [u1.id, a1.id, u2.id, a2b.id]
    info = store.siblings(a2b.id)
    assert info.sibling_ids == (a2.id, a2b.id) and info.label() == "2/2"

    # Edit the first user message: a new root beside u1; the old branch stays intact.
    e1 = store.edit_user_message(u1.id, "Name a fruit")
    assert e1.parent_id is None and e1.extra == {"edited_from": u1.id}
    e1a = store.add_message(conv.id, "assistant", "Apple")
    assert [m.id for m in store.active_path(conv.id)] == [e1.id, e1a.id]
    branches = {m.id: b for m, b in store.active_path_with_branches(conv.id)}
    assert branches[e1.id].label() == "2/2" and not branches[e1a.id].has_branches

    # ‹ back to the first branch: we land where we were (the regenerated "Green").
    path = store.navigate_sibling(e1.id, -1)
    assert [m.id for m in path] == [u1.id, a1.id, u2.id, a2b.id]
    path = store.navigate_sibling(a2b.id, -1)
    assert path[-1].id == a2.id
    path = store.navigate_sibling(a2.id, -5)  # clamped
    assert path[-1].id == a2.id
    path = store.navigate_sibling(u1.id, +1)
    assert [m.id for m in path] == [e1.id, e1a.id]
    assert store.get_conversation(conv.id).active_leaf_id == e1a.id

    with pytest.raises(StoreError, match="user messages"):
        store.edit_user_message(a1.id, "nope")


def test_regenerate_redoes_the_whole_tool_loop_turn(store: Store) -> None:
    conv = store.create_conversation()
    u = store.add_message(conv.id, "user", "weather?")
    call = store.add_message(
        conv.id, "assistant", thinking="call tool", tool_calls=[{"recipient": "functions.w", "arguments": "{}"}]
    )
    store.add_message(conv.id, "tool", "sunny", tool_name="functions.w")
    final = store.add_message(conv.id, "assistant", "Sunny.")
    assert store.regenerate_parent(final.id) == u.id
    redo = store.begin_stream(conv.id, parent_id=u.id)
    assert store.siblings(redo).sibling_ids == (call.id, redo)


def test_delete_message_splices_or_removes_replies(store: Store) -> None:
    conv = store.create_conversation()
    u1 = store.add_message(conv.id, "user", "one")
    a1 = store.add_message(conv.id, "assistant", "two")
    u2 = store.add_message(conv.id, "user", "three")
    a2 = store.add_message(conv.id, "assistant", "four")
    store.delete_message(a1.id)  # splice: u2 now hangs under u1
    assert [m.id for m in store.active_path(conv.id)] == [u1.id, u2.id, a2.id]
    assert store.search("two") == []
    store.delete_message(a2.id)  # the active leaf: the path ends at its parent
    assert [m.id for m in store.active_path(conv.id)] == [u1.id, u2.id]
    store.delete_message(u1.id, with_replies=True)
    assert store.active_path(conv.id) == [] and store.conversation_messages(conv.id) == []


# --- streaming and crash recovery -----------------------------------------------------------------------


def test_stream_lifecycle_and_indexing_only_when_finished(store: Store) -> None:
    conv = store.create_conversation()
    store.add_message(conv.id, "user", "Tell me about zebras")
    mid = store.begin_stream(conv.id, effort="low", model="m")
    assert store.get_message(mid).status == "streaming"
    assert store.get_conversation(conv.id).active_leaf_id == mid
    store.update_stream(mid, "Zebras are striped", "think about equines")
    assert store.get_message(mid).content == "Zebras are striped"
    assert [h.message_id for h in store.search("striped")] == []  # not indexed while streaming
    row = store.finish_stream(mid, content="Zebras are striped horses.", stats={"generated_tokens": 5})
    assert row.status == "complete" and row.stats == {"generated_tokens": 5} and row.effort == "low"
    assert [h.message_id for h in store.search("striped")] == [mid]
    assert [h.message_id for h in store.search("equines")] == [mid]
    with pytest.raises(StoreError, match="not streaming"):
        store.update_stream(mid, "late write")
    with pytest.raises(StoreError, match="status"):
        store.finish_stream(mid, status="streaming")


def test_update_stream_rewrites_a_large_tail(store: Store) -> None:
    # Its speed is measured in bench/store.py; here: a 12 KB tail saved 100 times stays exact.
    conv = store.create_conversation()
    mid = store.begin_stream(conv.id)
    text = "token " * 2000
    for i in range(100):
        store.update_stream(mid, text + str(i), "reasoning " * 500)
    row = store.get_message(mid)
    assert row.content == text + "99" and row.status == "streaming"


def test_stream_saver_writes_at_most_every_interval() -> None:
    saved: list[tuple[str, str]] = []
    fake_store = SimpleNamespace(update_stream=lambda mid, c, t: saved.append((c, t)))
    now = [0.0]
    saver = StreamSaver(fake_store, 1, interval=0.5, clock=lambda: now[0])  # type: ignore[arg-type]
    for i in range(1, 21):  # 20 tokens over 2 s
        now[0] = i * 0.1
        saver.feed("x" * i, "t")
    assert [len(c) for c, _ in saved] == [5, 10, 15, 20]
    assert not saver.flush()  # nothing new
    saver.feed("x" * 21)
    assert saver.flush() and saved[-1] == ("x" * 21, "")


def test_reopen_marks_streaming_rows_interrupted_and_resume_continues(tmp_path: Path) -> None:
    path = tmp_path / "crash.sqlite3"
    s = Store.open(path)
    conv = s.create_conversation()
    s.add_message(conv.id, "user", "q")
    mid = s.begin_stream(conv.id)
    s.update_stream(mid, "partial answ", "some thought")
    s.db.close()  # simulate dying: no finish_stream
    s._db = None
    s = Store.open(path)
    try:
        assert s.interrupted_on_open == (mid,)
        row = s.get_message(mid)
        assert row.status == "interrupted" and row.is_interrupted and row.content == "partial answ"
        assert [m.id for m in s.interrupted_messages(conv.id)] == [mid]
        assert [h.message_id for h in s.search("partial")] == [mid]  # interrupted text is findable
        resumed = s.resume_stream(mid)
        assert resumed.status == "streaming" and resumed.content == "partial answ"
        s.update_stream(mid, "partial answer, continued", "")
        assert s.finish_stream(mid).status == "complete"
        assert s.interrupted_messages() == []
        with pytest.raises(StoreError, match="not an interrupted"):
            s.resume_stream(mid)
    finally:
        s.close()


def test_sigkill_mid_answer_loses_at_most_one_second(tmp_path: Path) -> None:
    """A child streams into the store and is SIGKILLed; committed rows survive, the tail is fresh."""
    path = tmp_path / "killed.sqlite3"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.core.store_crash_child", str(path), "0.25"],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    saves = 0
    assert proc.stdout is not None
    deadline = time.monotonic() + 30
    while saves < 5 and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line.split())
        saves += line.startswith("SAVED")
    kill_time = time.time()
    proc.kill()
    rest, err = proc.communicate(timeout=10)
    lines += [ln.split() for ln in rest.splitlines() if ln.strip()]
    assert saves >= 5, f"child did not stream: {lines[:5]} {err}"

    committed = next(ln for ln in lines if ln[0] == "COMMITTED")
    conv_id, committed_ids = int(committed[1]), [int(x) for x in committed[2].split(",")]
    stream_id = int(next(ln for ln in lines if ln[0] == "STREAM")[1])
    tokens = [(float(ln[1]), int(ln[2])) for ln in lines if ln[0] == "TOKEN"]
    last_save_reported = max(float(ln[1]) for ln in lines if ln[0] == "SAVED")

    s = Store.open(path)
    try:
        path_rows = s.active_path(conv_id)
        assert [m.id for m in path_rows[:-1]] == committed_ids
        assert [m.content for m in path_rows[:-1]] == ["first question", "first answer", "second question"]
        assert path_rows[1].thinking == "first thought" and all(m.status == "complete" for m in path_rows[:-1])
        tail = path_rows[-1]
        assert tail.id == stream_id and tail.status == "interrupted" and s.interrupted_on_open == (stream_id,)
        # The stored tail is the text the child had at its last save (or one save newer, when the
        # kill landed between the commit and the report), and at most 1 s old at the kill.
        assert tail.updated >= last_save_reported - 0.5
        assert kill_time - tail.updated <= 1.0
        expected = "".join(f"w{i} " for i in range(len(tokens) + 10))
        assert expected.startswith(tail.content) and tail.content
        assert tail.thinking == f"thinking {len(tail.content)}"
        # Everything generated more than 1 s before the kill is in the store.
        old_enough = [n for t, n in tokens if t <= kill_time - 1.0]
        assert len(tail.content) >= (old_enough[-1] if old_enough else 0)
    finally:
        s.close()


# --- search ------------------------------------------------------------------------------------------------


def test_fts_query_builder_never_produces_syntax_errors(store: Store) -> None:
    assert build_fts_query("hello wor") == '"hello" "wor"*'
    assert build_fts_query('say "big world" ') == '"say" "big world"'
    assert build_fts_query("trailing space ") == '"trailing" "space"'
    assert build_fts_query("   ") == ""
    _chat(store, "AND OR NOT NEAR( a* ^b :c {d} -e +f")
    for nasty in ['"', "*", "AND(", "NOT", 'a "b', "col:x", "^", "(((", "NEAR(a b, 3)", "-", "'; DROP TABLE x; --"]:
        store.search(nasty)  # must not raise
    assert store.search("NEAR")  # operators are just words


def test_search_highlights_ranks_and_filters(store: Store) -> None:
    c1 = _chat(store, "How do I make sourdough starter?", "Mix flour and water; feed the starter daily.")
    c2 = _chat(store, "starter starter starter: why does my sourdough starter smell?", "Acetone smell means hungry.")
    c3 = store.create_conversation().id
    store.add_message(c3, "user", "unrelated")
    store.add_message(c3, "assistant", "Fine.", thinking="the user may mean a starter motor")

    hits = store.search("starter")
    assert hits[0].conversation_id == c2  # the most mentions rank first
    assert hits[-1].conversation_id == c3  # a hit only in reasoning weighs less
    assert hits[0].conversation_title.startswith("starter starter")
    assert all(store_mod.HIGHLIGHT_START in h.snippet for h in hits)
    html = snippet_to_html(hits[0].snippet)
    assert "<b>starter</b>" in html and store_mod.HIGHLIGHT_START not in html
    assert snippet_to_markdown("a \x02b\x03 c") == "a **b** c"
    assert snippet_parts("x<\x02y\x03") == [("x<", False), ("y", True)]
    assert snippet_to_html("<i>\x02a&b\x03") == "&lt;i&gt;<b>a&amp;b</b>"

    assert [h.in_reasoning for h in hits] == [False] * (len(hits) - 1) + [True]
    assert hits[-1].snippet == "the user may mean a \x02starter\x03 motor"
    assert all(h.ranked for h in hits)

    assert {h.conversation_id for h in store.search("sourd")} == {c1, c2}  # prefix while typing
    assert [h.conversation_id for h in store.search('"feed the starter"')] == [c1]  # phrase
    assert len(store.search("starter", one_per_conversation=True)) == 3
    assert len(store.search("starter", limit=2)) == 2
    assert {h.conversation_id for h in store.search("starter", conversation_id=c1)} == {c1}
    assert store.search("nonexistentword") == []


def test_very_common_queries_come_newest_first_and_find_in_conversation_keeps_order(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    c1 = _chat(store, "common word here", "common common common", "common again")
    c2 = _chat(store, "common in another conversation")
    monkeypatch.setattr(search_mod, "RANKED_SEARCH_MAX_MATCHES", 3)
    hits = store.search("common")
    assert [h.message_id for h in hits] == [4, 3, 2, 1] and not any(h.ranked for h in hits)
    assert [h.conversation_id for h in store.search("common", one_per_conversation=True)] == [c2, c1]
    found = store.search("common", conversation_id=c1)
    assert [h.message_id for h in found] == [1, 2, 3] and found[1].snippet.count("\x02") == 3
    assert store.search("common", conversation_id=store.create_conversation().id) == []


def test_snippets_pick_the_window_with_most_query_words() -> None:
    text = " ".join(["filler"] * 30 + ["alpha"] + ["filler"] * 30 + ["alpha", "beta"] + ["filler"] * 30)
    score, snip = store_mod.make_snippet(text, "alpha beta", max_tokens=8)
    assert score == 2002 and snip.startswith("…") and snip.endswith("…")
    assert "\x02alpha\x03 \x02beta\x03" in snip and len(snip.split()) == 8
    assert store_mod.make_snippet("short text", "text") == (1001, "short \x02text\x03")
    assert store_mod.make_snippet("nothing here", "absent") == (0, "")
    assert store_mod.query_terms('Zürich "New York" ca') == [
        ("zurich", False),
        ("new", False),
        ("york", False),
        ("ca", True),
    ]


def test_search_folds_case_and_diacritics_and_follows_edits(store: Store) -> None:
    conv = store.create_conversation()
    m = store.add_message(conv.id, "user", "Un CAFÉ crème à Zürich")
    assert [h.message_id for h in store.search("cafe zurich")] == [m.id]
    store.update_message(m.id, content="Un thé à Genève")
    assert store.search("cafe") == []
    assert [h.message_id for h in store.search("geneve")] == [m.id]
    content, thinking = store.highlight(m.id, "geneve")
    assert content == "Un thé à \x02Genève\x03" and thinking == ""


# --- settings and presets ---------------------------------------------------------------------------------


def test_conversation_settings_defaults_validation_and_sampling() -> None:
    d = ConversationSettings()
    assert (d.temperature, d.top_p, d.reasoning_effort, d.developer_instructions) == (1.0, 1.0, "medium", "")
    s = ConversationSettings.from_dict(
        {
            "temperature": 9,
            "top_p": "high",
            "top_k": 40,
            "min_p": -1,
            "seed": True,
            "max_tokens": 0,
            "context_size": 16384,
            "reasoning_effort": "HIGH",
            "model_identity": "",
            "future_option": [1, 2],
        }
    )
    assert s.temperature == 5.0 and s.top_p == 1.0 and s.top_k == 40 and s.min_p == 0.0
    assert s.seed is None and s.max_tokens is None and s.context_size == 16384
    assert s.reasoning_effort == "high" and s.model_identity is None
    assert s.extra == {"future_option": [1, 2]} and s.to_dict()["future_option"] == [1, 2]
    assert ConversationSettings.from_dict("garbage") == ConversationSettings()  # type: ignore[arg-type]
    sampling = ConversationSettings(temperature=0.7, top_k=20, seed=3, max_tokens=256).to_sampling()
    assert sampling == Sampling(
        temperature=0.7, top_p=1.0, top_k=20, min_p=0.0, repeat_penalty=1.0, seed=3, max_tokens=256
    )


def test_per_conversation_settings_presets_and_app_settings(store: Store) -> None:
    conv = store.create_conversation()
    assert store.conversation_settings(conv.id) == ConversationSettings()
    coder = ConversationSettings(developer_instructions="You write Python.", temperature=0.6, context_size=32768)
    store.set_conversation_settings(conv.id, coder)
    assert store.conversation_settings(conv.id) == coder

    p = store.save_preset("  Coder ", coder)
    assert p.name == "Coder" and store.get_preset("Coder") is not None
    store.save_preset("Coder", ConversationSettings(temperature=0.2))  # overwrite by name
    store.save_preset("alpha", ConversationSettings(reasoning_effort="low"))
    assert [x.name for x in store.list_presets()] == ["alpha", "Coder"]
    other = store.create_conversation()
    assert store.apply_preset(other.id, "Coder").temperature == 0.2
    assert store.conversation_settings(other.id).temperature == 0.2
    assert store.delete_preset("Coder") and not store.delete_preset("Coder")
    with pytest.raises(StoreError, match="no preset"):
        store.apply_preset(other.id, "Coder")
    with pytest.raises(StoreError, match="name"):
        store.save_preset("   ", coder)

    store.set_setting("theme", "dark")
    store.set_setting("window", {"w": 900, "h": 700})
    store.set_setting("sidebar", False)
    assert store.get_setting("theme") == "dark" and store.get_setting("missing", 5) == 5
    assert store.all_settings() == {"sidebar": False, "theme": "dark", "window": {"w": 900, "h": 700}}
    store.delete_setting("theme")
    assert store.get_setting("theme") is None


# --- migrations ---------------------------------------------------------------------------------------------

# The schema exactly as the first release wrote it (schema version 1).
SCHEMA_V1_SQL = """
CREATE TABLE conversations (
    id INTEGER PRIMARY KEY,
    title TEXT NOT NULL DEFAULT '',
    created REAL NOT NULL,
    updated REAL NOT NULL,
    settings TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE messages (
    id INTEGER PRIMARY KEY,
    conversation_id INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    parent_id INTEGER REFERENCES messages(id) ON DELETE CASCADE,
    role TEXT NOT NULL,
    content TEXT NOT NULL DEFAULT '',
    thinking TEXT NOT NULL DEFAULT '',
    created REAL NOT NULL
);
CREATE INDEX messages_conversation ON messages(conversation_id);
CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
PRAGMA user_version = 1;
"""


def _write_v1(path: Path) -> None:
    db = sqlite3.connect(path)
    db.executescript(SCHEMA_V1_SQL)
    db.execute("INSERT INTO conversations VALUES (1, 'Old chat', 100, 200, '{\"temperature\": 0.5}')")
    db.execute("INSERT INTO conversations VALUES (2, '', 300, 300, '{}')")
    rows = [
        (1, 1, None, "user", "hello from version one", "", 100),
        (2, 1, 1, "assistant", "old answer", "old reasoning about llamas", 101),
        (3, 1, 1, "assistant", "newer regenerated answer", "", 150),  # a branch
        (4, 2, None, "user", "second conversation", "", 300),
    ]
    db.executemany("INSERT INTO messages VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
    db.execute("INSERT INTO settings VALUES ('theme', '\"dark\"')")
    db.commit()
    db.close()


def test_migrating_a_v1_database_keeps_everything_and_adds_features(tmp_path: Path) -> None:
    path = tmp_path / "v1.sqlite3"
    _write_v1(path)
    s = Store.open(path)
    try:
        assert s.db.execute("PRAGMA user_version").fetchone()[0] == store_mod.SCHEMA_VERSION == 2
        c1 = s.get_conversation(1)
        assert c1.title == "Old chat" and c1.settings.temperature == 0.5 and len(c1.uid) == 32
        assert c1.active_leaf_id == 3  # newest leaf becomes the active branch
        assert [m.id for m in s.active_path(1)] == [1, 3]
        assert s.siblings(3).sibling_ids == (2, 3)
        old = s.get_message(2)
        assert old.status == "complete" and old.updated == 101 and old.tool_calls == [] and old.stats == {}
        assert [h.message_id for h in s.search("llamas")] == [2]  # old rows are indexed
        assert s.get_setting("theme") == "dark"
        assert s.get_conversation(1).uid != s.get_conversation(2).uid
        s.add_message(
            2, "assistant", "new features work on old data", tool_calls=[{"recipient": "python", "arguments": "1+1"}]
        )
        assert s.active_path(2)[-1].tool_calls[0]["recipient"] == "python"
    finally:
        s.close()


def test_a_failing_migration_leaves_the_database_untouched(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "v1.sqlite3"
    _write_v1(path)

    def broken(db: sqlite3.Connection) -> None:
        db.execute("CREATE TABLE half_done (x)")
        raise RuntimeError("boom")

    monkeypatch.setattr(schema_mod, "MIGRATIONS", [schema_mod._migrate_0_to_1, broken])
    with pytest.raises(RuntimeError, match="boom"):
        Store.open(path)
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == 1
    assert db.execute("SELECT count(*) FROM sqlite_master WHERE name = 'half_done'").fetchone()[0] == 0
    db.close()


def test_a_newer_schema_is_refused_without_touching_the_file(tmp_path: Path) -> None:
    path = tmp_path / "future.sqlite3"
    Store.open(path).close()
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version = 99")
    db.close()
    with pytest.raises(StoreError, match="newer Harmonica") as info:
        Store.open_or_recover(path)
    assert not isinstance(info.value, StoreCorruptError)
    assert path.exists() and not list(tmp_path.glob("*corrupt*"))


# --- corruption ---------------------------------------------------------------------------------------------


def _filled_store(path: Path, conversations: int = 60) -> None:
    s = Store.open(path)
    with s.transaction():
        for i in range(conversations):
            conv = s.create_conversation()
            for j in range(6):
                s.add_message(
                    conv.id,
                    "user" if j % 2 == 0 else "assistant",
                    f"conversation {i} message {j} " + "filler text " * 40,
                )
    s.save_preset("p", ConversationSettings(temperature=0.3))
    s.close()  # checkpoints the WAL into the main file


@pytest.mark.parametrize("damage", ["garbage_inside", "truncated", "garbage_header"])
def test_corrupted_file_gives_clear_error_then_backup_salvage_and_fresh_start(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "conversations.sqlite3"
    _filled_store(path)
    size = path.stat().st_size
    with path.open("r+b") as f:
        if damage == "garbage_inside":
            f.seek(size // 2)
            f.write(os.urandom(16384))
        elif damage == "truncated":
            f.truncate(size // 2)
        else:
            f.write(b"this is not sqlite at all" * 10)
    damaged = path.read_bytes()

    with pytest.raises(StoreCorruptError) as info:
        Store.open(path)
    assert info.value.path == path and str(path) in str(info.value) and "damaged" in str(info.value)

    s, report = Store.open_or_recover(path)
    try:
        assert report is not None
        assert report.backup_path.read_bytes() == damaged  # the backup is the untouched damaged file
        assert report.backup_path.name.startswith("conversations.corrupt-") and report.backup_path.suffix == ".sqlite3"
        assert str(report.backup_path) in report.message
        assert s.path == path and s.db.execute("PRAGMA quick_check").fetchone()[0] == "ok"
        if damage == "garbage_header":
            assert (report.conversations, report.messages) == (0, 0)
        else:
            assert 0 < report.messages < 60 * 6 and report.conversations > 0
            for conv in s.list_conversations(limit=1000):
                s.active_path(conv.id)  # salvaged trees are consistent
            assert s.search("filler")
        # The fresh store is fully usable.
        conv = s.create_conversation()
        s.add_message(conv.id, "user", "after recovery")
        assert [h.conversation_id for h in s.search("recovery")] == [conv.id]
    finally:
        s.close()
    s2, report2 = Store.open_or_recover(path)  # and it opens cleanly next time
    assert report2 is None
    s2.close()


def test_corruption_found_later_raises_store_corrupt_error(tmp_path: Path) -> None:
    path = tmp_path / "late.sqlite3"
    _filled_store(path, conversations=5)
    s = Store.open(path)
    try:

        def corrupt(*_: Any, **__: Any) -> None:
            raise sqlite3.DatabaseError("database disk image is malformed")

        s._db = SimpleNamespace(execute=corrupt, close=lambda: None)  # type: ignore[assignment]
        with pytest.raises(StoreCorruptError, match=r"late\.sqlite3"):
            s.list_conversations()
    finally:
        s._db = None


# --- threads -----------------------------------------------------------------------------------------------


def test_one_store_shared_by_threads(store: Store) -> None:
    conv = store.create_conversation()
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            other = store.create_conversation()
            for i in range(25):
                store.add_message(other.id, "user", f"thread {n} message {i}")
                store.search("thread")
                store.list_conversations()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    mid = store.begin_stream(conv.id)
    for i in range(25):
        store.update_stream(mid, f"tail {i}")
    for t in threads:
        t.join()
    assert errors == []
    assert store.stats()["messages"] == 4 * 25 + 1


# --- conversion and rendering -------------------------------------------------------------------------------


def test_conversion_helpers_round_trip_a_chat_message(store: Store) -> None:
    from app.core import chat

    msg = chat.Message(
        role="assistant",
        content="",
        thinking="need a tool",
        preamble="Let me check.",
        tool_calls=[chat.ToolCallRecord("functions.lookup", '{"q": "x"}', "json")],
        effort="low",
        model="gpt-oss-20b",
        stats=GenerationStats(generated_tokens=9, stop_reason="call"),
        stop_reason="call",
        thinking_s=1.5,
    )
    conv = store.create_conversation()
    row = store.add_message_from(conv.id, msg)
    assert row.extra["preamble"] == "Let me check." and row.extra["thinking_s"] == 1.5
    back = chat.Message.from_dict(row_to_chat_dict(row))
    assert (back.role, back.thinking, back.preamble, back.effort, back.model) == (
        "assistant",
        "need a tool",
        "Let me check.",
        "low",
        "gpt-oss-20b",
    )
    assert back.tool_calls == msg.tool_calls and back.stats == msg.stats and back.stop_reason == "call"

    tool = SimpleNamespace(role="tool", content="42", name="functions.lookup")  # any duck-typed object
    assert message_fields(tool)["tool_name"] == "functions.lookup"
    mid = store.begin_stream(conv.id)
    done = store.finish_stream_from(mid, chat.Message(role="assistant", content="Done.", thinking="ok"))
    assert (done.content, done.thinking, done.status) == ("Done.", "ok", "complete")


def _row(
    mid: int, role: str, content: str = "", thinking: str = "", tool_calls: Any = (), tool_name: str | None = None
) -> MessageRow:
    return MessageRow(
        id=mid,
        conversation_id=1,
        parent_id=mid - 1 or None,
        role=role,
        content=content,
        thinking=thinking,
        tool_calls=[store_mod.tool_call_to_dict(c) for c in tool_calls],
        tool_name=tool_name,
    )


def _render(messages: list[dict[str, Any]], *, fallback: bool = False) -> str:
    """The prompt for these messages: harmony.render_prompt (with the official template, or its own
    fallback renderer), else the official template rendered the way transformers does."""
    import datetime

    from app.core import harmony

    render_prompt = getattr(harmony, "render_prompt", None)
    template = TEMPLATE.read_text(encoding="utf-8")
    if render_prompt is not None:
        return render_prompt(
            messages,
            chat_template=None if fallback else template,
            add_generation_prompt=True,
            date=datetime.date(2026, 1, 1),
        )
    import jinja2
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = lambda x, **kw: json.dumps(x, ensure_ascii=False)
    env.globals["raise_exception"] = lambda msg: (_ for _ in ()).throw(ValueError(msg))
    env.globals["strftime_now"] = lambda fmt: time.strftime(fmt)
    return env.from_string(template).render(messages=messages, add_generation_prompt=True)


def _loop_path(final: bool) -> list[MessageRow]:
    rows = [
        _row(1, "user", "What is the weather in Paris?"),
        _row(
            2,
            "assistant",
            thinking="FIRSTCOT need the weather tool",
            tool_calls=[ToolCall("functions.get_weather", '{"city": "Paris"}')],
        ),
        _row(3, "tool", '{"sunny": true}', tool_name="functions.get_weather"),
    ]
    if final:
        rows.append(_row(4, "assistant", "It is sunny.", thinking="FINALCOT answer now"))
        rows.append(_row(5, "user", "Thanks!"))
    return rows


@pytest.mark.parametrize("fallback", [False, True], ids=["official-template", "fallback-renderer"])
def test_render_messages_keeps_reasoning_only_inside_a_running_tool_loop(fallback: bool) -> None:
    running = render_messages(_loop_path(final=False))
    assert running[1]["thinking"] == "FIRSTCOT need the weather tool"
    assert running[1]["tool_calls"][0]["function"] == {"name": "get_weather", "arguments": {"city": "Paris"}}
    assert running[2] == {"role": "tool", "name": "functions.get_weather", "content": '{"sunny": true}'}
    prompt = _render(running, fallback=fallback)
    assert "<|channel|>analysis<|message|>FIRSTCOT need the weather tool<|end|>" in prompt
    assert 'to=functions.get_weather<|channel|>commentary json<|message|>{"city": "Paris"}<|call|>' in prompt
    assert prompt.endswith("<|start|>assistant")

    done = render_messages(_loop_path(final=True))
    assert all("thinking" not in m for m in done)
    prompt = _render(done, fallback=fallback)
    assert "FIRSTCOT" not in prompt and "FINALCOT" not in prompt
    assert "<|start|>assistant<|channel|>final<|message|>It is sunny.<|end|>" in prompt
    assert "<|start|>user<|message|>Thanks!<|end|>" in prompt


def test_render_messages_instructions_splitting_and_skipping() -> None:
    path = [
        _row(1, "developer", "Answer in French."),
        _row(2, "user", "Say <|end|> please"),
        _row(3, "assistant", thinking="only reasoning, interrupted"),  # nothing to render
        _row(
            4,
            "assistant",
            thinking="two calls",
            tool_calls=[
                {"recipient": "functions.a", "arguments": "{}"},
                {"recipient": "functions.b", "arguments": "not json"},
            ],
        ),
    ]
    out = render_messages(path)
    assert out[0] == {"role": "developer", "content": "Answer in French."}
    assert out[1]["content"] == "Say <\u200b|end|> please"  # stays text in the prompt
    assert [m["tool_calls"][0]["function"]["name"] for m in out[2:]] == ["a", "b"]
    assert out[2]["thinking"] == "two calls" and "thinking" not in out[3]
    assert out[3]["tool_calls"][0]["function"]["arguments"] == "not json"
    assert render_messages(path, developer_instructions="Override")[0]["content"] == "Override"
    assert "# Instructions\n\nAnswer in French." in _render(out)
