"""Model downloads in the UI: a controller that runs DownloadJobs on workers, and the panel that shows one.

Over 700 lines and not split: the panel is the controller's one view and reads its states and
words directly; the words and dialogs would be the next part to move out (download_words.py).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import QObject, Qt, QTimer, Signal, Slot
from PySide6.QtWidgets import QHBoxLayout, QLabel, QMessageBox, QProgressBar, QPushButton, QVBoxLayout, QWidget

from app.core.download import (
    DownloadError,
    DownloadJob,
    DownloadManager,
    DownloadProgress,
    DownloadRequest,
    DownloadResult,
    ErrorKind,
    PendingDownload,
    Phase,
    VerifyReport,
    human_bytes,
    is_offline,
    verify_events,
)
from app.core.models import ModelLibrary
from app.core.units import format_bytes, format_rate
from app.ui.notice import NoticeBar
from app.ui.workers import GeneratorWorker, start_worker

UPDATE_INTERVAL_S = 0.1  # the "UI updates at most 10 times a second"

# -- words --------------------------------------------------------------------------------------


def format_eta(seconds: float | None) -> str:
    """12 → 'less than a minute left'… 200 → 'about 3 min left', 4000 → 'about 1 h 7 min left'."""
    if seconds is None or math.isnan(seconds) or seconds < 0:
        return ""
    if seconds < 60:
        return "less than a minute left"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"about {minutes} min left"
    hours, rest = divmod(minutes, 60)
    if hours >= 48:
        return f"about {round(seconds / 86400)} days left"
    return f"about {hours} h {rest} min left" if rest else f"about {hours} h left"


def format_percent(fraction: float) -> str:
    """Never '100%' before the end, never '0%' once bytes arrived."""
    pct = fraction * 100
    if 0 < pct < 1:
        return "<1%"
    if 99 < pct < 100:
        return "99%"
    return f"{pct:.0f}%"


def progress_bytes(n: float, like: float | None = None) -> str:
    """Sizes that change several times a second keep their width: one decimal always, in the
    unit of `like` (the total), so '5.0 GiB of 11.3 GiB' never jumps to '5 GiB'."""
    return format_bytes(n, like=like, keep_zero=True)


def describe_progress(p: DownloadProgress) -> str:
    """One line for the user: '4.5 GiB of 11.3 GiB · 40% · 36.7 MiB/s · about 3 min left'."""
    part = f" · part {p.file_index + 1} of {p.file_count}" if p.file_count > 1 else ""
    if p.phase == Phase.METADATA:
        return "Contacting Hugging Face…"
    if p.phase in (Phase.CHECKING, Phase.VERIFYING):
        done = f" {format_percent(p.checked / p.check_total)}" if p.check_total else ""
        what = "Checking the bytes already downloaded" if p.phase == Phase.CHECKING else "Verifying the SHA-256"
        return f"{what}…{done}{part if p.phase == Phase.VERIFYING else ''}"
    if p.phase == Phase.RETRYING:
        return p.message or "Connection problem; retrying…"
    amount = (
        f"{progress_bytes(p.downloaded, p.total)} of {progress_bytes(p.total)}"
        if p.total
        else progress_bytes(p.downloaded)
    )
    pieces = [amount]
    if p.total:
        pieces.append(format_percent(p.fraction))
    if p.phase == Phase.DOWNLOADING:
        pieces.append(format_rate(p.speed_bps) if p.speed_bps >= 1 else "waiting for data…")
        if eta := format_eta(p.eta_s):
            pieces.append(eta)
    elif p.phase == Phase.PAUSED:
        pieces.insert(0, "Paused")
    return " · ".join(pieces) + part


@dataclass(frozen=True)
class ErrorView:
    """How a download error is shown: a headline, the core's message, and the one useful action."""

    headline: str
    message: str
    action: str | None  # button text, None when no button helps


