"""The application without its window: one owner for the store, settings, engine, hardware, tools and model loading.

`app.__main__` builds one Runtime and hands it to the window; the UI reads state from it and
forwards intent to it, and long work (`load_job`, `answer_job`, `title_job`) runs in the UI's
workers. No Qt here (tests/core/test_no_qt.py): the runtime is driven the same way from tests,
scripts and the window.

Ownership: the scheduler is the only holder of the engine (`engine` reads it back); the chat,
the API server and the effort lab all generate through `scheduler.client(name)`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.core.bridge import iterate_callbacks
from app.core.engine import EngineError, LoadableEngine, LoadSettings
from app.core.errors import HarmonicaError
from app.core.scheduler import EngineScheduler, SchedulerClient
from app.core.scripted_engine import is_scripted_path
from app.core.session import ChatSession
from app.core.settings import Settings
from app.core.store import ConversationSettings, Store, StoreError
from app.core.tools.chat_files import ChatToolFiles

if TYPE_CHECKING:
    from app.core.hardware import HardwareProfile
    from app.core.planner import Plan, Wishes
    from app.core.remote.connections import Connections, ServerConnection
    from app.core.remote.engine import RemoteTarget
    from app.core.remote.probe import ServerInfo
    from app.core.server import ServerSettings
    from app.core.tools.browser import BrowserSession
    from app.core.tools.registry import ToolRegistry, ToolSession

log = logging.getLogger(__name__)

# The planner's Wishes fields that override its choices (n_ctx and n_batch are not overrides: the
# chat's context size and the batch size are always passed).
OVERRIDE_FIELDS = (
    "n_gpu_layers",
    "n_cpu_moe",
    "flash_attn",
    "kv_type",
    "n_threads",
    "use_mmap",
    "use_mlock",
    "backend",
)


class ModelPathError(HarmonicaError):
    """The path given to open is not a model file Harmonica can load."""


class EngineStartError(HarmonicaError):
    """The inference engine itself could not be created (llama-cpp-python missing or broken)."""


# --- load events (yielded by load_job) -----------------------------------------------------------
@dataclass(frozen=True)
class LoadProgress:
    fraction: float


@dataclass(frozen=True)
class LoadDone:
    info: Any


@dataclass(frozen=True)
class LoadPlanned:
    """The planner's choice for this load (shown while loading, and in the status bar)."""

    plan: Any


LoadEvent = LoadProgress | LoadDone | LoadPlanned


def is_model_file(path: object) -> bool:
    """Whether a model path names a file on disk (a scripted test/demo model's pseudo path does not)."""
    return path is not None and not is_scripted_path(str(path))


