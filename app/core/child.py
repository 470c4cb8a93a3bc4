"""How to start a child Python (the python tool's kernel, the user-tool host), also inside the frozen app."""

from __future__ import annotations

import queue
import runpy
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# argv[1] of the frozen app that makes it behave as a Python interpreter for one child process.
RUN_PYTHON = "--run-python"


def frozen() -> bool:
    return bool(getattr(sys, "frozen", False))


def python_command(
    *, script: Path | None = None, module: str | None = None, code: str | None = None, flags: Sequence[str] = ("-I",)
) -> list[str]:
    """The command line that runs `code`, or `script` (frozen: its `module`), in a new interpreter.

    Outside a bundle this is the current interpreter with `flags`. In a PyInstaller bundle
    sys.executable is the app itself and modules live in its archive, not as files: the app runs
    them when started with RUN_PYTHON (see run_child_python), and interpreter flags do not apply.
    """
    if frozen():
        if code is not None:
            return [sys.executable, RUN_PYTHON, "-c", code]
        if module is None:
            raise ValueError("a frozen app runs a module, not a script file: pass module=")
        return [sys.executable, RUN_PYTHON, "-m", module]
    if code is not None:
        return [sys.executable, *flags, "-c", code]
    if script is not None:
        return [sys.executable, *flags, str(script)]
    if module is None:
        raise ValueError("nothing to run: pass code, script or module")
    return [sys.executable, *flags, "-m", module]


def get_until(q: queue.Queue[Any], deadline: float, cancel: threading.Event | None = None) -> Any:
    """The next item a child's reader thread put on `q`, or None once `deadline` (a
    time.monotonic() value) has passed or `cancel` is set; cancel is seen within 50 ms."""
    while True:
        if cancel is not None and cancel.is_set():
            return None
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        try:
            return q.get(timeout=min(remaining, 0.05))
        except queue.Empty:
            continue


def run_child_python(argv: Sequence[str]) -> int:
    """Be the interpreter of python_command(): `-c CODE [args]` or `-m MODULE [args]`."""
    args = list(argv)
    for stream in (sys.stdin, sys.stdout, sys.stderr):
        try:
            stream.reconfigure(  # type: ignore[union-attr]
                encoding="utf-8", errors="surrogateescape" if stream is sys.stdin else "backslashreplace"
            )
        except (AttributeError, ValueError):
            pass  # not a text stream (closed, or replaced): nothing to set
    try:
        if len(args) >= 2 and args[0] == "-c":
            sys.argv = ["-c", *args[2:]]
            exec(compile(args[1], "<string>", "exec"), {"__name__": "__main__", "__builtins__": __builtins__})
        elif len(args) >= 2 and args[0] == "-m":
            sys.argv = [args[1], *args[2:]]
            runpy.run_module(args[1], run_name="__main__", alter_sys=True)
        else:
            sys.stderr.write(f"usage: harmonica {RUN_PYTHON} -c CODE | -m MODULE [args]\n")
            return 2
    except SystemExit as exc:
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    return 0