_HEADLINES: dict[ErrorKind, tuple[str, str | None]] = {
    ErrorKind.OFFLINE: ("Downloads are off", None),
    ErrorKind.NOT_FOUND: ("Not found on the server", "Try again"),
    ErrorKind.AUTH: ("Access refused", "Try again"),
    ErrorKind.SERVER: ("The server has a problem", "Try again"),
    ErrorKind.NETWORK: ("Connection problem", "Resume"),
    ErrorKind.DISK_SPACE: ("Not enough disk space", "Try again"),
    ErrorKind.CHECKSUM: ("The file was damaged", "Download again"),
    ErrorKind.LOCAL_IO: ("Could not save the file", "Try again"),
    ErrorKind.BUSY: ("Already being downloaded", "Try again"),
}


def error_view(error: BaseException) -> ErrorView:
    if isinstance(error, DownloadError):
        headline, action = _HEADLINES.get(error.kind, ("Download failed", "Try again"))
        return ErrorView(headline, error.message, action)
    return ErrorView(
        "Download failed",
        f"An unexpected error stopped the download: {error}. The bytes already downloaded are kept.",
        "Resume",
    )


# -- the controller -----------------------------------------------------------------------------


class State:
    """What a download is doing, as the UI sees it."""

    IDLE = "idle"  # nothing running, nothing kept to resume
    RUNNING = "running"
    PAUSING = "pausing"  # pause asked, the job is winding down
    CANCELLING = "cancelling"
    PAUSED = "paused"  # partial bytes kept; Resume continues
    FAILED = "failed"
    DONE = "done"  # finished in this session
    VERIFYING = "verifying"
    VERIFIED = "verified"


@dataclass
class DownloadStatus:
    """One request's state; the controller updates it, views read it on `changed`."""

    request: DownloadRequest
    state: str = State.IDLE
    progress: DownloadProgress | None = None
    error: BaseException | None = None
    result: DownloadResult | None = None
    report: VerifyReport | None = None
    earlier_session: bool = False  # a pending download found on disk at start

    @property
    def busy(self) -> bool:
        return self.state in (State.RUNNING, State.PAUSING, State.CANCELLING, State.VERIFYING)

    @property
    def resumable(self) -> bool:
        """Partial bytes are kept (paused, or stopped by an error that keeps them)."""
        if self.state == State.PAUSED:
            return True
        return (
            self.state == State.FAILED
            and self.progress is not None
            and self.progress.downloaded > 0
            and not (isinstance(self.error, DownloadError) and self.error.kind == ErrorKind.CHECKSUM)
        )


