"""The kernel's output pipe: what user code prints, read into the running cell up to a cap."""

from __future__ import annotations

import os
import threading


class OutputCapture:
    """The output-pipe half of PythonKernel: a reader thread feeds the pipe's bytes into the current
    cell's buffer until the cell's end marker (written by the supervisor, never by user code).

    The state lives on the kernel (set in PythonKernel.__init__); it is declared here for the checker.
    """

    _out_gen: int
    _out_lock: threading.Lock
    _buf: bytearray
    _hold: bytes
    _dropped: int
    _cap: int
    _marker: bytes | None
    _marker_seen: threading.Event

    def _pump_output(self, fd: int, gen: int) -> None:
        while True:
            try:
                data = os.read(fd, 1 << 16)
            except OSError:
                break
            if not data:
                break
            self._feed(data, gen)
        try:
            os.close(fd)
        except OSError:
            pass

    def _feed(self, data: bytes, gen: int | None = None) -> None:
        with self._out_lock:
            if gen is not None and gen != self._out_gen:
                return  # a dead kernel's leftovers never reach a newer kernel's cells
            pending = self._hold + data
            marker = self._marker
            if marker:
                i = pending.find(marker)
                if i >= 0:
                    self._append(pending[:i])
                    self._hold = b""
                    self._marker = None
                    self._marker_seen.set()
                    return  # what follows the marker is background output after the cell: dropped
                keep = min(len(marker) - 1, len(pending))
                self._append(pending[: len(pending) - keep])
                self._hold = pending[len(pending) - keep :]
            else:
                self._hold = b""
                self._append(pending)

    def _append(self, data: bytes) -> None:
        room = self._cap - len(self._buf)
        if room > 0:
            self._buf += data[:room]
        self._dropped += max(0, len(data) - max(room, 0))

    def _begin_cell(self, marker: bytes) -> None:
        with self._out_lock:
            self._buf = bytearray()
            self._hold = b""
            self._dropped = 0
            self._marker = marker
            self._marker_seen.clear()

    def _end_cell(self, wait_s: float) -> tuple[str, int]:
        self._marker_seen.wait(wait_s)
        with self._out_lock:
            if self._marker is not None:  # never came (the kernel died): keep what was held back
                self._append(self._hold)
            self._marker = None
            self._hold = b""
            text = bytes(self._buf).decode("utf-8", "replace")
            return text, self._dropped
