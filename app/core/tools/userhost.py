"""The process that imports the user's tool files and runs their functions (JSON lines over pipes).

It runs apart from the app so that a tool file that hangs, exits or crashes while it is imported
or called cannot take the app down: the app kills and restarts this process instead. It is not a
sandbox: user tools are the user's own code and may use the network or their files.

Protocol (one JSON object per line). The app sends {"op": "load", "dir": ..., "skip": [...]} once,
then {"op": "call", "name": ..., "arguments": {...}}. The host answers {"event": "loading", "file": ...}
before importing each file, then {"event": "loaded", "tools": [...], "errors": [...]}, and for each
call {"ok": true, "result": ...} or {"ok": false, "error": ..., "detail": ...}.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import json
import os
import sys
import traceback
from pathlib import Path
from typing import Any

from app.core.tools.schema import ArgumentError, FunctionSpec, bind_arguments, describe_function

_functions: dict[str, tuple[FunctionSpec, Any]] = {}
# What one call may return (the model reads at most 16,000 characters of it; the card shows more).
MAX_RESULT_CHARS = 1_000_000


def _send(out: Any, obj: dict[str, Any]) -> None:
    out.write(json.dumps(obj, ensure_ascii=False, default=str) + "\n")
    out.flush()


def _short_error(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return text if len(text) <= 2000 else text[:1999] + "…"


def _user_traceback(exc: BaseException, files: set[str]) -> str:
    """The traceback lines inside the user's files (the host's own frames say nothing to them)."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename in files]
    if not frames and not isinstance(exc, SyntaxError):  # SyntaxError names its own file and line
        frames = [f for f in traceback.extract_tb(exc.__traceback__) if not f.filename.startswith("<frozen")][-1:]
    return "".join(traceback.format_list(frames)) + "".join(traceback.format_exception_only(type(exc), exc))


def tool_files(folder: Path) -> list[Path]:
    """The `.py` files of `folder` that hold tools (names starting with _ or . are helpers)."""
    try:
        return sorted(p for p in folder.glob("*.py") if p.is_file() and not p.name.startswith(("_", ".")))
    except OSError:
        return []


def _module_functions(module: Any) -> list[tuple[str, Any]]:
    exported = getattr(module, "__all__", None)
    if isinstance(exported, (list, tuple)):
        return [(n, getattr(module, n, None)) for n in exported if isinstance(n, str)]
    return [
        (n, f)
        for n, f in vars(module).items()
        if not n.startswith("_") and inspect.isfunction(f) and f.__module__ == module.__name__
    ]


def _load(out: Any, folder: Path, skip: set[str], taken: set[str]) -> None:
    tools: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))  # a tool file may import its helper modules next to it
    for path in tool_files(folder):
        if str(path) in skip:
            continue
        _send(out, {"event": "loading", "file": str(path)})
        name = f"harmonica_user_tools.{path.stem}"
        try:
            # Run the very bytes that are hashed: the user's trust in a tool is bound to this hash.
            source = path.read_bytes()
            fingerprint = hashlib.sha256(source).hexdigest()
            spec = importlib.util.spec_from_file_location(name, path)
            if spec is None or spec.loader is None:
                raise ImportError("not a Python module")
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            exec(compile(source, str(path), "exec"), module.__dict__)
        except BaseException as exc:  # noqa: BLE001 - SystemExit/KeyboardInterrupt in a file are its errors too
            sys.modules.pop(name, None)
            errors.append({"file": str(path), "error": _short_error(exc), "detail": _user_traceback(exc, {str(path)})})
            continue
        found = 0
        for fname, fn in _module_functions(module):
            if not callable(fn):
                errors.append({"file": str(path), "error": f"{fname!r} is listed in __all__ but is not a function"})
                continue
            try:
                fspec = describe_function(fn, fname)
            except ValueError as exc:
                errors.append({"file": str(path), "error": str(exc)})
                continue
            if fspec.name in taken:
                errors.append(
                    {"file": str(path), "error": f"a tool named {fspec.name!r} already exists; this one was skipped"}
                )
                continue
            taken.add(fspec.name)
            _functions[fspec.name] = (fspec, fn)
            found += 1
            tools.append(
                {
                    "name": fspec.name,
                    "file": str(path),
                    "definition": fspec.definition(),
                    "description": fspec.description,
                    "warnings": list(fspec.warnings),
                    "fingerprint": fingerprint,
                }
            )
        if not found and not any(e["file"] == str(path) for e in errors):
            errors.append({"file": str(path), "error": "the file defines no public function"})
    _send(out, {"event": "loaded", "tools": tools, "errors": errors})


def result_text(value: Any) -> str:
    """A tool's return value as the text the model reads."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    try:
        return json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return str(value)


def _call(out: Any, name: str, arguments: Any) -> None:
    entry = _functions.get(name)
    if entry is None:
        _send(out, {"ok": False, "error": f"no user tool named {name!r} is loaded"})
        return
    spec, fn = entry
    try:
        args, kwargs = bind_arguments(spec, arguments)
    except ArgumentError as exc:
        _send(out, {"ok": False, "error": str(exc), "argument_error": True})
        return
    try:
        value = fn(*args, **kwargs)
    except BaseException as exc:  # noqa: BLE001 - whatever the tool raises becomes its error result
        path = getattr(inspect.getmodule(fn), "__file__", "") or ""
        _send(out, {"ok": False, "error": _short_error(exc), "detail": _user_traceback(exc, {path})})
        return
    text = result_text(value)
    if len(text) > MAX_RESULT_CHARS:
        dropped = len(text) - MAX_RESULT_CHARS
        text = text[:MAX_RESULT_CHARS] + f"\n[… the tool returned {dropped:,} more characters; they were left out]"
    _send(out, {"ok": True, "result": text})


def main() -> None:
    # The protocol keeps the real stdout; a tool's print() goes to stderr (the app's log).
    proto = os.fdopen(os.dup(1), "w", encoding="utf-8", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    taken: set[str] = set(json.loads(os.environ.get("HARMONICA_RESERVED_TOOL_NAMES", "[]")))
    for line in sys.stdin:
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        op = msg.get("op")
        if op == "load":
            _load(proto, Path(msg["dir"]), set(msg.get("skip") or ()), taken)
        elif op == "call":
            _call(proto, str(msg.get("name")), msg.get("arguments"))
        elif op == "quit":
            break


if __name__ == "__main__":
    main()
