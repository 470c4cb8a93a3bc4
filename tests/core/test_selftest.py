"""The installed-app self-test: a real load and grammar-forced turn, and clean failures."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from app.core import selftest

pytest.importorskip("llama_cpp")
ROOT = Path(__file__).resolve().parents[2]


def test_passes_on_a_tiny_model(tiny_model_path: Path) -> None:
    report = selftest.run(tiny_model_path)
    assert report.ok, report.to_json()
    assert set(report.checks) == {
        "model loaded",
        "turn finished",
        "stopped on <|return|>",
        "reasoning parsed",
        "answer parsed",
        "python tool ran",
        "user tool ran",
    }
    assert report.python_tool == "42" and report.user_tool == "hello bundle" and report.sandbox
    assert report.stop_reason == "return" and report.answer.startswith("**") and report.reasoning
    assert report.backend.startswith(("CPU", "Vulkan", "CUDA", "Metal")) and report.devices
    assert report.model and report.tokens > 0 and not report.frozen


def test_missing_model_fails_with_the_reason(tmp_path: Path) -> None:
    out = io.StringIO()
    assert selftest.main(str(tmp_path / "nope.gguf"), out=out) == 1
    data = json.loads(out.getvalue())
    assert data["ok"] is False and "nope.gguf" in data["error"]


def test_output_that_is_not_an_answer_fails(tiny_model_path: Path) -> None:
    # No reasoning and no bold text: the turn finishes, but two checks must fail.
    report = selftest.run(tiny_model_path, grammar='root ::= <|channel|> "final" <|message|> [a-z]{3} <|return|>')
    assert not report.ok
    assert (
        report.checks["turn finished"] and not report.checks["answer parsed"] and not report.checks["reasoning parsed"]
    )


def test_cli_flag_runs_it_without_a_window(tiny_model_path: Path, tmp_path: Path) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "HARMONICA_HOME": str(tmp_path / "h"),
        "QT_QPA_PLATFORM": "offscreen",
    }
    ok = subprocess.run(
        [sys.executable, "-m", "app", "--self-test", str(tiny_model_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert json.loads(ok.stdout)["ok"] is True
    bad = subprocess.run(
        [sys.executable, "-m", "app", "--self-test", str(tmp_path / "missing.gguf")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 1 and json.loads(bad.stdout)["ok"] is False
