"""Errors in plain words: refused connections, timeouts, name lookups, HTTP statuses and OS errors."""

from __future__ import annotations

import errno
import socket

import httpx2
import pytest

from app.core.plain_errors import connection_problem, describe_os_error, http_status_words, plain_text


@pytest.mark.parametrize(
    ("exc", "words"),
    [
        (ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"), "refused the connection"),
        (httpx2.ConnectError("[Errno 111] Connection refused"), "refused the connection"),
        (httpx2.ConnectError("[Errno -2] Name or service not known"), "name could not be looked up"),
        (socket.gaierror(socket.EAI_NONAME, "Name or service not known"), "name could not be looked up"),
        (httpx2.ConnectTimeout("timed out"), "did not answer in time"),
        (TimeoutError("timed out"), "did not answer in time"),
        (OSError(errno.ENETUNREACH, "Network is unreachable"), "is this computer online"),
        (httpx2.RemoteProtocolError("peer closed connection"), "closed the connection"),
    ],
)
def test_connection_problems_in_words(exc: BaseException, words: str) -> None:
    text = connection_problem(exc)
    assert words in text and "Errno" not in text


def test_a_wrapped_error_is_found_through_its_cause() -> None:
    try:
        try:
            raise ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused")
        except OSError as inner:
            raise RuntimeError("request failed") from inner
    except RuntimeError as outer:
        assert "refused the connection" in connection_problem(outer)


def test_http_statuses_in_words() -> None:
    assert http_status_words(500) == "the server had an internal error"
    assert "rate-limiting" in http_status_words(429) and "refused access" in http_status_words(403)
    assert http_status_words(599) == "the server had a problem" and "did not accept" in http_status_words(418)


def test_os_errors_in_words() -> None:
    full = OSError(errno.ENOSPC, "No space left on device", "/data/models/x.gguf")
    assert describe_os_error(full) == "the disk is full (/data/models/x.gguf)"
    assert describe_os_error(PermissionError(errno.EACCES, "Permission denied")).startswith("permission was denied")
    assert plain_text(OSError(errno.EBADMSG, "Bad message")) == "Bad message"  # no "[Errno 74]"


def test_download_errors_say_what_happened_not_errno(monkeypatch: pytest.MonkeyPatch) -> None:
    from app.core.download import _classify, _interruption

    refused = httpx2.ConnectError("[Errno 111] Connection refused")
    err = _classify(refused, "https://huggingface.co", "gpt-oss-20b-mxfp4.gguf")
    assert "Errno" not in err.message and "refused the connection" in err.message and "online" in err.message
    assert _interruption(refused, 30).startswith("Could not connect: the server refused")


def test_any_error_for_a_message() -> None:
    from app.core.plain_errors import describe_error

    assert describe_error(PermissionError(errno.EACCES, "Permission denied", "/x/chat.md")).startswith(
        "permission was denied"
    )
    assert describe_error(ValueError("[Errno 5] odd")) == "odd"
