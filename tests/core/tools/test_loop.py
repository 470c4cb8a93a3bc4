"""The tool loop on the scripted engine: calls, approvals, errors the model can read, round limit, prompts."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from app.core.chat import Conversation, TurnFinished, run_turn
from app.core.harmony import FinalDelta
from app.core.scripted_engine import ScriptedEngine
from app.core.tools.base import Approval, Decision
from app.core.tools.loop import (
    ApprovalRequest,
    FileRequest,
    LoopFinished,
    RoundLimitReached,
    ToolCallStarted,
    ToolFinished,
    ToolRun,
    ToolRunning,
    run_tool_loop,
)
from app.core.tools.python_tool import SandboxLimits
from app.core.tools.registry import ToolRegistry, ToolSession

DAY = date(2025, 8, 5)
REASON = "<|channel|>analysis<|message|>{}<|end|><|start|>assistant"
CALC = (
    REASON.format("Need math.")
    + '<|channel|>commentary to=functions.calculate <|constrain|>json<|message|>{{"expression":"{}"}}<|call|>'
)
PY = REASON.format("Use python.") + "<|channel|>analysis to=python code<|message|>{}<|call|>"
FINAL = REASON.format("Done now.") + "<|channel|>final<|message|>{}<|return|>"


def call(recipient: str, args: str, channel: str = "commentary") -> str:
    return REASON.format("Calling.") + f"<|channel|>{channel} to={recipient} <|constrain|>json<|message|>{args}<|call|>"


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[ToolRegistry]:
    reg = ToolRegistry(tools_dir=tmp_path / "tools", settings_file=tmp_path / "tools.json")
    yield reg
    reg.close()


@pytest.fixture
def make_session(registry: ToolRegistry, tmp_path: Path) -> Iterator[Callable[..., ToolSession]]:
    made: list[ToolSession] = []

    def make(**kw: Any) -> ToolSession:
        s = ToolSession(
            registry, "conv", scratch=tmp_path / "scratch", sandbox_limits=SandboxLimits(timeout_s=10), **kw
        )
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


def drive(
    engine: ScriptedEngine, conv: Conversation, session: ToolSession, answers: list[Any] | None = None, **kw: Any
) -> list[Any]:
    """Run the loop, answering approval/file requests from `answers` in order (as the UI would)."""
    pending = list(answers or [])
    events = []
    for ev in run_tool_loop(engine, conv, session, date=DAY, **kw):
        events.append(ev)
        if isinstance(ev, (ApprovalRequest, FileRequest)):
            value = pending.pop(0)
            threading.Timer(0.01, ev.reply.answer, args=(value,)).start()  # from another thread, like the UI
    return events


def engine_with(*scripts: str) -> ScriptedEngine:
    e = ScriptedEngine(list(scripts))
    e.load("scripted:gpt-oss-20b")
    return e


def of(events: list[Any], kind: type) -> list[Any]:
    return [e for e in events if isinstance(e, kind)]


def test_function_call_result_final(make_session: Callable[..., ToolSession]) -> None:
    e = engine_with(CALC.format("6*7"), FINAL.format("It is **42**."))
    conv = Conversation()
    conv.add_user("What is 6*7?")
    events = drive(e, conv, make_session())
    kinds = [
        type(x).__name__
        for x in events
        if type(x).__name__
        in ("TurnStarted", "TurnFinished", "ToolCallStarted", "ToolRunning", "ToolFinished", "LoopFinished")
    ]
    assert kinds == [
        "TurnStarted",
        "TurnFinished",
        "ToolCallStarted",
        "ToolRunning",
        "ToolFinished",
        "TurnStarted",
        "TurnFinished",
        "LoopFinished",
    ]
    run = of(events, ToolFinished)[0].run
    assert (run.recipient, run.tool, run.kind, run.status, run.result, run.is_error) == (
        "functions.calculate",
        "calculate",
        "function",
        "done",
        "42",
        False,
    )
    assert run.duration_s is not None and run.duration_s >= 0 and run.started is not None
    assert run.message_id == conv.messages[1].id and run.result_message_id == conv.messages[2].id
    assert [m.role for m in conv.messages] == ["user", "assistant", "tool", "assistant"]
    assert conv.messages[2].name == "functions.calculate" and conv.messages[2].content == "42"
    done = of(events, LoopFinished)[0]
    assert done.reason == "answer" and done.message is conv.messages[-1] and done.tool_calls == 1
    assert "".join(x.text for x in of(events, FinalDelta)) == "It is **42**."

    # the prompt after the tool result follows harmony: the call, its JSON-quoted result, the analysis kept
    second = e.prompts[1]
    assert second.endswith(
        "<|start|>assistant<|channel|>analysis<|message|>Need math.<|end|>"
        '<|start|>assistant to=functions.calculate<|channel|>commentary json<|message|>{"expression": "6*7"}<|call|>'
        '<|start|>functions.calculate to=assistant<|channel|>commentary<|message|>"42"<|end|><|start|>assistant'
    )
    assert "type calculate = (_: {" in second and "## python" in second and "## browser" not in second

    # after the final answer the reasoning of the loop is dropped from the next prompt
    conv.add_user("Thanks")
    e.queue(FINAL.format("You're welcome."))
    list(run_turn(e, conv, date=DAY))
    third = e.prompts[-1]
    assert "Need math." not in third and "Done now." not in third
    assert '<|start|>functions.calculate to=assistant<|channel|>commentary<|message|>"42"<|end|>' in third
    assert "<|start|>assistant<|channel|>final<|message|>It is **42**.<|end|><|start|>user<|message|>Thanks" in third


def test_python_needs_approval_and_deny_is_a_result(make_session: Callable[..., ToolSession]) -> None:
    e = engine_with(PY.format("print(1)"), FINAL.format("Ok, I will not run code."))
    conv = Conversation()
    conv.add_user("run code")
    session = make_session()
    events = drive(e, conv, session, [Decision.DENY])
    started = of(events, ToolCallStarted)[0].run
    assert started.status in ("waiting", "denied") and of(events, ApprovalRequest)
    run = of(events, ToolFinished)[0].run
    assert run.status == "denied" and run.is_error and "denied" in run.result
    assert not of(events, ToolRunning) and not session.has_kernel  # nothing ran
    assert conv.messages[-1].content == "Ok, I will not run code."
    assert "<|start|>python to=assistant<|channel|>analysis<|message|>The user denied" in e.prompts[1]


def test_allow_always_for_this_chat(make_session: Callable[..., ToolSession]) -> None:
    e = engine_with(PY.format("x = 6 * 7"), PY.format("print(x)"), FINAL.format("42"))
    conv = Conversation()
    conv.add_user("compute")
    session = make_session()
    events = drive(e, conv, session, [Decision.ALLOW_ALWAYS])
    assert len(of(events, ApprovalRequest)) == 1  # the second call was not asked
    runs = [x.run for x in of(events, ToolFinished)]
    assert [r.status for r in runs] == ["done", "done"] and runs[1].result == "42"
    assert (
        runs[0].result == "(no output)" and runs[0].language == "python" and runs[0].pretty_arguments() == "x = 6 * 7"
    )
    assert session.always_allowed == {"python"}


def test_approval_setting_per_tool(registry: ToolRegistry, make_session: Callable[..., ToolSession]) -> None:
    registry.set_approval("python", Approval.AUTO)
    e = engine_with(PY.format("1 + 1"), FINAL.format("2"))
    conv = Conversation()
    conv.add_user("q")
    events = drive(e, conv, make_session())
    assert not of(events, ApprovalRequest) and of(events, ToolFinished)[0].run.result == "2"
    registry.set_approval("calculate", Approval.ASK)
    e = engine_with(CALC.format("1+1"), FINAL.format("2"))
    conv = Conversation()
    conv.add_user("q")
    events = drive(e, conv, make_session(), [Decision.ALLOW_ONCE])
    assert len(of(events, ApprovalRequest)) == 1 and of(events, ToolFinished)[0].run.result == "2"


def test_cancel_while_waiting_for_approval(make_session: Callable[..., ToolSession]) -> None:
    e = engine_with(PY.format("print(1)"), FINAL.format("never"))
    conv = Conversation()
    conv.add_user("q")
    cancel = threading.Event()
    events = []
    for ev in run_tool_loop(e, conv, make_session(), cancel=cancel, date=DAY):
        events.append(ev)
        if isinstance(ev, ApprovalRequest):
            threading.Timer(0.1, cancel.set).start()  # the user pressed Stop instead of answering
    assert of(events, LoopFinished)[0].reason == "cancelled"
    assert of(events, ToolFinished)[0].run.status == "cancelled"
    assert len(e.prompts) == 1 and conv.messages[-1].role == "tool"  # the history stays well-formed


@pytest.mark.parametrize(
    ("script", "message"),
    [
        (call("container.exec", '{"cmd":["ls"]}', "analysis"), "there is no tool named 'container.exec'"),
        (call("functions.nope", "{}"), "the function 'nope' does not exist"),
        (call("functions.calculate", '{"expression": "1+'), "the arguments are not valid JSON"),
        (call("functions.calculate", '{"expr": "1"}'), "unknown argument(s) 'expr'"),
        (call("browser.search", '{"query":"x"}', "analysis"), "the browser tool is not available (it is not enabled)"),
        (call("functions.calculate", '{"expression": "1/0"}'), "Error: division by zero"),
    ],
)
def test_bad_calls_become_error_results(make_session: Callable[..., ToolSession], script: str, message: str) -> None:
    e = engine_with(script, FINAL.format("Sorry."))
    conv = Conversation()
    conv.add_user("q")
    events = drive(e, conv, make_session())
    run = of(events, ToolFinished)[0].run
    assert run.is_error and run.status == "error" and message in run.result, run.result
    assert of(events, ToolCallStarted)  # the card still appears
    assert conv.messages[-1].content == "Sorry." and "{" not in conv.messages[-1].content  # no raw text in the answer
    assert message in e.prompts[1]


def test_disabled_tools_are_not_offered_and_calls_to_them_fail(
    registry: ToolRegistry, make_session: Callable[..., ToolSession]
) -> None:
    registry.set_enabled("python", False)
    registry.set_enabled("calculate", False)
    e = engine_with(PY.format("print(1)"), CALC.format("1+1"), FINAL.format("ok"))
    conv = Conversation()
    conv.add_user("q")
    events = drive(e, conv, make_session())
    results = [x.run.result for x in of(events, ToolFinished)]
    assert "the python tool is not enabled" in results[0]
    assert "'calculate' is not enabled" in results[1]
    assert "## python" not in e.prompts[0] and "type calculate" not in e.prompts[0]


def test_browser_hidden_offline(registry: ToolRegistry, make_session: Callable[..., ToolSession]) -> None:
    registry.set_enabled("browser", True)
    online = make_session()
    assert "browser" in online.prompt_tools()[1]
    offline = make_session(offline=True)
    assert offline.prompt_tools()[1] == ["python"]
    e = engine_with(call("browser.search", '{"query":"x"}', "analysis"), FINAL.format("ok"))
    conv = Conversation()
    conv.add_user("q")
    run = of(drive(e, conv, offline), ToolFinished)[0].run
    assert "Harmonica is offline" in run.result


def test_round_limit(make_session: Callable[..., ToolSession]) -> None:
    e = engine_with(CALC.format("1+1"))  # the last script repeats: the model never stops calling
    conv = Conversation()
    conv.add_user("loop forever")
    events = drive(e, conv, make_session(), round_limit=3)
    runs = [x.run for x in of(events, ToolFinished)]
    assert [r.status for r in runs] == ["done", "done", "done", "skipped"]
    assert "limit of 3 tool calls" in runs[-1].result
    limit = of(events, RoundLimitReached)[0]
    assert limit.limit == 3 and "Stopped after 3 tool calls" in limit.text and "Settings → Tools" in limit.text
    assert of(events, LoopFinished)[0].reason == "round_limit" and len(e.prompts) == 4


def test_read_file_asks_the_user_to_pick(make_session: Callable[..., ToolSession], tmp_path: Path) -> None:
    f = tmp_path / "notes.md"
    f.write_text("# Meeting\nShip on Friday.")
    script = call("functions.read_file", '{"purpose": "to summarise your notes", "suggested_path": "notes.md"}')
    e = engine_with(script, FINAL.format("Ship on Friday."), script, FINAL.format("ok"))
    conv = Conversation()
    conv.add_user("summarise my notes")
    events = drive(e, conv, make_session(), [str(f)])
    req = of(events, FileRequest)[0]
    assert req.purpose == "to summarise your notes" and req.suggested_path == "notes.md" and req.run.request == "file"
    assert not of(events, ApprovalRequest)
    run = of(events, ToolFinished)[0].run
    assert run.status == "done" and "Ship on Friday." in run.result and run.result.startswith("File: notes.md")
    conv.add_user("again")
    events = drive(e, conv, make_session(), [None])  # the user closed the dialog
    run = of(events, ToolFinished)[0].run
    assert run.status == "denied" and "declined to share a file" in run.result


def test_tool_exception_shows_on_the_card(registry: ToolRegistry, make_session: Callable[..., ToolSession]) -> None:
    def get_weather(location: str) -> str:
        """Weather for a place."""
        raise ConnectionError("weather service down")

    registry.add_function(get_weather)
    e = engine_with(call("functions.get-weather", '{"location": "Paris"}'), FINAL.format("Unavailable."))
    conv = Conversation()
    conv.add_user("weather?")
    run = of(drive(e, conv, make_session()), ToolFinished)[0].run
    assert run.tool == "get_weather"  # "get-weather" resolved to the identifier (pitfall 11)
    assert run.status == "error" and run.result == "Error: ConnectionError: weather service down"


def test_python_call_with_json_arguments_and_long_output(
    make_session: Callable[..., ToolSession], registry: ToolRegistry
) -> None:
    registry.set_approval("python", Approval.AUTO)
    e = engine_with(call("python", '{"code": "print(\\"a\\" * 50000)"}', "analysis"), FINAL.format("done"))
    conv = Conversation()
    conv.add_user("q")
    run = of(drive(e, conv, make_session(), max_result_chars=1000), ToolFinished)[0].run
    assert run.pretty_arguments() == 'print("a" * 50000)'
    assert len(run.output) > 50000 - 10 and len(run.result) < 1200 and "characters left out" in run.result


def test_tool_run_round_trips_for_storage() -> None:
    run = ToolRun(
        "python",
        "print(1)",
        kind="python",
        tool="python",
        status="done",
        duration_s=1.5,
        output="1\n",
        result="1",
        images=["/tmp/a.png"],
        message_id="m",
        result_message_id="r",
    )
    again = ToolRun.from_dict(run.to_dict())
    assert again == run and again.title == "python"
    assert (
        ToolRun.from_dict({"recipient": "functions.f", "arguments": "{}", "status": "weird", "is_error": True}).status
        == "error"
    )
    assert ToolRun("functions.f", '{"a":1}').pretty_arguments() == '{\n  "a": 1\n}'


def test_final_answer_without_tools_ends_the_loop(make_session: Callable[..., ToolSession]) -> None:
    e = engine_with(FINAL.format("Hello!"))
    conv = Conversation()
    conv.add_user("hi")
    events = drive(e, conv, make_session())
    assert of(events, LoopFinished)[0].reason == "answer" and not of(events, ToolFinished)
    assert of(events, TurnFinished)[0].message.content == "Hello!"
