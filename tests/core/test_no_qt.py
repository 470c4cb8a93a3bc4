"""app/core must stay free of Qt: import every core module in a fresh interpreter and check."""

from __future__ import annotations

import ast
import pkgutil
import subprocess
import sys
from pathlib import Path

import app.core

CORE_DIR = Path(app.core.__file__).parent
QT_PREFIXES = ("PySide6", "PyQt5", "PyQt6", "shiboken6", "qtpy", "app.ui")


def _core_modules() -> list[str]:
    return [m.name for m in pkgutil.walk_packages([str(CORE_DIR)], prefix="app.core.")]


def test_core_sources_have_no_qt_imports() -> None:
    offenders = []
    for path in CORE_DIR.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n.startswith(QT_PREFIXES)]
    assert offenders == []


def test_importing_all_of_core_loads_no_qt() -> None:
    modules = _core_modules()
    assert modules, "no core modules found"
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        f"bad = [m for m in sys.modules if m.startswith({QT_PREFIXES!r})]\n"
        "print(bad); sys.exit(1 if bad else 0)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
