"""Reading files someone else controls (the sandbox's scratch folder, picked or imported files) without being blocked or fooled.

Sandboxed code can put anything in its scratch folder: a FIFO that blocks whoever opens it, a device
node, a socket, a symlink or hard link to a host file, a folder swapped for a symlink between a check
and an open. The app reads such files only through `read_regular_file`: it walks the path one
component at a time with O_NOFOLLOW from a folder it opened itself, checks the last component is a
regular file before opening it (so a device is never opened), opens with O_NONBLOCK, checks again
with fstat, refuses hard links (st_nlink > 1) and caps the size.

Images travel as bytes (data: URIs of PNG, JPEG, GIF or WebP checked by their signature), never as
host paths, so a stored or imported chat cannot make the app open a host file.
"""

from __future__ import annotations

import base64
import binascii
import errno
import os
import stat
from pathlib import Path

from app.core.errors import HarmonicaError
from app.core.tools.sandbox_kernel import image_kind

MAX_IMAGE_BYTES = 4 * 1024 * 1024
IMAGE_MIME = ("image/png", "image/jpeg", "image/gif", "image/webp")
EXTENSION = {"image/png": ".png", "image/jpeg": ".jpg", "image/gif": ".gif", "image/webp": ".webp"}
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_DIR_FD = os.open in os.supports_dir_fd and os.stat in os.supports_dir_fd  # POSIX; not Windows


class UnsafeFileError(HarmonicaError):
    """A file was refused: it is not a regular file inside the expected folder, or it is too large."""


def _check_regular(st: os.stat_result, name: str, limit: int, strict: bool = True) -> None:
    mode = st.st_mode
    if stat.S_ISLNK(mode):
        raise UnsafeFileError(f"{name} is a symbolic link; only regular files are read.")
    if stat.S_ISDIR(mode):
        raise UnsafeFileError(f"{name} is a folder, not a file.")
    if not stat.S_ISREG(mode):
        kind = (
            "a named pipe (FIFO)"
            if stat.S_ISFIFO(mode)
            else "a socket"
            if stat.S_ISSOCK(mode)
            else "a device"
            if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
            else "not a regular file"
        )
        raise UnsafeFileError(f"{name} is {kind}; only regular files are read.")
    if strict and st.st_nlink > 1:
        raise UnsafeFileError(f"{name} is a hard link to another file; it is not read.")
    if st.st_size > limit:
        raise UnsafeFileError(f"{name} is larger than {limit / 1024**2:.0f} MiB; it is not read.")


def _open_beneath(root: Path, relative: str) -> tuple[int, str]:
    """An fd of `relative`'s parent folder, walked from `root` without following any symlink."""
    parts = [p for p in relative.replace("\\", "/").split("/") if p not in ("", ".")]
    if not parts or ".." in parts:
        raise UnsafeFileError(f"{relative!r} is not a file inside {root}.")
    fd = os.open(root, os.O_RDONLY | _O_DIRECTORY | _O_CLOEXEC)
    try:
        for part in parts[:-1]:
            nxt = os.open(part, os.O_RDONLY | _O_DIRECTORY | _O_NOFOLLOW | _O_CLOEXEC, dir_fd=fd)
            os.close(fd)
            fd = nxt
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise UnsafeFileError(f"{relative!r} goes through a symbolic link or a file; it is not read.") from None
        raise
    return fd, parts[-1]


def open_regular_file(
    path: str | Path, *, inside: str | Path | None = None, strict: bool = True, limit: int | None = None
) -> tuple[int, os.stat_result]:
    """Open a regular file for reading without ever blocking; returns (fd, its fstat).

    `strict` refuses symlinks (every component when `inside` is given, else the last one) and hard
    links; without it (a file the user picked elsewhere) links are followed, but FIFOs, sockets and
    devices are still refused before they are opened. With `inside`, `path` (absolute or relative to
    it) must lie beneath that folder. `limit` refuses larger files. Raises UnsafeFileError for what
    is refused, OSError (FileNotFoundError…) otherwise.
    """
    p = Path(path)
    cap = limit if limit is not None else 1 << 62
    if not _DIR_FD:
        return _open_regular_by_path(p, inside, strict, cap)
    if inside is not None:
        root = Path(inside)
        if p.is_absolute():
            try:
                rel = str(p.relative_to(root))
            except ValueError:
                try:
                    rel = str(Path(os.path.normpath(p)).relative_to(os.path.realpath(root)))
                except ValueError:
                    raise UnsafeFileError(f"{p} is not inside {root}; it is not read.") from None
        else:
            rel = str(p)
        dir_fd, name = _open_beneath(root, rel)
    else:
        dir_fd = os.open(p.parent if str(p.parent) else ".", os.O_RDONLY | _O_DIRECTORY | _O_CLOEXEC)
        name = p.name
    nofollow = _O_NOFOLLOW if strict else 0
    try:
        before = os.stat(name, dir_fd=dir_fd, follow_symlinks=not strict)
        _check_regular(before, p.name, cap, strict)
        try:
            fd = os.open(name, os.O_RDONLY | nofollow | _O_NONBLOCK | _O_CLOEXEC, dir_fd=dir_fd)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise UnsafeFileError(f"{p.name} is a symbolic link; only regular files are read.") from None
            raise
    finally:
        os.close(dir_fd)
    try:
        st = os.fstat(fd)
        _check_regular(st, p.name, cap, strict)  # it may have been swapped since the check above
        if (st.st_dev, st.st_ino) != (before.st_dev, before.st_ino):
            raise UnsafeFileError(f"{p.name} changed while it was being opened; it is not read.")
    except BaseException:
        os.close(fd)
        raise
    return fd, st


