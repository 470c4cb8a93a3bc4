"""POST /v1/completions: a raw prompt in, raw text out, for tools that write and read harmony text themselves.

The prompt is tokenized with special tokens enabled (`<|start|>user<|message|>…` means what it
says) and the output keeps them too, including the stop token that ended it (`<|return|>` or
`<|call|>`), so the caller can parse the harmony itself. Chat templates, tools and structured
output do not apply here.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any

from app.core.server.errors import invalid
from app.core.server.generation import Generation, Outcome
from app.core.server.parsing import _check_model, _stops
from app.core.server.types import DEFAULT_EFFORT, GenerationRequest, read_bool, read_sampling
from app.core.server.wire import SSE_HEADERS, disconnected_response, read_body, run_to_end, sse, stop_if_abandoned

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response

    from app.core.server.app import ApiServer


def parse_completion_request(body: Mapping[str, Any]) -> GenerationRequest:
    """Validate a /v1/completions body (one prompt string)."""
    _check_model(body)
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str) or not prompt:
        raise invalid("'prompt' must be a non-empty string (one prompt per request).", "prompt")
    if body.get("echo"):
        raise invalid("'echo' is not supported; the prompt is yours already.", "echo")
    if body.get("suffix"):
        raise invalid("'suffix' is not supported by gpt-oss.", "suffix")
    opts = body.get("stream_options")
    return GenerationRequest(
        "completions",
        [],
        None,
        DEFAULT_EFFORT,
        read_sampling(body, "completions"),
        read_bool(body, "stream", False),
        include_usage=bool(isinstance(opts, Mapping) and opts.get("include_usage")),
        stop=_stops(body.get("stop")),
        body=body,
        raw_prompt=prompt,
    )


async def create_completion(server: ApiServer, request: Request) -> Response:
    from starlette.responses import JSONResponse, StreamingResponse

    job = parse_completion_request(await read_body(request))
    gen = server.begin(job, request)
    ident = "cmpl-" + secrets.token_hex(12)
    created, model = int(time.time()), server.model_id() or "gpt-oss"
    kind, value = await gen.first_event()
    if kind == "error":
        await gen.wait()
        raise value
    if job.stream:
        return StreamingResponse(
            _chunks(gen, job, ident, created, model), media_type="text/event-stream", headers=SSE_HEADERS
        )
    if not await run_to_end(gen, request):
        return disconnected_response()
    out = gen.outcome
    if out.error is not None:
        raise out.error
    return JSONResponse(_object(ident, created, model, out.final, out.finish_reason, out))


def _object(ident: str, created: int, model: str, text: str, finish: str | None, out: Outcome | None) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "id": ident,
        "object": "text_completion",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "text": text, "finish_reason": finish, "logprobs": None}],
    }
    if out is not None:
        obj["usage"] = {
            "prompt_tokens": out.prompt_tokens,
            "completion_tokens": out.completion_tokens,
            "total_tokens": out.prompt_tokens + out.completion_tokens,
        }
    return obj


async def _chunks(
    gen: Generation, job: GenerationRequest, ident: str, created: int, model: str
) -> AsyncIterator[bytes]:
    try:
        async for kind, value in gen.items():
            if kind == "final":
                yield sse(_object(ident, created, model, value, None, None))
            elif kind == "error":
                yield sse(value.body())
        out = gen.outcome
        if out.error is None:
            last = _object(ident, created, model, "", out.finish_reason, out if job.include_usage else None)
            yield sse(last)
        yield b"data: [DONE]\n\n"
    finally:
        stop_if_abandoned(gen)