class DownloadController(QObject):
    """Runs downloads (and verifications) of model files on workers; one status per request.

    Shared by the model manager dialog and the first-run page, so a download started in one
    shows in the other. `changed` is emitted at most every UPDATE_INTERVAL_S per request while
    bytes flow (state and phase changes go out at once). Nothing touches the network until
    `start()`; reading unfinished downloads from disk at construction is local.
    """

    changed = Signal(object)  # DownloadRequest
    finished = Signal(object, object)  # DownloadRequest, DownloadResult (status DONE)
    failed = Signal(object, object)  # DownloadRequest, exception (usually DownloadError)
    verified = Signal(object, object)  # DownloadRequest, VerifyReport

    def __init__(
        self,
        manager: DownloadManager | None = None,
        library: ModelLibrary | None = None,
        parent: QObject | None = None,
        *,
        update_interval_s: float = UPDATE_INTERVAL_S,
    ) -> None:
        super().__init__(parent)
        self.manager = manager or DownloadManager()
        self.library = library if library is not None else ModelLibrary()
        self.update_interval_s = update_interval_s
        self._status: dict[DownloadRequest, DownloadStatus] = {}
        self._jobs: dict[DownloadRequest, DownloadJob] = {}
        self._workers: dict[DownloadRequest, GeneratorWorker] = {}
        self._last_emit: dict[DownloadRequest, tuple[float, str, Phase | None]] = {}
        self._flush: dict[DownloadRequest, QTimer] = {}
        self.refresh_pending()

    # -- reading -------------------------------------------------------------------------------
    def status(self, request: DownloadRequest) -> DownloadStatus:
        st = self._status.get(request)
        if st is None:
            st = self._status[request] = DownloadStatus(request)
        return st

    @property
    def offline(self) -> bool:
        return is_offline()

    def pending(self) -> list[PendingDownload]:
        """Unfinished downloads kept on disk from earlier sessions (local files only)."""
        return self.manager.pending()

    def refresh_pending(self) -> None:
        for p in self.pending():
            st = self.status(p.request)
            if st.busy or st.state in (State.PAUSED, State.FAILED):
                continue
            st.state = State.PAUSED
            st.earlier_session = True
            st.progress = DownloadProgress(Phase.PAUSED, p.downloaded, p.total, file_count=len(p.request.filenames))
            self.changed.emit(p.request)

    def active(self) -> list[DownloadRequest]:
        return [r for r, st in self._status.items() if st.busy]

    # -- actions -------------------------------------------------------------------------------
    def start(self, request: DownloadRequest) -> None:
        """Download, or resume from the bytes kept on disk (also those of an earlier session)."""
        st = self.status(request)
        if st.busy:
            return
        job = self.manager.job(request)
        self._jobs[request] = job
        st.state, st.error, st.result, st.report = State.RUNNING, None, None, None
        self._run(request, GeneratorWorker(job.events))

    resume = start

    def pause(self, request: DownloadRequest) -> None:
        st = self.status(request)
        job = self._jobs.get(request)
        if st.state == State.RUNNING and job is not None:
            st.state = State.PAUSING
            job.pause()
            self._emit(request, force=True)

    def retry_now(self, request: DownloadRequest) -> None:
        """While a download waits before its next attempt (a connection problem), try at once."""
        job = self._jobs.get(request)
        st = self.status(request)
        if job is not None and st.state == State.RUNNING:
            job.retry_now()

    @staticmethod
    def waiting_to_retry(st: DownloadStatus) -> bool:
        return st.state == State.RUNNING and st.progress is not None and st.progress.phase == Phase.RETRYING

    def cancel(self, request: DownloadRequest, *, delete_partial: bool) -> None:
        """Stop and forget the download; `delete_partial` also deletes the bytes kept so far."""
        st = self.status(request)
        job = self._jobs.get(request)
        if st.state in (State.RUNNING, State.PAUSING) and job is not None:
            st.state = State.CANCELLING
            job.cancel(cleanup=delete_partial)
            self._emit(request, force=True)
            return
        if st.busy:
            return
        self.manager.discard(request, delete_partial=delete_partial)
        self._reset(request)

    def verify(self, request: DownloadRequest, paths: Sequence[Path]) -> None:
        """Hash the finished files against their published sha256 (offline)."""
        st = self.status(request)
        if st.busy:
            return
        st.state, st.error, st.report = State.VERIFYING, None, None
        st.progress = None
        self._run(request, GeneratorWorker(verify_events, list(paths)))

    def _run(self, request: DownloadRequest, worker: GeneratorWorker) -> None:
        # Slots of a QObject that lives on the UI thread: the worker's signals arrive queued there.
        binding = _Binding(self, request, worker)
        worker.yielded.connect(binding.item)
        worker.errored.connect(binding.error)
        worker.finished.connect(binding.done)
        self._workers[request] = worker
        self._emit(request, force=True)
        start_worker(worker)

    def stop_verify(self, request: DownloadRequest) -> None:
        worker = self._workers.get(request)
        if worker is not None and self.status(request).state == State.VERIFYING:
            worker.quit()

    def forget(self, request: DownloadRequest) -> None:
        """Drop a finished download's state (its files were removed); busy downloads are kept."""
        st = self.status(request)
        if not st.busy and st.state in (State.DONE, State.VERIFIED):
            self._reset(request)

    def shutdown(self, timeout_s: float = 10.0) -> None:
        """Pause every download (bytes are kept for the next start) and wait for the workers."""
        workers = list(self._workers.values())
        for job in self._jobs.values():
            job.pause()
        for w in workers:
            w.quit()
        for w in workers:
            w.wait(timeout_s)

    # -- worker events (UI thread) -------------------------------------------------------------
    def _on_item(self, request: DownloadRequest, item: object) -> None:
        st = self.status(request)
        if isinstance(item, DownloadProgress):
            st.progress = item
            self._emit(request)
        elif isinstance(item, DownloadResult):
            st.result = item
            if item.status == Phase.DONE:
                st.state = State.DONE
                try:
                    self.library.add_download(item)
                except OSError:
                    pass  # only the "downloaded by Harmonica" mark is lost
                self._emit(request, force=True)
                self.finished.emit(request, item)
            elif item.status == Phase.PAUSED:
                st.state = State.PAUSED
                st.earlier_session = False
                self._emit(request, force=True)
            else:
                self._reset(request)
        elif isinstance(item, VerifyReport):
            st.report = item
            st.state = State.IDLE if item.stopped else State.VERIFIED
            self._emit(request, force=True)
            if not item.stopped:
                self.verified.emit(request, item)

    def _on_error(self, request: DownloadRequest, exc: BaseException) -> None:
        st = self.status(request)
        st.state, st.error = State.FAILED, exc
        if isinstance(exc, DownloadError) and exc.kind == ErrorKind.CHECKSUM:
            st.progress = None  # the damaged bytes are gone
        self._emit(request, force=True)
        self.failed.emit(request, exc)

    def _on_finished(self, request: DownloadRequest, worker: GeneratorWorker) -> None:
        if self._workers.get(request) is worker:
            del self._workers[request]
        st = self.status(request)
        if st.state in (State.RUNNING, State.PAUSING):  # stopped without a result (shutdown)
            st.state = State.PAUSED
            self._emit(request, force=True)
        elif st.state == State.VERIFYING:
            st.state = State.IDLE
            self._emit(request, force=True)

    def _reset(self, request: DownloadRequest) -> None:
        self._status[request] = DownloadStatus(request)
        self._jobs.pop(request, None)
        self._emit(request, force=True)

    # -- throttled notification ----------------------------------------------------------------
    def _emit(self, request: DownloadRequest, *, force: bool = False) -> None:
        st = self.status(request)
        phase = st.progress.phase if st.progress is not None else None
        now = time.monotonic()
        last = self._last_emit.get(request)
        if not force and last is not None and last[1] == st.state and last[2] == phase:
            wait = self.update_interval_s - (now - last[0])
            if wait > 0:
                timer = self._flush.get(request)
                if timer is None:
                    timer = self._flush[request] = QTimer(self)
                    timer.setSingleShot(True)
                    timer.timeout.connect(lambda r=request: self._emit(r, force=True))
                if not timer.isActive():
                    timer.start(max(1, int(wait * 1000) + 1))
                return
        timer = self._flush.get(request)
        if timer is not None:
            timer.stop()
        self._last_emit[request] = (now, st.state, phase)
        self.changed.emit(request)


