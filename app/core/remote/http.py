"""The one HTTP client of remote connections: JSON requests and server-sent event streams that a hostile server cannot abuse.

What a server can send is bounded: redirects are never followed (the key would go to another
host), headers are limited by h11 (16 KiB), a JSON reply by MAX_JSON_BYTES, one SSE line by
MAX_LINE_BYTES and one answer by MAX_STREAM_BYTES. No proxy from the environment is used (a LAN
server must not be reached through a proxy that sees the conversation). The key is sent only in
the Authorization header to the configured host, is scrubbed from every message a server sends
back, and is never logged: httpx's own request log is silenced to WARNING.

Cancel closes the socket from a watcher thread, so even a server that sends nothing at all
cannot keep a generation from stopping; closing the connection is also how OpenAI-compatible
servers learn to stop generating (vLLM aborts the request, llama-server stops the slot).
"""

from __future__ import annotations

import json
import logging
import re
import socket
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from app.core.engine import EngineError

log = logging.getLogger(__name__)
# httpx logs every request URL at INFO; URLs carry no key (it goes in a header), but the log is
# for Harmonica's own messages.
logging.getLogger("httpx").setLevel(logging.WARNING)
logging.getLogger("httpcore").setLevel(logging.WARNING)

MAX_JSON_BYTES = 8 << 20  # a model list or an error body
MAX_LINE_BYTES = 1 << 20  # one SSE line (a chunk of a few tokens is ~300 bytes)
MAX_STREAM_BYTES = 64 << 20  # one answer; far beyond any context window's worth of text
MAX_ERROR_TEXT = 400  # characters of a server's own error message shown to the user
CONNECT_TIMEOUT_S = 10.0
# Between two bytes of a reply. Long: a big prompt on a busy server may take minutes before the
# first token; Stop works at any time because cancel closes the socket.
READ_TIMEOUT_S = 600.0


class RemoteError(EngineError):
    """A remote server could not do what was asked; the message says what happened in plain words."""


class RemoteUnreachable(RemoteError):
    """The server did not answer (refused, timed out, name unknown)."""


class RemoteAuthError(RemoteError):
    """The server refused the key (401/403)."""


class RemoteModelMissing(RemoteError):
    """The server does not serve the model asked for."""


class RemoteContextError(RemoteError):
    """The conversation is longer than the server's context window."""


class RemoteProtocolError(RemoteError):
    """The server answered something that is not what an OpenAI-compatible server sends."""


class RemoteDropped(RemoteError):
    """The stream ended before the answer did (what arrived is kept)."""


_CONTEXT_RE = re.compile(
    r"context (length|size|window)|maximum context|too many tokens|exceeds? the (available )?context|prompt is too long|"
    r"exceed_context_size",
    re.IGNORECASE,
)
_MODEL_RE = re.compile(
    r"model\b.*\b(not found|does not exist|not loaded|unknown|no such)|model_not_found", re.IGNORECASE
)


def normalise_base_url(url: str) -> str:
    """The base URL a user typed, tidied: scheme added, no trailing slash, no credentials, query or fragment.

    Raises RemoteError for what cannot be a server address. "/v1" is not added here: the probe
    tries the URL as given and with "/v1".
    """
    text = url.strip()
    if not text:
        raise RemoteError("Enter the server's address, e.g. http://studio-pc:8000/v1.")
    if "://" not in text:
        text = "http://" + text
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https"):
        raise RemoteError(f"“{url}” is not an http:// or https:// address.")
    if not parts.hostname:
        raise RemoteError(f"“{url}” has no host name.")
    if parts.username or parts.password:
        raise RemoteError(
            "Put the key in the key field, not in the address: addresses are shown and logged, keys are not."
        )
    try:
        _ = parts.port
    except ValueError:
        raise RemoteError(f"“{url}” has an invalid port.") from None
    return urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))


def display_host(url: str) -> str:
    """The host of `url`, for sentences ("studio-pc", "192.168.1.20")."""
    return urlsplit(url).hostname or url


@dataclass
class HttpReply:
    """A complete, bounded JSON reply."""

    status: int
    data: Any


