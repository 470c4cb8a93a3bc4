"""The ApiServer: its lifecycle (uvicorn on its own thread), the routes, the request log, and the model it reports."""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from app.core.scheduler import EngineScheduler
from app.core.server.chat_completions import create_chat_completion
from app.core.server.completions import create_completion
from app.core.server.errors import ApiError, ServerError, error_response, exception_handlers, no_model
from app.core.server.generation import Generation
from app.core.server.guards import Guard, RequestRecord, busy
from app.core.server.network import bind, is_loopback_name, lan_addresses
from app.core.server.parsing import ReasoningMemory
from app.core.server.responses import ResponseStore, create_response, get_response
from app.core.server.settings import CLIENT_NAME, LOOPBACK, ServerSettings, ServerTesting
from app.core.server.types import GenerationRequest

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response

    from app.core.engine import ModelInfo

log = logging.getLogger(__name__)

Endpoint = Callable[["ApiServer", "Request"], Awaitable["Response"]]


class ApiServer:
    """The OpenAI-compatible server: build with the shared scheduler, then start()/stop().

    Requests queue behind other generations under the scheduler client name "api". uvicorn runs
    on its own thread with its own event loop; start() returns once the port is listening and
    raises ServerError with a plain message when it cannot (port taken, address unusable).
    """

    def __init__(
        self,
        scheduler: EngineScheduler,
        settings: ServerSettings | None = None,
        *,
        client_name: str = CLIENT_NAME,
        log_size: int = 200,
        testing: ServerTesting | None = None,
    ) -> None:
        self.scheduler = scheduler
        self.settings = settings or ServerSettings()
        self.client_name = client_name
        self.testing = testing
        self.reasoning_memory = ReasoningMemory()
        self.responses = ResponseStore()
        self._log: deque[RequestRecord] = deque(maxlen=log_size)
        self._log_lock = threading.Lock()
        self._log_listeners: list[Callable[[RequestRecord], None]] = []
        self._active: set[Generation] = set()
        self.in_flight = 0  # POST requests being read, queued or generating (the Guard counts them)
        # What serves API clients' web_search tools: a factory of browser sessions (objects with
        # call(function, arguments) -> ToolOutcome and close()), or None (web_search tools are left
        # out, and logged). `browser_provider` is asked at each request, so the user's choices (the
        # panel's web-search switch, web browsing on or off) apply without a restart.
        self.browser: Callable[[], Any] | None = None
        self.browser_provider: Callable[[], Callable[[], Any] | None] | None = None
        self._uvicorn: Any = None
        self._thread: threading.Thread | None = None
        self._port = 0
        self._host = self.settings.host
        self._api_key = self.settings.api_key
        self._startup_error: BaseException | None = None
        self._lifecycle = threading.Lock()
        self.app = self._build_app()

    # --- lifecycle ---------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return (
            self._thread is not None and self._thread.is_alive() and self._uvicorn is not None and self._uvicorn.started
        )

    @property
    def port(self) -> int:
        """The port listened on (the real one when settings.port is 0); 0 when stopped."""
        return self._port if self.running else 0

    @property
    def host(self) -> str:
        return self._host

    @property
    def exposed(self) -> bool:
        """True when other devices on the network can reach the server (the UI warns)."""
        return not is_loopback_name(self._host)

    @property
    def api_key(self) -> str:
        """The key requests must present now (empty: none)."""
        return self._api_key

    @property
    def base_url(self) -> str:
        """What a client on this computer passes as base_url, e.g. http://127.0.0.1:8321/v1."""
        return f"http://{LOOPBACK}:{self._port}/v1" if self.running else ""

    def network_urls(self) -> list[str]:
        """base_url for other devices (only when exposed): one per IPv4 address of this machine."""
        if not (self.running and self.exposed):
            return []
        return [f"http://{ip}:{self._port}/v1" for ip in lan_addresses()]

    def start(self, timeout: float = 10.0) -> None:
        """Bind and start serving with the current settings; raises ServerError."""
        import uvicorn

        with self._lifecycle:
            if self.running:
                return
            s = self.settings
            if not isinstance(s.port, int) or not 0 <= s.port <= 65535:
                raise ServerError(
                    f"{s.port} is not a valid port; use a number from 1024 to 65535 (or 0 for any free port)."
                )
            self._host, self._api_key = s.host, s.api_key.strip()
            sock = bind(self._host, s.port)
            self._port = sock.getsockname()[1]
            config = uvicorn.Config(
                self.app,
                log_config=None,
                access_log=False,
                lifespan="off",
                ws="none",
                http="h11",
                timeout_graceful_shutdown=3,
                server_header=False,
            )
            server = uvicorn.Server(config)
            self._uvicorn = server
            self._startup_error = None

            def serve() -> None:
                try:
                    server.run(sockets=[sock])
                except BaseException as exc:
                    self._startup_error = exc
                    log.exception("API server stopped with an error")
                finally:
                    sock.close()

            self._thread = threading.Thread(target=serve, name="harmonica-api-server", daemon=True)
            self._thread.start()
            self._wait_started(server, self._thread, timeout)
            log.info("API server listening on %s:%d", self._host, self._port)

    def _wait_started(self, server: Any, thread: threading.Thread, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                server.should_exit = True
                err = self._startup_error
                thread.join(2)
                self._thread = None
                raise ServerError(f"The API server could not start: {err or 'it did not come up in time'}.")
            time.sleep(0.01)

    def set_api_key(self, key: str) -> None:
        """Change the required key at once, running or not (empty: no key)."""
        self.settings.api_key = key
        self._api_key = key.strip()

    def stop(self, timeout: float = 8.0) -> None:
        """Stop serving: running and queued API generations are cancelled first."""
        with self._lifecycle:
            server, thread = self._uvicorn, self._thread
            if server is None or thread is None:
                return
            for gen in list(self._active):
                gen.stop()
            server.should_exit = True
            thread.join(timeout / 2)
            if thread.is_alive():
                server.force_exit = True
                thread.join(timeout / 2)
            self._thread = None
            self._uvicorn = None
            log.info("API server stopped")

    # --- request log -----------------------------------------------------------------------------
    def request_log(self) -> list[RequestRecord]:
        with self._log_lock:
            return list(self._log)

    def add_log_listener(self, callback: Callable[[RequestRecord], None]) -> Callable[[], None]:
        """Call `callback(record)` (on the server's thread) after each request; returns a remover."""
        with self._log_lock:
            self._log_listeners.append(callback)

        def remove() -> None:
            with self._log_lock:
                if callback in self._log_listeners:
                    self._log_listeners.remove(callback)

        return remove

    def record(self, rec: RequestRecord) -> None:
        """Add a finished request to the log and tell the listeners."""
        with self._log_lock:
            self._log.append(rec)
            listeners = list(self._log_listeners)
        for cb in listeners:
            try:
                cb(rec)
            except Exception:
                log.exception("request log listener failed")

    @property
    def active_requests(self) -> int:
        """Generations running or queued for this server right now."""
        return len(self._active)

    # --- the ASGI app ------------------------------------------------------------------------------
    def _build_app(self) -> Guard:
        from starlette.applications import Starlette
        from starlette.routing import Route

        def route(path: str, endpoint: Endpoint, method: str) -> Route:
            async def handle(request: Request) -> Response:
                return await endpoint(self, request)

            return Route(path, handle, methods=[method])

        api: list[tuple[str, Endpoint, str]] = [
            ("/models", _models, "GET"),
            ("/models/{model_id:path}", _model, "GET"),
            ("/chat/completions", create_chat_completion, "POST"),
            ("/responses", create_response, "POST"),
            ("/responses/{response_id}", get_response, "GET"),
            ("/completions", create_completion, "POST"),
        ]
        # Every path with and without /v1: some clients are configured with the bare host as base URL.
        routes = [route(prefix + path, fn, method) for prefix in ("/v1", "") for path, fn, method in api]
        routes.append(route("/health", _health, "GET"))
        return Guard(self, Starlette(routes=routes, exception_handlers=exception_handlers()))

    # --- what the endpoints share ----------------------------------------------------------------
    def model_id(self) -> str | None:
        """The id clients name the loaded model by: its file's stem, tidied (None: no model)."""
        info = self.scheduler.engine.info if self.scheduler.engine is not None else None
        if info is None:
            return None
        stem = info.path.stem if info.source == "file" else ""
        stem = re.sub(r"-0000\d-of-0000\d$", "", stem or info.name or "gpt-oss")  # a split model's first part
        return re.sub(r"[^A-Za-z0-9._:-]+", "-", stem).strip("-").lower() or "gpt-oss"

    def model_card(self, model_id: str) -> dict[str, Any]:
        info = self.scheduler.engine.info if self.scheduler.engine is not None else None
        card: dict[str, Any] = {
            "id": model_id,
            "object": "model",
            "created": _created(info),
            "owned_by": "harmonica",
        }
        if info is not None:
            card["context_window"] = info.n_ctx
        return card

    def begin(self, job: GenerationRequest, request: Request) -> Generation:
        """Start generating for a validated request (it queues for its turn); raises ApiError."""
        if self.scheduler.engine is None or self.scheduler.engine.info is None:
            raise no_model()
        if len(self._active) >= self.settings.max_in_flight:
            raise busy(self.settings.max_in_flight)
        testing = self.testing
        forced = testing.grammar(job.body) if testing is not None and testing.grammar is not None else None
        gen = Generation(
            job,
            asyncio.get_running_loop(),
            self.scheduler.client(self.client_name),
            memory=self.reasoning_memory,
            grammar=forced,
            testing=testing,
            browser=self.browser_factory(),
        )
        self._active.add(gen)
        request.scope.setdefault("state", {})["generation"] = gen
        request.scope["state"]["stream"] = job.stream
        for note in job.notes:
            log.info("API request: %s", note)
        gen.watch(request)
        gen.start()
        return gen

    def forget(self, gen: Generation) -> None:
        """A request's generation is over and logged."""
        gen.unwatch()
        self._active.discard(gen)

    def browser_factory(self) -> Callable[[], Any] | None:
        """The factory of browser sessions for a request now, or None (web_search is left out)."""
        if self.browser is not None:
            return self.browser
        return self.browser_provider() if self.browser_provider is not None else None

    @property
    def browsing(self) -> bool:
        """Whether a web_search tool can be served (the user allows it and web browsing is on)."""
        return self.browser_factory() is not None


# --- small endpoints ---------------------------------------------------------------------------------

_STARTED = int(time.time())


def _created(info: ModelInfo | None) -> int:
    """A model's `created`: when its file was written (clients sort and cache by it), else this run's start."""
    if info is None or info.source != "file":
        return _STARTED
    try:
        return int(info.path.stat().st_mtime)
    except OSError:
        return _STARTED


async def _health(server: ApiServer, request: Request) -> Response:
    from starlette.responses import JSONResponse

    # What runs here and who is waiting is for this computer, or for clients that have the key
    # (with a key set, the Guard let only those through); a LAN client without a key learns only "ok".
    client = request.client.host if request.client is not None else ""
    if not server.api_key and not is_loopback_name(client):
        return JSONResponse({"status": "ok"})
    return JSONResponse({"status": "ok", "model": server.model_id(), "queue": server.scheduler.state.describe()})


async def _models(server: ApiServer, _request: Request) -> Response:
    from starlette.responses import JSONResponse

    mid = server.model_id()
    return JSONResponse({"object": "list", "data": [server.model_card(mid)] if mid else []})


async def _model(server: ApiServer, request: Request) -> Response:
    from starlette.responses import JSONResponse

    mid = server.model_id()
    want = request.path_params["model_id"]
    if mid is None or want != mid:
        err = ApiError(
            404,
            f"The model '{want}' does not exist; this server runs '{mid or 'no model'}'.",
            code="model_not_found",
            param="model",
        )
        return error_response(request, err)
    return JSONResponse(server.model_card(mid))
