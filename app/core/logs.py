"""Harmonica's log: a rotating file in the data folder, written off the UI thread, without conversation text.

`configure()` runs once at start-up. Records go through a queue to a listener thread that owns the
file, so a slow disk never stalls the window. What people type and what the model answers stays out
of the file unless the user turns on debug logging: a record that carries such text says so with
``extra=PRIVATE``, and its arguments are replaced by a placeholder while debug logging is off.
"""

from __future__ import annotations

import atexit
import logging
import logging.handlers
import os
import platform
import queue
import re
import sys
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path

from app.core import paths

LOG_FILE = "harmonica.log"
MAX_BYTES = 1_000_000  # per file; with BACKUPS this keeps at most ~4 MB of history
BACKUPS = 3
# Loggers of our own code; everything else (httpx, uvicorn, …) only reaches the file at WARNING.
OWN_LOGGERS = ("app", "harmonica")
PRIVATE_LOGGER = "harmonica.conversation"
HIDDEN = "[conversation text hidden; turn on debug logging to include it]"
PRIVATE: Mapping[str, object] = {"private": True}  # extra= for a record whose arguments hold conversation text

FORMAT = "%(asctime)s %(levelname)-7s %(name)s [%(threadName)s] %(message)s"
_ENTRY_START = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} ([A-Z]+)\s+(\S+) ")

_lock = threading.Lock()
_listener: logging.handlers.QueueListener | None = None
_fan_out: _FanOut | None = None
_queue_handler: logging.handlers.QueueHandler | None = None
_privacy: _PrivacyFilter | None = None
_log_path: Path | None = None


class _PrivacyFilter(logging.Filter):
    """Keeps conversation text out of the file unless debug logging is on (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self.debug = False

    def filter(self, record: logging.LogRecord) -> bool:
        if self.debug:
            return True
        if record.name == PRIVATE_LOGGER or record.name.startswith(PRIVATE_LOGGER + "."):
            return False  # a logger that only ever carries conversation text
        if getattr(record, "private", False) and record.args:
            args = record.args if isinstance(record.args, tuple) else (record.args,)
            record.args = tuple(HIDDEN for _ in args)
        return True


class _FanOut(logging.Handler):
    """The listener thread's one handler: hands records to the real handlers, and answers flush markers."""

    def __init__(self, handlers: list[logging.Handler]) -> None:
        super().__init__()
        self.handlers = handlers

    def handle(self, record: logging.LogRecord) -> bool:
        marker = getattr(record, "flush_event", None)
        if isinstance(marker, threading.Event):
            marker.set()  # records are handled in order: everything before it is written
            return False
        for h in self.handlers:
            if record.levelno >= h.level:
                h.handle(record)
        return True

    def emit(self, record: logging.LogRecord) -> None:  # handle() does the work
        pass

    def close(self) -> None:
        for h in self.handlers:
            h.close()
        super().close()


def log_dir(ensure: bool = True) -> Path:
    """The folder of the log files (Help → Show log folder opens it)."""
    path = paths.data_dir(ensure=ensure) / "logs"
    if ensure:
        path.mkdir(parents=True, exist_ok=True)
    return path


def log_path() -> Path:
    """The current log file (it may not exist yet: nothing was logged)."""
    return _log_path if _log_path is not None else log_dir(ensure=False) / LOG_FILE


def configure(*, debug: bool = False, folder: Path | None = None) -> Path:
    """Start logging to the rotating file (once; later calls only change `debug`). Returns its path.

    The file is opened by the listener thread on the first record, so start-up does no disk work
    beyond creating the folder. A folder that cannot be created leaves logging to stderr only.
    """
    global _listener, _queue_handler, _privacy, _log_path, _fan_out
    with _lock:
        if _listener is not None and _privacy is not None:
            set_debug(debug)
            return log_path()
        privacy = _PrivacyFilter()
        privacy.debug = debug
        handlers: list[logging.Handler] = []
        try:
            directory = folder if folder is not None else log_dir()
            directory.mkdir(parents=True, exist_ok=True)
            path = directory / LOG_FILE
            file_handler = logging.handlers.RotatingFileHandler(
                path, maxBytes=MAX_BYTES, backupCount=BACKUPS, encoding="utf-8", delay=True
            )
            file_handler.setFormatter(logging.Formatter(FORMAT))
            handlers.append(file_handler)
            _log_path = path
        except OSError as exc:
            sys.stderr.write(f"Harmonica: the log folder cannot be used ({exc}); logging to stderr only.\n")
            stream = logging.StreamHandler(sys.stderr)
            stream.setFormatter(logging.Formatter(FORMAT))
            handlers.append(stream)
        q: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
        qh = logging.handlers.QueueHandler(q)
        qh.addFilter(privacy)  # filtered on the caller's thread, before the record is formatted
        fan_out = _FanOut(handlers)
        listener = logging.handlers.QueueListener(q, fan_out)
        listener.start()
        root = logging.getLogger()
        root.addHandler(qh)
        if root.level == logging.NOTSET or root.level > logging.WARNING:
            root.setLevel(logging.WARNING)
        for name in OWN_LOGGERS:
            logging.getLogger(name).setLevel(logging.DEBUG if debug else logging.INFO)
        logging.captureWarnings(True)
        _listener, _queue_handler, _privacy, _fan_out = listener, qh, privacy, fan_out
        atexit.register(shutdown)
        # platform.platform() reads the interpreter's binary (milliseconds): the cheap parts will do here.
        logging.getLogger("app").info(
            "Harmonica %s starting (Python %s, %s %s %s)",
            _app_version(),
            platform.python_version(),
            platform.system(),
            platform.release(),
            platform.machine(),
        )
        return log_path()


