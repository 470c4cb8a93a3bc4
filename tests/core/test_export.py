"""Tests for conversation export (Markdown, JSON) and JSON import with validation."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from app.core.engine import GenerationStats
from app.core.export import (
    EXPORT_FORMAT,
    EXPORT_VERSION,
    ImportFormatError,
    conversation_to_dict,
    export_json,
    export_markdown,
    import_json,
    markdown_to_text,
    message_markdown,
    read_import_file,
    write_json,
)
from app.core.harmony import ToolCall
from app.core.store import ConversationSettings, Store


@pytest.fixture
def store(tmp_path: Path) -> Any:
    s = Store.open(tmp_path / "store.sqlite3")
    yield s
    s.close()


def _rich_conversation(s: Store) -> int:
    """Branches, a tool loop, reasoning, stats, an interrupted answer and custom settings."""
    settings = ConversationSettings(
        developer_instructions="Answer like a pirate.", temperature=0.8, seed=42, extra={"tools": ["python"]}
    )
    conv = s.create_conversation(settings=settings)
    u1 = s.add_message(conv.id, "user", "Weather in Lisbon?")
    a1 = s.add_message(
        conv.id,
        "assistant",
        thinking="Use the tool.",
        effort="high",
        model="gpt-oss-20b",
        tool_calls=[ToolCall("functions.get_weather", '{"city":"Lisbon"}', content_type="json")],
        extra={"preamble": "Checking the sky…"},
    )
    s.add_message(
        conv.id, "tool", '{"temp": 21, "sky": "clear"}', tool_name="functions.get_weather", tool_call_id="call-1"
    )
    s.add_message(
        conv.id,
        "assistant",
        "Arr, 21 °C and clear skies!",
        thinking="Pirate voice.",
        effort="high",
        model="gpt-oss-20b",
        stats=GenerationStats(prompt_tokens=200, generated_tokens=12, tokens_per_s=40.0, stop_reason="return"),
    )
    s.add_message(conv.id, "assistant", "A second take", parent_id=u1.id, status="interrupted")  # a branch
    s.switch_branch(a1.id)  # back to the first branch (the tool loop)
    return conv.id


def _canonical(d: dict[str, Any]) -> dict[str, Any]:
    """A conversation dict with store-assigned identity (ids, uid) replaced by tree positions."""
    index = {m["id"]: i for i, m in enumerate(d["messages"])}
    out = copy.deepcopy(d)
    out.pop("uid")
    out["active_leaf"] = index.get(d["active_leaf"])
    for m in out["messages"]:
        m["id"] = index[m["id"]]
        m["parent"] = index.get(m["parent"]) if m["parent"] is not None else None
    return out


def test_json_export_import_round_trip_keeps_everything(store: Store, tmp_path: Path) -> None:
    cid = _rich_conversation(store)
    original = conversation_to_dict(store, cid)
    path = write_json(store, tmp_path / "out" / "export.json")
    doc = json.loads(path.read_text(encoding="utf-8"))
    assert doc["format"] == EXPORT_FORMAT and doc["version"] == EXPORT_VERSION
    assert len(doc["conversations"]) == 1 and len(doc["conversations"][0]["messages"]) == 5

    other = Store.open(tmp_path / "other.sqlite3")
    try:
        [new_id] = import_json(other, path)
        copy_ = conversation_to_dict(other, new_id)
        assert _canonical(copy_) == _canonical(original)
        assert copy_["uid"] == original["uid"]  # a new store keeps the identity
        assert other.get_conversation(new_id).settings.extra == {"tools": ["python"]}
        path_rows = other.active_path(new_id)
        assert [m.role for m in path_rows] == ["user", "assistant", "tool", "assistant"]
        assert path_rows[1].tool_calls[0]["recipient"] == "functions.get_weather"
        assert path_rows[3].stats["generated_tokens"] == 12
        assert other.siblings(path_rows[1].id).count == 2
        assert [h.conversation_id for h in other.search("pirate")] == [new_id]  # imported text is searchable
    finally:
        other.close()

    # Importing into the same store makes a copy with a fresh uid; nothing is overwritten.
    [dup] = import_json(store, doc)
    assert dup != cid and store.get_conversation(dup).uid != original["uid"]
    assert _canonical(conversation_to_dict(store, dup)) == _canonical(original)
    assert _canonical(conversation_to_dict(store, cid)) == _canonical(original)


def test_export_all_skips_deleted_and_streaming_rows_import_as_interrupted(store: Store) -> None:
    a = store.create_conversation("a").id
    b = store.create_conversation("b").id
    store.add_message(a, "user", "hi")
    store.begin_stream(a)
    store.delete_conversation(b)
    doc = export_json(store)
    assert [c["title"] for c in doc["conversations"]] == ["a"]
    assert doc["conversations"][0]["messages"][1]["status"] == "streaming"
    [new] = import_json(store, doc)
    assert store.active_path(new)[-1].status == "interrupted"


def _doc(**conv_overrides: Any) -> dict[str, Any]:
    conv = {
        "title": "t",
        "messages": [
            {"id": 10, "parent": None, "role": "user", "content": "hello"},
            {"id": 11, "parent": 10, "role": "assistant", "content": "hi"},
        ],
    }
    conv.update(conv_overrides)
    return {"format": EXPORT_FORMAT, "version": 1, "conversations": [conv]}


def test_minimal_hand_written_export_imports(store: Store) -> None:
    [cid] = import_json(store, _doc(active_leaf=None))
    assert [m.content for m in store.active_path(cid)] == ["hello", "hi"]
    assert store.get_conversation(cid).settings == ConversationSettings()


def _second(d: dict[str, Any]) -> dict[str, Any]:
    return d["conversations"][1]


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.update(format="something-else"), "not a Harmonica export"),
        (lambda d: d.update(version=99), "newer Harmonica"),
        (lambda d: d.update(version="1"), "version"),
        (lambda d: d.pop("conversations"), "conversations"),
        (lambda d: d["conversations"].append("x"), r"conversations\[2\]: expected an object"),
        (lambda d: _second(d).update(messages={}), r"conversations\[1\].messages: expected a list"),
        (lambda d: _second(d)["messages"][1].update(role="robot"), r"conversations\[1\].messages\[1\].role"),
        (lambda d: _second(d)["messages"][1].update(id=10), "used twice"),
        (lambda d: _second(d)["messages"][1].update(parent=99), r"messages\[1\].parent: no message"),
        (lambda d: _second(d)["messages"][0].update(parent=11), "loop"),
        (lambda d: _second(d)["messages"][0].update(content=5), r"messages\[0\].content: expected text"),
        (lambda d: _second(d)["messages"][0].update(status="done"), "status"),
        (lambda d: _second(d)["messages"][0].update(created="yesterday"), "created"),
        (lambda d: _second(d)["messages"][0].update(tool_calls=[{"arguments": "{}"}]), "recipient"),
        (lambda d: _second(d)["messages"][0].update(stats=[1]), "stats"),
        (lambda d: _second(d).update(active_leaf=77), "active_leaf"),
        (lambda d: _second(d).update(settings="hot"), "settings"),
    ],
)
def test_malformed_exports_are_refused_with_a_clear_message_and_nothing_written(
    store: Store, mutate: Any, message: str
) -> None:
    doc = _doc()
    doc["conversations"].insert(0, _doc()["conversations"][0])  # a valid one first: all or nothing
    mutate(doc)
    with pytest.raises(ImportFormatError, match=message):
        import_json(store, doc)
    assert store.count_conversations() == 0


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "not valid JSON"),
        (b'{"format": "harmonica.conversations", ', "line 1"),
        (b"\xff\xfe\x00garbage", "not UTF-8"),
        (b"[1, 2, 3]", "not an object"),
    ],
)
def test_unreadable_files_are_refused_clearly(store: Store, tmp_path: Path, content: bytes, message: str) -> None:
    p = tmp_path / "in.json"
    p.write_bytes(content)
    with pytest.raises(ImportFormatError, match=message):
        import_json(store, p)
    with pytest.raises(ImportFormatError, match="does not exist"):
        read_import_file(tmp_path / "missing.json")
    with pytest.raises(ImportFormatError, match="folder"):
        read_import_file(tmp_path)


def test_markdown_export_with_and_without_reasoning(store: Store, tmp_path: Path) -> None:
    cid = _rich_conversation(store)
    plain = export_markdown(store, cid)
    assert plain.startswith("# Weather in Lisbon?\n")
    assert "## Instructions\n\nAnswer like a pirate." in plain
    assert "## You\n\nWeather in Lisbon?" in plain
    assert '**Tool call** `functions.get_weather`\n\n```json\n{\n  "city": "Lisbon"\n}\n```' in plain
    assert '## Tool result (functions.get_weather)\n\n```json\n{"temp": 21, "sky": "clear"}\n```' in plain
    assert "Arr, 21 °C and clear skies!" in plain and "*Checking the sky…*" in plain
    assert "model gpt-oss-20b" in plain and "reasoning effort high" in plain
    assert "Pirate voice" not in plain and "<details>" not in plain
    assert "A second take" not in plain  # only the active branch

    out = tmp_path / "chat.md"
    with_reasoning = export_markdown(store, cid, include_reasoning=True, include_metadata=False, path=out)
    assert out.read_text(encoding="utf-8") == with_reasoning
    assert "<details>\n<summary>Reasoning</summary>\n\nPirate voice.\n\n</details>" in with_reasoning
    assert "Exported from Harmonica" not in with_reasoning and "## Instructions" not in with_reasoning

    store.switch_branch(store.siblings(store.active_path(cid)[1].id).sibling_ids[1])
    assert "A second take\n\n*(interrupted)*" in export_markdown(store, cid)


def test_code_fences_inside_content_stay_closed(store: Store) -> None:
    conv = store.create_conversation()
    row = store.add_message(conv.id, "tool", "here ``` are ```` backticks", tool_name="python")
    md = message_markdown(row)
    assert md.startswith("`````\n") and md.endswith("\n`````")


def test_markdown_to_text_for_copy_as_text() -> None:
    md = (
        "# Title\n\nSome **bold** and *italic* and `code` with a [link](https://example.com).\n\n"
        "- one\n- two\n  1. nested\n\n```python\nprint('hi')\n```\n\n| a | b |\n|---|---|\n| 1 | 2 |\n"
    )
    text = markdown_to_text(md)
    assert text == (
        "Title\n\nSome bold and italic and code with a link (https://example.com).\n\n"
        "• one\n• two\n  1. nested\n\nprint('hi')\n\na\tb\n1\t2\n"
    )
    assert markdown_to_text("") == ""
