"""Installed-app self-test: load a model, answer one grammar-forced turn through the real engine, report."""

from __future__ import annotations

import json
import platform
import re
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TextIO

# Random-weight test models say nothing sensible; this grammar forces harmony-shaped output through
# the real tokenizer, sampler, stop tokens and parser: reasoning, then a final answer with markdown.
GRAMMAR = (
    'root ::= <|channel|> "analysis" <|message|> [a-z ]{4,12} <|end|> <|start|> "assistant" '
    '<|channel|> "final" <|message|> "**" [a-z]{2,6} "** " [a-z ]{1,8} <|return|>'
)
_ANSWER_RE = re.compile(r"^\*\*[a-z]{2,6}\*\* [a-z ]{1,8}$")
_OFFLOADED_RE = re.compile(r"offloaded (\d+)/(\d+) layers to GPU")


@dataclass
class SelfTestReport:
    """What the self-test saw; `ok` is True only when every check passed."""

    ok: bool = False
    checks: dict[str, bool] = field(default_factory=dict)
    error: str = ""
    python: str = field(default_factory=lambda: sys.version.split()[0])
    frozen: bool = field(default_factory=lambda: bool(getattr(sys, "frozen", False)))
    executable: str = field(default_factory=lambda: sys.executable)
    platform: str = field(default_factory=platform.platform)
    backend: str = ""
    devices: list[str] = field(default_factory=list)
    model: str = ""
    gpu_layers: str = ""  # llama.cpp's "offloaded N/M layers to GPU", as "N/M"
    load_s: float = 0.0
    reasoning: str = ""
    answer: str = ""
    stop_reason: str = ""
    tokens: int = 0
    tokens_per_s: float = 0.0
    python_tool: str = ""  # what the sandboxed python kernel printed
    sandbox: str = ""  # which sandbox guarantees hold here
    user_tool: str = ""  # what a user tool file's function returned

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, ensure_ascii=False)


def _check_tools(report: SelfTestReport) -> None:
    """The tools start child interpreters (in a bundle: the app itself, see app/core/child.py)."""
    import tempfile

    from app.core.tools.python_tool import PythonKernel, SandboxLimits
    from app.core.tools.registry import ToolRegistry

    with tempfile.TemporaryDirectory(prefix="harmonica-selftest-") as tmp:
        kernel = PythonKernel(Path(tmp) / "scratch", SandboxLimits(timeout_s=30))
        try:
            sandbox = kernel.start()
            report.sandbox = sandbox.summary()
            first = kernel.execute("x = 6 * 7")
            second = kernel.execute("print(x)")  # state kept between cells
            report.python_tool = second.output.strip()
            report.checks["python tool ran"] = not first.is_error and report.python_tool == "42"
        finally:
            kernel.close()
        tools = Path(tmp) / "tools"
        tools.mkdir()
        (tools / "greet.py").write_text(
            'def greet(name: str) -> str:\n    """Greet someone.\n\n    Args:\n        name: who\n    """\n'
            '    return f"hello {name}"\n',
            encoding="utf-8",
        )
        registry = ToolRegistry(tools_dir=tools, settings_file=Path(tmp) / "tools.json")
        try:
            info = registry.info("greet")
            outcome = registry.call_function(info, {"name": "bundle"}) if info is not None else None
            report.user_tool = outcome.content if outcome is not None else "; ".join(e.error for e in registry.errors)
            report.checks["user tool ran"] = report.user_tool == "hello bundle"
        finally:
            registry.close()


def run(
    model: str | Path,
    *,
    n_ctx: int = 512,
    n_gpu_layers: int = 999,
    n_batch: int = 512,
    seed: int = 5,
    grammar: str = GRAMMAR,
    tools: bool = True,
) -> SelfTestReport:
    """Load `model` (every layer on the GPU when llama.cpp has one), run one turn forced by `grammar`, check the result."""
    from app.core import chat, llama_ext
    from app.core.engine import Engine, LoadSettings, Sampling

    report = SelfTestReport()
    engine = Engine()
    try:
        t0 = time.perf_counter()
        with llama_ext.capture_llama_log() as lines:
            info = engine.load(model, LoadSettings(n_ctx=n_ctx, n_gpu_layers=n_gpu_layers, n_batch=n_batch))
        report.load_s = round(time.perf_counter() - t0, 3)
        report.model = info.name
        offloaded = next((m for _, text in lines if (m := _OFFLOADED_RE.search(text))), None)
        report.gpu_layers = f"{offloaded.group(1)}/{offloaded.group(2)}" if offloaded else ""
        backends = llama_ext.backend_report()
        report.backend = backends.summary(n_gpu_layers if offloaded and offloaded.group(1) != "0" else 0)
        report.devices = backends.lines()
        report.checks["model loaded"] = engine.loaded

        conversation = chat.Conversation()
        conversation.add_user("Say something in bold.")
        finished: chat.TurnFinished | None = None
        for event in chat.run_turn(
            engine, conversation, effort="low", sampling=Sampling(seed=seed, max_tokens=80), grammar=grammar
        ):
            if isinstance(event, chat.TurnFinished):
                finished = event
        report.checks["turn finished"] = finished is not None
        if finished is not None:
            msg = finished.message
            report.reasoning, report.answer, report.stop_reason = msg.thinking, msg.content, msg.stop_reason or ""
            if msg.stats is not None:
                report.tokens = msg.stats.generated_tokens
                report.tokens_per_s = round(msg.stats.tokens_per_s, 1)
        report.checks["stopped on <|return|>"] = report.stop_reason == "return"
        report.checks["reasoning parsed"] = len(report.reasoning.strip()) >= 1 and "<|" not in report.reasoning
        report.checks["answer parsed"] = bool(_ANSWER_RE.match(report.answer))
        if tools:
            _check_tools(report)
    except Exception as exc:  # noqa: BLE001 -- the report is the product: every failure becomes a failed check
        report.error = f"{type(exc).__name__}: {exc}"
    finally:
        try:
            engine.unload()
        except Exception:  # noqa: BLE001 - unloading cannot change the verdict
            pass
    report.ok = not report.error and bool(report.checks) and all(report.checks.values())
    return report


def main(model: str, out: TextIO | None = None, n_batch: int = 512) -> int:
    """Print the report as JSON (stdout, or nothing in a windowed app without one); 0 when it passed."""
    report = run(model, n_batch=n_batch)
    stream = out if out is not None else sys.stdout
    if stream is not None:
        stream.write(report.to_json() + "\n")
        stream.flush()
    return 0 if report.ok else 1
