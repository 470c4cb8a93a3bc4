"""User function tools: the app's side of the user-tool process (app/core/tools/userhost.py)."""

from __future__ import annotations

import json
import logging
import os
import queue
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from app.core.child import get_until, python_command
from app.core.tools.base import Approval, LoadError, ToolInfo, ToolKind, ToolOutcome, builtin_name_clash
from app.core.tools.userhost import tool_files

log = logging.getLogger(__name__)

_BOOT = "import sys, json; sys.path[:0] = json.loads(sys.argv[1]); from app.core.tools.userhost import main; main()"
_EOF = object()
# The longest protocol line read from the tool process (userhost caps a result at 1,000,000 characters,
# which JSON escaping can make up to six times longer).
MAX_LINE_CHARS = 8 * 1024 * 1024


def _host_sys_path() -> list[str]:
    """The app's import path for the tool process, so tools see the same installed packages."""
    app_root = str(Path(__file__).resolve().parents[3])
    out = [app_root]
    for entry in sys.path:
        entry = entry or os.getcwd()
        if entry not in out:
            out.append(entry)
    return out


class UserToolHost:
    """Loads the tool folder in a child process and runs calls there, one at a time.

    A file that hangs or kills the process while loading is reported as broken and skipped on the
    retry, so every other file still loads. A call that outlives its timeout (or is cancelled)
    kills the process; the next call starts a fresh one and loads the files again.
    """

    def __init__(self, folder: Path, reserved_names: Iterable[str] = (), *, load_timeout_s: float = 20.0) -> None:
        self.folder = Path(folder)
        self.reserved_names = sorted(set(reserved_names))
        self.load_timeout_s = load_timeout_s
        self._proc: subprocess.Popen[str] | None = None
        self._lines: queue.Queue[Any] = queue.Queue()
        self._stderr: deque[str] = deque(maxlen=200)
        self._lock = threading.RLock()
        self._skip: dict[str, LoadError] = {}
        self._loaded = False
        self.tools: list[ToolInfo] = []
        self.errors: list[LoadError] = []

    # --- process -------------------------------------------------------------------------------
    def _start(self) -> subprocess.Popen[str]:
        self._kill()
        self._lines = queue.Queue()
        env = dict(os.environ)
        env["HARMONICA_RESERVED_TOOL_NAMES"] = json.dumps(self.reserved_names)
        env["PYTHONIOENCODING"] = "utf-8"
        proc = subprocess.Popen(
            [*python_command(code=_BOOT), json.dumps(_host_sys_path())],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            errors="replace",
            bufsize=1,
            cwd=str(self.folder),
            env=env,
        )
        lines = self._lines

        def pump_out() -> None:
            assert proc.stdout is not None
            while line := proc.stdout.readline(MAX_LINE_CHARS + 1):
                if len(line) > MAX_LINE_CHARS:
                    log.warning("the user-tool process sent a line over %d characters; it is stopped", MAX_LINE_CHARS)
                    break  # the caller sees the process end; memory stays bounded
                lines.put(line)
            lines.put(_EOF)

        def pump_err() -> None:
            assert proc.stderr is not None
            while line := proc.stderr.readline(8192):  # a tool's prints: the last lines, each cut short
                self._stderr.append(line.rstrip("\n"))

        threading.Thread(target=pump_out, name="user-tools-out", daemon=True).start()
        threading.Thread(target=pump_err, name="user-tools-err", daemon=True).start()
        self._proc = proc
        return proc

    def _kill(self) -> None:
        proc, self._proc = self._proc, None
        self._loaded = False
        if proc is None:
            return
        try:
            proc.kill()
            proc.wait(5)
        except (OSError, subprocess.TimeoutExpired):
            pass
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            try:
                if stream is not None:
                    stream.close()
            except OSError:
                pass

    def _send(self, msg: dict[str, Any]) -> bool:
        proc = self._proc
        if proc is None or proc.stdin is None:
            return False
        try:
            proc.stdin.write(json.dumps(msg, ensure_ascii=False) + "\n")
            proc.stdin.flush()
            return True
        except (OSError, ValueError):
            return False

    def _read(self, deadline: float, cancel: threading.Event | None = None) -> Any:
        """The next message, `_EOF` when the process ended, or None on timeout/cancel."""
        while True:
            item = get_until(self._lines, deadline, cancel)
            if item is None:
                return None
            if item is _EOF:
                return _EOF
            try:
                return json.loads(item)
            except ValueError:
                continue

    def _exit_note(self) -> str:
        proc = self._proc
        code = proc.poll() if proc is not None else None
        if proc is not None and code is None:
            try:
                code = proc.wait(2)
            except subprocess.TimeoutExpired:
                code = None
        tail = " ".join(list(self._stderr)[-3:]).strip()
        return f"exit code {code}" + (f": {tail[-300:]}" if tail else "")

    # --- loading -------------------------------------------------------------------------------
    def load(self) -> tuple[list[ToolInfo], list[LoadError]]:
        """(Re)load every tool file; returns the tools and the files (or functions) that failed."""
        with self._lock:
            self._skip = {}
            return self._load()

    def _load(self) -> tuple[list[ToolInfo], list[LoadError]]:
        files = tool_files(self.folder)
        self.tools, self.errors = [], []
        if not files:
            self._kill()
            self._loaded = True
            return [], []
        for _attempt in range(len(files) + 1):
            self._start()
            self._send({"op": "load", "dir": str(self.folder), "skip": sorted(self._skip)})
            current: str | None = None
            deadline = time.monotonic() + self.load_timeout_s
            while True:
                msg = self._read(deadline)
                if msg is None or msg is _EOF:
                    break
                if msg.get("event") == "loading":
                    current = str(msg.get("file"))
                    deadline = time.monotonic() + self.load_timeout_s  # each file gets the full time
                elif msg.get("event") == "loaded":
                    self.tools, clashes = [], []
                    for t in msg.get("tools", []):
                        info = self._info(t)
                        why = builtin_name_clash(info.name)
                        if why is not None:
                            clashes.append(LoadError(info.source or "", why))
                        else:
                            self.tools.append(info)
                    self.errors = [*self._skip.values()] + [
                        LoadError(str(e.get("file", "")), str(e.get("error", "")), str(e.get("detail", "")))
                        for e in msg.get("errors", [])
                    ]
                    self.errors += clashes
                    self._loaded = True
                    return self.tools, self.errors
            # The process hung or died: blame the file it was importing and try again without it.
            if msg is None:
                why = f"loading took longer than {self.load_timeout_s:g} s (an endless loop or a wait at import?)"
            else:
                why = f"the file stopped the tool process while loading ({self._exit_note()})"
            if current is None:
                self._kill()
                self.errors = [
                    *self._skip.values(),
                    LoadError(str(self.folder), f"the tool process failed to start: {why}"),
                ]
                return [], self.errors
            self._skip[current] = LoadError(current, why)
        self._kill()
        self.errors = list(self._skip.values())
        return [], self.errors

    def _info(self, t: dict[str, Any]) -> ToolInfo:
        return ToolInfo(
            name=str(t["name"]),
            kind=ToolKind.FUNCTION,
            origin="user",
            description=str(t.get("description", "")),
            definition=t.get("definition"),
            source=str(t.get("file", "")),
            warnings=tuple(t.get("warnings", ())),
            default_enabled=True,
            default_approval=Approval.ASK,  # the user's own code, but driven by the model: ask unless trusted
            fingerprint=str(t["fingerprint"]) if isinstance(t.get("fingerprint"), str) else None,
        )

    # --- calls ---------------------------------------------------------------------------------
    def call(
        self, name: str, arguments: Any, *, timeout_s: float = 30.0, cancel: threading.Event | None = None
    ) -> ToolOutcome:
        """Run user tool `name`; every failure is an error outcome the model can read."""
        with self._lock:
            if not self._loaded or self._proc is None or self._proc.poll() is not None:
                self._load()
                if not any(t.name == name for t in self.tools):
                    return ToolOutcome(f"Error: the tool {name} could not be loaded.", is_error=True)
            if not self._send({"op": "call", "name": name, "arguments": arguments}):
                self._kill()
                return ToolOutcome(f"Error: the tool {name} could not be started.", is_error=True)
            msg = self._read(time.monotonic() + timeout_s, cancel)
            if msg is None:
                self._kill()  # the only way to stop a Python function that does not return
                if cancel is not None and cancel.is_set():
                    return ToolOutcome("Error: the tool call was cancelled.", is_error=True, status="cancelled")
                return ToolOutcome(
                    f"Error: {name} did not finish within {timeout_s:g} s and was stopped.", is_error=True
                )
            if msg is _EOF:
                note = self._exit_note()
                self._kill()
                return ToolOutcome(f"Error: {name} crashed ({note}).", is_error=True)
            if msg.get("ok"):
                return ToolOutcome(str(msg.get("result", "")))
            error = str(msg.get("error", "unknown error"))
            detail = str(msg.get("detail") or "")
            return ToolOutcome(f"Error: {error}", is_error=True, output=detail or None)

    def close(self) -> None:
        with self._lock:
            if self._proc is not None:
                self._send({"op": "quit"})
            self._kill()

    def __del__(self) -> None:  # pragma: no cover - best effort at interpreter exit
        try:
            self._kill()
        except Exception:  # noqa: BLE001
            pass


__all__ = ["UserToolHost"]
