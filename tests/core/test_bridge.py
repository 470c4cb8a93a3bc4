"""bridge.iterate_callbacks: callback reports become yields; results return, errors raise, abandonment stops the work."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from app.core.bridge import iterate_callbacks


def test_reports_are_yielded_in_order_and_the_result_is_returned() -> None:
    threads: list[str] = []

    def work(emit: Callable[[int], None]) -> str:
        threads.append(threading.current_thread().name)
        for i in range(5):
            emit(i)
        return "done"

    gen = iterate_callbacks(work, name="bridge-test")
    got: list[int] = []
    with pytest.raises(StopIteration) as end:
        while True:
            got.append(next(gen))
    assert got == [0, 1, 2, 3, 4] and end.value.value == "done" and threads == ["bridge-test"]


def test_an_error_of_the_work_is_raised_in_the_consumer() -> None:
    def work(emit: Callable[[str], None]) -> None:
        emit("started")
        raise ValueError("the file is damaged")

    gen = iterate_callbacks(work, name="bridge-test")
    assert next(gen) == "started"
    with pytest.raises(ValueError, match="damaged"):
        next(gen)


def test_poll_runs_while_nothing_arrives() -> None:
    polls: list[float] = []

    def work(emit: Callable[[int], None]) -> int:
        emit(1)
        time.sleep(0.3)  # a quiet stretch (a backoff wait): a cancel must still be noticed
        emit(2)
        return 3

    gen = iterate_callbacks(work, name="bridge-test", poll=lambda: polls.append(time.monotonic()), poll_s=0.01)
    assert list(gen) == [1, 2] and len(polls) >= 10


def test_an_abandoned_generator_stops_the_work_and_waits_for_it() -> None:
    stop = threading.Event()
    ended = threading.Event()

    def work(emit: Callable[[int], None]) -> int:
        emit(1)
        stop.wait(10)  # only stop() ends this early
        ended.set()
        return 0

    gen = iterate_callbacks(work, name="bridge-test", stop=stop.set)
    assert next(gen) == 1
    t0 = time.monotonic()
    gen.close()
    assert stop.is_set() and ended.is_set() and time.monotonic() - t0 < 5
