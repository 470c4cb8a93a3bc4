"""A local OpenAI-compatible HTTP server (chat completions, responses, models) over the shared engine.

Split by job, after llama-cpp-python's server:
- ``settings``: how it listens (port, key, exposure), limits, test hooks;
- ``errors``: ServerError, ApiError and the one mapping of any failure to an OpenAI error body;
- ``types``: the table of request fields (types, ranges) and the parsed GenerationRequest;
- ``parsing``: request bodies → GenerationRequest (messages, tools, tool_choice, effort, stops);
- ``generation``: one request's run_turn on a worker thread, bridged to the event loop;
- ``structured``: structured output and forced tool calls: JSON schema → GBNF over harmony, the
  developer message's Response Formats section, validation and argument repair;
- ``chat_completions``, ``responses``, ``completions``: the generating endpoints and their wire formats;
- ``app``: ApiServer (lifecycle, routes, request log); ``guards``: key, Host and Origin checks,
  CORS, body size and request-count limits, and the request log's records; ``network``: binding and LAN addresses; ``examples``: the
  client snippet the UI shows.
To add an endpoint, write it as ``async def endpoint(server, request)`` in its own module (or
beside its relatives) and add one line to ``ApiServer._build_app``; raise ApiError for any
error the client should see.
"""

from __future__ import annotations

from app.core.server.app import ApiServer
from app.core.server.errors import ApiError, ServerError
from app.core.server.examples import example_code
from app.core.server.guards import RequestRecord
from app.core.server.network import lan_addresses
from app.core.server.parsing import parse_chat_request, parse_responses_request
from app.core.server.settings import DEFAULT_PORT, ServerSettings, ServerTesting, generate_api_key

__all__ = [
    "DEFAULT_PORT",
    "ApiError",
    "ApiServer",
    "RequestRecord",
    "ServerError",
    "ServerSettings",
    "ServerTesting",
    "example_code",
    "generate_api_key",
    "lan_addresses",
    "parse_chat_request",
    "parse_responses_request",
]