def _open_regular_by_path(p: Path, inside: str | Path | None, strict: bool, cap: int) -> tuple[int, os.stat_result]:
    """Windows (no dir_fd, no FIFOs in the file system): the same checks by path, then fstat."""
    if inside is not None:
        root = os.path.realpath(inside)
        full = p if p.is_absolute() else Path(inside) / p
        real = os.path.realpath(full)
        if os.path.commonpath([real, root]) != root or (strict and real != os.path.abspath(full)):
            raise UnsafeFileError(f"{p} is not a file inside {inside} (or goes through a link); it is not read.")
        p = full
    before = os.lstat(p) if strict else os.stat(p)
    _check_regular(before, p.name, cap, strict)
    fd = os.open(p, os.O_RDONLY | getattr(os, "O_BINARY", 0) | (_O_NOFOLLOW if strict else 0) | _O_NONBLOCK)
    try:
        st = os.fstat(fd)
        _check_regular(st, p.name, cap, strict)
    except BaseException:
        os.close(fd)
        raise
    return fd, st


def read_regular_file(path: str | Path, *, limit: int, inside: str | Path | None = None) -> bytes:
    """The bytes of a regular file (see open_regular_file, strict), at most `limit` of them."""
    fd, _st = open_regular_file(path, inside=inside, strict=True, limit=limit)
    try:
        return read_at_most(fd, limit, Path(path).name, refuse_more=True)
    finally:
        os.close(fd)


def read_at_most(fd: int, limit: int, name: str = "the file", *, refuse_more: bool = False) -> bytes:
    """Up to `limit` bytes of an open file; with `refuse_more`, a file that is longer is refused."""
    chunks: list[bytes] = []
    total = 0
    while total <= limit:
        try:
            chunk = os.read(fd, min(1 << 20, limit + 1 - total))
        except BlockingIOError:
            break
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    data = b"".join(chunks)
    if len(data) > limit:
        if refuse_more:
            raise UnsafeFileError(f"{name} is larger than {limit / 1024**2:.0f} MiB; it is not read.")
        data = data[:limit]
    return data


def image_data_uri(data: bytes) -> str | None:
    """`data` as a data: URI when it is a PNG, JPEG, GIF or WebP image within the size limit."""
    kind = image_kind(data)
    if kind is None or len(data) > MAX_IMAGE_BYTES:
        return None
    return f"data:{kind};base64," + base64.b64encode(data).decode("ascii")


def parse_image_data_uri(uri: str) -> tuple[bytes, str] | None:
    """(bytes, MIME type) of an image data: URI whose bytes really are that kind of image, else None."""
    if not isinstance(uri, str) or not uri.startswith("data:image/"):
        return None
    head, sep, payload = uri.partition(",")
    if not sep or not head.endswith(";base64"):
        return None
    mime = head[len("data:") : -len(";base64")]
    if mime not in IMAGE_MIME or len(payload) > (MAX_IMAGE_BYTES * 4) // 3 + 8:
        return None
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        return None
    return (data, mime) if image_kind(data) == mime and len(data) <= MAX_IMAGE_BYTES else None


def load_image(entry: str, scratch_root: Path | None) -> tuple[bytes, str] | None:
    """The image a stored tool run refers to: an embedded data: URI, or (chats saved by earlier
    versions) a file inside the scratch folders, read safely. Anything else is refused (None)."""
    parsed = parse_image_data_uri(entry)
    if parsed is not None:
        return parsed
    if scratch_root is None or not isinstance(entry, str) or not os.path.isabs(entry):
        return None
    try:
        data = read_regular_file(entry, limit=MAX_IMAGE_BYTES, inside=scratch_root)
    except (OSError, UnsafeFileError):
        return None
    kind = image_kind(data)
    return (data, kind) if kind is not None else None


def clean_image_entries(entries: object) -> list[str]:
    """The image entries of an imported tool run that may be kept: embedded images only (a path in
    an imported file would point at the importing user's own files)."""
    if not isinstance(entries, list):
        return []
    return [e for e in entries if isinstance(e, str) and parse_image_data_uri(e) is not None]


__all__ = [
    "EXTENSION",
    "MAX_IMAGE_BYTES",
    "UnsafeFileError",
    "clean_image_entries",
    "image_data_uri",
    "load_image",
    "open_regular_file",
    "parse_image_data_uri",
    "read_at_most",
    "read_regular_file",
]
