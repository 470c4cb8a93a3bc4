"""Errors of the API server and the one mapping from any failure to an OpenAI-style error body."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from app.core.chat import MIN_ANSWER_TOKENS, ChatError, ContextOverflowError
from app.core.engine import EngineError
from app.core.errors import HarmonicaError

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import JSONResponse

log = logging.getLogger(__name__)


class ServerError(HarmonicaError):
    """The server could not start (port taken, bad address); the message is for people."""


class ApiError(HarmonicaError):
    """An error answered in OpenAI's shape: {"error": {"message", "type", "param", "code"}}."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers or {}  # extra response headers, e.g. Retry-After on a 429

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def invalid(message: str, param: str | None = None, code: str | None = None) -> ApiError:
    """A 400 naming the request parameter at fault."""
    return ApiError(400, message, param=param, code=code)


def no_model() -> ApiError:
    return ApiError(
        503,
        "No model is loaded in Harmonica. Open a model in the app first.",
        type="server_error",
        code="model_not_loaded",
    )


def api_error_for(exc: BaseException) -> ApiError:
    """Any failure of a request as the error its client gets: what the user can fix is a 4xx, the rest 5xx."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, ContextOverflowError):
        # OpenAI's wording first: LiteLLM, LangChain and others recognise a context error by it.
        message = (
            f"This model's maximum context length is {exc.n_ctx} tokens. However, your messages resulted in "
            f"{exc.prompt_tokens} tokens (and at least {MIN_ANSWER_TOKENS} more are needed for the answer). "
            "Please reduce the length of the messages, or reload the model in Harmonica with a larger context "
            "(code: context_length_exceeded)."  # LangChain looks for the code in the message text
        )
        return ApiError(400, message, param="messages", code="context_length_exceeded")
    text = str(exc)
    if "No model is loaded" in text:
        return no_model()
    if isinstance(exc, (ChatError, EngineError)):
        return ApiError(400, text)
    log.error("API generation failed", exc_info=exc)
    return ApiError(500, f"The server failed while generating: {text}", type="server_error")


def error_response(request: Request, err: ApiError) -> JSONResponse:
    """The HTTP answer for an error; the request log notes its message."""
    from starlette.responses import JSONResponse

    request.scope.setdefault("state", {})["note"] = err.message
    return JSONResponse(err.body(), status_code=err.status, headers=err.headers or None)


# --- Starlette exception handlers: every error leaves the app in OpenAI's shape ---------------------

_HTTP_MESSAGES = {
    404: "Unknown path. This server offers /v1/models, /v1/chat/completions, /v1/responses and /v1/completions.",
    405: "This path does not accept that HTTP method.",
}


async def _api_error(request: Request, exc: Exception) -> JSONResponse:
    return error_response(request, api_error_for(exc))


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    from starlette.exceptions import HTTPException

    assert isinstance(exc, HTTPException)
    kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
    message = _HTTP_MESSAGES.get(exc.status_code, str(exc.detail))
    return error_response(request, ApiError(exc.status_code, message, type=kind))


async def _server_error(_request: Request, exc: Exception) -> JSONResponse:
    from starlette.responses import JSONResponse

    log.error("API request failed", exc_info=exc)
    return JSONResponse(ApiError(500, f"Internal error: {exc}", type="server_error").body(), status_code=500)


def exception_handlers() -> dict[Any, Any]:
    """Starlette's exception_handlers: ApiError raised by a route, HTTP errors, and anything else."""
    from starlette.exceptions import HTTPException

    return {ApiError: _api_error, HTTPException: _http_error, Exception: _server_error}
