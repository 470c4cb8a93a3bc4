"""Share one loaded engine between the chat window, the API server and others: one generation at a time, fair turns."""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from app.core.engine import (
    EngineError,
    EngineLike,
    GenerationStats,
    LoadableEngine,
    ModelInfo,
    PromptProgressFn,
    Sampling,
    close_stream,
    stream_with_progress,
)
from app.core.errors import HarmonicaError

log = logging.getLogger(__name__)

# How often a queued request looks at its cancel Event. threading cannot wait on a Condition and
# an Event at once; 20 ms is far below what a person or an HTTP client notices.
_CANCEL_POLL_S = 0.02


class TurnCancelled(HarmonicaError):
    """A wait for a turn ended because its cancel Event was set (or the scheduler was closed)."""


@dataclass(frozen=True)
class QueueState:
    """What the queue looks like now (for the UI): who generates, who waits."""

    running: str | None = None  # client name holding the turn
    running_since: float | None = None  # time.monotonic() when that turn began
    waiting: dict[str, int] = field(default_factory=dict)  # client name → requests queued (only > 0)

    @property
    def total_waiting(self) -> int:
        return sum(self.waiting.values())

    def describe(self) -> str:
        """One line in plain words, e.g. "chat is generating; 2 waiting (api 2)"."""
        if self.running is None and not self.waiting:
            return "idle"
        head = f"{self.running} is generating" if self.running else "starting the next request"
        if not self.waiting:
            return head
        parts = ", ".join(f"{name} {n}" for name, n in self.waiting.items())
        return f"{head}; {self.total_waiting} waiting ({parts})"


@dataclass(eq=False)
class _Ticket:
    client: str
    cancel: threading.Event | None
    seq: int
    granted: bool = False
    abandoned: bool = False


