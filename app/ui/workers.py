"""The one way long work runs: a generator on a pool thread, its yields delivered as Qt signals."""

from __future__ import annotations

import threading
import traceback
from collections.abc import Callable, Generator, Iterator
from typing import Any

from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal


class WorkerSignals(QObject):
    """Signals of a GeneratorWorker; they live on the UI thread, so slots run there."""

    started = Signal()
    yielded = Signal(object)
    errored = Signal(object)  # the exception; its traceback text is in exc.__traceback_text__
    finished = Signal()  # always last, after yielded/errored


class GeneratorWorker(QRunnable):
    """Runs `func(*args, cancel=<threading.Event>, **kwargs)`, a generator, off the UI thread.

    Like napari's thread_worker: each yielded value is emitted as `yielded`, an exception as
    `errored`, and `finished` comes last in every case. `quit()` sets the cancel event, which the
    generator is expected to honour (the engine checks it between tokens); the worker also stops
    pulling from the generator and closes it.
    """

    def __init__(
        self, func: Callable[..., Iterator[Any] | Generator[Any, None, Any]], *args: Any, **kwargs: Any
    ) -> None:
        super().__init__()
        self.setAutoDelete(False)  # the owner keeps a reference until `finished`
        self.signals = WorkerSignals()
        self.cancel = threading.Event()
        self._func = func
        self._args = args
        self._kwargs = kwargs
        self._done = threading.Event()

    # Convenience aliases so callers read like napari's API.
    @property
    def yielded(self) -> Any:
        return self.signals.yielded

    @property
    def errored(self) -> Any:
        return self.signals.errored

    @property
    def finished(self) -> Any:
        return self.signals.finished

    @property
    def started(self) -> Any:
        return self.signals.started

    @property
    def is_running(self) -> bool:
        return not self._done.is_set()

    def quit(self) -> None:
        """Ask the work to stop as soon as it can; `finished` still follows."""
        self.cancel.set()

    def wait(self, timeout_s: float | None = None) -> bool:
        """Block until the work ended (tests and shutdown only; never on the UI thread's hot path)."""
        return self._done.wait(timeout_s)

    def _emit(self, signal: Any, *args: Any) -> None:
        try:
            signal.emit(*args)
        except RuntimeError:  # the receiver side is gone (application shutting down)
            self.cancel.set()

    def run(self) -> None:  # runs on the pool thread
        self._emit(self.signals.started)
        gen: Any = None
        try:
            gen = self._func(*self._args, cancel=self.cancel, **self._kwargs)
            for value in gen:
                # After quit() the generator keeps being drained: it winds down by itself (the
                # engine stops within a token) and its last events, e.g. the saved message, matter.
                self._emit(self.signals.yielded, value)
        except BaseException as exc:  # noqa: BLE001 -- report everything; an escaped exception would kill the thread silently
            exc.__traceback_text__ = traceback.format_exc()  # type: ignore[attr-defined]
            self._emit(self.signals.errored, exc)
        finally:
            if gen is not None and hasattr(gen, "close"):
                try:
                    gen.close()
                except Exception:  # noqa: BLE001 - closing is best effort
                    pass
            self._done.set()
            self._emit(self.signals.finished)


_active: set[GeneratorWorker] = set()
_pool: QThreadPool | None = None


def worker_pool() -> QThreadPool:
    """Harmonica's own pool. Not the global one: its size is the core count, so on a 2-core laptop
    a running download and a warm-up would make a generation wait in the queue."""
    global _pool
    if _pool is None:
        _pool = QThreadPool()
        _pool.setMaxThreadCount(32)  # the jobs mostly wait (on llama.cpp, the network, disk)
        _pool.setExpiryTimeout(60_000)
    return _pool


def start_worker(worker: GeneratorWorker, pool: QThreadPool | None = None) -> GeneratorWorker:
    """Start `worker` on the pool and keep it alive until it finishes."""
    _active.add(worker)
    worker.signals.finished.connect(lambda: _active.discard(worker))
    (pool or worker_pool()).start(worker)
    return worker


def active_workers() -> list[GeneratorWorker]:
    return list(_active)


def stop_all(timeout_s: float = 5.0) -> None:
    """Cancel every running worker and wait for them (application shutdown)."""
    for w in list(_active):
        w.quit()
    for w in list(_active):
        w.wait(timeout_s)