class HttpClient:
    """Requests to one server. Thread-safe for separate requests; each stream has its own connection."""

    def __init__(self, base_url: str, api_key: str = "", *, label: str = "", verify: bool = True) -> None:
        self.base_url = normalise_base_url(base_url)
        self._key = api_key.strip()
        self.label = label or display_host(self.base_url)
        self._verify = verify
        self._http: Any = None
        self._http_lock = threading.Lock()

    # --- the key never leaves through a message ---------------------------------------------------
    def scrub(self, text: str) -> str:
        """`text` with the key (and any bearer token) replaced, for messages and logs."""
        if self._key:
            text = text.replace(self._key, "•••")
        return re.sub(r"(?i)(bearer\s+)\S+", r"\1•••", text)

    def _headers(self, stream: bool) -> dict[str, str]:
        h = {"Accept": "text/event-stream" if stream else "application/json", "User-Agent": "Harmonica"}
        if self._key:
            h["Authorization"] = f"Bearer {self._key}"
        return h

    def url(self, path: str) -> str:
        if path.startswith("/"):
            return self.base_url + path
        return f"{self.base_url}/{path}"

    def _client(self) -> Any:
        """One httpx client per server, kept: its connections are reused (no handshake per answer)."""
        import httpx

        with self._http_lock:
            if self._http is None:
                # Plain http needs no certificates (loading them costs tens of milliseconds per client).
                verify = self._verify if self.base_url.startswith("https:") else False
                self._http = httpx.Client(follow_redirects=False, trust_env=False, verify=verify)
            return self._http

    @staticmethod
    def _timeout(read: float) -> Any:
        import httpx

        return httpx.Timeout(connect=CONNECT_TIMEOUT_S, read=read, write=30.0, pool=CONNECT_TIMEOUT_S)

    def close(self) -> None:
        with self._http_lock:
            if self._http is not None:
                self._http.close()
                self._http = None

    # --- plain requests ---------------------------------------------------------------------------
    def get_json(self, path: str, *, timeout: float = 15.0, absolute: bool = False) -> HttpReply:
        return self._request("GET", path, None, timeout, absolute)

    def post_json(self, path: str, body: Mapping[str, Any], *, timeout: float = 60.0) -> HttpReply:
        return self._request("POST", path, body, timeout, False)

    def _request(
        self, method: str, path: str, body: Mapping[str, Any] | None, timeout: float, absolute: bool
    ) -> HttpReply:
        url = path if absolute else self.url(path)
        client = self._client()
        try:
            with client.stream(
                method, url, json=body, headers=self._headers(False), timeout=self._timeout(timeout)
            ) as resp:
                self._check_redirect(resp)
                raw = _read_bounded(resp, MAX_JSON_BYTES, self.label)
                status = resp.status_code
        except Exception as exc:  # noqa: BLE001 - every transport failure becomes a sentence
            raise self._transport_error(exc) from None
        try:
            data = json.loads(raw) if raw.strip() else None
        except ValueError:
            data = raw.decode("utf-8", "replace")
        return HttpReply(status, data)

    # --- streams ----------------------------------------------------------------------------------
    def stream_events(
        self, path: str, body: Mapping[str, Any], *, cancel: threading.Event | None = None
    ) -> Iterator[dict[str, Any]]:
        """POST `body` and yield each server-sent event's JSON object, until `[DONE]` or the end.

        Raises RemoteError for an error status (its message mapped to what happened), for a
        malformed stream, and RemoteDropped when the connection breaks mid-stream; returns quietly
        when `cancel` is set (the connection is closed at once).
        """
        cancel = cancel or threading.Event()
        client = self._client()
        watcher: _SocketCloser | None = None
        for attempt in (1, 2):
            cm = client.stream(
                "POST",
                self.url(path),
                json=dict(body),
                headers=self._headers(True),
                timeout=self._timeout(READ_TIMEOUT_S),
            )
            try:
                resp = cm.__enter__()
                break
            except Exception as exc:  # noqa: BLE001
                if cancel.is_set():
                    return
                if attempt == 1 and _stale_connection(exc):
                    continue  # a kept-alive connection the server had closed: nothing reached the model yet
                raise self._transport_error(exc) from None
        try:
            self._check_redirect(resp)
            if resp.status_code >= 400:
                raw = _read_bounded(resp, MAX_JSON_BYTES, self.label)
                raise self.status_error(resp.status_code, _decode_error(raw))
            watcher = _SocketCloser(resp, cancel)
            yield from self._events(resp, cancel)
        except RemoteError:
            if cancel.is_set():
                return
            raise
        except Exception as exc:  # noqa: BLE001 - a read that failed because Stop closed the socket is no error
            if cancel.is_set():
                return
            raise self._transport_error(exc, mid_stream=True) from None
        finally:
            if watcher is not None:
                watcher.stop()
            try:
                cm.__exit__(None, None, None)
            except Exception:  # noqa: BLE001 - closing a socket we already shut down
                pass

    def _events(self, resp: Any, cancel: threading.Event) -> Iterator[dict[str, Any]]:
        total = 0
        buf = b""
        data_lines: list[bytes] = []
        for chunk in resp.iter_raw():
            if cancel.is_set():
                return
            total += len(chunk)
            buf += chunk
            while True:
                nl = buf.find(b"\n")
                if nl < 0:
                    if len(buf) > MAX_LINE_BYTES:
                        raise RemoteProtocolError(
                            f"{self.label} sent a line of more than 1 MB; that is not an event stream."
                        )
                    break
                line, buf = buf[:nl].rstrip(b"\r"), buf[nl + 1 :]
                if line:
                    if line.startswith(b"data:"):
                        data_lines.append(line[5:].lstrip(b" "))
                    # other fields (event:, id:, retry:, comments) carry nothing we use
                    continue
                if not data_lines:
                    continue
                data, data_lines = b"\n".join(data_lines), []
                if data.strip() == b"[DONE]":
                    return
                event = self._parse_event(data)
                if event is not None:
                    yield event
            if total > MAX_STREAM_BYTES:  # after the events that did arrive: they are kept
                raise RemoteProtocolError(
                    f"{self.label} sent more than {MAX_STREAM_BYTES / (1 << 20):g} MB for one answer; Harmonica "
                    "stopped reading it."
                )
        if data_lines:  # a last event without its blank line
            data = b"\n".join(data_lines)
            if data.strip() != b"[DONE]":
                event = self._parse_event(data)
                if event is not None:
                    yield event

    def _parse_event(self, data: bytes) -> dict[str, Any] | None:
        try:
            obj = json.loads(data)
        except ValueError:
            raise RemoteProtocolError(
                f"{self.label} sent a malformed event (not JSON); is the address that of an OpenAI-compatible server?"
            ) from None
        if not isinstance(obj, dict):
            raise RemoteProtocolError(f"{self.label} sent an event that is not a JSON object.")
        if "error" in obj and not obj.get("choices"):
            err = obj["error"]
            message = err.get("message") if isinstance(err, dict) else err
            code = err.get("code") if isinstance(err, dict) else None
            status = code if isinstance(code, int) else 500
            raise self.status_error(status, str(message or obj))
        return obj

    # --- errors -----------------------------------------------------------------------------------
    def _check_redirect(self, resp: Any) -> None:
        if 300 <= resp.status_code < 400:
            where = display_host(resp.headers.get("location", "") or "") or "another address"
            raise RemoteProtocolError(
                f"{self.label} redirected the request to {where}. Harmonica does not follow redirects, so your key is "
                "never sent to another host; use the final address in the connection instead."
            )

    def status_error(self, status: int, message: str) -> RemoteError:
        """The RemoteError for an HTTP error status and the server's own message."""
        said = self.scrub(" ".join(message.split()))[:MAX_ERROR_TEXT]
        tail = f" (the server said: {said})" if said else ""
        if status in (401, 403):
            return RemoteAuthError(
                f"{self.label} refused the key{tail}. Check the key under Connections → Manage…."
                if self._key
                else f"{self.label} needs a key{tail}. Add it under Connections → Manage…."
            )
        if _CONTEXT_RE.search(message):
            return RemoteContextError(
                f"The conversation is too long for the model's context window on {self.label}{tail}. Start a new chat, "
                "or let the chat leave its oldest turns out (chat settings)."
            )
        if status == 404 and _MODEL_RE.search(message):
            return RemoteModelMissing(
                f"{self.label} does not serve this model{tail}. Choose another one under Connections → Manage…."
            )
        if status == 404:
            return RemoteError(
                f"{self.label} has no such endpoint{tail}; is the address that of an OpenAI-compatible server?"
            )
        if status == 429:
            return RemoteError(f"{self.label} is busy{tail}. Try again in a moment.")
        if _MODEL_RE.search(message):
            return RemoteModelMissing(
                f"{self.label} does not serve this model{tail}. Choose another one under Connections → Manage…."
            )
        return RemoteError(f"{self.label} answered with an error (HTTP {status}){tail}.")

    def _transport_error(self, exc: BaseException, *, mid_stream: bool = False) -> RemoteError:
        import httpx

        if isinstance(exc, RemoteError):
            return exc
        detail = self.scrub(str(exc))[:MAX_ERROR_TEXT]
        if mid_stream:
            return RemoteDropped(
                f"The connection to {self.label} dropped in the middle of the answer ({detail or type(exc).__name__}). "
                "What arrived is kept; press Continue to finish it."
            )
        if isinstance(exc, httpx.ConnectError):
            return RemoteUnreachable(
                f"Cannot reach {self.label} at {self.base_url} ({detail}). Is the server running, and is this computer "
                "allowed through its firewall?"
            )
        if isinstance(exc, httpx.TimeoutException):
            return RemoteUnreachable(f"{self.label} did not answer in time ({type(exc).__name__}).")
        if isinstance(exc, httpx.RemoteProtocolError):
            return RemoteProtocolError(
                f"{self.label} broke the HTTP protocol ({detail}); oversized headers are refused too."
            )
        if isinstance(exc, httpx.HTTPError):
            return RemoteUnreachable(f"Talking to {self.label} failed ({detail or type(exc).__name__}).")
        return RemoteError(f"Talking to {self.label} failed ({type(exc).__name__}: {detail}).")