class EngineScheduler:
    """Lets several clients use one engine without ever running two generations at once.

    Turns are handed out round-robin between client names ("chat", "api", "lab", ...) and in
    arrival order within one name, so a burst of API requests cannot starve the chat window and
    vice versa. `client(name)` gives an EngineLike proxy that run_turn can drive directly; its
    stream() waits for a turn (without touching the engine's own lock, so the engine's 30 s lock
    timeout never comes into play), holds it while the generator runs, and hands it on when the
    generator finishes, raises or is closed.

    Work that must not overlap any generation or tokenization (loading or unloading a model)
    goes through `exclusive(name)`; every proxy call re-reads `engine`, so a new engine can be
    set between turns.
    """

    def __init__(self, engine: LoadableEngine | None = None) -> None:
        self._engine = engine
        self._cond = threading.Condition(threading.Lock())
        self._queues: dict[str, deque[_Ticket]] = {}
        self._order: list[str] = []  # round-robin order: client names as they first appeared
        self._last_served: str | None = None
        self._running: _Ticket | None = None
        self._running_since: float | None = None
        self._seq = itertools.count()
        self._listeners: list[Callable[[QueueState], None]] = []
        # Held (briefly) around tokenization and stream validation, and for the whole of an
        # exclusive() turn: a model being swapped out must not be read at the same time.
        self._engine_guard = threading.RLock()
        self._epoch = 0  # bumped by exclusive(): a request validated before it must not run after it
        self._closed = False

    # --- the engine --------------------------------------------------------------------------
    @property
    def engine(self) -> LoadableEngine | None:
        return self._engine

    @engine.setter
    def engine(self, engine: LoadableEngine | None) -> None:
        with self._engine_guard:
            self._engine = engine
            self._epoch += 1

    def client(self, name: str) -> SchedulerClient:
        """A proxy with the EngineLike interface whose generations queue under `name`.

        Each call gives a new proxy with its own last_stats; proxies of the same name share one
        FIFO queue.
        """
        if not name or not isinstance(name, str):
            raise ValueError("a scheduler client needs a name")
        return SchedulerClient(self, name)

    # --- queue state -------------------------------------------------------------------------
    @property
    def state(self) -> QueueState:
        with self._cond:
            return self._state_locked()

    def _state_locked(self) -> QueueState:
        running = self._running.client if self._running is not None else None
        waiting = {name: len(q) for name in self._order if (q := self._queues.get(name))}
        return QueueState(running, self._running_since if running else None, waiting)

    def add_listener(self, callback: Callable[[QueueState], None]) -> Callable[[], None]:
        """Call `callback(state)` after every change (from whichever thread changed it).

        Returns a function that removes the listener. Callbacks must be quick and must not call
        back into the scheduler's blocking methods; a UI forwards the state through a signal.
        """
        with self._cond:
            self._listeners.append(callback)

        def remove() -> None:
            with self._cond:
                if callback in self._listeners:
                    self._listeners.remove(callback)

        return remove

    def _notify(self, state: QueueState) -> None:
        for cb in list(self._listeners):
            try:
                cb(state)
            except Exception:
                log.exception("scheduler listener failed")

    # --- turns -------------------------------------------------------------------------------
    def _grant_next_locked(self) -> None:
        """Give the turn to the next waiting ticket, round-robin over client names."""
        if self._running is not None or not self._order:
            return
        n = len(self._order)
        start = (self._order.index(self._last_served) + 1) % n if self._last_served in self._order else 0
        for k in range(n):
            name = self._order[(start + k) % n]
            q = self._queues.get(name)
            while q and q[0].abandoned:
                q.popleft()
            if q:
                ticket = q.popleft()
                ticket.granted = True
                self._running = ticket
                self._running_since = time.monotonic()
                self._last_served = name
                self._cond.notify_all()
                return

    def acquire(self, client: str, cancel: threading.Event | None = None, timeout: float | None = None) -> _Ticket:
        """Wait for a turn; raises TurnCancelled when `cancel` is set first, TimeoutError on timeout.

        Prefer `turn()` or a client's stream(), which always release.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            if self._closed:
                raise TurnCancelled("the scheduler is closed")
            ticket = _Ticket(client, cancel, next(self._seq))
            if client not in self._queues:
                self._queues[client] = deque()
                self._order.append(client)
            self._queues[client].append(ticket)
            self._grant_next_locked()
            state = self._state_locked()
        self._notify(state)
        try:
            with self._cond:
                while not ticket.granted:
                    if self._closed:
                        raise TurnCancelled("the scheduler is closed")
                    if cancel is not None and cancel.is_set():
                        raise TurnCancelled("cancelled while waiting for a turn")
                    wait = _CANCEL_POLL_S if cancel is not None else None
                    if deadline is not None:
                        left = deadline - time.monotonic()
                        if left <= 0:
                            raise TimeoutError(f"no turn within {timeout} s")
                        wait = left if wait is None else min(wait, left)
                    self._cond.wait(wait)
        except BaseException:
            with self._cond:
                if ticket.granted:
                    # Granted in the same instant the wait gave up: hand the turn straight on.
                    self._release_locked(ticket)
                else:
                    ticket.abandoned = True
                    q = self._queues.get(client)
                    if q is not None and ticket in q:
                        q.remove(ticket)
                state = self._state_locked()
            self._notify(state)
            raise
        return ticket

    def _release_locked(self, ticket: _Ticket) -> None:
        if self._running is ticket:
            self._running = None
            self._running_since = None
            self._grant_next_locked()

    def release(self, ticket: _Ticket) -> None:
        with self._cond:
            if self._running is not ticket:
                return
            self._release_locked(ticket)
            state = self._state_locked()
        self._notify(state)

    @contextlib.contextmanager
    def turn(self, client: str, cancel: threading.Event | None = None, timeout: float | None = None) -> Iterator[None]:
        """Hold a turn for arbitrary work: `with scheduler.turn("lab"): ...`."""
        ticket = self.acquire(client, cancel, timeout)
        try:
            yield
        finally:
            self.release(ticket)

    @contextlib.contextmanager
    def exclusive(
        self, client: str, cancel: threading.Event | None = None, timeout: float | None = None
    ) -> Iterator[None]:
        """A turn during which nothing else reads the engine: load, unload or replace the model here.

        Requests validated before it are refused afterwards ("the model changed") rather than
        run against a different model.
        """
        with self.turn(client, cancel, timeout), self._engine_guard:
            try:
                yield
            finally:
                self._epoch += 1

    def cancel(self, client: str | None = None) -> int:
        """Set the cancel Event of running and queued requests (of one client name, or all).

        Returns how many requests were told to stop. Requests started without a cancel Event are
        given one by their proxy, so every generation can be stopped this way.
        """
        with self._cond:
            tickets = [t for q in self._queues.values() for t in q]
            if self._running is not None:
                tickets.append(self._running)
        hit = 0
        for t in tickets:
            if (client is None or t.client == client) and t.cancel is not None and not t.cancel.is_set():
                t.cancel.set()
                hit += 1
        return hit

    def close(self) -> None:
        """Refuse new turns and release every waiter (application shutdown)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self.cancel()


