"""Download phases and progress snapshots, and the reporter that aggregates, times and throttles them."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

ProgressCallback = Callable[["DownloadProgress"], None]


class Phase(str, Enum):
    METADATA = "metadata"  # asking the hub for sizes and checksums
    CHECKING = "checking"  # hashing the partial bytes kept from an earlier session
    DOWNLOADING = "downloading"
    RETRYING = "retrying"  # waiting before the next attempt after a network error
    VERIFYING = "verifying"  # comparing the sha256 (Xet path: hashing the finished file)
    DONE = "done"
    PAUSED = "paused"
    CANCELLED = "cancelled"
    FAILED = "failed"


@dataclass(frozen=True)
class DownloadProgress:
    """A snapshot of one download (all parts together) for the UI."""

    phase: Phase
    downloaded: int
    total: int
    speed_bps: float = 0.0
    eta_s: float | None = None
    file_index: int = 0
    file_count: int = 1
    filename: str = ""
    checked: int = 0  # bytes hashed in CHECKING/VERIFYING
    check_total: int = 0
    attempt: int = 0
    message: str = ""

    @property
    def fraction(self) -> float:
        return self.downloaded / self.total if self.total > 0 else 0.0


class _Reporter:
    """Aggregates bytes over all parts, computes speed over a sliding window, throttles callbacks."""

    def __init__(
        self, callback: ProgressCallback | None, total: int, file_count: int, interval: float, window_s: float = 5.0
    ) -> None:
        self.callback = callback
        self.total = total
        self.file_count = file_count
        self.interval = interval
        self.window_s = window_s
        self.done_before = 0  # bytes of parts already complete
        self.current = 0  # bytes of the current part on disk
        self.file_index = 0
        self.filename = ""
        self.phase = Phase.METADATA
        self.transferred = 0  # received over the network in this run
        self._samples: deque[tuple[float, int]] = deque()
        self._last_emit = float("-inf")
        # Emits come from the job thread and the ticker; the lock keeps them ordered so a
        # late tick can never follow the final PAUSED/DONE event.
        self._lock = threading.RLock()

    @property
    def downloaded(self) -> int:
        return self.done_before + self.current

    def speed(self, now: float) -> float:
        samples = self._samples
        while len(samples) > 2 and now - samples[1][0] > self.window_s:
            samples.popleft()
        if len(samples) < 2:
            return 0.0
        (t0, b0), (t1, b1) = samples[0], samples[-1]
        # A window that ended long ago means nothing is arriving now.
        span = max(now, t1) - t0
        return (b1 - b0) / span if span > 0 else 0.0

    def add(self, n: int) -> None:
        self.current += n
        self.transferred += n
        now = time.monotonic()
        samples = self._samples
        # One sample per 50 ms is plenty for a 5 s window and keeps the deque small at 1 GB/s.
        if len(samples) >= 2 and now - samples[-2][0] < 0.05:
            samples[-1] = (now, self.transferred)
        else:
            samples.append((now, self.transferred))
        self.emit(Phase.DOWNLOADING, now=now)

    def reset_speed(self) -> None:
        self._samples.clear()

    def tick(self, quiet_s: float) -> None:
        """Re-send the state when nothing arrived for `quiet_s`, so a stall shows speed falling."""
        with self._lock:
            if self.phase == Phase.DOWNLOADING and time.monotonic() - self._last_emit >= quiet_s:
                self.emit(Phase.DOWNLOADING, force=True)

    def emit(self, phase: Phase, *, force: bool = False, now: float | None = None, **extra: Any) -> None:
        if self.callback is None:
            return
        with self._lock:
            self._emit(phase, force, now, extra)

    def _emit(self, phase: Phase, force: bool, now: float | None, extra: dict[str, Any]) -> None:
        assert self.callback is not None
        now = time.monotonic() if now is None else now
        changed = phase != self.phase
        self.phase = phase
        if not (force or changed) and now - self._last_emit < self.interval:
            return
        self._last_emit = now
        speed = self.speed(now) if phase == Phase.DOWNLOADING else 0.0
        remaining = max(0, self.total - self.downloaded)
        eta = remaining / speed if speed > 0 else None
        self.callback(
            DownloadProgress(
                phase=phase,
                downloaded=self.downloaded,
                total=self.total,
                speed_bps=speed,
                eta_s=eta,
                file_index=self.file_index,
                file_count=self.file_count,
                filename=self.filename,
                **extra,
            )
        )