class _Binding(QObject):
    """Routes one worker's signals to the controller with the request they belong to."""

    def __init__(self, controller: DownloadController, request: DownloadRequest, worker: GeneratorWorker) -> None:
        super().__init__(controller)
        self._controller = controller
        self._request = request
        self._worker = worker

    @Slot(object)
    def item(self, value: object) -> None:
        self._controller._on_item(self._request, value)

    @Slot(object)
    def error(self, exc: BaseException) -> None:
        self._controller._on_error(self._request, exc)

    @Slot()
    def done(self) -> None:
        self._controller._on_finished(self._request, self._worker)
        self.deleteLater()


# -- widgets ------------------------------------------------------------------------------------


def _button(text: str, primary: bool = False, large: bool = False) -> QPushButton:
    b = QPushButton(text, objectName="PrimaryButton" if primary else "SecondaryButton")
    b.setCursor(Qt.CursorShape.PointingHandCursor)
    if large:
        b.setProperty("prominent", True)  # not "size": that is QWidget's own property
    return b


def ask_cancel(parent: QWidget | None, name: str) -> bool | None:
    """Ask how to cancel: True = delete the partial files, False = keep them, None = don't cancel."""
    box = QMessageBox(
        QMessageBox.Icon.Question, f"Cancel the download of {name}?", f"Cancel the download of {name}?", parent=parent
    )
    box.setInformativeText(
        "Delete the part downloaded so far to free the disk space, or keep it so a later download continues from there."
    )
    delete = box.addButton("Delete partial files", QMessageBox.ButtonRole.DestructiveRole)
    keep = box.addButton("Keep partial files", QMessageBox.ButtonRole.AcceptRole)
    back = box.addButton("Don't cancel", QMessageBox.ButtonRole.RejectRole)
    box.setDefaultButton(back)
    box.setEscapeButton(back)
    box.setObjectName("CancelDownloadBox")
    box.exec()
    clicked = box.clickedButton()
    if clicked is delete:
        return True
    if clicked is keep:
        return False
    return None


