"""POST /v1/responses: one generation answered as a response object or a stream of typed events, plus stored responses.

Stored responses keep the conversation so far (the request's messages and the answer) for a later
request's previous_response_id; a GET of a stored response would read the same store.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from app.core.server.errors import ApiError, invalid
from app.core.server.generation import Call, Generation, Outcome, argument_pieces
from app.core.server.parsing import parse_responses_request
from app.core.server.settings import MAX_STORED_RESPONSES
from app.core.server.types import GenerationRequest
from app.core.server.wire import SSE_HEADERS, disconnected_response, read_body, run_to_end, sse, stop_if_abandoned

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response

    from app.core.server.app import ApiServer


class ResponseStore:
    """Stored responses' conversations, by response id (the newest MAX_STORED_RESPONSES)."""

    def __init__(self, size: int = MAX_STORED_RESPONSES) -> None:
        self._items: OrderedDict[str, list[dict[str, Any]]] = OrderedDict()
        self._objects: dict[str, dict[str, Any]] = {}  # the response objects, for GET /v1/responses/{id}
        self._size = size
        self._lock = threading.Lock()

    def response(self, response_id: str) -> dict[str, Any] | None:
        with self._lock:
            return self._objects.get(response_id)

    def conversation(self, response_id: Any) -> list[dict[str, Any]] | None:
        if not isinstance(response_id, str):
            return None
        with self._lock:
            return self._items.get(response_id)

    def remember(self, response_id: str, job: GenerationRequest, out: Outcome, obj: dict[str, Any]) -> None:
        """Keep a stored response (its object, and its conversation for previous_response_id)."""
        if not job.store:
            return
        convo = [dict(m) for m in job.input_messages]
        if out.calls:
            for k, c in enumerate(out.calls):
                msg: dict[str, Any] = {"role": "assistant", "tool_calls": [c.chat_shape()]}
                if k == 0 and out.reasoning:
                    msg["thinking"] = out.reasoning
                convo.append(msg)
        elif out.content:
            convo.append({"role": "assistant", "content": out.content})
        with self._lock:
            self._items[response_id] = convo
            self._objects[response_id] = obj
            while len(self._items) > self._size:
                old, _ = self._items.popitem(last=False)
                self._objects.pop(old, None)


async def create_response(server: ApiServer, request: Request) -> Response:
    from starlette.responses import JSONResponse, StreamingResponse

    body = await read_body(request)
    history = None
    prev = body.get("previous_response_id")
    if prev is not None:
        history = server.responses.conversation(prev)
        if history is None:
            raise invalid(f"Previous response with id {json.dumps(prev)} not found.", "previous_response_id")
    job = parse_responses_request(body, server.reasoning_memory, history, browsing=server.browsing)
    gen = server.begin(job, request)
    meta = _Response("resp_" + secrets.token_hex(16), time.time(), server.model_id() or "gpt-oss", job)
    kind, value = await gen.first_event()
    if kind == "error":
        await gen.wait()
        raise value
    if job.stream:
        events = _events(gen, meta, server.responses)
        return StreamingResponse(events, media_type="text/event-stream", headers=SSE_HEADERS)
    if not await run_to_end(gen, request):
        return disconnected_response()
    out = gen.outcome
    if out.error is not None:
        raise out.error
    status = _finished_status(out)
    obj = meta.object(status, output_items(out, status, job), out.usage_responses())
    server.responses.remember(meta.id, job, out, obj)
    return JSONResponse(obj)


async def get_response(server: ApiServer, request: Request) -> Response:
    """GET /v1/responses/{id}: a stored response, as it was returned."""
    from starlette.responses import JSONResponse

    rid = request.path_params["response_id"]
    obj = server.responses.response(rid)
    if obj is None:
        raise ApiError(
            404, f"No stored response with id {json.dumps(rid)}.", type="not_found_error", param="response_id"
        )
    return JSONResponse(obj)


def _finished_status(out: Outcome) -> str:
    return "incomplete" if out.finish_reason == "length" else "completed"


@dataclass(frozen=True)
class _Response:
    """One response's identity and request, which every response object of the reply repeats."""

    id: str
    created: float
    model: str
    job: GenerationRequest

    def object(
        self, status: str, output: list[dict[str, Any]], usage: dict[str, Any] | None, error: ApiError | None = None
    ) -> dict[str, Any]:
        job, body = self.job, self.job.body
        text_cfg = body.get("text")
        fmt = text_cfg.get("format") if isinstance(text_cfg, Mapping) else None
        if not isinstance(fmt, Mapping):
            fmt = {"type": "text"}
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.created,
            "status": status,
            "model": self.model,
            "output": output,
            "usage": usage,
            "error": {"code": "server_error", "message": error.message} if error else None,
            "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
            "instructions": body.get("instructions"),
            "metadata": body.get("metadata") or {},
            "parallel_tool_calls": False,
            "tool_choice": body.get("tool_choice") or "auto",
            "tools": job.echo_tools,
            "temperature": job.sampling.temperature,
            "top_p": job.sampling.top_p,
            "max_output_tokens": job.sampling.max_tokens,
            "reasoning": {"effort": job.effort, "summary": job.reasoning_summary},
            "text": {"format": fmt},
            "previous_response_id": body.get("previous_response_id"),
            "store": job.store,
            "truncation": "disabled",
            "completed_at": time.time() if status in ("completed", "incomplete") else None,
        }