def _stale_connection(exc: BaseException) -> bool:
    """A reused keep-alive connection that the server had closed while idle (no reply came at all)."""
    import httpx

    if isinstance(exc, httpx.RemoteProtocolError):
        return "without sending a response" in str(exc)
    return isinstance(exc, (httpx.ReadError, httpx.WriteError))


def _read_bounded(resp: Any, limit: int, label: str) -> bytes:
    out = bytearray()
    for chunk in resp.iter_raw():
        out += chunk
        if len(out) > limit:
            raise RemoteProtocolError(
                f"{label} sent a reply of more than {limit >> 20} MB; Harmonica stopped reading it."
            )
    return bytes(out)


def _decode_error(raw: bytes) -> str:
    """The message of an error body: OpenAI's {"error": {"message": …}}, Ollama's {"error": "…"}, or text."""
    text = raw.decode("utf-8", "replace")
    try:
        obj = json.loads(text)
    except ValueError:
        return text
    if isinstance(obj, dict):
        err = obj.get("error", obj.get("detail", obj.get("message")))
        if isinstance(err, dict):
            return str(err.get("message") or err)
        if err is not None:
            return str(err)
    return text


class _SocketCloser:
    """Closes a streaming response's socket as soon as `cancel` is set (from its own thread)."""

    def __init__(self, resp: Any, cancel: threading.Event) -> None:
        self._resp = resp
        self._cancel = cancel
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="remote-cancel", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._done.is_set():
            if self._cancel.wait(0.05):
                if not self._done.is_set():
                    _shutdown(self._resp)
                return

    def stop(self) -> None:
        self._done.set()


def _shutdown(resp: Any) -> None:
    """Shut the socket under a streaming response down: a blocked read returns at once."""
    try:
        stream = resp.extensions.get("network_stream")
        sock = stream.get_extra_info("socket") if stream is not None else None
        if isinstance(sock, socket.socket):
            sock.shutdown(socket.SHUT_RDWR)
            return
    except OSError:
        return
    except Exception:
        log.debug("could not reach the socket of a remote stream", exc_info=True)
    try:
        resp.close()
    except Exception:  # noqa: BLE001
        pass
