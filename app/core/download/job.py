"""The download job: the run from metadata to verified files in the cache, with pause, resume and failure states."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from app.core.bridge import iterate_callbacks
from app.core.download.environment import DISK_MARGIN_BYTES, human_bytes, xet_available
from app.core.download.errors import DownloadError, ErrorKind, _classify, _retryable, _Stopped
from app.core.download.http_transfer import _HttpTransfer
from app.core.download.progress import DownloadProgress, Phase, ProgressCallback, _Reporter
from app.core.download.records import DownloadResult, RemoteFile
from app.core.download.xet_transfer import _XetTransfer
from app.core.plain_errors import describe_os_error


class DownloadJob(_HttpTransfer, _XetTransfer):
    """One download (all parts of one model). `run()` blocks; `pause()`/`cancel()` may be called
    from any thread and take effect within about a second."""

    # -- generator form for UI workers ---------------------------------------------------------
    def events(self, cancel: threading.Event | None = None) -> Iterator[DownloadProgress | DownloadResult]:
        """Run in a helper thread and yield progress events, then the result (errors are raised).

        Made for app.ui.workers.GeneratorWorker, which passes its `cancel` event: setting it
        pauses the download (the partial bytes stay), so quitting the app never loses them.
        """

        def pause_if_cancelled() -> None:
            # Polled, not waited for: `cancel` must work while no event comes (a backoff wait).
            if cancel is not None and cancel.is_set() and not self._stop.is_set():
                self.pause()

        result = yield from iterate_callbacks(
            self.run, name=f"download-{self.request.job_id}", poll=pause_if_cancelled, stop=self.pause
        )
        yield result

    # -- the download --------------------------------------------------------------------------
    def run(self, on_progress: ProgressCallback | None = None) -> DownloadResult:
        """Download every part, verify it and place it in the HF cache. Raises DownloadError."""
        if not self._running.acquire(blocking=False):
            raise DownloadError(ErrorKind.BUSY, "This download is already running.")
        # A job may be run again after a pause ("Resume" in the UI): the old stop request is spent.
        # Only then: a pause that arrives before the first run has even started must still count.
        if self._runs:
            self._stop.clear()
            self._cleanup = False
        self._runs += 1
        started = time.monotonic()
        reporter = _Reporter(on_progress, 0, len(self.request.filenames), self.manager.progress_interval)
        remote: list[RemoteFile] = []
        finished = threading.Event()
        ticker = threading.Thread(target=self._tick, args=(reporter, finished), name="download-ticker", daemon=True)
        ticker.start()
        try:
            reporter.emit(Phase.METADATA, force=True, message="Asking Hugging Face for file sizes and checksums")
            remote = self._fetch_with_retry(reporter)
            reporter.total = sum(r.size for r in remote)
            self._discard_stale_partials(remote)
            self._save_state_quietly(remote, "running")
            self._check_disk(remote)
            self._check_stop()
            out: list[Path] = []
            for index, rf in enumerate(remote):
                reporter.file_index, reporter.filename, reporter.current = index, rf.filename, 0
                path, placed = self._download_one(rf, reporter)
                out.append(path)
                if placed:
                    self._placed.add(rf.filename)
                    self._save_state_quietly(remote, "running")
                reporter.done_before += rf.size
                reporter.current = 0
            self.manager.state_path(self.request).unlink(missing_ok=True)
            reporter.emit(Phase.DONE, force=True, message="Download complete and verified")
            ours = tuple(p for p, rf in zip(out, remote, strict=False) if rf.filename in self._placed)
            return DownloadResult(Phase.DONE, tuple(out), reporter.transferred, time.monotonic() - started, ours)
        except _Stopped:
            return self._finish_stopped(remote, reporter, started)
        except DownloadError as exc:
            if self._stop.is_set() and exc.kind in (ErrorKind.NETWORK, ErrorKind.SERVER):
                return self._finish_stopped(remote, reporter, started)
            if exc.kind == ErrorKind.CHECKSUM:
                # The damaged bytes are gone; there is nothing left to resume.
                self.manager.state_path(self.request).unlink(missing_ok=True)
            elif remote:
                self._save_state_quietly(remote, "failed")
            reporter.emit(Phase.FAILED, force=True, message=exc.message)
            raise
        except OSError as exc:
            # The cache folder itself is unusable (permissions, read-only or missing drive).
            error = DownloadError(
                ErrorKind.LOCAL_IO,
                f"Could not write to the Hugging Face cache at "
                f"{self.manager.cache_dir}: {describe_os_error(exc)}. Check that the folder is writable, or set "
                "HF_HOME to another folder.",
            )
            reporter.emit(Phase.FAILED, force=True, message=error.message)
            raise error from exc
        finally:
            finished.set()
            self._running.release()

    @staticmethod
    def _tick(reporter: _Reporter, finished: threading.Event, quiet_s: float = 0.5) -> None:
        while not finished.wait(quiet_s):
            reporter.tick(quiet_s)

    def _finish_stopped(self, remote: list[RemoteFile], reporter: _Reporter, started: float) -> DownloadResult:
        reason = self._stop_reason
        if reason == Phase.CANCELLED:
            if self._cleanup:
                for rf in remote:
                    self.manager.incomplete_path(self.request.repo_id, rf.etag).unlink(missing_ok=True)
                    if rf.filename in self._placed:
                        self.manager._delete_placed(self.request.repo_id, rf.etag, rf.commit, rf.filename)
                self.manager.discard(self.request, delete_partial=True)
            else:
                self.manager.state_path(self.request).unlink(missing_ok=True)
            reporter.emit(Phase.CANCELLED, force=True, message="Download cancelled")
        else:
            if remote:
                self._save_state_quietly(remote, "paused")
            reporter.emit(Phase.PAUSED, force=True, message="Paused; resume continues where it stopped")
        return DownloadResult(reason, (), reporter.transferred, time.monotonic() - started)

    def _save_state_quietly(self, remote: list[RemoteFile], status: str) -> None:
        try:
            self.manager._write_state(self.request, remote, status, self._placed)
        except OSError:
            pass  # losing the resume offer is better than hiding the real error

    def _fetch_with_retry(self, reporter: _Reporter) -> list[RemoteFile]:
        what = f"{self.request.repo_id}/{self.request.filenames[0]}"
        attempt = 0
        while True:
            self._check_stop()
            try:
                return self.manager.fetch_remote_files(self.request)
            except DownloadError:
                raise
            except Exception as exc:
                if self._stop.is_set():
                    raise _Stopped from exc
                attempt += 1
                if not _retryable(exc) or attempt > self.manager.max_retries:
                    raise _classify(exc, self.manager.endpoint, what) from exc
                reporter.emit(
                    Phase.RETRYING,
                    force=True,
                    attempt=attempt,
                    message=f"{_classify(exc, self.manager.endpoint, what).message} Retrying…",
                )
                self._sleep_backoff(attempt)

    def _discard_stale_partials(self, remote: list[RemoteFile]) -> None:
        """If the hub now has a different version of a file, its old partial bytes are useless."""
        state = self.manager._read_state(self.request)
        if not state:
            return
        current = {r.filename: r.etag for r in remote}
        for name, info in state.get("files", {}).items():
            old = info.get("etag")
            if old and current.get(name) not in (None, old):
                try:
                    self.manager.incomplete_path(self.request.repo_id, old).unlink(missing_ok=True)
                except DownloadError:
                    continue  # a tampered state file names no file of ours
            elif old and info.get("placed"):
                self._placed.add(name)  # finished by Harmonica in an earlier session

    def _check_disk(self, remote: list[RemoteFile]) -> None:
        m = self.manager
        needed = sum(max(0, rf.size - m._bytes_on_disk(self.request.repo_id, rf.etag, rf.size)) for rf in remote)
        if needed == 0:
            return
        target = m.repo_dir(self.request.repo_id)
        try:
            free = m.disk_free(target)
        except OSError:
            return  # cannot measure: let the write itself report a full disk
        if free < needed + DISK_MARGIN_BYTES:
            raise DownloadError(
                ErrorKind.DISK_SPACE,
                (
                    f"Not enough disk space: the download needs {human_bytes(needed)} more (plus "
                    f"{human_bytes(DISK_MARGIN_BYTES)} to spare) in {m.cache_dir}, but only {human_bytes(free)} is free. "
                    f"Free up {human_bytes(needed + DISK_MARGIN_BYTES - free)} or set HF_HOME to a larger drive."
                ),
            )

    def _download_one(self, rf: RemoteFile, reporter: _Reporter) -> tuple[Path, bool]:
        """Place one part in the cache; returns its snapshot path and whether this call put it there."""
        m = self.manager
        repo = self.request.repo_id
        blob = m.blob_path(repo, rf.etag)
        snapshot = m.snapshot_path(repo, rf.commit, rf.filename)
        if blob.exists() and blob.stat().st_size == rf.size:
            reporter.current = rf.size
            self._link(blob, snapshot, rf)
            return snapshot, False
        if snapshot.is_file() and not snapshot.is_symlink() and snapshot.stat().st_size == rf.size:
            reporter.current = rf.size  # a cache without symlinks keeps the file in the snapshot
            return snapshot, False
        blob.parent.mkdir(parents=True, exist_ok=True)
        if m.use_xet and rf.xet is not None and xet_available() and not m.incomplete_path(repo, rf.etag).exists():
            # hf_hub_download takes the cache's file lock itself (the same one used below).
            self._transfer_xet(rf, reporter)
            self._link(blob, snapshot, rf)
            return snapshot, True
        import filelock

        # huggingface_hub's own lock for this blob: a concurrent hf_hub_download of the same file
        # (another tool) and this download never write the cache at the same time.
        lock_path = m.cache_dir / ".locks" / m.repo_dir(repo).name / f"{rf.etag}.lock"
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        lock = filelock.FileLock(str(lock_path))
        try:
            lock.acquire(timeout=0)
        except filelock.Timeout:
            raise DownloadError(
                ErrorKind.BUSY,
                f"{rf.filename} is being downloaded by another program or another "
                "Harmonica window. Wait for it to finish, then try again.",
            ) from None
        try:
            self._transfer_http(rf, reporter)
            self._link(blob, snapshot, rf)
        finally:
            lock.release()
        return snapshot, True

    def _link(self, blob: Path, snapshot: Path, rf: RemoteFile) -> None:
        """Point snapshots/<commit>/<file> at the blob and refs/<revision> at the commit."""
        try:
            snapshot.parent.mkdir(parents=True, exist_ok=True)
            if not snapshot.exists():
                if snapshot.is_symlink():
                    snapshot.unlink()
                try:
                    snapshot.symlink_to(os.path.relpath(blob, snapshot.parent))
                except OSError:
                    # No symlinks (Windows without developer mode): huggingface_hub then keeps the
                    # file in the snapshot folder itself; do the same.
                    os.replace(blob, snapshot)
            if self.request.revision != rf.commit:
                refs = self.manager.refs_path(self.request.repo_id, self.request.revision)
                refs.parent.mkdir(parents=True, exist_ok=True)
                refs.write_text(rf.commit)
        except OSError as exc:
            raise DownloadError(
                ErrorKind.LOCAL_IO,
                f"Could not place {rf.filename} in the Hugging Face cache ({self.manager.cache_dir}): {describe_os_error(exc)}",
            ) from exc
