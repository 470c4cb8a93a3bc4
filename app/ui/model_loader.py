"""Loading a model from the window: checks at once, the load itself in a worker (runtime.load_job), its progress as signals."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, Signal

from app.core.engine import EngineError, LoadableEngine
from app.core.errors import HarmonicaError
from app.core.plain_errors import describe_os_error, plain_text
from app.core.runtime import LoadDone, LoadPlanned, LoadProgress, Runtime
from app.ui.notice import Notice, NoticeChannel
from app.ui.workers import GeneratorWorker, start_worker


class ModelLoader(QObject):
    """One load at a time. Signals, in order: started(name) before the worker starts, planned(Plan)
    when the planner chose the settings, progress(fraction), loaded(ModelInfo) on success, and
    finished() in every case; failures are posted as notices."""

    started = Signal(str)
    planned = Signal(object)
    progress = Signal(float)
    loaded = Signal(object)
    failed = Signal()
    finished = Signal()

    def __init__(self, runtime: Runtime, notices: NoticeChannel, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.runtime = runtime
        self.notices = notices
        self._worker: GeneratorWorker | None = None
        self._offer: Notice | None = None  # the "last ran on" notice while it is the one shown
        notices.posted.connect(self._on_posted)

    @property
    def loading(self) -> bool:
        return self._worker is not None

    def report_missing(self, path: str, *, locate: Callable[[], None], download: Callable[[], None]) -> None:
        """The model used last is gone (moved, deleted, a drive not mounted): say so, and offer the ways on."""
        self.notices.error(
            f"The model used last is no longer at {path}. It may have been moved or deleted, or it is on a "
            "drive that is not connected. Locate the file, or download gpt-oss again.",
            actions=[("Locate…", locate), ("Download…", download)],
        )

    def _on_posted(self, notice: Notice) -> None:
        if notice is not self._offer:  # another notice took the bar's place
            self._offer = None

    def offer_where_it_ran(
        self, ref: str, *, use_file: Callable[[str], object], use_remote: Callable[[str, str], object]
    ) -> None:
        """A chat opened that last ran on another model than the one in use: say so, with one click
        to use that model again (nothing switches by itself: loading a file takes seconds)."""
        if self._offer is not None:  # it was about the chat shown before
            self._offer = None
            self.notices.clear()
        now = self.runtime.engine_ref()
        if not ref or now is None or ref == now or self.loading:
            return
        where = self.runtime.resolve_ref(ref)
        if where is None:
            return

        def action() -> None:
            if where.path is not None:
                use_file(where.path)
            elif where.connection_id is not None and where.model is not None:
                use_remote(where.connection_id, where.model)

        self._offer = Notice(f"This chat last ran on {where.label}.", "info", (("Use it again", action),))
        self.notices.post(self._offer)

    def open(self, path: str | Path, *, context_size: int | None = None) -> bool:
        """Start loading `path` in the background; False (with a message) if that can't start."""
        if self.loading:
            self.notices.error("A model is already loading. Cancel it first to open another one.")
            return False
        try:
            request = self.runtime.prepare_load(path, context_size=context_size)
        except HarmonicaError as exc:
            self.notices.error(str(exc))
            return False
        w = GeneratorWorker(self.runtime.load_job, request)
        w.yielded.connect(self._on_event)
        w.errored.connect(self._on_error)
        w.finished.connect(self._on_finished)
        self._worker = w
        self.started.emit(request.name)  # `loading` is already true for whoever listens
        start_worker(w)
        return True

    def connect_remote(self, connection_id: str, model: str) -> bool:
        """Use `model` on a saved server (same signals as a load); False (with a message) if that can't start."""
        if self.loading:
            self.notices.error("A model is already loading. Cancel it first to choose another one.")
            return False
        try:
            conn = self.runtime.prepare_connect(connection_id, model)
        except HarmonicaError as exc:
            self.notices.error(str(exc))
            return False
        w = GeneratorWorker(self.runtime.connect_job, conn, model)
        w.yielded.connect(self._on_event)
        w.errored.connect(self._on_error)
        w.finished.connect(self._on_finished)
        self._worker = w
        self.started.emit(f"{model} on {conn.name}")
        start_worker(w)
        return True

    def cancel(self) -> None:
        if self._worker is not None:
            self._worker.quit()

    def adopt(self, engine: LoadableEngine) -> None:
        """Use an engine that is already loaded (demo mode, tests)."""
        self.runtime.adopt_engine(engine)
        if getattr(engine, "info", None) is not None:
            self.loaded.emit(engine.info)

    def shutdown(self) -> None:
        w = self._worker
        if w is not None:
            w.quit()
            w.wait(10.0)

    def _on_event(self, ev: Any) -> None:
        if isinstance(ev, LoadPlanned):
            self.planned.emit(ev.plan)
        elif isinstance(ev, LoadProgress):
            self.progress.emit(ev.fraction)
        elif isinstance(ev, LoadDone):
            self.loaded.emit(ev.info)

    def _on_error(self, exc: BaseException) -> None:
        self.failed.emit()
        if isinstance(exc, EngineError):
            self.notices.error(f"The model could not be loaded. {exc}", exc)
        elif isinstance(exc, OSError):
            self.notices.error(f"The model could not be loaded: {describe_os_error(exc)}.", exc)
        else:
            self.notices.error(f"The model could not be loaded: {plain_text(exc)}", exc)

    def _on_finished(self) -> None:
        self._worker = None
        self.finished.emit()