# --- output items ----------------------------------------------------------------------------------


# reasoning.summary "auto" and "concise": the reasoning's first paragraph, cut to this length.
SUMMARY_CHARS = 400


def reasoning_summary(text: str, mode: str | None) -> str | None:
    """The summary a client asked for: "detailed" is the raw reasoning itself; "auto" and "concise"
    its opening (gpt-oss writes no separate summary, and a second generation would cost a turn)."""
    if mode is None or not text.strip():
        return None
    if mode == "detailed":
        return text
    first = text.strip().split("\n\n", 1)[0]
    return first if len(first) <= SUMMARY_CHARS else first[: SUMMARY_CHARS - 1].rstrip() + "…"


def _wants_encrypted(job: GenerationRequest) -> bool:
    """include: ["reasoning.encrypted_content"] (Codex, store=false): the client keeps the reasoning
    and sends it back with the tool results, as gpt-oss needs during a tool loop. Nothing here is
    secret from the user, so the "encrypted" content is the reasoning itself."""
    include = job.body.get("include")
    return isinstance(include, list) and "reasoning.encrypted_content" in include


def _reasoning_item(text: str, status: str, summary: str | None = None) -> dict[str, Any]:
    # An item opened for streaming starts empty; its text arrives as deltas and fills it when done.
    content = [] if status == "in_progress" else [{"type": "reasoning_text", "text": text}]
    return {
        "id": "rs_" + secrets.token_hex(12),
        "type": "reasoning",
        "summary": [{"type": "summary_text", "text": summary}] if summary else [],
        "content": content,
        "status": status,
    }


def _message_item(text: str, phase: str, status: str) -> dict[str, Any]:
    content = [] if status == "in_progress" else [_output_text(text)]
    return {
        "id": "msg_" + secrets.token_hex(12),
        "type": "message",
        "role": "assistant",
        "status": status,
        "content": content,
        "phase": phase,
    }


