"""When the database cannot be written: what went wrong, in words that name the place and what to do.

The store's read-only state (``StoreBase.problem``) holds one ``StoreProblem``. Problems found
while writing (a full disk, an input/output error, a disk made read-only, another program holding
the file) turn a writable store read-only until ``retry`` succeeds; problems found when opening (the
path is a folder, its folder cannot be made, the file cannot be read, another Harmonica uses it)
give a read-only view of the file or a temporary store. ``classify`` reads SQLite's error codes
(Python 3.11+) and falls back to its fixed English messages (3.10).
"""

from __future__ import annotations

import errno
import os
import shutil
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from app.core.store.rows import StoreError

# SQLite's primary result codes (sqlite3.h) that mean "cannot write here now", not "bad SQL".
_PERM: Final = 3
_BUSY: Final = 5
_LOCKED: Final = 6
_READONLY: Final = 8
_IOERR: Final = 10
_FULL: Final = 13
_CANTOPEN: Final = 14
_READONLY_DBMOVED: Final = _READONLY | (4 << 8)
# Python 3.10 has no sqlite_errorcode: SQLite's own messages for the same codes.
_BY_TEXT: Final = (
    ("database or disk is full", _FULL),
    ("disk i/o error", _IOERR),
    ("readonly database", _READONLY),
    ("unable to open database file", _CANTOPEN),
    ("database is locked", _BUSY),
    ("database table is locked", _LOCKED),
    ("access permission denied", _PERM),
)

# Kinds of problem. The first group leaves the store read-only (reading works, writes are refused
# and kept where they can be); the second means the file itself cannot be used, so a temporary
# store in memory holds this session's conversations.
FULL: Final = "full"
IO_ERROR: Final = "io"
BUSY: Final = "busy"
READ_ONLY: Final = "read-only"
NO_PERMISSION: Final = "no-permission"
IN_USE: Final = "in-use"
MOVED: Final = "moved"
NOT_A_FILE: Final = "not-a-file"
NO_FOLDER: Final = "no-folder"
UNREADABLE: Final = "unreadable"
UNUSABLE: Final = "unusable"
TEMPORARY_KINDS: Final = frozenset({NOT_A_FILE, NO_FOLDER, UNREADABLE, UNUSABLE})

_KEPT = "Your saved chats are safe and can still be read; anything not saved yet is kept in memory."
_RETRY = "then click Try again (Harmonica also retries every few seconds)"
_SESSION_ONLY = "Until then, new conversations are kept only until Harmonica closes."
_ELSEWHERE = "To keep conversations in another folder, set HARMONICA_HOME to it and restart Harmonica."


@dataclass(frozen=True)
class StoreProblem:
    """Why the conversation database cannot be written. `message` is for the user (it names `place`
    and says what to do); `detail` is the underlying error, for the log."""

    kind: str
    place: Path
    message: str
    detail: str = ""

    @property
    def temporary(self) -> bool:
        """Conversations live in a temporary store for this session (the file itself is unusable)."""
        return self.kind in TEMPORARY_KINDS

    @property
    def headline(self) -> str:
        if self.kind == FULL:
            return "The disk is full: nothing new is saved"
        if self.temporary:
            return "Conversations are not being saved"
        return "Conversations are read-only"


class StoreUnavailableError(StoreError):
    """A write was refused or failed because the database cannot be written now; `problem` says why.

    The store is read-only until `Store.retry()` succeeds; the UI shows the problem's notice.
    """

    def __init__(self, problem: StoreProblem) -> None:
        self.problem = problem
        super().__init__(problem.message)


class RowRef:
    """A message kept in memory because it could not be saved yet; `id` is its row once it is."""

    def __init__(self) -> None:
        self.id: int | None = None

    def __repr__(self) -> str:
        return f"RowRef({self.id})"


@dataclass
class PendingWrite:
    """A write that failed (or was refused) and is replayed, in order, when the store can write again."""

    what: str  # "an answer", "a tool result": for the notice and the log
    run: Callable[[], None] = field(repr=False)


