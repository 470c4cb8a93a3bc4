"""POST /v1/chat/completions: one generation answered as a chat.completion object or a stream of chunks."""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from app.core.server.generation import Generation, Outcome, argument_pieces
from app.core.server.parsing import parse_chat_request
from app.core.server.types import GenerationRequest
from app.core.server.wire import SSE_HEADERS, disconnected_response, read_body, run_to_end, sse, stop_if_abandoned

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response

    from app.core.server.app import ApiServer


async def create_chat_completion(server: ApiServer, request: Request) -> Response:
    from starlette.responses import JSONResponse, StreamingResponse

    job = parse_chat_request(await read_body(request), server.reasoning_memory, browsing=server.browsing)
    gen = server.begin(job, request)
    reply = _Reply("chatcmpl-" + secrets.token_hex(12), int(time.time()), server.model_id() or "gpt-oss")
    kind, value = await gen.first_event()
    if kind == "error":
        await gen.wait()
        raise value
    if job.stream:
        return StreamingResponse(_chunks(gen, job, reply), media_type="text/event-stream", headers=SSE_HEADERS)
    if not await run_to_end(gen, request):
        return disconnected_response()
    if gen.outcome.error is not None:
        raise gen.outcome.error
    return JSONResponse(reply.completion(gen.outcome, job.exclude_reasoning))


@dataclass(frozen=True)
class _Reply:
    """What every object of one reply repeats."""

    id: str
    created: int
    model: str

    def completion(self, out: Outcome, exclude_reasoning: bool = False) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": out.content or None}
        if out.reasoning and not exclude_reasoning:
            # Both names: llama.cpp/vLLM/DeepSeek clients read reasoning_content, OpenRouter-style ones reasoning.
            message["reasoning_content"] = message["reasoning"] = out.reasoning
        if out.calls:
            message["tool_calls"] = [c.chat_shape() for c in out.calls]
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "message": message, "finish_reason": out.finish_reason, "logprobs": None}],
            "usage": out.usage_chat(),
        }

    def chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        return sse(
            {
                "id": self.id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
            }
        )

    def usage_chunk(self, out: Outcome) -> bytes:
        return sse(
            {
                "id": self.id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.model,
                "choices": [],
                "usage": out.usage_chat(),
            }
        )


async def _chunks(gen: Generation, job: GenerationRequest, reply: _Reply) -> AsyncIterator[bytes]:
    try:
        yield reply.chunk({"role": "assistant", "content": ""})
        n_calls = 0
        last = ""
        async for kind, value in gen.items():
            if kind == "reasoning":
                if not job.exclude_reasoning:
                    yield reply.chunk({"reasoning_content": value, "reasoning": value})
            elif kind in ("final", "preamble"):
                if kind == "final" and last == "preamble":
                    value = "\n\n" + value  # as in the non-streamed content
                last = kind
                yield reply.chunk({"content": value})
            elif kind == "call":
                # The call's head first, then its arguments in pieces, as OpenAI streams them.
                head = {"index": n_calls, "id": value.id, "type": "function"}
                yield reply.chunk({"tool_calls": [{**head, "function": {"name": value.name, "arguments": ""}}]})
                for piece in argument_pieces(value.arguments):
                    yield reply.chunk({"tool_calls": [{"index": n_calls, "function": {"arguments": piece}}]})
                n_calls += 1
            elif kind == "error":
                yield sse(value.body())
        out = gen.outcome
        if out.error is None:
            yield reply.chunk({}, out.finish_reason)
            if job.include_usage:
                yield reply.usage_chunk(out)
        yield b"data: [DONE]\n\n"
    finally:
        stop_if_abandoned(gen)
