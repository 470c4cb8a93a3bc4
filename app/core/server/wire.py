"""HTTP pieces every endpoint shares: the JSON body, server-sent-event framing, and waiting out a non-streamed reply."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from app.core.server.errors import ApiError, invalid
from app.core.server.settings import MAX_JSON_DEPTH

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import JSONResponse

    from app.core.server.generation import Generation


async def read_body(request: Request) -> Mapping[str, Any]:
    """The request's JSON object; anything else is a 400 (a body over the size limit was refused as it arrived)."""
    raw = await request.body()
    try:
        body = json.loads(raw)
    except RecursionError:
        raise too_deep() from None
    except (ValueError, UnicodeDecodeError):
        raise invalid("The request body is not valid JSON.") from None
    if not isinstance(body, Mapping):
        raise invalid("The request body must be a JSON object.")
    check_json(body)
    return body


def too_deep() -> ApiError:
    return invalid(f"The request body is nested more than {MAX_JSON_DEPTH} levels deep; this server accepts no more.")


def check_json(value: Any, limit: int = MAX_JSON_DEPTH) -> None:
    """Refuse (400) JSON nested deeper than `limit` and strings holding lone UTF-16 surrogates.

    A JSON escape such as "\\ud800" decodes to a string that cannot be encoded as UTF-8, so the
    tokenizer (and every later step) would fail on it. Iterative: the depth check must not itself recurse.
    """
    stack: list[tuple[Any, int, str]] = [(value, 1, "")]
    while stack:
        v, depth, where = stack.pop()
        if isinstance(v, str):
            if not v.isascii():
                try:
                    v.encode("utf-8")
                except UnicodeEncodeError:
                    param = where.lstrip(".") or None
                    raise invalid(
                        f"The text in '{param or 'the request'}' holds an unpaired UTF-16 surrogate (an escape "
                        "such as \\ud800 that is not part of a pair); send valid Unicode text.",
                        param,
                    ) from None
            continue
        if isinstance(v, Mapping):
            items: Any = v.items()
        elif isinstance(v, list):
            items = enumerate(v)
        else:
            continue
        if depth > limit:
            raise too_deep()
        for k, child in items:
            if isinstance(k, str) and not k.isascii():
                stack.append((k, depth, where))
            if isinstance(child, (str, Mapping, list)):
                part = f"[{k}]" if isinstance(k, int) else f".{k}"
                stack.append((child, depth + 1, where + part))


def sse(data: Mapping[str, Any], event: str | None = None) -> bytes:
    """One server-sent event (with an `event:` line when named, as the responses API streams)."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return (f"event: {event}\ndata: {text}\n\n" if event else f"data: {text}\n\n").encode("utf-8")


SSE_HEADERS = {"Cache-Control": "no-cache"}


def disconnected_response() -> JSONResponse:
    """What a non-streamed request gets when its client left (nobody reads it; the log says 499)."""
    from starlette.responses import JSONResponse

    return JSONResponse({"error": {"message": "client disconnected"}}, status_code=499)


async def run_to_end(gen: Generation, _request: Request) -> bool:
    """Wait for a non-streamed generation; False (generation cancelled) if the client left.

    The generation watches the connection itself from the moment it was queued (Generation.watch).
    """
    await gen.wait()
    return not gen.disconnected


def stop_if_abandoned(gen: Generation) -> None:
    """A streamed reply ended before its generation did (the client left): stop generating."""
    if not gen.done.is_set():
        gen.disconnected = True
        gen.stop()