def set_debug(on: bool) -> None:
    """Debug logging: more detail, and conversation text is written too."""
    if _privacy is not None:
        _privacy.debug = on
    for name in OWN_LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG if on else logging.INFO)


def debug_enabled() -> bool:
    return bool(_privacy is not None and _privacy.debug)


def shutdown() -> None:
    """Write out what is queued and close the file (at exit; safe to call twice)."""
    global _listener, _queue_handler, _privacy, _fan_out
    with _lock:
        listener, qh, fan_out = _listener, _queue_handler, _fan_out
        _listener = _queue_handler = _privacy = _fan_out = None
    if qh is not None:
        logging.getLogger().removeHandler(qh)
    if listener is not None:
        listener.stop()  # drains the queue first
    if fan_out is not None:
        fan_out.close()


def flush(timeout_s: float = 2.0) -> None:
    """Wait until every record logged so far is in the file (diagnostics read it back)."""
    listener = _listener
    if listener is None:
        return
    done = threading.Event()
    record = logging.LogRecord("harmonica.flush", logging.DEBUG, "", 0, "", None, None)
    record.flush_event = done
    listener.queue.put_nowait(record)
    done.wait(timeout_s)


def _app_version() -> str:
    from app import __version__

    return __version__


# --- reading the log back ---------------------------------------------------------------------------
def recent_errors(limit: int = 10, path: Path | None = None, *, tail_bytes: int = 256_000) -> list[str]:
    """The last `limit` ERROR/CRITICAL entries of the log (first line and the exception line of
    each), oldest first; records of the conversation logger are never included."""
    path = path or log_path()
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - tail_bytes))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return []
    entries: list[list[str]] = []
    for line in text.splitlines():
        m = _ENTRY_START.match(line)
        if m:
            entries.append([m.group(1), m.group(2), line])
        elif entries:
            entries[-1].append(line)
    out: list[str] = []
    for level, name, *lines in entries:
        if level not in ("ERROR", "CRITICAL") or name.startswith(PRIVATE_LOGGER):
            continue
        last = next((ln.strip() for ln in reversed(lines[1:]) if ln.strip()), "")
        out.append(lines[0] + (f"\n    {last}" if last and not last.startswith("File ") else ""))
    return out[-limit:]


def diagnostics(facts: Iterable[tuple[str, str]] = (), *, errors: int = 10) -> str:
    """A plain-text report for bug reports: versions, the machine, `facts` from the caller (the
    backend, the load plan, Qt's version), and the last errors of the log. No conversation text."""
    from importlib import metadata

    def version(dist: str) -> str:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return "not installed"

    rows: list[tuple[str, str]] = [
        ("Harmonica", _app_version()),
        ("Python", f"{platform.python_version()} ({platform.python_implementation()}, {sys.executable})"),
        ("OS", platform.platform()),
        ("Machine", platform.machine() or "unknown"),
        ("llama-cpp-python", version("llama-cpp-python")),
    ]
    rows.extend(facts)
    rows.append(("Debug logging", "on" if debug_enabled() else "off"))
    rows.append(("Log file", str(log_path())))
    width = max(len(k) for k, _ in rows)
    lines = ["Harmonica diagnostics", ""]
    for key, value in rows:
        first, *rest = str(value).splitlines() or [""]
        lines.append(f"{key:<{width}}  {first}")
        lines.extend(f"{'':<{width}}  {r}" for r in rest)
    flush()
    recent = recent_errors(errors)
    lines += ["", f"Last errors in the log ({len(recent)}):"]
    lines += [f"  {e}" for e in recent] or ["  none"]
    return "\n".join(lines) + "\n"
