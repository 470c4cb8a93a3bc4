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
from app.core.server.network import host_of, is_loopback_name

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


def refusal(headers: Mapping[str, str], path: str, *, exposed: bool, api_key: str) -> tuple[ApiError, Headers] | None:
    """Why a request must not reach the app (with extra response headers), or None to let it through."""
    origin = headers.get("origin")
    if origin and origin != "null" and not is_loopback_name(host_of(origin)):
        return ApiError(
            403,
            "Requests from web pages on other sites are not allowed.",
            type="permission_error",
            code="forbidden_origin",
        ), []
    if not exposed and "host" in headers and not is_loopback_name(host_of(headers["host"])):
        return ApiError(
            403, "This server only answers on 127.0.0.1 / localhost.", type="permission_error", code="forbidden_host"
        ), []
    if api_key and path.startswith("/v1"):
        auth = headers.get("authorization", "")
        given = auth[7:].strip() if auth[:7].lower() == "bearer " else headers.get("x-api-key", "")
        if not hmac.compare_digest(given.encode(), api_key.encode()):
            what = "No API key was provided" if not given else "Incorrect API key provided"
            err = ApiError(401, f"{what}. Use the key shown in Harmonica's API server panel.", code="invalid_api_key")
            return err, [(b"www-authenticate", b"Bearer")]
    return None


async def _reply(send: Any, err: ApiError, extra: Headers) -> None:
    body = json.dumps(err.body()).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())] + extra
    await send({"type": "http.response.start", "status": err.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


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

        async def send_and_note(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        refused = refusal(headers, scope.get("path", ""), exposed=self.server.exposed, api_key=self.server.api_key)
        try:
            if refused is not None:
                err, extra = refused
                note = err.message
                await _reply(send_and_note, err, extra)
            else:
                await self.app(scope, receive, send_and_note)
        finally:
            await self._log(scope, arrived, t0, status, note)

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