def offline_from_env() -> bool:
    """HF_HUB_OFFLINE: no downloads, and the browser tool is hidden. Read from the environment
    here (download.is_offline would import huggingface_hub at start-up)."""
    return any(
        os.environ.get(n, "").strip().upper() in {"1", "ON", "YES", "TRUE"}
        for n in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def default_engine_factory() -> LoadableEngine:
    from app.core.engine import Engine  # imported late: llama_cpp is heavy and may be missing

    return Engine()


def open_store(store: Store | None = None) -> tuple[Store, str]:
    """The user's store and a note for the user when it had to be recovered (a damaged file moved
    aside and salvaged). A file that cannot be written or read still gives a store: a read-only view
    or a temporary one, with `store.problem` saying why and what to do (the window shows it)."""
    if store is not None:
        return store, ""
    opened, report = Store.open_app()
    return opened, report.message if report is not None else ""


def plan_load(path: str, profile: Any, wishes: Any, workers: Any = ()) -> Any:
    """The automatic load settings for `path` on this machine, or EngineError saying why nothing
    fits and what would help: a load that cannot fit is never started."""
    from app.core import planner
    from app.core.engine import check_model_file

    check_model_file(path)  # a damaged or foreign file is reported as such, not as "does not fit"
    plan = planner.plan_for_file(path, profile, wishes, workers)
    if not plan.fits:
        why = " ".join(plan.reasons[-2:]) if plan.reasons else "It does not fit in this computer's memory."
        helps = (" What would help: " + "; ".join(plan.suggestions) + ".") if plan.suggestions else ""
        raise EngineError(f"{why}{helps}")
    return plan


def load_model_job(
    engine: Any,
    path: str,
    settings: LoadSettings | None,
    *,
    cancel: threading.Event,
    scheduler: EngineScheduler | None = None,
    profile: Callable[[], Any] | None = None,
    wishes: Any = None,
    workers: Callable[[], Any] | None = None,
) -> Iterator[LoadEvent]:
    """Load a model, yielding progress; llama.cpp reports progress by callback, so the load runs
    on a helper thread and its callbacks are turned into yields here. With a scheduler, the load
    waits for (and then excludes) every generation and tokenization of the shared engine, and
    hands the loaded engine to it. `settings` None: the planner chooses them for this machine
    (`profile()` gives its hardware)."""
    if settings is None:
        from app.core import hardware

        plan = plan_load(
            path, profile() if profile is not None else hardware.detect(), wishes, workers() if workers else ()
        )
        settings = plan.to_load_settings()
        yield LoadPlanned(plan)

    def load_reporting(emit: Callable[[LoadProgress], None]) -> Any:
        last = -1.0

        def progress(fraction: float) -> bool:
            nonlocal last
            if fraction - last >= 0.01 or fraction >= 1.0:  # llama.cpp calls back thousands of times
                last = fraction
                emit(LoadProgress(float(fraction)))
            return not cancel.is_set()

        def load() -> Any:
            if getattr(engine, "loaded", False):
                engine.unload()  # freeing gigabytes takes a moment: not on the UI thread
            return engine.load(path, settings, progress)

        if scheduler is None:
            return load()
        scheduler.cancel("api")  # a new model: API requests in flight end now
        with scheduler.exclusive("loader", cancel):
            info = load()
            scheduler.engine = engine
        return info

    info = yield from iterate_callbacks(load_reporting, name="model-load")
    if cancel.is_set():
        raise EngineError("Loading was cancelled.")
    yield LoadDone(info)


@dataclass(frozen=True)
class RanOn:
    """What a chat's remembered `runs_on` names, while it can still be used: a model file that
    exists, or a saved connection's model."""

    label: str  # "gpt-oss-20b-mxfp4.gguf" or "gpt-oss-120b on studio-pc"
    path: str | None = None
    connection_id: str | None = None
    model: str | None = None


@dataclass(frozen=True)
class LoadRequest:
    """A load that `prepare_load` checked: the file, the engine to load into, the settings."""

    path: str
    name: str
    engine: LoadableEngine = dataclasses.field(repr=False)
    settings: LoadSettings | None  # None: the planner decides
    wishes: Any


class Runtime:
    """Harmonica's state and services, shared by the window, the API server and the lab.

    `engine_factory` makes the engine on the first load (tests pass a ScriptedEngine); `store`
    defaults to the user's conversation database (opened, or recovered when damaged).
    """

    def __init__(
        self,
        *,
        store: Store | None = None,
        engine_factory: Callable[[], LoadableEngine] | None = None,
        offline: bool | None = None,
    ) -> None:
        self._owns_store = store is None
        self.store, self.startup_note = open_store(store)
        self.settings = Settings.read(self.store)
        self._engine_factory = engine_factory or default_engine_factory
        # One engine, shared fairly by the chat, the API server and the lab (one generation at a time).
        self.scheduler = EngineScheduler()
        self.offline = offline_from_env() if offline is None else offline
        # None: the planner chooses (the normal case); tests and the hardware panel's Advanced
        # section set explicit settings.
        self.load_settings: LoadSettings | None = None
        self.plan: Plan | None = None  # the planner's choice for the last load
        self.profile: HardwareProfile | None = None  # detected once, off the UI thread
        self._profile_lock = threading.Lock()
        self._tool_registry: ToolRegistry | None = None
        self._tool_sessions: dict[int, ToolSession] = {}
        self._tools_lock = threading.Lock()
        # Each chat's tool files live in a scratch folder named by its uid (row ids are reused);
        # folders of chats deleted before a crash go now, but only when the real database is open:
        # a temporary store (or a read-only view) does not list every chat, and the folders of the
        # chats it lacks are not garbage.
        self.tool_files = ChatToolFiles(self.store)
        if self.store.problem is None:
            self.tool_files.sweep()
        self._connections: Connections | None = None
        self.worker_notes: list[str] = []  # why configured GPU workers were not used in the last plan
        self.closed = False

    # --- the engine (held by the scheduler only) ------------------------------------------------
    @property
    def engine(self) -> LoadableEngine | None:
        return self.scheduler.engine

    @property
    def model_info(self) -> Any:
        return getattr(self.engine, "info", None)

    @property
    def model_name(self) -> str | None:
        name = getattr(self.model_info, "name", None)
        return str(name) if name is not None else None

    @property
    def model_loaded(self) -> bool:
        return bool(getattr(self.engine, "loaded", False))

    @property
    def n_ctx(self) -> int:
        return int(getattr(self.engine, "n_ctx", 0) or 0)

    @property
    def active_plan(self) -> Plan | None:
        """The plan the loaded model runs with (None when explicit load settings were used)."""
        return self.plan if self.load_settings is None else None

    def model_file(self) -> str | None:
        """The loaded model's file, else the last one used (what the hardware panel and Models show)."""
        path = getattr(self.model_info, "path", None)
        if is_model_file(path) and getattr(self.model_info, "source", "file") == "file":
            return str(path)
        return self.settings.load.last_model

    def adopt_engine(self, engine: LoadableEngine) -> None:
        """Use an engine that is already loaded (demo mode, the lab, tests)."""
        self.scheduler.engine = engine
        info = engine.info
        if info is not None and info.source == "file":
            self.settings.load.last_model = str(info.path)
            self.settings.save("load")

    def lab_client(self) -> SchedulerClient | None:
        """The effort lab's way to the engine (None while no model is loaded)."""
        return self.scheduler.client("lab") if self.model_info is not None else None

    # --- loading ----------------------------------------------------------------------------------
    def prepare_load(self, path: str | Path, *, context_size: int | None = None) -> LoadRequest:
        """Check `path` and make the engine, at once (the UI reports these errors as they happen);
        the load itself is `load_job(request)`, on a worker. Raises ModelPathError, EngineStartError."""
        p = Path(path)
        scripted = not is_model_file(path)
        if not scripted:
            if p.suffix.lower() != ".gguf":
                raise ModelPathError(
                    f"“{p.name}” is not a GGUF model file. Harmonica opens gpt-oss models in .gguf format."
                )
            if not p.is_file():
                raise ModelPathError(f"The file “{p}” does not exist or cannot be read.")
        engine = self.engine
        if engine is None or self.remote is not None:  # a file needs a local engine, not the connection
            try:
                engine = self._engine_factory()
            except Exception as exc:
                log.error("The inference engine could not start", exc_info=exc)
                raise EngineStartError(f"The inference engine could not start: {exc}") from exc
        settings = self.load_settings
        if settings is not None and context_size and context_size != settings.n_ctx:
            settings = dataclasses.replace(settings, n_ctx=context_size)
        return LoadRequest(str(path), "model" if scripted else p.stem, engine, settings, self.wishes(context_size))

    def load_job(self, request: LoadRequest, *, cancel: threading.Event) -> Iterator[LoadEvent]:
        """Load `request` (a worker runs this): plan, load with progress, remember the model."""
        log.info("Loading %s (%s)", request.path, "planned" if request.settings is None else "explicit settings")
        was_remote = self.engine if self.remote is not None else None  # closed once the file replaced it
        for ev in load_model_job(
            request.engine,
            request.path,
            request.settings,
            cancel=cancel,
            scheduler=self.scheduler,
            profile=self.hardware_profile,
            wishes=request.wishes,
            workers=self.worker_devices,
        ):
            if isinstance(ev, LoadPlanned):
                ev.plan.reasons.extend(self.worker_notes)
                self.plan = ev.plan
                log.info("Load plan: %s", ev.plan.summary())
            elif isinstance(ev, LoadDone) and ev.info.source == "file":
                self.settings.load.last_model = str(ev.info.path)
                self.settings.save("load")
            if isinstance(ev, LoadDone) and self.settings.connections.active is not None:
                self.settings.connections.active = None  # a local model again: start with it next time
                self.settings.save("connections")
            if isinstance(ev, LoadDone) and was_remote is not None and was_remote is not self.engine:
                was_remote.unload()
            yield ev

    def generation_speed(self) -> float | None:
        """Tokens a second to expect now: what the last answer measured, else the load plan's estimate."""
        stats = getattr(self.engine, "last_stats", None)
        measured = float(getattr(stats, "tokens_per_s", 0.0) or 0.0)
        if measured > 0:
            return measured
        plan, path, profile = self.active_plan, self.model_file(), self.profile
        if plan is None or path is None or profile is None:
            return None
        from app.core.planner import model_info_for_file
        from app.core.speed import estimate_speed

        try:
            est = estimate_speed(plan, model_info_for_file(path), profile)
        except (HarmonicaError, OSError, ValueError):
            return None
        return None if est is None else (est.low * est.high) ** 0.5

    # --- connections: models served elsewhere (app/core/remote) --------------------------------------
    @property
    def connections(self) -> Connections:
        """The saved servers and GPU workers, and their keys."""
        if self._connections is None:
            from app.core.remote.connections import Connections

            self._connections = Connections(self.settings)
        return self._connections

    @property
    def remote(self) -> RemoteTarget | None:
        """Where the model runs when it is served by another computer (None: here)."""
        target = getattr(self.engine, "target", None)
        return target if target is not None and self.model_loaded else None

    def where_it_runs(self) -> str | None:
        """The header's words for a remote model ("runs on studio-pc"), None for a local one."""
        target = self.remote
        return f"runs on {target.name}" if target is not None else None

    def engine_ref(self) -> str | None:
        """Where chats run now, as a conversation remembers it: "file:PATH" for a model file,
        "remote:[connection id, model]" for a server's model; None for nothing or a demo engine."""
        if not self.model_loaded:
            return None
        target = self.remote
        if target is not None:
            return "remote:" + json.dumps([target.connection_id, target.model])
        path = getattr(self.model_info, "path", None)
        if getattr(self.model_info, "source", "file") == "file" and is_model_file(path):
            return f"file:{path}"
        return None

    def resolve_ref(self, ref: str) -> RanOn | None:
        """What `ref` (an engine_ref a chat remembered) names, or None when it cannot be used now
        (the file is gone, the connection was removed, the text is not a ref)."""
        kind, _, rest = ref.partition(":")
        if kind == "file" and rest.lower().endswith(".gguf") and is_model_file(rest) and Path(rest).is_file():
            return RanOn(Path(rest).name, path=rest)
        if kind == "remote":
            try:
                cid, model = json.loads(rest)
                conn = self.connections.server(str(cid))
            except (ValueError, TypeError, HarmonicaError):
                return None
            return RanOn(f"{model} on {conn.name}", connection_id=conn.id, model=str(model))
        return None

    def last_remote(self) -> tuple[str, str] | None:
        """(connection id, model) when the model used last ran on another computer, to use it again at start."""
        cid = self.settings.connections.active
        if not cid:
            return None
        try:
            conn = self.connections.server(cid)
        except HarmonicaError:
            return None
        return (conn.id, conn.model) if conn.model else None

    def check_network(self, url: str, what: str = "This connection") -> None:
        """Raise NetworkPolicyError when offline mode forbids reaching `url`."""
        from app.core.remote.netpolicy import check_url

        check_url(url, offline=self.offline, allowed=self.connections.allowed_ranges(), what=what)

    def probe_job(
        self, url: str, key: str, kind: str | None = None, *, cancel: threading.Event
    ) -> Iterator[ServerInfo]:
        """Ask a server what it serves (the connection dialog's Test); a worker runs it."""
        from app.core.remote.probe import probe_server

        self.check_network(url)
        yield probe_server(url, key, kind=kind or None)

    def prepare_connect(self, connection_id: str, model: str) -> ServerConnection:
        """Check at once that a connection may be used now (it exists; offline mode allows it)."""
        conn = self.connections.server(connection_id)
        self.check_network(conn.url, f"The connection “{conn.name}”")
        return conn

    def connect_job(self, conn: ServerConnection, model: str, *, cancel: threading.Event) -> Iterator[LoadEvent]:
        """Use `model` on a server: probe it, then hand the scheduler a RemoteEngine in place of
        the current engine (a local model is unloaded: its memory is freed)."""
        from app.core.remote.engine import RemoteEngine
        from app.core.remote.probe import probe_server

        yield LoadProgress(0.05)
        key = self.connections.key(conn.id)
        info = probe_server(conn.url, key, kind=conn.kind or None, label=conn.name)
        if cancel.is_set():
            raise EngineError("Connecting was cancelled.")
        engine = RemoteEngine.connect(conn.id, conn.name, info, model, key)
        yield LoadProgress(0.6)
        self.scheduler.cancel("api")  # a new model: API requests in flight end now
        with self.scheduler.exclusive("loader", cancel):
            old = self.scheduler.engine
            if old is not None and old.loaded:
                old.unload()
            self.scheduler.engine = engine
        self.plan = None
        self.connections.choose_model(conn.id, model)
        self.settings.connections.active = conn.id
        self.settings.save("connections")
        log.info("Using %s on %s (%s, %s)", model, conn.name, engine.target.kind_label, engine.target.mode_label)
        yield LoadDone(engine.info)

    def worker_devices(self) -> list[Any]:
        """The enabled GPU workers' devices, registered with llama.cpp, with the memory its RPC backend
        reports (a worker thread calls this while planning a load). Unreachable workers are left out
        (logged); with a llama.cpp built without RPC there are none."""
        from app.core.remote import rpc

        workers = self.connections.workers(enabled_only=True)
        self.worker_notes = []
        if not workers:
            return []
        if not rpc.rpc_available():
            self.worker_notes.append(
                "GPU workers are set up, but this llama.cpp was built without the RPC backend, so they are not used."
            )
            return []
        out: list[Any] = []
        for w in workers:
            try:
                self.check_network(f"http://{w.endpoint}", f"The GPU worker {w.label}")
                out.extend(rpc.register(rpc.probe_worker(w.host, w.port, label=w.label)))
            except HarmonicaError as exc:
                log.warning("GPU worker %s left out: %s", w.endpoint, exc)
                self.worker_notes.append(f"Not used: {exc}")
        return out

    # --- hardware and load preferences ------------------------------------------------------------
    def hardware_profile(self) -> HardwareProfile:
        """This machine (detected on first use, from a worker thread; probes can take a second)."""
        with self._profile_lock:
            if self.profile is None:
                from app.core import hardware

                self.profile = hardware.detect()
            return self.profile

    def wishes(self, context_size: int | None = None) -> Wishes:
        """The user's saved load preferences (the hardware panel), with a chat's context size."""
        from app.core.planner import Wishes

        saved = self.settings.load.overrides
        known = {f.name for f in dataclasses.fields(Wishes)}
        unknown = set(saved) - known
        if unknown:
            log.warning("settings: unknown load overrides %s are ignored", sorted(unknown))
        try:
            wishes = Wishes(**{k: v for k, v in saved.items() if k in known})
        except TypeError as exc:
            log.warning("settings: the load overrides cannot be used (%s); the planner decides", exc)
            wishes = Wishes()
        return dataclasses.replace(wishes, n_ctx=context_size) if context_size else wishes

    def save_wishes(self, wishes: Wishes | None) -> bool:
        """Keep the hardware panel's choices; returns whether any of them overrides the planner."""
        if wishes is None:
            return False
        self.settings.load.overrides = {k: v for k, v in dataclasses.asdict(wishes).items() if v is not None}
        self.settings.save("load")
        return any(getattr(wishes, f) is not None for f in OVERRIDE_FIELDS)

    # --- conversations ------------------------------------------------------------------------------
    def new_session(self, conversation_id: int | None = None) -> ChatSession:
        """A chat over the store; a new one starts with the default reasoning effort."""
        session = ChatSession(self.store, conversation_id)
        if conversation_id is None:
            session.set_settings(ConversationSettings(reasoning_effort=self.settings.chat.reasoning_effort))
        return session

    def set_effort(self, session: ChatSession, effort: str) -> None:
        """The composer's slider: the open chat's effort, and the one new chats start with."""
        if session.settings.reasoning_effort != effort:
            session.set_settings(dataclasses.replace(session.settings, reasoning_effort=effort))
        if self.settings.chat.reasoning_effort != effort:
            self.settings.chat.reasoning_effort = effort
            self.settings.save("chat")

    def answer_job(self, session: ChatSession, *, cancel: threading.Event, **kwargs: Any) -> Iterator[Any]:
        """One answer, with the tool loop when tools are on; the tool session (and, the first time,
        the tool registry with the user's tool files) is made here, off the UI thread."""
        ref = self.engine_ref()
        if ref is not None and session.settings.runs_on != ref:
            try:
                session.set_settings(session.settings.ran_on(ref))  # the chat can offer this model again later
            except StoreError as exc:  # a note for later, not worth failing the answer over
                log.warning("could not remember where the chat ran: %s", exc)
        cid = session.ensure()
        tool_session = self.tool_session(cid) if self.settings.tools.enabled else None
        yield from session.generate(self.scheduler.client("chat"), cancel=cancel, tool_session=tool_session, **kwargs)

    def title_job(self, session: ChatSession, *, cancel: threading.Event, date: Any = None) -> Iterator[str]:
        """The model writes a short title for `session` (after its first answer)."""
        yield from session.generate_title(self.scheduler.client("chat"), cancel=cancel, date=date, grammar=None)

    # --- tools ----------------------------------------------------------------------------------------
    @property
    def tool_registry(self) -> ToolRegistry:
        """The app's tools (built on first use: it loads the user's tool files)."""
        with self._tools_lock:
            if self._tool_registry is None:
                from app.core.tools.registry import ToolRegistry

                self._tool_registry = ToolRegistry()
            return self._tool_registry

    @property
    def tools_built(self) -> bool:
        """Whether the tool registry exists yet (reading `tool_registry` builds it)."""
        return self._tool_registry is not None

    def browsing_on(self) -> bool:
        """Whether the model can reach the web now: the one tool the window always mentions."""
        reg = self._tool_registry
        return bool(
            self.settings.tools.enabled
            and reg is not None
            and reg.is_enabled("browser")
            and reg.browser_available(self.offline)
        )

    def tool_session(self, conversation_id: int) -> ToolSession:
        """The tools of one chat (its python kernel keeps state between calls). Any thread."""
        registry = self.tool_registry
        with self._tools_lock:
            ts = self._tool_sessions.get(conversation_id)
            if ts is None:
                from app.core.tools.registry import ToolSession

                ts = self._tool_sessions[conversation_id] = ToolSession(
                    registry,
                    str(conversation_id),
                    offline=self.offline,
                    scratch=self.tool_files.scratch(conversation_id),
                )
            return ts

    def conversation_deleted(self, conversation_id: int) -> None:
        """A chat was deleted (Undo still possible): its kernel and files are set aside, and go
        when `tool_files.finalize()` runs after the Undo grace period."""
        with self._tools_lock:
            self.tool_files.deleted(conversation_id, self._tool_sessions.pop(conversation_id, None))

    def conversation_restored(self, conversation_id: int) -> None:
        """Undo of a deletion: the chat gets its kernel and files back."""
        restored = self.tool_files.restored(conversation_id)
        if restored is not None:
            with self._tools_lock:
                self._tool_sessions[conversation_id] = restored

    def restart_kernel(self, conversation_id: int) -> bool:
        """Restart the python kernel of one chat; False when it had none."""
        ts = self._tool_sessions.get(conversation_id)
        if ts is None:
            return False
        ts.restart_kernel()
        return True

    # --- the API server's settings ----------------------------------------------------------------
    def server_settings(self) -> ServerSettings:
        from app.core.server import ServerSettings

        saved = self.settings.server
        return ServerSettings(
            port=ServerSettings.port if saved.port is None else saved.port,
            api_key=saved.api_key,
            allow_network=saved.allow_network,
            web_search=saved.web_search,
        )

    def save_server_settings(self, settings: ServerSettings) -> None:
        s = self.settings.server
        s.port, s.api_key, s.allow_network = settings.port, settings.api_key, settings.allow_network
        s.web_search = settings.web_search
        self.settings.save("server")

    def api_browser_factory(self) -> Callable[[], BrowserSession] | None:
        """What serves API clients' web_search tools now: Harmonica's browser, only where the user
        allowed it in the API server panel and web browsing is on (and not offline); else None."""
        if not self.settings.server.web_search:
            return None
        reg = self.tool_registry
        if not (self.settings.tools.enabled and reg.is_enabled("browser") and reg.browser_available(self.offline)):
            return None
        s = reg.settings

        def make() -> BrowserSession:
            from app.core.tools.browser import BrowserSession  # httpx and lxml: only when browsing

            return BrowserSession(s.search_endpoint, timeout_s=s.browser_timeout_s)

        return make

    def set_server_enabled(self, on: bool) -> None:
        """Remember whether the server is on, so it is on again at the next start."""
        if self.settings.server.enabled != on:
            self.settings.server.enabled = on
            self.settings.save("server")

    # --- shutdown -----------------------------------------------------------------------------------
    def close(self) -> None:
        """End generations, stop tool sessions and close the store (workers are stopped first)."""
        if self.closed:
            return
        self.closed = True
        self.scheduler.close()
        for ts in list(self._tool_sessions.values()):
            ts.close()
        self.tool_files.finalize(everything=True)  # no Undo after closing
        if self._tool_registry is not None:
            self._tool_registry.close()
        if self._owns_store:
            self.store.close()
