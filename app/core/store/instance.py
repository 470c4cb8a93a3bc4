"""One Harmonica per database file: an operating-system lock on a file beside it, which the system drops if the app dies.

Opening the store marks answers left "streaming" as interrupted, which is only right when no other
live process is writing into the same file; this lock makes sure of that. It is written here, not
taken from ``filelock``: that library falls back to "soft" locks (a file's mere existence) on some
file systems, and a soft lock outlives a crash, which would make the next start report a second
instance that is not there.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import sys
from pathlib import Path
from typing import Final

from app.core.errors import HarmonicaError

LOCK_SUFFIX: Final = ".lock"
# What an attempt on a lock held elsewhere fails with (flock: EWOULDBLOCK; Windows: EACCES/EDEADLK).
_HELD_ERRNOS: Final = frozenset({errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES, errno.EDEADLK})
# What a file system that cannot lock at all answers (some network shares).
_UNSUPPORTED_ERRNOS: Final = frozenset({errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL})
log = logging.getLogger(__name__)


class InstanceLocked(HarmonicaError):
    """Another process (another Harmonica) holds the database's instance lock."""


class InstanceLock:
    """An exclusive, non-blocking lock on ``<database>.lock``; ``release`` (or process death) frees it."""

    def __init__(self, database: Path) -> None:
        self.path = Path(f"{database}{LOCK_SUFFIX}")
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock now. Raises InstanceLocked when another process holds it, OSError when the
        lock file cannot be made (a read-only disk, no permission)."""
        if self._fd is not None:
            return
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            _lock(fd)
        except OSError as exc:
            if exc.errno in _UNSUPPORTED_ERRNOS:
                # Some network shares cannot lock: Harmonica runs as before the lock existed.
                log.warning(
                    "%s cannot be locked on this file system (%s); not checking for a second Harmonica", self.path, exc
                )
            else:
                os.close(fd)
                if exc.errno in _HELD_ERRNOS:
                    raise InstanceLocked(f"{self.path} is locked by another process.") from exc
                raise
        self._fd = fd
        if sys.platform != "win32":  # for people who look: which process holds it (Windows locks the bytes)
            with contextlib.suppress(OSError):  # a full disk must not stop the lock itself
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())

    def __del__(self) -> None:  # a store dropped without close() must not keep the file locked
        self.release()

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        with contextlib.suppress(OSError):
            _unlock(fd)
        os.close(fd)


if sys.platform == "win32":
    import msvcrt

    def _lock(fd: int) -> None:
        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)

    def _unlock(fd: int) -> None:
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)

else:
    import fcntl

    def _lock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)

    def _unlock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)
