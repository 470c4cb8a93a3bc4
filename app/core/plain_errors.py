"""Errors in plain words: what an OSError, a refused connection, a timeout or an HTTP status means, as a sentence part a user can act on.

Python's own texts ("[Errno 111] Connection refused", "HTTP 500") say what the system saw, not
what happened to the user or what to do. These helpers turn them into words; the caller adds
what was being done ("Could not reach huggingface.co: …") and the advice that fits.
"""

from __future__ import annotations

import errno
import re
import socket
import ssl

# errno → what happened, in words (the caller says to what or where).
_ERRNO_WORDS: dict[int, str] = {
    errno.ECONNREFUSED: "the server refused the connection (nothing is listening there, or a firewall blocks it)",
    errno.ECONNRESET: "the connection was cut off by the other side",
    errno.ECONNABORTED: "the connection was cut off",
    errno.EPIPE: "the connection was cut off",
    errno.ETIMEDOUT: "the server did not answer in time",
    errno.EHOSTUNREACH: "there is no network route to the server (is this computer online?)",
    errno.ENETUNREACH: "the network is unreachable (is this computer online?)",
    errno.ENETDOWN: "the network is down (is this computer online?)",
    errno.EADDRNOTAVAIL: "the address cannot be used from this computer",
    errno.ENOENT: "the file or folder does not exist",
    errno.EACCES: "permission was denied (Harmonica may not read or write there)",
    errno.EPERM: "the operation is not permitted",
    errno.ENOSPC: "the disk is full",
    errno.EROFS: "the disk is read-only",
    errno.EISDIR: "it is a folder, not a file",
    errno.ENOTDIR: "a part of the path is not a folder",
    errno.EEXIST: "something with that name already exists",
    errno.EMFILE: "too many files are open",
    errno.EIO: "the disk reported a read or write error",
    errno.EDQUOT: "the disk quota is used up",
}

_HTTP_WORDS: dict[int, str] = {
    400: "the server did not accept the request",
    401: "the server asks for a login (a token)",
    403: "the server refused access",
    404: "the server has no such file",
    408: "the server gave up waiting for the request",
    410: "the file is gone from the server",
    416: "the server could not resume from where the download stopped",
    429: "the server is rate-limiting: too many requests in a short time",
    500: "the server had an internal error",
    502: "the server's gateway got no good answer from behind it",
    503: "the server is unavailable for the moment (overloaded or in maintenance)",
    504: "the server's gateway timed out",
}

_ERRNO_IN_TEXT = re.compile(r"\[Errno (-?\d+)\]\s*")
# getaddrinfo's failures, as Linux, macOS and Windows word them.
_LOOKUP_TEXT = re.compile(
    r"Name or service not known|Temporary failure in name resolution|nodename nor servname|getaddrinfo failed",
    re.IGNORECASE,
)


def http_status_words(status: int) -> str:
    """403 → 'the server refused access'; an unknown code is described by its class."""
    if status in _HTTP_WORDS:
        return _HTTP_WORDS[status]
    if 500 <= status < 600:
        return "the server had a problem"
    if 400 <= status < 500:
        return "the server did not accept the request"
    return f"the server answered with status {status}"


def _errno_of(exc: BaseException) -> int | None:
    """The errno behind `exc`, looking through its causes and, last, its text ("[Errno 111] …")."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and isinstance(current.errno, int):
            return current.errno
        for arg in getattr(current, "args", ()):
            if isinstance(arg, OSError) and isinstance(arg.errno, int):
                return arg.errno
        current = current.__cause__ or current.__context__
    m = _ERRNO_IN_TEXT.search(str(exc))
    return int(m.group(1)) if m else None


def _is(exc: BaseException, kinds: tuple[type[BaseException], ...], names: tuple[str, ...]) -> bool:
    current: BaseException | None = exc
    seen: set[int] = set()
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, kinds) or type(current).__name__ in names:
            return True
        current = current.__cause__ or current.__context__
    return False


def connection_problem(exc: BaseException) -> str:
    """What went wrong with a network connection, in words ('the server refused the connection …')."""
    code = _errno_of(exc)
    if _is(exc, (socket.gaierror,), ()) or (code is not None and code < 0) or _LOOKUP_TEXT.search(str(exc)):
        return "the server's name could not be looked up (is this computer online? is the address right?)"
    if _is(exc, (ssl.SSLError,), ()):
        return "a secure connection could not be set up (the server's certificate could not be checked)"
    if _is(exc, (TimeoutError, socket.timeout), ("ConnectTimeout", "ReadTimeout", "WriteTimeout", "PoolTimeout")):
        return "the server did not answer in time"
    if code is not None and code in _ERRNO_WORDS:
        return _ERRNO_WORDS[code]
    if _is(exc, (), ("RemoteProtocolError",)):
        return "the server closed the connection in the middle of an answer"
    return plain_text(exc) or "the connection failed"


def describe_os_error(exc: BaseException) -> str:
    """An OSError in words, with the path when it has one: 'the disk is full (/data/models)'."""
    code = _errno_of(exc)
    words = _ERRNO_WORDS.get(code, "") if code is not None else ""
    filename = getattr(exc, "filename", None)
    where = f" ({filename})" if filename else ""
    return (words + where) if words else plain_text(exc)


def plain_text(exc: BaseException) -> str:
    """`str(exc)` without Python's '[Errno N]' prefix (the words after it stay)."""
    return _ERRNO_IN_TEXT.sub("", str(exc)).strip()


def describe_error(exc: BaseException) -> str:
    """Any error as words for a message: OS errors by what happened, others without '[Errno N]'."""
    if isinstance(exc, OSError) and not _is(exc, (), ("ConnectError", "TimeoutException")):
        return describe_os_error(exc)
    return plain_text(exc) or type(exc).__name__