# --- reading errors -------------------------------------------------------------------------------


def _code(exc: sqlite3.Error) -> int | None:
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int):
        return code
    text = str(exc).lower()
    return next((c for needle, c in _BY_TEXT if needle in text), None)


def _folder(path: Path) -> Path:
    return path if path.is_dir() else path.parent


def read_only_fs(path: Path) -> bool:
    """Whether the file system holding `path` (or its nearest existing folder) is mounted read-only."""
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        return bool(os.statvfs(probe).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):  # Windows has no statvfs
        return False


def free_bytes(path: Path) -> int | None:
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        return shutil.disk_usage(probe).free
    except OSError:
        return None


def human_size(n: int) -> str:
    size = float(n)
    for unit in ("bytes", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{int(size)} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{n} bytes"


def classify(exc: sqlite3.Error, path: Path) -> StoreProblem | None:
    """The problem behind a failed write, or None when it is not about the disk (a bug: re-raise it)."""
    code = _code(exc)
    if code is None:
        return None
    primary = code & 0xFF
    detail = f"{exc} (SQLite {getattr(exc, 'sqlite_errorname', code)})"
    if code == _READONLY_DBMOVED:
        return moved(path, detail)
    if primary == _FULL:
        return full(path, detail)
    if primary == _IOERR:
        # ENOSPC while growing the shared-memory file or syncing is reported as an I/O error.
        free = free_bytes(path)
        return full(path, detail) if free is not None and free < 64 * 1024 else io_error(path, detail)
    if primary in (_READONLY, _CANTOPEN, _PERM):
        return read_only(path, detail)
    if primary in (_BUSY, _LOCKED):
        return busy(path, detail)
    return None


# --- the problems, in words -----------------------------------------------------------------------


def full(path: Path, detail: str = "") -> StoreProblem:
    folder = _folder(path)
    free = free_bytes(folder)
    # Plenty free means a quota or a size limit, not the disk: the number would only confuse then.
    left = f" ({human_size(free)} free)" if free is not None and free < 100_000_000 else ""
    return StoreProblem(
        FULL,
        folder,
        f"The disk that holds your conversations ({folder}) is full{left}. {_KEPT} "
        f"Free up space on that disk, {_RETRY}.",
        detail,
    )


def io_error(path: Path, detail: str = "") -> StoreProblem:
    return StoreProblem(
        IO_ERROR,
        path,
        f"The disk reported an input/output error while Harmonica was saving to {path}. {_KEPT} "
        f"Check that the disk is connected and healthy, {_RETRY}.",
        detail,
    )


def busy(path: Path, detail: str = "") -> StoreProblem:
    return StoreProblem(
        BUSY,
        path,
        f"Another program keeps {path} locked, so Harmonica cannot save. {_KEPT} Close programs that "
        f"may use that file (backup or sync tools, a database browser), {_RETRY}.",
        detail,
    )


def moved(path: Path, detail: str = "") -> StoreProblem:
    return StoreProblem(
        MOVED,
        path,
        f"The conversation database {path} was moved or deleted while Harmonica was running, so nothing "
        f"new can be saved; anything not saved yet is kept in memory. Put the file back, {_RETRY}.",
        detail,
    )


def read_only(path: Path, detail: str = "") -> StoreProblem:
    """The file or its folder cannot be written: a read-only disk, or no permission."""
    folder = _folder(path)
    if read_only_fs(folder):
        return StoreProblem(
            READ_ONLY,
            folder,
            f"The disk that holds your conversations ({folder}) is read-only: they can be read, but "
            f"nothing new is saved. Make that disk writable, {_RETRY}. {_ELSEWHERE}",
            detail,
        )
    return StoreProblem(
        NO_PERMISSION,
        path,
        f"Harmonica is not allowed to write to {path}: your conversations can be read, but nothing new "
        f"is saved. Give your user account write permission on {folder} and the files in it, {_RETRY}.",
        detail,
    )


def in_use(path: Path, detail: str = "") -> StoreProblem:
    return StoreProblem(
        IN_USE,
        path,
        f"Another Harmonica is already using {path}, so this window shows your conversations read-only. "
        f"Close the other Harmonica, {_RETRY}.",
        detail,
    )


def not_a_file(path: Path, detail: str = "") -> StoreProblem:
    return StoreProblem(
        NOT_A_FILE,
        path,
        f"{path} should be Harmonica's conversation database, but it is a folder. Move or rename that "
        f"folder, {_RETRY}. {_SESSION_ONLY}",
        detail,
    )


def no_folder(path: Path, exc: OSError) -> StoreProblem:
    folder = path.parent
    why = os.strerror(exc.errno) if exc.errno else str(exc)
    if exc.errno == errno.EROFS or read_only_fs(folder):
        fix = "It is on a read-only disk: make that disk writable, or set HARMONICA_HOME to a writable folder"
    elif exc.errno in (errno.EEXIST, errno.ENOTDIR):
        fix = "Something that is not a folder is in the way: move or rename it"
    elif exc.errno in (errno.EACCES, errno.EPERM):
        fix = "Give your user account permission to create it, or set HARMONICA_HOME to a folder you own"
    elif exc.errno == errno.ENOSPC:
        fix = "The disk is full: free up space on it"
    else:
        fix = "Check that the disk is connected, or set HARMONICA_HOME to another folder"
    return StoreProblem(
        NO_FOLDER,
        folder,
        f"Harmonica cannot create the folder for your conversations, {folder} ({why}). {fix}; {_RETRY}. "
        f"{_SESSION_ONLY}",
        str(exc),
    )


def unreadable(path: Path, detail: str = "") -> StoreProblem:
    return StoreProblem(
        UNREADABLE,
        path,
        f"Harmonica is not allowed to read {path}, so your conversations cannot be shown. Give your user "
        f"account read and write permission on that file and its folder, {_RETRY}. {_SESSION_ONLY}",
        detail,
    )


def unusable(path: Path, detail: str) -> StoreProblem:
    return StoreProblem(
        UNUSABLE,
        path,
        f"Harmonica cannot open your conversation database {path} ({detail}). Check that the disk is "
        f"connected and the file is not used by another program, {_RETRY}. {_SESSION_ONLY}",
        detail,
    )


def session_only(problem: StoreProblem, path: Path) -> StoreProblem:
    """`problem` (read-only disk, no permission, another Harmonica) when `path` does not exist yet: there
    is nothing to show read-only, so a temporary store holds this session's conversations."""
    if problem.kind == READ_ONLY:
        why = f"the disk that holds {path.parent} is read-only. Make that disk writable again"
    elif problem.kind == NO_PERMISSION:
        why = f"it is not allowed to write to {path.parent}. Give your user account write permission on that folder"
    else:
        why = f"{problem.message.rstrip('.')}. Fix that"
    return StoreProblem(
        UNUSABLE,
        path,
        f"Harmonica cannot create your conversation database {path}: {why}, {_RETRY}. {_SESSION_ONLY}",
        problem.detail,
    )


def from_open_error(path: Path, exc: BaseException) -> StoreProblem:
    """The problem behind a failure to open `path` (an OSError, or SQLite's error inside a StoreError)."""
    cause = exc if isinstance(exc, (OSError, sqlite3.Error)) else exc.__cause__
    if path.is_dir():
        return not_a_file(path, str(exc))
    if isinstance(cause, PermissionError) or (isinstance(cause, OSError) and cause.errno in (errno.EACCES,)):
        return unreadable(path, str(exc))
    if isinstance(cause, sqlite3.Error):
        problem = classify(cause, path)
        if problem is not None:
            return problem
    return unusable(path, str(getattr(exc, "strerror", None) or exc))
