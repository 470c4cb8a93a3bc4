"""File services every feature shares: atomic writes with one durability policy, bounded reads, and sha256 of a file."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from app.core.errors import HarmonicaError

# Reads of large files go through this many bytes at a time (big enough that the system call is
# not the cost, small enough to report progress and notice a cancel often).
HASH_BLOCK: Final = 4 * 1024 * 1024


# --- atomic writes ---------------------------------------------------------------------------------


class FileWriteError(HarmonicaError, OSError):
    """A file Harmonica writes could not be written; the message names the file and what to do.

    Also an OSError (same errno and filename), so code that catches OSError keeps working.
    """

    def __init__(self, path: Path, cause: OSError) -> None:
        super().__init__(cause.errno, cause.strerror or str(cause), str(path))
        self.path = path
        self.message = describe_write_error(path, cause)

    def __str__(self) -> str:
        return self.message


def describe_write_error(path: Path, exc: OSError) -> str:
    """A sentence for a failed write of `path`: where, why (the system's words), and what to do."""
    why = exc.strerror or str(exc)
    folder = path.parent
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        fix = f"The disk that holds {folder} is full: free up space on it, then try again."
    elif exc.errno == errno.EROFS:
        fix = f"The disk that holds {folder} is read-only: make it writable, then try again."
    elif exc.errno in (errno.EACCES, errno.EPERM):
        fix = f"Give your user account write permission on {folder}, then try again."
    elif exc.errno == errno.EISDIR or path.is_dir():
        fix = f"{path} is a folder: move or rename it, then try again."
    elif exc.errno in (errno.ENOTDIR, errno.EEXIST):
        fix = f"Something that is not a folder is in the way of {folder}: move or rename it, then try again."
    elif exc.errno == errno.EIO:
        fix = "The disk reported an input/output error: check that it is connected and healthy, then try again."
    else:
        fix = "Check the disk and the folder, then try again."
    return f"Harmonica could not save {path} ({why}). The file keeps what it had before. {fix}"


def atomic_write(path: str | os.PathLike[str], data: str | bytes, *, encoding: str = "utf-8") -> Path:
    """Replace `path` with `data` all at once: afterwards the file holds the old content or the new, never half.

    The one policy, for every file Harmonica writes whole (settings, registries, exports, state):
    the data goes to a temporary file in the same folder (a rename is atomic only within one file
    system), which is flushed and fsync'ed, then renamed over `path`, and the folder is fsync'ed
    so the rename itself survives a power cut. Text is written as given ("\\n" stays "\\n" on
    every platform). Missing parent folders are created. Raises FileWriteError (an OSError whose
    message names the file and what to do: a full or read-only disk, no permission); the old file
    stays as it was and the temporary file never stays behind.
    """
    target = Path(path)
    raw = data.encode(encoding) if isinstance(data, str) else data
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.is_dir():
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(target))
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except FileWriteError:
        raise
    except OSError as exc:
        raise FileWriteError(target, exc) from exc
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and not isinstance(exc, FileWriteError):
            raise FileWriteError(target, exc) from exc
        raise
    _fsync_folder(target.parent)
    return target


def _fsync_folder(folder: Path) -> None:
    if os.name == "nt":  # Windows cannot open a folder as a file; NTFS journals the rename itself
        return
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems (and network shares) cannot sync a folder; the file itself is synced
    finally:
        os.close(fd)


# --- bounded reads ---------------------------------------------------------------------------------


class FileTooLargeError(HarmonicaError):
    """A file is larger than the reader accepts; `size` and `limit` say by how much."""

    def __init__(self, path: Path, size: int, limit: int) -> None:
        self.path, self.size, self.limit = path, size, limit
        super().__init__(f"{path.name} is {size:,} bytes; at most {limit:,} bytes are read.")


@dataclass(frozen=True)
class BoundedRead:
    """What read_bounded got: at most `limit` bytes, and the file's size when it was opened."""

    data: bytes
    size: int

    @property
    def truncated(self) -> bool:
        return self.size > len(self.data)


def read_bounded(path: str | os.PathLike[str], limit: int, *, truncate: bool = False) -> BoundedRead:
    """Read a file the user chose without ever loading all of a huge one.

    A file over `limit` bytes raises FileTooLargeError (its size known without reading it), or
    with `truncate` gives its first `limit` bytes. A folder raises IsADirectoryError on every
    platform; other failures are the OSError of the operation (FileNotFoundError, PermissionError…),
    for the caller to put into words of its feature.
    """
    p = Path(path)
    if p.is_dir():  # opening a folder fails differently per platform (PermissionError on Windows)
        raise IsADirectoryError(errno.EISDIR, "it is a folder", str(p))
    with open(p, "rb") as f:  # fstat of this descriptor: the size of what is read, not of a path
        st = os.fstat(f.fileno())
        if st.st_size > limit and not truncate:
            raise FileTooLargeError(p, st.st_size, limit)
        return BoundedRead(f.read(limit), st.st_size)


# --- sha256 ----------------------------------------------------------------------------------------


class Sha256Reader:
    """Reads a file through sha256 one block at a time: iterate it for each block's size, then take `hexdigest`.

    The caller decides what happens between blocks: report progress, wait while paused, or stop
    (leave the loop; the file is closed). `sha256_file` is the plain form.
    """

    def __init__(self, path: str | os.PathLike[str], block: int = HASH_BLOCK) -> None:
        self.path = Path(path)
        self._block = block
        self._hexdigest: str | None = None

    def __iter__(self) -> Iterator[int]:
        digest = hashlib.sha256()
        buf = bytearray(self._block)
        view = memoryview(buf)
        with open(self.path, "rb", buffering=0) as f:  # readinto one reused buffer: no copy per block
            while n := f.readinto(buf):
                digest.update(view[:n])
                yield n
        self._hexdigest = digest.hexdigest()

    @property
    def hexdigest(self) -> str:
        """The digest, once the whole file was read."""
        if self._hexdigest is None:
            raise RuntimeError(f"{self.path} was not read to the end")
        return self._hexdigest


def sha256_file(
    path: str | os.PathLike[str],
    *,
    on_bytes: Callable[[int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    block: int = HASH_BLOCK,
) -> str | None:
    """The sha256 of a file as hex; `on_bytes` hears each block's size; None when `should_stop()` said stop."""
    reader = Sha256Reader(path, block)
    for n in reader:
        if on_bytes is not None:
            on_bytes(n)
        if should_stop is not None and should_stop():
            return None
    return reader.hexdigest
