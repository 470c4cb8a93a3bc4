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
    load_s: float = 0.0
    reasoning: str = ""
    answer: str = ""
    stop_reason: str = ""
    tokens: int = 0
    tokens_per_s: float = 0.0

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, ensure_ascii=False)


def run(model: str | Path, *, n_ctx: int = 512, seed: int = 5, grammar: str = GRAMMAR) -> SelfTestReport:
    """Load `model` on the default devices, run one turn forced by `grammar`, check the parsed result."""
    from app.core import chat, llama_ext
    from app.core.engine import Engine, LoadSettings, Sampling

    report = SelfTestReport()
    engine = Engine()
    try:
        t0 = time.perf_counter()
        info = engine.load(model, LoadSettings(n_ctx=n_ctx))
        report.load_s = round(time.perf_counter() - t0, 3)
        report.model = info.name
        backends = llama_ext.backend_report()
        report.backend = backends.summary()
        report.devices = backends.lines()
        report.checks["model loaded"] = engine.loaded

        conversation = chat.Conversation()
        conversation.add_user("Say something in bold.")
        finished: chat.TurnFinished | None = None
        for event in chat.run_turn(engine, conversation, effort="low", sampling=Sampling(seed=seed, max_tokens=80), grammar=grammar):
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
    except Exception as exc:  # the report is the product: every failure becomes a failed check
        report.error = f"{type(exc).__name__}: {exc}"
    finally:
        try:
            engine.unload()
        except Exception:  # noqa: BLE001 - unloading cannot change the verdict
            pass
    report.ok = not report.error and bool(report.checks) and all(report.checks.values())
    return report


def main(model: str, out: TextIO | None = None) -> int:
    """Print the report as JSON (stdout, or nothing in a windowed app without one); 0 when it passed."""
    report = run(model)
    stream = out if out is not None else sys.stdout
    if stream is not None:
        stream.write(report.to_json() + "\n")
        stream.flush()
    return 0 if report.ok else 1