def ask_download_anyway(parent: QWidget | None, name: str, reason: str) -> bool:
    """A model that will not run here: ask before downloading it (someone may want it for another computer)."""
    box = QMessageBox(
        QMessageBox.Icon.Warning, f"Download {name}?", f"{name} will not run on this computer.", parent=parent
    )
    box.setInformativeText(f"{reason} Download it anyway, for another computer or for later?")
    go = box.addButton("Download anyway", QMessageBox.ButtonRole.AcceptRole)
    back = box.addButton("Don't download", QMessageBox.ButtonRole.RejectRole)
    box.setDefaultButton(back)
    box.setEscapeButton(back)
    box.setObjectName("DownloadAnywayBox")
    box.exec()
    return box.clickedButton() is go


class DownloadPanel(QWidget):
    """Everything about downloading one model: buttons, progress bar and line, errors.

    Modes follow the controller's status for `request`, plus whether the model is already on
    disk (`set_local_paths`). Emits `use_requested(path)` for "Use this model".
    """

    use_requested = Signal(str)

    def __init__(
        self,
        controller: DownloadController,
        request: DownloadRequest,
        name: str,
        parent: QWidget | None = None,
        *,
        large: bool = False,
        download_label: str | None = None,
        verify: bool = True,
    ) -> None:
        super().__init__(parent, objectName="DownloadPanel")
        self.controller = controller
        self.request = request
        self.name = name
        self._local: tuple[Path, ...] = ()
        self._download_label = download_label or "Download"
        self._caution: str | None = None  # why this model will not run here (set_caution)
        self._in_use = False
        self._large = large
        self._verify_offered = verify
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(8)

        self.bar = QProgressBar()
        self.bar.setRange(0, 1000)
        self.bar.setTextVisible(False)
        self.bar.setObjectName("DownloadBar")
        lay.addWidget(self.bar)
        self.status_line = QLabel("", objectName="DownloadStatus")
        self.status_line.setTextFormat(Qt.TextFormat.PlainText)
        self.status_line.setWordWrap(True)
        self.error_box = NoticeBar(closable=False, button_style="SecondaryButton")
        self._shown_error: ErrorView | None = None
        row = QHBoxLayout()
        row.setSpacing(8)
        if large:
            # First-run page: the line under the bar, one big centred button row below.
            lay.addWidget(self.status_line)
            lay.addWidget(self.error_box)
            row.addStretch(1)
        else:
            # A card: the line on the left of the buttons, like a browser's download list.
            lay.addWidget(self.error_box)
            row.addWidget(self.status_line, 1)
        self.download_button = _button(self._download_label, primary=True, large=large)
        self.pause_button = _button("Pause", large=large)
        self.resume_button = _button("Resume", primary=True, large=large)
        self.cancel_button = _button("Cancel", large=large)
        self.retry_button = _button("Retry now", primary=True, large=large)
        self.retry_button.setToolTip("Try again at once instead of waiting")
        self.verify_button = _button("Verify", large=large)
        self.use_button = _button("Use this model", primary=True, large=large)
        for b in (
            self.download_button,
            self.resume_button,
            self.use_button,
            self.retry_button,
            self.pause_button,
            self.cancel_button,
            self.verify_button,
        ):
            row.addWidget(b)
        if large:
            row.addStretch(1)
        lay.addLayout(row)
        self.download_button.clicked.connect(self._download)
        self.resume_button.clicked.connect(lambda: self.controller.start(self.request))
        self.pause_button.clicked.connect(lambda: self.controller.pause(self.request))
        self.retry_button.clicked.connect(lambda: self.controller.retry_now(self.request))
        self.cancel_button.clicked.connect(self._cancel)
        self.verify_button.clicked.connect(self._verify)
        self.use_button.clicked.connect(self._use)
        controller.changed.connect(self._on_changed)
        self.refresh()

    # -- inputs --------------------------------------------------------------------------------
    def set_local_paths(self, paths: Sequence[Path]) -> None:
        """The model's files when it is complete on disk (empty: not downloaded)."""
        self._local = tuple(paths)
        self.refresh()

    @property
    def local_paths(self) -> tuple[Path, ...]:
        return self._local

    def set_caution(self, reason: str | None) -> None:
        """The model will not run on this computer (`reason` says why): its Download is not the
        primary button, and it asks first. None: it fits."""
        self._caution = reason
        self.download_button.setObjectName("SecondaryButton" if reason else "PrimaryButton")
        self.download_button.style().unpolish(self.download_button)
        self.download_button.style().polish(self.download_button)

    def set_in_use(self, on: bool) -> None:
        """This model is the one loaded now: no "Use this model" for it."""
        self._in_use = on
        self.refresh()

    # -- actions -------------------------------------------------------------------------------
    def _download(self) -> None:
        if self._caution and not ask_download_anyway(self, self.name, self._caution):
            return
        self.controller.start(self.request)

    def _cancel(self) -> None:
        st = self.controller.status(self.request)
        if st.state == State.VERIFYING:
            self.controller.stop_verify(self.request)
            return
        choice = ask_cancel(self, self.name)
        if choice is not None:
            self.controller.cancel(self.request, delete_partial=choice)

    def _verify(self) -> None:
        if self._local:
            self.controller.verify(self.request, self._local)

    def _use(self) -> None:
        st = self.controller.status(self.request)
        path = st.result.path if st.result is not None and st.result.path is not None else None
        if path is None and self._local:
            path = self._local[0]
        if path is not None:
            self.use_requested.emit(str(path))

    def _error_action(self) -> None:
        st = self.controller.status(self.request)
        if st.error is not None:
            self._local = ()  # "Download again" after a damaged file: it was deleted
            self.controller.start(self.request)

    def _on_changed(self, request: object) -> None:
        if request == self.request:
            self.refresh()

    # -- view ----------------------------------------------------------------------------------
    def _show_error(self, view: ErrorView | None, exc: BaseException | None = None) -> None:
        """Show (and log) a download error once, not at every refresh."""
        if view is None:
            self.error_box.hide()
        elif view != self._shown_error or self.error_box.isHidden():
            actions = [(view.action, self._error_action)] if view.action is not None else []
            self.error_box.show_message(view.message, "error", actions, headline=view.headline, exc=exc)
        self._shown_error = view

    def refresh(self) -> None:
        st = self.controller.status(self.request)
        offline = self.controller.offline
        p = st.progress
        show_bar = st.busy or st.state in (State.PAUSED,) or (st.state == State.FAILED and st.resumable)
        self.bar.setVisible(show_bar)
        if p is not None and st.state != State.VERIFYING and p.phase not in (Phase.CHECKING, Phase.VERIFYING):
            self.bar.setRange(0, 1000)
            self.bar.setValue(int(p.fraction * 1000))
        elif p is not None and p.check_total:
            self.bar.setRange(0, 1000)
            self.bar.setValue(int(p.checked / p.check_total * 1000))
        elif st.busy:
            self.bar.setRange(0, 0)  # busy indicator until the first numbers arrive

        buttons = dict.fromkeys(
            (
                self.download_button,
                self.pause_button,
                self.resume_button,
                self.retry_button,
                self.cancel_button,
                self.verify_button,
                self.use_button,
            ),
            False,
        )
        status = ""
        have_local = bool(self._local) or st.state in (State.DONE, State.VERIFIED)
        if st.state != State.FAILED:
            self._show_error(None)
        if st.state in (State.RUNNING, State.PAUSING, State.CANCELLING):
            status = describe_progress(p) if p is not None else "Starting…"
            if st.state == State.PAUSING:
                status = "Pausing…"
            elif st.state == State.CANCELLING:
                status = "Cancelling…"
            buttons[self.pause_button] = buttons[self.cancel_button] = True
            buttons[self.retry_button] = self.controller.waiting_to_retry(st)
            self.pause_button.setEnabled(st.state == State.RUNNING)
            self.cancel_button.setEnabled(st.state != State.CANCELLING)
        elif st.state == State.VERIFYING:
            status = describe_progress(p) if p is not None else "Verifying the SHA-256…"
            buttons[self.cancel_button] = True
            self.cancel_button.setEnabled(True)
        elif st.state == State.PAUSED:
            status = describe_progress(p) if p is not None else "Paused"
            if st.earlier_session:
                status = "Unfinished download from an earlier session · " + status.removeprefix("Paused · ")
            buttons[self.resume_button] = buttons[self.cancel_button] = True
            self.cancel_button.setEnabled(True)
            self.resume_button.setEnabled(not offline)
        elif st.state == State.FAILED and st.error is not None:
            view = error_view(st.error)
            if offline and view.action is not None:
                view = ErrorView(view.headline, view.message, None)
            self._show_error(view, st.error)
            if st.resumable:
                status = describe_progress(p) if p is not None else ""
                buttons[self.cancel_button] = True
                self.cancel_button.setEnabled(True)
        elif have_local:
            total = sum(_size(f) for f in self._local) or (st.result and sum(_size(f) for f in st.result.paths)) or 0
            if st.state == State.VERIFIED and st.report is not None:
                status = (
                    f"Verified: every byte matches the SHA-256 published on Hugging Face · {human_bytes(total)}"
                    if not st.report.unknown
                    else "No published checksum to compare this file with."
                )
            else:
                status = f"Downloaded · {human_bytes(total)} on this computer"
            if self._in_use:
                status = "In use now · " + status
            buttons[self.use_button] = not self._in_use
            buttons[self.verify_button] = self._verify_offered
        else:
            buttons[self.download_button] = True
            self.download_button.setEnabled(not offline)
            self.download_button.setToolTip("Downloads are off: HF_HUB_OFFLINE is set." if offline else "")
        for b, visible in buttons.items():
            b.setVisible(visible)
        self.status_line.setText(status)
        # In a card the line shares the row with the buttons; an empty row would leave a gap.
        self.status_line.setVisible(bool(status) or (not self._large and any(buttons.values())))
        self.status_line.setProperty("kind", "retry" if p is not None and p.phase == Phase.RETRYING and st.busy else "")
        self.status_line.style().unpolish(self.status_line)
        self.status_line.style().polish(self.status_line)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