class SchedulerClient:
    """An EngineLike view of the shared engine whose generations wait for their turn."""

    reports_prompt_progress = True  # passed on to the engine when it can (engine.stream_with_progress)

    def __init__(self, scheduler: EngineScheduler, name: str) -> None:
        self._scheduler = scheduler
        self.name = name
        # Stats of this proxy's own last generation, never another client's.
        self.last_stats: GenerationStats | None = None

    def _engine(self) -> LoadableEngine:
        engine = self._scheduler.engine
        if engine is None:
            raise EngineError("No model is loaded.")
        return engine

    @property
    def info(self) -> ModelInfo | None:
        engine = self._scheduler.engine
        return None if engine is None else engine.info

    @property
    def n_ctx(self) -> int:
        engine = self._scheduler.engine
        return 0 if engine is None else engine.n_ctx

    @property
    def loaded(self) -> bool:
        engine = self._scheduler.engine
        return engine is not None and engine.loaded

    def tokenize(self, text: str, *, special: bool = True) -> list[int]:
        with self._scheduler._engine_guard:
            return self._engine().tokenize(text, special=special)

    def detokenize(self, ids: Sequence[int]) -> bytes:
        with self._scheduler._engine_guard:
            return self._engine().detokenize(ids)

    def stream(
        self,
        prompt: str | Sequence[int],
        sampling: Sampling | None = None,
        *,
        cancel: threading.Event | None = None,
        grammar: str | None = None,
        progress: PromptProgressFn | None = None,
    ) -> Iterator[tuple[int, bytes]]:
        """Like Engine.stream: input errors raise here; the generator waits for its turn first.

        While queued, a set `cancel` ends the generator without output (last_stats.stop_reason
        "cancelled"). The turn is held until the generator finishes, raises or is closed, so
        close the generator (or run it to the end) when you are done with it.
        """
        sched = self._scheduler
        cancel = cancel if cancel is not None else threading.Event()
        sampling = sampling or Sampling()
        with sched._engine_guard:
            engine = self._engine()
            epoch = sched._epoch
            # Engine.stream validates now and returns a generator that has not started, so the
            # engine's generation lock is not taken until our turn comes.
            inner = stream_with_progress(engine, prompt, sampling, cancel=cancel, grammar=grammar, progress=progress)
        n_prompt = len(prompt) if not isinstance(prompt, str) else 0
        return self._run(engine, inner, cancel, epoch, n_prompt)

    def _run(
        self, engine: EngineLike, inner: Iterator[tuple[int, bytes]], cancel: threading.Event, epoch: int, n_prompt: int
    ) -> Iterator[tuple[int, bytes]]:
        sched = self._scheduler
        try:
            ticket = sched.acquire(self.name, cancel)
        except TurnCancelled:
            _close(inner)
            self.last_stats = GenerationStats(prompt_tokens=n_prompt, stop_reason="cancelled")
            return
        except BaseException:
            _close(inner)
            raise
        before = engine.last_stats
        try:
            if sched._epoch != epoch or sched.engine is not engine:
                raise EngineError("The model was changed while this request waited for its turn; send it again.")
            yield from inner
        finally:
            _close(inner)  # the engine's own finally runs here: its lock is free before the next turn
            stats = engine.last_stats
            # Engines make a new stats object per generation; the same object means this one never ran.
            if stats is not None and stats is not before:
                self.last_stats = dataclasses.replace(stats)
            else:
                self.last_stats = GenerationStats(prompt_tokens=n_prompt, stop_reason="cancelled")
            sched.release(ticket)


def _close(stream: Iterator[tuple[int, bytes]]) -> None:
    try:
        close_stream(stream)
    except Exception:
        log.exception("closing a generation failed")


__all__ = ["EngineScheduler", "QueueState", "SchedulerClient", "TurnCancelled"]
