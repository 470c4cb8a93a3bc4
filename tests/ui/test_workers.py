"""GeneratorWorker: yields arrive on the UI thread as signals; errors, cancel and finish order."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

from PySide6.QtCore import QThread

from app.ui.workers import GeneratorWorker, active_workers, start_worker


def counting(n: int, *, cancel: threading.Event) -> Iterator[int]:
    for i in range(n):
        if cancel.is_set():
            yield -1
            return
        time.sleep(0.002)
        yield i


def test_yields_in_order_on_ui_thread_then_finished(qtbot) -> None:  # type: ignore[no-untyped-def]
    w = GeneratorWorker(counting, 20)
    got: list[tuple[int, bool]] = []
    order: list[str] = []
    ui_thread = QThread.currentThread()
    w.yielded.connect(lambda v: got.append((v, QThread.currentThread() is ui_thread)))
    w.finished.connect(lambda: order.append("finished"))
    w.errored.connect(lambda e: order.append("errored"))
    with qtbot.waitSignal(w.finished, timeout=3000):
        start_worker(w)
    assert [v for v, _ in got] == list(range(20)) and all(on_ui for _, on_ui in got)
    assert order == ["finished"]
    qtbot.waitUntil(lambda: w not in active_workers(), timeout=1000)


def test_error_is_reported_then_finished(qtbot) -> None:  # type: ignore[no-untyped-def]
    def failing(*, cancel: threading.Event) -> Iterator[int]:
        yield 1
        raise ValueError("bad input")

    w = GeneratorWorker(failing)
    order: list[object] = []
    w.yielded.connect(order.append)
    w.errored.connect(lambda e: order.append(e))
    with qtbot.waitSignal(w.finished, timeout=3000):
        start_worker(w)
    assert order[0] == 1 and isinstance(order[1], ValueError)
    assert "bad input" in order[1].__traceback_text__  # type: ignore[attr-defined]


def test_quit_sets_cancel_and_generator_winds_down(qtbot) -> None:  # type: ignore[no-untyped-def]
    w = GeneratorWorker(counting, 100000)
    got: list[int] = []
    w.yielded.connect(got.append)
    start_worker(w)
    qtbot.waitUntil(lambda: len(got) >= 3, timeout=3000)
    with qtbot.waitSignal(w.finished, timeout=3000):
        w.quit()
    assert got[-1] == -1 and len(got) < 100000 and not w.is_running


def test_ui_thread_never_blocks_while_working(qtbot) -> None:  # type: ignore[no-untyped-def]
    def slow(*, cancel: threading.Event) -> Iterator[int]:
        time.sleep(0.3)
        yield 1

    w = GeneratorWorker(slow)
    t0 = time.perf_counter()
    start_worker(w)
    assert time.perf_counter() - t0 < 0.1
    with qtbot.waitSignal(w.finished, timeout=3000):
        pass


def test_busy_workers_do_not_queue_new_ones(qtbot) -> None:  # type: ignore[no-untyped-def]
    release = threading.Event()

    def blocker(*, cancel: threading.Event) -> Iterator[int]:
        release.wait(5)
        yield 0

    blockers = [start_worker(GeneratorWorker(blocker)) for _ in range(6)]  # more than the cores
    quick = GeneratorWorker(counting, 2)
    try:
        with qtbot.waitSignal(quick.finished, timeout=2000):
            start_worker(quick)
    finally:
        release.set()
    for b in blockers:
        assert b.wait(5)
