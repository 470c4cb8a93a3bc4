"""The effort lab's window: runs prompts or a problem set at each effort and records them; the setup column
(ui/lab_setup.py) and the results (ui/lab_results.py, ui/lab_cards.py) are its parts."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import QSize, Qt, QTimer, Signal
from PySide6.QtGui import QCloseEvent, QShowEvent
from PySide6.QtWidgets import QFileDialog, QFrame, QHBoxLayout, QWidget

from app.core import lab
from app.core.filehash import HashDone, HashProgress, cached_sha256, hash_events
from app.core.lab import (
    Experiment,
    ExperimentStarted,
    ExperimentStopped,
    LabError,
    ModelRef,
    Progress,
    RunDelta,
    RunFinished,
    RunStarted,
)
from app.core.plain_errors import describe_error
from app.ui import style
from app.ui.lab_cards import RunCard, format_duration
from app.ui.lab_results import LabResultsView
from app.ui.lab_setup import LabSetupPanel
from app.ui.markdown_view import Throttle
from app.ui.workers import GeneratorWorker, start_worker

__all__ = ["CompareWindow", "RunCard", "format_duration"]

EngineProvider = Callable[[], Any]
REFRESH_MS = 150  # figures, charts and the table are rebuilt at most this often while running


class CompareWindow(QWidget):
    """The effort lab. `engine_provider()` returns the loaded engine (EngineLike) or None.

    Signals: busy_changed(bool) while an experiment uses the engine (the chat must not generate
    meanwhile), run_finished(RunResult), experiment_finished(Experiment) when a runner stops.
    The main window calls refresh_model() after loading a model and set_engine_busy() while chat
    generates.
    """

    busy_changed = Signal(bool)
    run_finished = Signal(object)
    experiment_finished = Signal(object)

    def __init__(self, engine_provider: EngineProvider, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowFlag(Qt.WindowType.Window, True)
        self.setObjectName("CompareWindow")
        self.setWindowTitle("Effort lab — Harmonica")
        self.resize(1280, 860)
        self._engine_provider = engine_provider
        self.experiment: Experiment | None = None
        self._worker: GeneratorWorker | None = None
        self._hash_worker: GeneratorWorker | None = None
        self._hash_path: str | None = None
        self._hash_fraction: float | None = None
        self._hash_pause = threading.Event()
        self._model_sha: tuple[str, str] | None = None
        self._engine_busy_reason = ""
        self._last_progress: Progress | None = None
        self._last_progress_t = 0.0
        self._stop_reason = ""
        self._refresh = Throttle(self.refresh_results, REFRESH_MS, self)

        # The lab needs room (the form beside charts and run cards); on a smaller screen (or at 2×)
        # the whole of it scrolls rather than the window growing off the screen.
        _page, scroll, body = style.scroll_page(self, "LabBody")
        scroll.setObjectName("LabWindowScroll")
        outer = QHBoxLayout(body)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.setSpacing(0)
        self.setup = LabSetupPanel()
        outer.addWidget(self.setup)
        sep = QFrame(objectName="LabSeparator")
        sep.setFixedWidth(1)
        outer.addWidget(sep)
        self.results = LabResultsView()
        outer.addWidget(self.results, 1)
        s = self.setup
        s.changed.connect(self.update_controls)
        s.start_requested.connect(lambda: self.start())
        s.cancel_requested.connect(self.cancel)
        s.resume_requested.connect(lambda: self.resume())
        s.open_requested.connect(self._ask_open)
        s.save_requested.connect(self._ask_save)
        s.export_requested.connect(self._ask_export)
        self.results.export_charts_requested.connect(self._ask_export_charts)

        self._eta_timer = QTimer(self)
        self._eta_timer.setInterval(1000)
        self._eta_timer.timeout.connect(self._tick_eta)
        self.update_controls()
        self.refresh_results()
        self.results.rebuild_grid()

    def import_problem_set(self, path: str | Path) -> Any:
        """Import a JSONL problem set into the setup column (see LabSetupPanel.import_problem_set)."""
        return self.setup.import_problem_set(path)

    def _why_not_start(self) -> str:
        if self.running:
            return "An experiment is running."
        if self.engine() is None:
            return "Load a model first (File → Open model… in the main window)."
        if self._engine_busy_reason:
            return self._engine_busy_reason
        return ""

    def update_controls(self) -> None:
        """Enable what can be done now (the form, Start/Cancel/Resume, saving and exports)."""
        exp = self.experiment
        self.setup.update_controls(self.running, self._why_not_start(), exp)
        self.results.chart_export.setEnabled(exp is not None and bool(exp.results()))

    def set_experiment(self, exp: Experiment) -> None:
        self.experiment = exp
        self._last_progress = None
        self._apply_known_sha(exp)
        self.results.set_experiment(exp)
        self.update_controls()

    def refresh_results(self) -> None:
        """Rebuild the figures, charts and table (throttled while running)."""
        self.results.refresh()
        self.update_controls()

    # --- engine and model -----------------------------------------------------------------------
    def engine(self) -> Any:
        try:
            e = self._engine_provider()
        except Exception:  # noqa: BLE001 - a provider that fails means no engine
            return None
        return e if e is not None and getattr(e, "info", None) is not None else None

    def set_expected_speed(self, tokens_per_s: float | None) -> None:
        """The model's speed here (measured, or the plan's estimate): the form says how long a run takes."""
        self.setup.tokens_per_s = tokens_per_s
        self.update_controls()

    def set_engine_busy(self, busy: bool, reason: str = "The chat is generating an answer.") -> None:
        """The main window says the engine is in use elsewhere; Start waits until it is free."""
        self._engine_busy_reason = reason if busy else ""
        self.update_controls()

    @property
    def running(self) -> bool:
        return self._worker is not None

    def refresh_model(self) -> None:
        """Show the loaded model and compute its SHA-256 in the background (cached per file)."""
        e = self.engine()
        info = e.info if e is not None else None
        if info is None:
            self.setup.model_label.setText("No model loaded")
            self.update_controls()
            return
        ref = ModelRef.from_info(info)
        self.update_controls()
        if ref.is_file:
            digest = cached_sha256(ref.path)
            if digest is not None:
                self._on_hash(HashDone(ref.path, digest))
            elif self._hash_path != ref.path:
                self._start_hash(ref.path)
        self._show_model()

    def _start_hash(self, path: str) -> None:
        if self._hash_worker is not None:
            self._hash_worker.quit()
        self._hash_path = path
        self._hash_fraction = 0.0
        w = GeneratorWorker(hash_events, path, pause=self._hash_pause)
        w.yielded.connect(self._on_hash)
        w.errored.connect(lambda exc: self._hash_failed(path, exc))
        w.finished.connect(lambda w=w: self._hash_done(w))
        self._hash_worker = start_worker(w)

    def _hash_done(self, w: GeneratorWorker) -> None:
        if self._hash_worker is w:
            self._hash_worker = None
            if self._hash_fraction is not None and self._hash_fraction < 1.0:
                self._hash_path = None  # cancelled: a later refresh_model() starts again
            self._hash_fraction = None
            self._show_model()

    def _hash_failed(self, path: str, exc: BaseException) -> None:
        self._hash_fraction = None
        self.setup.model_label.setText(f"{Path(path).name}: the SHA-256 could not be computed ({describe_error(exc)}).")

    def _on_hash(self, ev: object) -> None:
        if isinstance(ev, HashProgress):
            self._hash_fraction = ev.fraction
        elif isinstance(ev, HashDone):
            self._hash_fraction = 1.0
            self._model_sha = (ev.path, ev.sha256)
            if self.experiment is not None:
                self.experiment.set_model_sha256(ev.path, ev.sha256)
        self._show_model()

    def model_sha256(self, path: str) -> str | None:
        """The digest of `path` if this window computed (or found cached) it."""
        got = self._model_sha
        return got[1] if got and path and Path(got[0]) == Path(path) else None

    def _apply_known_sha(self, exp: Experiment) -> None:
        m = exp.spec.model
        sha = self.model_sha256(m.path) if m is not None else None
        if m is not None and sha:
            exp.set_model_sha256(m.path, sha)

    def _show_model(self) -> None:
        e = self.engine()
        if e is None:
            self.setup.model_label.setText("No model loaded")
            return
        ref = ModelRef.from_info(e.info)
        text = f"Model: {ref.name or ref.file}"
        if ref.is_file:
            sha = self.model_sha256(ref.path)
            if sha:
                text += f" · SHA-256 {sha[:12]}…"
                self.setup.model_label.setToolTip(f"{ref.path}\nSHA-256 {sha}")
            elif self._hash_fraction is not None:
                state = "paused while runs are measured" if self._hash_pause.is_set() else f"{self._hash_fraction:.0%}"
                text += f" · computing SHA-256 ({state})"
        self.setup.model_label.setText(text)

    # --- running --------------------------------------------------------------------------------
    def start(self, experiment: Experiment | None = None) -> bool:
        """Start a new experiment (from the form unless given); False with a notice if it cannot."""
        blocked = self._why_not_start()
        if blocked:
            self.setup.notice.show_message(blocked, "error")
            return False
        try:
            exp = experiment or self.setup.build_experiment()
        except LabError as e:
            self.setup.notice.show_message(str(e), "error")
            return False
        if exp.path is None:
            exp.path = lab.default_experiment_path(exp.spec)
        if experiment is not None:
            self.setup.fill_form(exp)  # the form shows what runs
        self.set_experiment(exp)
        return self._run()

    def resume(self) -> bool:
        """Continue the current experiment: finished runs are skipped."""
        blocked = self._why_not_start()
        if blocked or self.experiment is None:
            self.setup.notice.show_message(blocked or "There is no experiment to resume.", "error")
            return False
        if self.experiment.complete:
            self.setup.notice.show_message("Every run of this experiment is finished.", "info")
            return False
        if self.experiment.path is None:
            self.experiment.path = lab.default_experiment_path(self.experiment.spec)
        return self._run()

    def _run(self) -> bool:
        exp = self.experiment
        engine = self.engine()
        assert exp is not None
        problem = exp.check_model(engine.info if engine is not None else None)
        if problem:
            self.setup.notice.show_message(problem, "error")
            return False
        self.setup.notice.hide()
        self._hash_pause.set()  # hashing would share the CPU and disk with the runs being timed
        self._stop_reason = ""
        self.results.follow_live = True
        w = GeneratorWorker(lab.run_experiment, engine, exp)
        w.yielded.connect(self._on_event)
        w.errored.connect(self._on_error)
        w.finished.connect(lambda w=w: self._on_worker_finished(w))
        self._worker = w
        self.setup.progress.setValue(int(1000 * exp.done / max(1, exp.total)))
        self.setup.progress_label.setText("Starting…")
        self.update_controls()
        self.busy_changed.emit(True)
        start_worker(w)
        self._eta_timer.start()
        return True

    def cancel(self) -> None:
        """Stop within a token; finished runs stay recorded and Resume continues."""
        if self._worker is not None:
            self._worker.quit()
            self.setup.progress_label.setText("Cancelling…")

    def _on_event(self, ev: object) -> None:
        exp = self.experiment
        if exp is None:
            return
        if isinstance(ev, RunDelta):
            self.results.run_delta(ev)
        elif isinstance(ev, RunStarted):
            self.results.run_started(ev.key)
        elif isinstance(ev, RunFinished):
            self.results.run_finished(ev.result)
            self.run_finished.emit(ev.result)
            self._refresh()
        elif isinstance(ev, Progress):
            self._last_progress = ev
            self._last_progress_t = time.monotonic()
            self.setup.progress.setValue(int(1000 * ev.fraction))
            self._tick_eta()
        elif isinstance(ev, ExperimentStarted):
            self.setup.progress.setValue(int(1000 * ev.done / max(1, ev.total)))
            self._apply_known_sha(exp)  # the runner has recorded the model by now
        elif isinstance(ev, ExperimentStopped):
            self._stop_reason = ev.reason
            if ev.reason == "error":
                self.setup.notice.show_message(f"The experiment stopped: {ev.message}", "error")

    def _tick_eta(self) -> None:
        p = self._last_progress
        if p is None or not self.running:
            return
        live = self.results.live_key
        where = f"Run {min(p.done + 1, p.total)} of {p.total}"
        if live is not None:
            where += f" · {live[1]}"
        if p.eta_s is None:
            eta = "estimating time left…"
        else:
            left = max(0.0, p.eta_s - (time.monotonic() - self._last_progress_t))
            eta = f"about {format_duration(left)} left" if left >= 1 else "almost done"
        self.setup.progress_label.setText(f"{where} · {eta}")

    def _on_error(self, exc: BaseException) -> None:
        self._stop_reason = "error"
        self.setup.notice.show_message(
            str(exc) if isinstance(exc, LabError) else f"The experiment failed: {exc}", "error", exc=exc
        )

    def _on_worker_finished(self, w: GeneratorWorker) -> None:
        if self._worker is not w:
            return
        self._worker = None
        self._eta_timer.stop()
        self._hash_pause.clear()
        exp = self.experiment
        self._refresh.flush()
        if exp is not None:
            self.setup.progress.setValue(int(1000 * exp.done / max(1, exp.total)))
            if exp.complete:
                self.setup.progress_label.setText(f"Finished: {exp.total} runs.")
            elif self._stop_reason == "cancelled" or w.cancel.is_set():
                self.setup.progress_label.setText(f"Cancelled after {exp.done} of {exp.total} runs. Resume continues.")
            else:
                self.setup.progress_label.setText(f"Stopped after {exp.done} of {exp.total} runs.")
        self.results.runner_stopped()
        self.update_controls()
        self._show_model()
        self.busy_changed.emit(False)
        if exp is not None:
            self.experiment_finished.emit(exp)

    def wait(self, timeout_s: float = 30.0) -> bool:
        """Block until the runner ends (tests and shutdown)."""
        w = self._worker
        return True if w is None else w.wait(timeout_s)

    def shutdown(self) -> None:
        for w in (self._worker, self._hash_worker):
            if w is not None:
                w.quit()
        for w in (self._worker, self._hash_worker):
            if w is not None:
                w.wait(10)

    def closeEvent(self, e: QCloseEvent) -> None:
        # Finished runs are already on disk; cancelling loses only the run in progress.
        self.cancel()
        super().closeEvent(e)

    def showEvent(self, e: QShowEvent) -> None:
        super().showEvent(e)
        self.refresh_model()

    # --- files ----------------------------------------------------------------------------------
    def _dialog_dir(self) -> str:
        from app.core import paths

        return str(paths.data_dir() / "lab")

    def _ask_open(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "Open experiment", self._dialog_dir(), "Experiments (*.jsonl *.json);;All files (*)"
        )
        if path:
            self.open_experiment(path)

    def _ask_save(self) -> None:
        if self.experiment is None:
            return
        name = (self.experiment.spec.title or "experiment")[:40].strip().replace("/", "-") or "experiment"
        path, _ = QFileDialog.getSaveFileName(
            self, "Save experiment", str(Path(self._dialog_dir()) / f"{name}.jsonl"), "Experiments (*.jsonl)"
        )
        if path:
            self.save_experiment(path)

    def _ask_export(self, kind: str) -> None:
        if self.experiment is None:
            return
        name = (self.experiment.spec.title or "experiment")[:40].strip().replace("/", "-") or "experiment"
        path, _ = QFileDialog.getSaveFileName(
            self, f"Export {kind.upper()}", str(Path.home() / f"{name}.{kind}"), f"{kind.upper()} (*.{kind})"
        )
        if path:
            (self.export_csv if kind == "csv" else self.export_json)(path)

    def _ask_export_charts(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Save charts as PNG into", str(Path.home()))
        if folder:
            self.export_charts(folder)

    def export_charts(self, folder: str | Path) -> list[Path]:
        """Save each visible chart as a PNG (2× resolution) in `folder`; returns the files."""
        out = self.results.export_charts(folder)
        if out:
            self.setup.notice.show_message(f"Saved {len(out)} chart{'s' if len(out) != 1 else ''} to {folder}.", "info")
        else:
            self.setup.notice.show_message(f"The charts could not be saved to {folder}.", "error")
        return out

    def open_experiment(self, path: str | Path) -> bool:
        if self.running:
            self.setup.notice.show_message("Cancel the running experiment before opening another.", "error")
            return False
        try:
            exp = lab.open_experiment(path)
        except LabError as e:
            self.setup.notice.show_message(str(e), "error")
            return False
        self.setup.fill_form(exp)
        self.set_experiment(exp)
        msg = f"Opened {Path(path).name}: {exp.done} of {exp.total} runs finished."
        if not exp.complete:
            msg += " Resume runs the rest."
        self.setup.notice.show_message(msg, "warning" if exp.warnings else "info", details=exp.warnings)
        return True

    def save_experiment(self, path: str | Path) -> bool:
        if self.experiment is None or self.running:
            return False
        try:
            p = self.experiment.save(path)
        except LabError as e:
            self.setup.notice.show_message(str(e), "error")
            return False
        self.setup.notice.show_message(f"Saved to {p}. Later runs are recorded there.", "info")
        return True

    def _export_note(self) -> str:
        m = self.experiment.spec.model if self.experiment else None
        if m is not None and m.is_file and not m.sha256:
            return " The model's SHA-256 is still being computed; export again once it is shown to include it."
        return ""

    def export_csv(self, path: str | Path) -> bool:
        exp = self.experiment
        if exp is None:
            return False
        return self._export(lambda: exp.export_csv(path), f"Exported {len(exp.results())} runs to {{}}.")

    def export_json(self, path: str | Path) -> bool:
        exp = self.experiment
        if exp is None:
            return False
        return self._export(lambda: exp.export_json(path), "Exported the experiment to {}.")

    def _export(self, write: Callable[[], Path], done: str) -> bool:
        """Write an export and say where it went (or why it could not)."""
        try:
            p = write()
        except LabError as e:
            self.setup.notice.show_message(str(e), "error")
            return False
        self.setup.notice.show_message(done.format(p) + self._export_note(), "info")
        return True

    def theme_changed(self, _palette: object) -> None:
        """View → Theme (style.apply): the run cards are rebuilt with the new colours (not mid-run)."""
        if not self.running:
            self.results.rebuild_grid()

    def sizeHint(self) -> QSize:
        return QSize(1280, 860)
