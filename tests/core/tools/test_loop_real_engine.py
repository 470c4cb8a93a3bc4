"""The tool loop on the real llama-cpp-python engine and a tiny gpt-oss model, with grammar-forced output."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from app.core.chat import Conversation
from app.core.engine import Engine, LoadSettings, Sampling
from app.core.tools.base import Decision
from app.core.tools.loop import ApprovalRequest, LoopFinished, ToolFinished, run_tool_loop
from app.core.tools.netguard import NetworkPolicy
from app.core.tools.python_tool import SandboxLimits
from app.core.tools.registry import ToolRegistry, ToolSession
from tests.fixtures.web_server import web_server

pytest.importorskip("llama_cpp")

DAY = date(2025, 8, 5)
# Reasoning, then a call (stop token <|call|>); the next generation: a final answer.
CALL_FUNCTION = (
    'root ::= <|channel|> "analysis" <|message|> [a-z ]{4,12} <|end|> <|start|> "assistant" '
    '<|channel|> "commentary to=functions.calculate " <|constrain|> "json" <|message|> "{\\"expression\\":\\"6*7\\"}" <|call|>'
)
CALL_PYTHON = (
    'root ::= <|channel|> "analysis" <|message|> [a-z ]{4,12} <|end|> <|start|> "assistant to=python" '
    '<|channel|> "analysis code" <|message|> "print(6 * 7)" <|call|>'
)
CALL_SEARCH = (
    'root ::= <|channel|> "analysis" <|message|> [a-z ]{4,12} <|end|> <|start|> "assistant" '
    '<|channel|> "analysis to=browser.search " <|constrain|> "json" <|message|> "{\\"query\\":\\"harmonica\\"}" <|call|>'
)
FINAL = 'root ::= <|channel|> "final" <|message|> [a-z ]{2,10} <|return|>'


class RecordingEngine:
    """The real engine, remembering each prompt as text (to check what the model was shown)."""

    def __init__(self, engine: Engine) -> None:
        self._e = engine
        self.prompts: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._e, name)

    def stream(
        self, prompt: Sequence[int] | str, sampling: Sampling | None = None, **kw: Any
    ) -> Iterator[tuple[int, bytes]]:
        ids = list(prompt) if not isinstance(prompt, str) else self._e.tokenize(prompt)
        self.prompts.append(self._e.detokenize(ids).decode("utf-8", "replace"))
        return self._e.stream(prompt, sampling, **kw)


@pytest.fixture(scope="module")
def engine(tiny_model_path: Path) -> Iterator[Engine]:
    e = Engine()
    e.load(tiny_model_path, LoadSettings(n_ctx=4096, n_threads=1))
    yield e
    e.unload()


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[ToolRegistry]:
    reg = ToolRegistry(tools_dir=tmp_path / "tools", settings_file=tmp_path / "tools.json")
    yield reg
    reg.close()


def loop(
    engine: RecordingEngine, session: ToolSession, grammars: list[str], approve: bool = True
) -> tuple[Conversation, list[Any]]:
    conv = Conversation()
    conv.add_user("what is six times seven")
    events = []
    for ev in run_tool_loop(
        engine, conv, session, grammar=grammars, date=DAY, sampling=Sampling(seed=3, max_tokens=120)
    ):
        events.append(ev)
        if isinstance(ev, ApprovalRequest):
            threading.Timer(0.01, ev.reply.answer, args=(Decision.ALLOW_ONCE if approve else Decision.DENY,)).start()
    return conv, events


def test_reasoning_function_call_result_final(engine: Engine, registry: ToolRegistry, tmp_path: Path) -> None:
    rec = RecordingEngine(engine)
    session = ToolSession(registry, "c", scratch=tmp_path / "s")
    conv, events = loop(rec, session, [CALL_FUNCTION, FINAL])
    first, tool, final = conv.messages[1], conv.messages[2], conv.messages[3]
    assert first.stop_reason == "call" and len(first.thinking) >= 4
    assert (
        first.tool_calls[0].recipient == "functions.calculate"
        and first.tool_calls[0].arguments == '{"expression":"6*7"}'
    )
    assert (tool.role, tool.name, tool.content) == ("tool", "functions.calculate", "42")
    assert final.stop_reason == "return" and final.content and not final.tool_calls
    run = next(e for e in events if isinstance(e, ToolFinished)).run
    assert run.status == "done" and run.result == "42"
    assert next(e for e in events if isinstance(e, LoopFinished)).reason == "answer"
    # the second prompt (rendered by the model file's own template) after the tool result
    second = rec.prompts[1]
    assert second.endswith(
        f"<|start|>assistant<|channel|>analysis<|message|>{first.thinking}<|end|>"
        '<|start|>assistant to=functions.calculate<|channel|>commentary json<|message|>{"expression": "6*7"}<|call|>'
        '<|start|>functions.calculate to=assistant<|channel|>commentary<|message|>"42"<|end|><|start|>assistant'
    )
    # the next turn's prompt drops the loop's reasoning
    conv.add_user("thanks")
    list(run_tool_loop(rec, conv, session, grammar=FINAL, date=DAY, sampling=Sampling(seed=1, max_tokens=40)))
    assert first.thinking not in rec.prompts[-1]
    assert '<|start|>functions.calculate to=assistant<|channel|>commentary<|message|>"42"<|end|>' in rec.prompts[-1]
    session.close()


def test_builtin_python_call(engine: Engine, registry: ToolRegistry, tmp_path: Path) -> None:
    rec = RecordingEngine(engine)
    session = ToolSession(registry, "c", scratch=tmp_path / "s", sandbox_limits=SandboxLimits(timeout_s=20))
    conv, events = loop(rec, session, [CALL_PYTHON, FINAL])
    assert [e for e in events if isinstance(e, ApprovalRequest)]  # python asks first
    run = next(e for e in events if isinstance(e, ToolFinished)).run
    assert (run.kind, run.status, run.result, run.language) == ("python", "done", "42", "python")
    assert conv.messages[2].name == "python" and conv.messages[3].stop_reason == "return"
    assert "## python" in rec.prompts[0]
    assert rec.prompts[1].endswith(
        "<|start|>assistant to=python<|channel|>analysis code<|message|>print(6 * 7)<|call|>"
        "<|start|>python to=assistant<|channel|>analysis<|message|>42<|end|><|start|>assistant"
    )
    session.close()


def test_builtin_browser_search_call(engine: Engine, registry: ToolRegistry, tmp_path: Path) -> None:
    registry.set_enabled("browser", True)
    with web_server() as srv:
        registry.settings.search_endpoint = srv.url + "/search"
        rec = RecordingEngine(engine)
        policy = NetworkPolicy.exempting(srv.url)  # the loopback test server, and nothing else local
        session = ToolSession(registry, "c", scratch=tmp_path / "s", browser_policy=policy)
        conv, events = loop(rec, session, [CALL_SEARCH, FINAL])
        session.close()
    assert srv.queries == ["harmonica"]
    run = next(e for e in events if isinstance(e, ToolFinished)).run
    assert run.kind == "browser" and run.status == "done" and run.result.startswith("[0] harmonica\n**viewing lines")
    assert "【0†Harmonica Facts†" in run.result
    assert "## browser" in rec.prompts[0] and "namespace browser {" in rec.prompts[0]
    assert "<|start|>assistant to=browser.search<|channel|>analysis json<|message|>" in rec.prompts[1]
    assert "<|start|>browser.search to=assistant<|channel|>analysis<|message|>[0] harmonica" in rec.prompts[1]
    assert conv.messages[-1].stop_reason == "return"