def _output_text(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _call_item(c: Call, arguments: str, status: str) -> dict[str, Any]:
    item = {
        "id": c.item_id,
        "type": "function_call",
        "call_id": c.id,
        "name": c.name,
        "arguments": arguments,
        "status": status,
    }
    if c.namespace is not None:
        item["namespace"] = c.namespace
    return item


def output_items(out: Outcome, status: str, job: GenerationRequest) -> list[dict[str, Any]]:
    """Responses API output items for a finished generation."""
    items: list[dict[str, Any]] = []
    if out.reasoning and not job.exclude_reasoning:
        item = _reasoning_item(out.reasoning, "completed", reasoning_summary(out.reasoning, job.reasoning_summary))
        if _wants_encrypted(job):
            item["encrypted_content"] = out.reasoning
        items.append(item)
    if out.preamble:
        items.append(_message_item(out.preamble, "commentary", "completed"))
    items += [_call_item(c, c.arguments, "completed") for c in out.calls]
    if out.final:
        items.append(_message_item(out.final, "final_answer", "completed" if status == "completed" else "incomplete"))
    return items


# --- streaming ---------------------------------------------------------------------------------------

# Text kinds of the generation queue → the output item that carries them.
_PHASES = {"preamble": "commentary", "final": "final_answer"}


@dataclass
class _EventWriter:
    """Writes the responses API's event stream: numbered events, output items opened and closed as text moves."""

    response: _Response
    output: list[dict[str, Any]] = field(default_factory=list)
    _seq: int = 0
    _open: dict[str, Any] | None = None  # the item whose text is streaming
    _open_kind: str | None = None
    _text: str = ""

    def event(self, kind: str, **data: Any) -> bytes:
        payload = {"type": kind, "sequence_number": self._seq, **data}
        self._seq += 1
        return sse(payload, kind)

    def snapshot(self, status: str, out: Outcome | None = None, error: ApiError | None = None) -> dict[str, Any]:
        usage = out.usage_responses() if out is not None else None
        return self.response.object(status, self.output if out is not None else [], usage, error)

    def text(self, kind: str, delta: str) -> list[bytes]:
        """A reasoning, preamble or answer delta, opening a new output item when the kind changes."""
        chunks = [] if self._open_kind == kind else self.close_item() + self._open_item(kind)
        assert self._open is not None
        self._text += delta
        where = {"item_id": self._open["id"], "output_index": len(self.output) - 1, "content_index": 0}
        if kind == "reasoning":
            chunks.append(self.event("response.reasoning_text.delta", **where, delta=delta))
        else:
            chunks.append(self.event("response.output_text.delta", **where, delta=delta, logprobs=[]))
        return chunks

    def _open_item(self, kind: str) -> list[bytes]:
        if kind == "reasoning":
            item = _reasoning_item("", "in_progress")
            part: dict[str, Any] = {"type": "reasoning_text", "text": ""}
        else:
            item = _message_item("", _PHASES[kind], "in_progress")
            part = _output_text("")
        self.output.append(item)
        self._open, self._open_kind = item, kind
        idx = len(self.output) - 1
        return [
            self.event("response.output_item.added", output_index=idx, item=dict(item)),
            self.event("response.content_part.added", item_id=item["id"], output_index=idx, content_index=0, part=part),
        ]

    def close_item(self) -> list[bytes]:
        item, text = self._open, self._text
        if item is None:
            return []
        where = {"item_id": item["id"], "output_index": len(self.output) - 1, "content_index": 0}
        index = where["output_index"]
        if item["type"] == "reasoning":
            part: dict[str, Any] = {"type": "reasoning_text", "text": text}
            chunks = [self.event("response.reasoning_text.done", **where, text=text)]
        else:
            part = _output_text(text)
            chunks = [self.event("response.output_text.done", **where, text=text, logprobs=[])]
        item["content"] = [part]
        item["status"] = "completed"
        if item["type"] == "reasoning" and _wants_encrypted(self.response.job):
            item["encrypted_content"] = text
        chunks.append(self.event("response.content_part.done", **where, part=part))
        summary = reasoning_summary(text, self.response.job.reasoning_summary) if item["type"] == "reasoning" else None
        if summary:
            chunks += self._summary(item, index, summary)
        chunks.append(self.event("response.output_item.done", output_index=index, item=item))
        self._open, self._open_kind, self._text = None, None, ""
        return chunks

    def _summary(self, item: dict[str, Any], index: int, summary: str) -> list[bytes]:
        """The reasoning summary's events (Codex and others show these rather than the raw reasoning)."""
        part = {"type": "summary_text", "text": summary}
        item["summary"] = [part]
        where = {"item_id": item["id"], "output_index": index, "summary_index": 0}
        return [
            self.event("response.reasoning_summary_part.added", **where, part={"type": "summary_text", "text": ""}),
            self.event("response.reasoning_summary_text.delta", **where, delta=summary),
            self.event("response.reasoning_summary_text.done", **where, text=summary),
            self.event("response.reasoning_summary_part.done", **where, part=part),
        ]

    def call(self, c: Call) -> list[bytes]:
        chunks = self.close_item()
        item = _call_item(c, "", "in_progress")
        self.output.append(item)
        idx = len(self.output) - 1
        chunks += [
            self.event("response.output_item.added", output_index=idx, item=dict(item)),
            *(
                self.event("response.function_call_arguments.delta", item_id=c.item_id, output_index=idx, delta=piece)
                for piece in argument_pieces(c.arguments)
            ),
            self.event(
                "response.function_call_arguments.done",
                item_id=c.item_id,
                output_index=idx,
                arguments=c.arguments,
                name=c.name,
            ),
        ]
        item.update(arguments=c.arguments, status="completed")
        chunks.append(self.event("response.output_item.done", output_index=idx, item=item))
        return chunks


async def _events(gen: Generation, meta: _Response, store: ResponseStore) -> AsyncIterator[bytes]:
    w = _EventWriter(meta)
    try:
        yield w.event("response.created", response=w.snapshot("in_progress"))
        yield w.event("response.in_progress", response=w.snapshot("in_progress"))
        failure: ApiError | None = None
        async for kind, value in gen.items():
            chunks: list[bytes] = []
            if kind == "reasoning" and meta.job.exclude_reasoning:
                continue
            if kind in ("reasoning", "final", "preamble"):
                chunks = w.text(kind, value)
            elif kind == "call":
                chunks = w.call(value)
            elif kind == "error":
                failure = value
            for c in chunks:
                yield c
        for c in w.close_item():
            yield c
        out = gen.outcome
        err = failure or out.error
        if err is not None:
            yield w.event("error", code=err.code or err.type, message=err.message, param=err.param)
            yield w.event("response.failed", response=w.snapshot("failed", out, err))
            return
        status = _finished_status(out)
        final = w.snapshot(status, out)
        store.remember(meta.id, meta.job, out, final)
        yield w.event("response.completed" if status == "completed" else "response.incomplete", response=final)
    finally:
        stop_if_abandoned(gen)
