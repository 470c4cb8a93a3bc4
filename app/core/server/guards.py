"""The outermost ASGI layer: API key, Host and Origin checks against browser attacks, and the request log.

A web page open in the user's browser can send requests to 127.0.0.1; requests from a non-local
page (Origin) or through DNS rebinding (a foreign Host name) are refused before any route runs.
Every request, refused or not, ends in one RequestRecord.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from app.core.server.errors import ApiError
from app.core.server.network import host_of, is_ip_literal, is_loopback_name, local_names
from app.core.server.settings import RETRY_AFTER_S

if TYPE_CHECKING:
    from app.core.server.app import ApiServer
    from app.core.server.generation import Generation

Headers = list[tuple[bytes, bytes]]


@dataclass(frozen=True)
class RequestRecord:
    """One finished HTTP request, for the request log."""

    time: float  # wall-clock time the request arrived (time.time())
    method: str
    path: str
    status: int
    client: str  # remote address
    duration_s: float
    prompt_tokens: int = 0
    completion_tokens: int = 0
    stream: bool = False
    note: str = ""  # finish reason, error message or "client disconnected"


# CORS: what a browser page on an allowed origin may send, and how long it may cache the answer.
_CORS_METHODS = "GET, POST, OPTIONS"
_CORS_HEADERS = (
    "authorization, content-type, x-api-key, openai-beta, openai-organization, openai-project, x-stainless-*"
)
_CORS_MAX_AGE = "600"


def busy(limit: int) -> ApiError:
    """The 429 for one request too many: clients that honour Retry-After come back later."""
    return ApiError(
        429,
        f"{limit} requests are already waiting for the model; try again in a few seconds.",
        type="rate_limit_error",
        code="too_many_requests",
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )


def origin_allowed(origin: str | None, api_key: str) -> bool:
    """Whether a browser page from `origin` may use the server.

    No Origin (scripts, curl, SDKs) and pages served from this computer (localhost, 127.0.0.1,
    [::1]) may. With no key set, nothing else may: not other sites, and not `Origin: null`
    (sandboxed frames, file:// pages, redirects), which any site can produce. With a key set, any
    page may try, since it must still present the key.
    """
    if origin is None:
        return True
    if origin != "null" and is_loopback_name(host_of(origin)):
        return True
    return bool(api_key)


def host_allowed(host: str | None, exposed: bool, local_names: frozenset[str]) -> bool:
    """Whether a Host header can name this server (a foreign name means DNS rebinding).

    Loopback only: localhost and loopback addresses. Exposed to the network: also any IP address
    literal and this computer's own names; never someone else's domain name.
    """
    if host is None:  # HTTP/1.0 without Host: browsers always send one, so no rebinding
        return True
    name = host_of(host)
    if is_loopback_name(name):
        return True
    if not exposed:
        return False
    return is_ip_literal(name) or name.rstrip(".") in local_names


def key_given(headers: Mapping[str, str]) -> str:
    auth = headers.get("authorization", "")
    return auth[7:].strip() if auth[:7].lower() == "bearer " else headers.get("x-api-key", "").strip()


def refusal(
    headers: Mapping[str, str],
    path: str,
    *,
    exposed: bool,
    api_key: str,
    method: str = "GET",
    local_names: frozenset[str] = frozenset(),
) -> tuple[ApiError, Headers] | None:
    """Why a request must not reach the app (with extra response headers), or None to let it through.

    Every method and path is checked: a GET of /v1/models or /health through DNS rebinding would
    tell a web page what runs here. With a key set, every path needs it (CORS preflights excepted:
    browsers never send credentials with those, and they reveal nothing).
    """
    origin = headers.get("origin")
    if not origin_allowed(origin, api_key):
        return ApiError(
            403,
            "Requests from web pages on other sites are not allowed. Set an API key in Harmonica to let "
            "a web app use this server.",
            type="permission_error",
            code="forbidden_origin",
        ), []
    if not host_allowed(headers.get("host"), exposed, local_names):
        where = "this computer's addresses" if exposed else "127.0.0.1 / localhost"
        return ApiError(
            403, f"This server only answers on {where}.", type="permission_error", code="forbidden_host"
        ), []
    if api_key and method != "OPTIONS":
        given = key_given(headers)
        if not hmac.compare_digest(given.encode(), api_key.encode()):
            what = "No API key was provided" if not given else "Incorrect API key provided"
            err = ApiError(401, f"{what}. Use the key shown in Harmonica's API server panel.", code="invalid_api_key")
            return err, [(b"www-authenticate", b"Bearer")]
    return None


def cors_headers(origin: str | None) -> Headers:
    """Headers that let an allowed page read the answer (none for non-browser clients)."""
    if origin is None:
        return []
    return [(b"access-control-allow-origin", origin.encode("latin-1")), (b"vary", b"Origin")]


def preflight_headers(origin: str, headers: Mapping[str, str]) -> Headers:
    asked = headers.get("access-control-request-headers")
    return cors_headers(origin) + [
        (b"access-control-allow-methods", _CORS_METHODS.encode()),
        (b"access-control-allow-headers", (asked or _CORS_HEADERS).encode("latin-1")),
        (b"access-control-max-age", _CORS_MAX_AGE.encode()),
    ]


async def _reply(send: Any, err: ApiError, extra: Headers) -> None:
    body = json.dumps(err.body()).encode()
    extra = extra + [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in err.headers.items()]
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())] + extra
    await send({"type": "http.response.start", "status": err.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _empty(send: Any, status: int, extra: Headers) -> None:
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-length", b"0"), *extra]})
    await send({"type": "http.response.body", "body": b""})


def body_limit(receive: Any, limit: int) -> Any:
    """`receive`, refusing (413) a body that grows past `limit` bytes as it arrives (chunked uploads)."""
    seen = 0

    async def limited() -> Any:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise too_large(limit)
        return message

    return limited


def too_large(limit: int) -> ApiError:
    return ApiError(
        413,
        f"The request body is larger than this server accepts ({limit // (1024 * 1024)} MB).",
        code="request_too_large",
    )


class Guard:
    """Wraps the app: refuses what must not reach it, and logs every request when it ends."""

    def __init__(self, server: ApiServer, app: Any) -> None:
        self.server = server
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        arrived = time.time()
        status = 0
        scope.setdefault("state", {})
        note = ""
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        method = scope.get("method", "GET")
        origin = headers.get("origin")
        allow = cors_headers(origin) if origin_allowed(origin, self.server.api_key) else []

        async def send_and_note(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                if allow:
                    message = {**message, "headers": [*message.get("headers", []), *allow]}
            await send(message)

        server = self.server
        refused = refusal(
            headers,
            scope.get("path", ""),
            exposed=server.exposed,
            api_key=server.api_key,
            method=method,
            local_names=local_names() if server.exposed else frozenset(),
        )
        counted = False
        try:
            if refused is not None:
                err, extra = refused
                note = err.message
                await _reply(send_and_note, err, extra)
            elif method == "OPTIONS" and origin is not None:
                # A CORS preflight from an allowed page: answered here, it never reaches a route.
                await _empty(send, 204, preflight_headers(origin, headers))
                status = 204
            elif (refused_early := self._early_refusal(headers, method)) is not None:
                note = refused_early.message
                await _reply(send_and_note, refused_early, [])
            else:
                if method == "POST":
                    server.in_flight += 1
                    counted = True
                limited = body_limit(receive, server.settings.max_body_bytes)
                await self.app(scope, limited, send_and_note)
        finally:
            if counted:
                server.in_flight -= 1
            await self._log(scope, arrived, t0, status, note)

    def _early_refusal(self, headers: Mapping[str, str], method: str) -> ApiError | None:
        """413 or 429 before a byte of the body is read: too big by its Content-Length, or too many at once."""
        limit = self.server.settings.max_body_bytes
        length = headers.get("content-length")
        if length is not None:
            if not length.strip().isdigit():
                return ApiError(400, "The Content-Length header is not a number.")
            if int(length) > limit:
                return too_large(limit)
        if method == "POST" and self.server.in_flight >= self.server.settings.max_in_flight:
            return busy(self.server.settings.max_in_flight)
        return None

    async def _log(self, scope: Any, arrived: float, t0: float, status: int, note: str) -> None:
        """Record the finished request (waiting briefly for its generation's counts)."""
        state = scope.get("state", {})
        gen: Generation | None = state.get("generation")
        prompt = completion = 0
        note = note or str(state.get("note", ""))
        cancelled: BaseException | None = None
        if gen is not None:
            cancelled = await self._settle(gen)
            out = gen.outcome
            prompt, completion = out.prompt_tokens, out.completion_tokens
            if gen.disconnected:
                note = "client disconnected"
            elif out.error is not None:
                note = out.error.message
            else:
                note = out.finish_reason
            if gen.job.notes:  # what the server left out of the request (unusable tools and items)
                note += "; " + "; ".join(gen.job.notes)
        if status == 0:
            status = 499 if gen is not None and gen.disconnected else 500
        client = scope.get("client")
        self.server.record(
            RequestRecord(
                time=arrived,
                method=scope.get("method", ""),
                path=scope.get("path", ""),
                status=status,
                client=f"{client[0]}" if client else "",
                duration_s=time.perf_counter() - t0,
                prompt_tokens=prompt,
                completion_tokens=completion,
                stream=bool(state.get("stream")),
                note=note,
            )
        )
        if cancelled is not None:
            raise cancelled

    async def _settle(self, gen: Generation) -> BaseException | None:
        """Stop the request's generation if it still runs and let the server forget it.

        A cancelled generation stops within a token; waiting for it lets the log have its counts.
        Returns the CancelledError to re-raise once the request is logged (the server is shutting down).
        """
        cancelled: BaseException | None = None
        if not gen.done.is_set():
            gen.stop()
            try:
                await asyncio.get_running_loop().run_in_executor(None, gen.done.wait, 10.0)
            except asyncio.CancelledError as exc:
                cancelled = exc
        self.server.forget(gen)
        return cancelled
