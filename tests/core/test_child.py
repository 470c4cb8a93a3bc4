"""Child interpreters: the command lines, and the frozen app acting as its own Python."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from app.core import child

ROOT = Path(__file__).resolve().parents[2]


def test_commands_outside_a_bundle() -> None:
    assert child.python_command(code="print(1)") == [sys.executable, "-I", "-c", "print(1)"]
    assert child.python_command(script=Path("/x/k.py"), module="a.k", flags=("-I", "-B")) == [
        sys.executable,
        "-I",
        "-B",
        "/x/k.py",
    ]
    assert child.python_command(module="a.k") == [sys.executable, "-I", "-m", "a.k"]
    with pytest.raises(ValueError):
        child.python_command()


def test_commands_inside_a_bundle(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    monkeypatch.setattr(sys, "executable", "/opt/harmonica/harmonica")
    assert child.python_command(code="x") == ["/opt/harmonica/harmonica", "--run-python", "-c", "x"]
    # Modules live in the bundle's archive, not as files: the module runs, not the script path.
    assert child.python_command(script=Path("/nope/k.py"), module="app.core.tools.sandbox_kernel") == [
        "/opt/harmonica/harmonica",
        "--run-python",
        "-m",
        "app.core.tools.sandbox_kernel",
    ]
    with pytest.raises(ValueError):
        child.python_command(script=Path("/nope/k.py"))


def _app(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app", "--run-python", *args],
        cwd=ROOT,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_app_runs_code_and_modules_as_a_child_interpreter() -> None:
    done = _app("-c", "import sys; print(sys.argv, input())", "a", "b", stdin="from stdin\n")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['-c', 'a', 'b'] from stdin"
    done = _app("-c", "raise SystemExit(3)")
    assert done.returncode == 3
    done = _app("-m", "json.tool", stdin='{"a": [1, 2]}')
    assert done.returncode == 0 and '"a": [' in done.stdout
    assert _app("--nonsense").returncode == 2
    assert "Qt" not in _app("-c", "import sys; print(sorted(m for m in sys.modules if 'PySide' in m))").stdout
