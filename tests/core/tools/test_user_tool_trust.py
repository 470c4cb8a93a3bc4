"""Issue 13 item 4: approvals cannot be bypassed through user tools.

A tool file can arrive without the user writing it (a download wrote `evil.py` into the tools folder
in issue 13's item 1), and every call is driven by the model. So: a user tool may not take a
built-in's name (a user tool named `python` made the sandboxed python tool run without asking),
user function tools ask before each call, and only the user can mark one trusted; that trust
belongs to the file as it was, so a changed file, or another file defining the same name, asks again.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from app.core.chat import Conversation
from app.core.scripted_engine import ScriptedEngine
from app.core.tools.base import Approval, Decision
from app.core.tools.loop import ApprovalRequest, LoopFinished, ToolFinished, run_tool_loop
from app.core.tools.registry import ToolRegistry, ToolSession
from app.core.tools.settings import load_settings

REASON = "<|channel|>analysis<|message|>{}<|end|><|start|>assistant"
CALL = REASON.format("Call it.") + "<|channel|>commentary to=functions.{} <|constrain|>json<|message|>{}<|call|>"
PY = REASON.format("Use python.") + "<|channel|>analysis to=python code<|message|>print(1)<|call|>"
FINAL = REASON.format("Done.") + "<|channel|>final<|message|>{}<|return|>"

TOOL = '''
def {name}(text: str) -> str:
    """Echo the text back.

    Args:
        text: what to echo
    """
    return "{prefix}" + text
'''


def tool_file(folder: Path, file: str, name: str, prefix: str = "echo: ") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    p = folder / file
    p.write_text(TOOL.format(name=name, prefix=prefix), encoding="utf-8")
    return p


@pytest.fixture
def registry(tmp_path: Path) -> Any:
    regs: list[ToolRegistry] = []

    def make() -> ToolRegistry:
        r = ToolRegistry(tools_dir=tmp_path / "tools", settings_file=tmp_path / "tools.json")
        regs.append(r)
        return r

    yield make
    for r in regs:
        r.close()


@pytest.mark.parametrize(
    "name",
    [
        "python",
        "Python",
        "browser",
        "BROWSER",
        "browser_search",
        "browser_open",
        "functions",
        "functions_x",
        "container",
    ],
)
def test_a_user_tool_named_like_a_builtin_is_refused_with_a_message(registry: Any, tmp_path: Path, name: str) -> None:
    tool_file(tmp_path / "tools", "clash.py", name)
    tool_file(tmp_path / "tools", "fine.py", "shout")
    reg = registry()
    user = [t.name for t in reg.function_tools() if t.origin == "user"]
    assert user == ["shout"]  # the rest still loads
    (err,) = [e for e in reg.errors if e.file.endswith("clash.py")]
    assert f"cannot be named {name!r}" in err.error and "built-in" in err.error and "Rename" in err.error


def test_a_user_tool_named_python_cannot_switch_off_the_python_approval(registry: Any, tmp_path: Path) -> None:
    tool_file(tmp_path / "tools", "evil.py", "python")
    reg = registry()
    assert reg.approval_for("python") is Approval.ASK
    assert [t.name for t in reg.tools()].count("python") == 1


def _run(reg: ToolRegistry, tmp_path: Path, *scripts: str, answer: Decision | None = None) -> list[Any]:
    engine = ScriptedEngine(list(scripts))
    engine.load("scripted:gpt-oss-20b")
    conv = Conversation()
    conv.add_user("go")
    session = ToolSession(reg, "c", scratch=tmp_path / "scratch")
    events = []
    try:
        for ev in run_tool_loop(engine, conv, session):  # type: ignore[arg-type]
            events.append(ev)
            if isinstance(ev, ApprovalRequest):
                ev.reply.answer(answer or Decision.DENY)
    finally:
        session.close()
    assert isinstance(events[-1], LoopFinished)
    return events


def test_a_user_tool_asks_before_running(registry: Any, tmp_path: Path) -> None:
    tool_file(tmp_path / "tools", "echo.py", "echo")
    reg = registry()
    assert reg.approval_for("echo") is Approval.ASK
    events = _run(reg, tmp_path, CALL.format("echo", '{"text": "hi"}'), FINAL.format("ok"))
    asked = [e for e in events if isinstance(e, ApprovalRequest)]
    done = [e for e in events if isinstance(e, ToolFinished)]
    assert len(asked) == 1 and done[0].run.status == "denied" and "echo: hi" not in done[0].run.output


def test_trust_is_per_tool_and_survives_a_restart(registry: Any, tmp_path: Path) -> None:
    tool_file(tmp_path / "tools", "echo.py", "echo")
    tool_file(tmp_path / "tools", "other.py", "other")
    reg = registry()
    reg.set_trusted("echo", True)
    assert reg.is_trusted("echo") and not reg.is_trusted("other")
    events = _run(reg, tmp_path, CALL.format("echo", '{"text": "hi"}'), FINAL.format("ok"))
    assert not [e for e in events if isinstance(e, ApprovalRequest)]
    assert [e.run.output for e in events if isinstance(e, ToolFinished)] == ["echo: hi"]
    reg.close()
    again = registry()  # a new start reads the trust from the settings file
    assert again.is_trusted("echo") and again.approval_for("echo") is Approval.AUTO
    assert again.approval_for("other") is Approval.ASK
    again.set_approval("echo", Approval.ASK)  # the Tools page's "ask" takes the trust back
    assert not again.is_trusted("echo") and "echo" not in load_settings(tmp_path / "tools.json").trusted


def test_a_changed_or_replaced_file_is_not_trusted(registry: Any, tmp_path: Path) -> None:
    tools = tmp_path / "tools"
    tool_file(tools, "echo.py", "echo")
    reg = registry()
    reg.set_trusted("echo", True)
    # The file changes behind the user's back (an update, a download, another program).
    tool_file(tools, "echo.py", "echo", prefix="exfiltrated: ")
    reg.reload()
    assert not reg.is_trusted("echo") and reg.trust_changed("echo") and reg.approval_for("echo") is Approval.ASK
    events = _run(reg, tmp_path, CALL.format("echo", '{"text": "hi"}'), FINAL.format("ok"))
    assert [type(e) for e in events if isinstance(e, ApprovalRequest)] == [ApprovalRequest]
    # Another file that defines the trusted name instead is not trusted either.
    (tools / "echo.py").unlink()
    tool_file(tools, "zz_evil.py", "echo", prefix="evil: ")
    reg.reload()
    assert not reg.is_trusted("echo") and reg.approval_for("echo") is Approval.ASK


def test_old_settings_that_said_auto_do_not_trust_a_user_tool(registry: Any, tmp_path: Path) -> None:
    (tmp_path / "tools.json").write_text('{"approval": {"echo": "auto", "python": "ask"}}')
    tool_file(tmp_path / "tools", "echo.py", "echo")
    reg = registry()
    assert reg.approval_for("echo") is Approval.ASK


def test_builtin_python_approval_is_unchanged(registry: Any, tmp_path: Path) -> None:
    reg = registry()
    assert reg.approval_for("python") is Approval.ASK
    events = _run(reg, tmp_path, PY, FINAL.format("ok"))
    assert [e for e in events if isinstance(e, ApprovalRequest)]


def test_a_user_tool_returning_300_mb_does_not_grow_the_app(registry: Any, tmp_path: Path) -> None:
    """User tools run unsandboxed (they are the user's code), but what they return is driven by the model."""
    import psutil

    tools = tmp_path / "tools"
    tools.mkdir(parents=True, exist_ok=True)
    (tools / "flood.py").write_text(
        'def flood(n: int) -> str:\n    """Return n characters.\n\n    Args:\n        n: how many\n    """\n'
        '    print("z" * n)\n    return "y" * n\n'
    )
    reg = registry()
    info = reg.info("flood")
    me = psutil.Process()
    base = me.memory_info().rss
    peak = [base]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], me.memory_info().rss)
            time.sleep(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        out = reg.call_function(info, {"n": 300_000_000}, timeout_s=120)
    finally:
        stop.set()
        sampler.join()
    grown = peak[0] - base
    assert not out.is_error and len(out.content) < 1_100_000 and "left out" in out.content
    assert grown < 96 * 1024**2, f"the app grew by {grown / 1024**2:.0f} MiB"
