"""A download job's shared state and controls: pause, cancel, back-off between retries, the final sha256 check."""

from __future__ import annotations

import random
import socket
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.core.download.errors import DownloadError, ErrorKind, _Stopped
from app.core.download.progress import Phase
from app.core.download.records import DownloadRequest, RemoteFile

if TYPE_CHECKING:
    from app.core.download.manager import DownloadManager


class _JobControl:
    """What every part of a job shares: its state, the controls any thread may use, the back-off
    between attempts and the sha256 decision each transfer ends with. `DownloadJob` is built on it."""

    def __init__(self, manager: DownloadManager, request: DownloadRequest) -> None:
        self.manager = manager
        self.request = request
        self._stop = threading.Event()
        self._wake = threading.Event()  # retry_now(): end a back-off wait early
        self._stop_reason: Phase = Phase.PAUSED
        self._cleanup = False
        self._io_lock = threading.Lock()
        self._active_response: Any = None
        self._xet_active = False
        self._running = threading.Lock()
        self._runs = 0
        self._placed: set[str] = set()  # parts this download put in the cache (see DownloadResult)
        self._oversize = False  # the server sent more bytes than it announced for the current file

    # -- control (any thread) ------------------------------------------------------------------
    def pause(self) -> None:
        """Stop transferring; partial bytes and the state file stay so a later run resumes."""
        self._request_stop(Phase.PAUSED, cleanup=False)

    def cancel(self, *, cleanup: bool = False) -> None:
        """Stop and forget this download; with `cleanup`, delete its partial files too."""
        self._request_stop(Phase.CANCELLED, cleanup=cleanup)

    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set()

    def _request_stop(self, reason: Phase, cleanup: bool) -> None:
        # Cancel wins over pause if both arrive.
        if not self._stop.is_set() or reason == Phase.CANCELLED:
            self._stop_reason = reason
            self._cleanup = cleanup
        self._stop.set()
        self._abort_io()

    def _abort_io(self) -> None:
        with self._io_lock:
            response = self._active_response
            xet = self._xet_active
        if response is not None:
            # A read blocked on a silent server only returns when its socket is shut down.
            try:
                stream = response.extensions.get("network_stream")
                sock = stream.get_extra_info("socket") if stream is not None else None
                if sock is not None:
                    sock.shutdown(socket.SHUT_RDWR)
            except (OSError, AttributeError):
                pass
        if xet:
            try:
                from huggingface_hub.utils._xet import abort_xet_session

                abort_xet_session()  # type: ignore[no-untyped-call]
            except Exception:  # noqa: BLE001 - best effort; the progress hook also stops it
                pass

    def _check_stop(self) -> None:
        if self._stop.is_set():
            raise _Stopped

    def _backoff_delay(self, attempt: int) -> float:
        m = self.manager
        delay = min(m.backoff_max, m.backoff_base * (2.0 ** (attempt - 1)))
        return delay * (0.75 + 0.5 * random.random())  # jitter so many clients don't retry in lockstep

    def retry_now(self) -> None:
        """Skip the rest of a back-off wait: the next attempt starts at once (the user's "Retry now")."""
        self._wake.set()

    def _sleep_backoff(self, attempt: int, delay: float | None = None) -> None:
        if delay is None:
            delay = self._backoff_delay(attempt)
        end = time.monotonic() + delay
        while (left := end - time.monotonic()) > 0:
            if self._stop.wait(min(left, 0.1)):
                raise _Stopped
            if self._wake.is_set():
                break
        self._wake.clear()

    # -- the check every transfer ends with ------------------------------------------------------
    def _verify(self, actual: str, file: Path, rf: RemoteFile) -> None:
        expected = rf.sha256
        oversize, self._oversize = self._oversize, False
        if expected is None:
            if oversize:  # nothing to check the cut-off bytes against: refuse them
                file.unlink(missing_ok=True)
                raise DownloadError(
                    ErrorKind.CHECKSUM,
                    f"The server sent more than the {rf.size:,} bytes it announced for {rf.filename}, and no "
                    "checksum is published to check them; the file was deleted. Download it again.",
                )
            return  # non-LFS file: the hub publishes no sha256 (never the case for GGUF weights)
        if actual != expected:
            file.unlink(missing_ok=True)
            why = (
                f"the server sent more than the {rf.size:,} bytes it announced, and the first {rf.size:,} "
                if oversize
                else ""
            )
            raise DownloadError(
                ErrorKind.CHECKSUM,
                (
                    f"{rf.filename} is damaged: {why}its SHA-256 ({actual[:12]}…) is not the one Hugging Face lists "
                    f"({expected[:12]}…). The damaged file was deleted. Download it again."
                ),
            )
