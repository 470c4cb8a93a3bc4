"""ChatSession: stored conversations driven through the (scripted and real) engine."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from app.core.chat import ContextOverflowError, TurnFinished, TurnStarted
from app.core.engine import EngineError, Sampling
from app.core.harmony import FinalDelta
from app.core.scripted_engine import ScriptedEngine
from app.core.session import TITLE_REQUEST, ChatSession, ContextTrimmed, MessageSaved
from app.core.store import ConversationSettings, Store, StoreError

FINAL = "<|channel|>analysis<|message|>Think.<|end|><|start|>assistant<|channel|>final<|message|>It is 4.<|return|>"


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store.open(tmp_path / "c.sqlite3")
    yield s
    s.close()


def engine_with(*scripts: object, **kw: object) -> ScriptedEngine:
    e = ScriptedEngine(list(scripts), **kw)  # type: ignore[arg-type]
    e.load("scripted:gpt-oss-20b")
    return e


def answer(session: ChatSession, engine: ScriptedEngine, **kw: object) -> list[object]:
    return list(session.generate(engine, **kw))  # type: ignore[arg-type]


def test_send_and_answer_are_stored(store: Store) -> None:
    s = ChatSession(store)
    assert s.conversation_id is None and s.view() == []  # nothing stored for an untouched chat
    s.add_user("What is 2+2?")
    events = answer(s, engine_with(FINAL), effort="high")
    assert isinstance(events[0], TurnStarted)
    saved = events[-1]
    assert isinstance(saved, MessageSaved) and isinstance(events[-2], TurnFinished)
    assert (saved.row.role, saved.row.content, saved.row.thinking, saved.row.status, saved.row.effort) == (
        "assistant",
        "It is 4.",
        "Think.",
        "complete",
        "high",
    )
    assert saved.row.extra["stop_reason"] == "return" and saved.row.stats["generated_tokens"] > 0
    view = s.view()
    assert [(m.role, m.content) for m, _ in view] == [("user", "What is 2+2?"), ("assistant", "It is 4.")]
    assert store.get_conversation(s.conversation_id).title == "What is 2+2?"


def test_settings_reach_the_prompt(store: Store) -> None:
    s = ChatSession(store)
    s.set_settings(
        ConversationSettings(
            developer_instructions="Answer in French.", reasoning_effort="low", model_identity="You are Harmonica."
        )
    )
    s.add_user("hi")
    e = engine_with(FINAL)
    answer(s, e)
    prompt = e.prompts[0]
    assert "Reasoning: low" in prompt and "You are Harmonica." in prompt
    assert "# Instructions\n\nAnswer in French." in prompt
    assert store.conversation_settings(s.conversation_id).developer_instructions == "Answer in French."


def test_tail_is_saved_while_streaming_and_stop_marks_interrupted(store: Store) -> None:
    s = ChatSession(store)
    s.add_user("Tell me a long story")
    e = engine_with("<|channel|>final<|message|>" + "word " * 400 + "<|return|>", delay_s=0.004)
    cancel = threading.Event()
    mid = None
    tail_seen = ""
    for ev in s.generate(e, cancel=cancel):
        if isinstance(ev, TurnStarted):
            mid = store.active_path(s.conversation_id)[-1].id
        if isinstance(ev, FinalDelta) and len(ev.text) and mid is not None:
            row = store.get_message(mid)
            if row.content and not tail_seen:
                tail_seen = row.content
                assert row.status == "streaming"
                cancel.set()
    assert tail_seen.startswith("word word")  # saved mid-stream, before the answer ended
    row = store.get_message(mid)
    assert row.status == "interrupted" and row.extra["stop_reason"] == "cancelled"
    assert len(row.content) >= len(tail_seen)

    # Continue: the same row is reopened and completed.
    e2 = engine_with(" THE END.<|return|>")
    events = answer(s, e2, resume_id=mid)
    done = events[-1]
    assert isinstance(done, MessageSaved) and done.row.id == mid and done.row.status == "complete"
    assert done.row.content == row.content + " THE END."
    assert e2.prompts[0].endswith("<|channel|>final<|message|>" + row.content)
    assert len(store.active_path(s.conversation_id)) == 2


def test_only_cut_short_answers_can_be_continued(store: Store) -> None:
    s = ChatSession(store)
    s.add_user("q")
    saved = answer(s, engine_with(FINAL))[-1]
    with pytest.raises(StoreError, match="cut short"):
        answer(s, engine_with(FINAL), resume_id=saved.row.id)


def test_regenerate_and_edit_make_branches(store: Store) -> None:
    s = ChatSession(store)
    user = s.add_user("first question")
    first = answer(s, engine_with(FINAL))[-1].row
    parent = s.regenerate_parent(first.id)
    assert parent == user.id
    second = answer(s, engine_with("<|channel|>final<|message|>Another take.<|return|>"), parent_id=parent)[-1].row
    view = s.view()
    assert view[-1][0].id == second.id and view[-1][1].label() == "2/2"
    s.navigate(second.id, -1)
    assert s.view()[-1][0].id == first.id

    edited = s.edit_user(user.id, "better question")
    e = engine_with(FINAL)
    answer(s, e)
    view = s.view()
    assert view[0][0].id == edited.id and view[0][1].label() == "2/2" and view[1][0].parent_id == edited.id
    assert "better question" in e.prompts[0] and "first question" not in e.prompts[0]


def test_a_refused_prompt_leaves_no_answer_behind(store: Store) -> None:
    s = ChatSession(store)
    s.add_user("word " * 300)
    with pytest.raises(ContextOverflowError):
        answer(s, engine_with(FINAL, n_ctx=128))
    assert [m.role for m in store.active_path(s.conversation_id)] == ["user"]


class _FailingEngine(ScriptedEngine):
    def stream(self, prompt, sampling=None, *, cancel=None, grammar=None):  # type: ignore[no-untyped-def]
        inner = super().stream(prompt, sampling, cancel=cancel, grammar=grammar)

        def gen():  # type: ignore[no-untyped-def]
            for i, item in enumerate(inner):
                if i == 8:
                    raise EngineError("llama.cpp failed while generating (code -3).")
                yield item

        return gen()


def test_engine_failure_keeps_the_partial_answer(store: Store) -> None:
    s = ChatSession(store)
    s.add_user("q")
    e = _FailingEngine(["<|channel|>final<|message|>" + "word " * 50 + "<|return|>"])
    e.load("scripted:x")
    with pytest.raises(EngineError):
        list(s.generate(e))
    row = store.active_path(s.conversation_id)[-1]
    assert row.role == "assistant" and row.status == "interrupted" and row.content.startswith("word")


def test_trim_oldest_turns_when_enabled(store: Store) -> None:
    s = ChatSession(store)
    s.set_settings(ConversationSettings(trim_oldest=True))
    for i in range(6):
        s.add_user(f"OLD{i} " + "filler " * 40)
        store.add_message(s.conversation_id, "assistant", f"reply {i}")
    s.add_user("NEWEST question")
    e = engine_with(FINAL, n_ctx=400)
    events = answer(s, e)
    trimmed = [ev for ev in events if isinstance(ev, ContextTrimmed)]
    assert trimmed and trimmed[0].dropped % 2 == 0 and trimmed[0].dropped >= 2
    prompt = e.prompts[0]
    assert "NEWEST question" in prompt and "OLD0" not in prompt and "OLD5" in prompt
    assert isinstance(events[-1], MessageSaved)
    # Without the setting, the same conversation is refused with a clear message.
    s.set_settings(ConversationSettings(trim_oldest=False))
    with pytest.raises(ContextOverflowError):
        answer(s, engine_with(FINAL, n_ctx=400))


def test_model_title_reuses_the_conversation_prefix_and_respects_renames(store: Store) -> None:
    s = ChatSession(store)
    s.add_user("How warm is Paris in May?")
    e = engine_with(
        FINAL,
        "<|channel|>analysis<|message|>Short.<|end|><|start|>assistant<|channel|>final<|message|>"
        '"Paris in May."<|return|>',
    )
    answer(s, e)
    titles = list(s.generate_title(e))
    assert titles == ["Paris in May"]
    row = store.get_conversation(s.conversation_id)
    assert (row.title, row.title_source) == ("Paris in May", "model")
    title_prompt = e.prompts[1]
    assert TITLE_REQUEST in title_prompt and "Reasoning: low" in title_prompt
    # Everything before the title request is the conversation itself: the KV cache is reused.
    conv_part = e.prompts[0].replace("Reasoning: medium", "Reasoning: low")
    assert title_prompt.startswith(conv_part[: conv_part.rindex("<|start|>assistant")])
    store.rename_conversation(s.conversation_id, "Mine")
    assert list(s.generate_title(e)) == []
    assert store.get_conversation(s.conversation_id).title == "Mine"


def test_real_engine_turn_is_stored(store: Store, tiny_model_path: Path) -> None:
    pytest.importorskip("llama_cpp")
    from app.core.engine import Engine, LoadSettings

    grammar = (
        'root ::= <|channel|> "analysis" <|message|> [a-z ]{3,10} <|end|> <|start|> "assistant" '
        '<|channel|> "final" <|message|> [a-z]{2,8} <|return|>'
    )
    e = Engine()
    e.load(tiny_model_path, LoadSettings(n_ctx=512, n_threads=1))
    try:
        s = ChatSession(store)
        s.add_user("hello")
        saved = list(s.generate(e, sampling=Sampling(seed=3, max_tokens=60), grammar=grammar))[-1]
        assert isinstance(saved, MessageSaved) and saved.row.status == "complete"
        assert saved.row.content and saved.row.thinking and saved.row.extra["stop_reason"] == "return"
    finally:
        e.unload()


def test_tool_loop_turn_is_stored_round_by_round(store: Store, tmp_path: Path) -> None:
    from app.core.tools.loop import ToolFinished, ToolRun
    from app.core.tools.registry import ToolRegistry, ToolSession

    reason = "<|channel|>analysis<|message|>{}<|end|><|start|>assistant"
    calc = reason.format("SECRETCOT need math.") + (
        '<|channel|>commentary to=functions.calculate <|constrain|>json<|message|>{"expression":"6*7"}<|call|>'
    )
    final = reason.format("FINALCOT done.") + "<|channel|>final<|message|>It is 42.<|return|>"
    reg = ToolRegistry(tools_dir=tmp_path / "tools", settings_file=tmp_path / "tools.json")
    tools = ToolSession(reg, "c1", scratch=tmp_path / "scratch")
    try:
        s = ChatSession(store)
        s.add_user("What is six times seven?")
        e = engine_with(calc, final, "<|channel|>final<|message|>You are welcome.<|return|>")
        events = list(s.generate(e, tool_session=tools))
        assert any(isinstance(ev, ToolFinished) for ev in events)
        saved = [ev.row for ev in events if isinstance(ev, MessageSaved)]
        assert [r.role for r in saved] == ["assistant", "tool", "assistant"]
        view = [m for m, _ in s.view()]
        assert [m.role for m in view] == ["user", "assistant", "tool", "assistant"]
        call_row, tool_row, answer = view[1], view[2], view[3]
        assert call_row.tool_calls[0]["recipient"] == "functions.calculate"
        assert tool_row.parent_id == call_row.id and answer.parent_id == tool_row.id
        assert tool_row.tool_name == "functions.calculate" and "42" in tool_row.content
        run = ToolRun.from_dict(tool_row.extra["tool_run"])
        assert run.recipient == "functions.calculate" and run.status == "done" and "42" in run.output
        assert answer.content == "It is 42." and answer.status == "complete"
        # During the loop the reasoning went back with the call; after the answer it is dropped.
        assert "SECRETCOT" in e.prompts[1]
        s.add_user("Thanks!")
        list(s.generate(e, tool_session=tools))
        assert "SECRETCOT" not in e.prompts[2] and "FINALCOT" not in e.prompts[2]
        assert (
            'to=functions.calculate<|channel|>commentary json<|message|>{"expression": "6*7"}<|call|>' in e.prompts[2]
        )
        # A regenerated answer redoes the whole turn, as a branch beside the first call.
        parent = s.regenerate_parent(answer.id)
        assert parent == view[0].id
    finally:
        tools.close()
        reg.close()
