"""HTTP pieces every endpoint shares: the JSON body, server-sent-event framing, and waiting out a non-streamed reply."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from app.core.server.errors import invalid

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import JSONResponse

    from app.core.server.generation import Generation


async def read_body(request: Request) -> Mapping[str, Any]:
    """The request's JSON object; anything else is a 400."""
    raw = await request.body()
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise invalid("The request body is not valid JSON.") from None
    if not isinstance(body, Mapping):
        raise invalid("The request body must be a JSON object.")
    return body


def sse(data: Mapping[str, Any], event: str | None = None) -> bytes:
    """One server-sent event (with an `event:` line when named, as the responses API streams)."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return (f"event: {event}\ndata: {text}\n\n" if event else f"data: {text}\n\n").encode("utf-8")


SSE_HEADERS = {"Cache-Control": "no-cache"}


def disconnected_response() -> JSONResponse:
    """What a non-streamed request gets when its client left (nobody reads it; the log says 499)."""
    from starlette.responses import JSONResponse

    return JSONResponse({"error": {"message": "client disconnected"}}, status_code=499)


async def run_to_end(gen: Generation, request: Request) -> bool:
    """Wait for a non-streamed generation; False (generation cancelled) if the client left."""

    async def disconnected() -> None:
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                return

    watch = asyncio.ensure_future(disconnected())
    finish = asyncio.ensure_future(gen.wait())
    try:
        done, _ = await asyncio.wait({watch, finish}, return_when=asyncio.FIRST_COMPLETED)
        if finish not in done:
            gen.disconnected = True
            gen.stop()
            await finish
            return False
        return True
    finally:
        watch.cancel()
        if not finish.done():
            gen.stop()
            finish.cancel()


def stop_if_abandoned(gen: Generation) -> None:
    """A streamed reply ended before its generation did (the client left): stop generating."""
    if not gen.done.is_set():
        gen.disconnected = True
        gen.stop()
