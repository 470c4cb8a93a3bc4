"""Work that reports by callback, seen as a generator: it runs on a helper thread, its reports are yielded here.

llama.cpp's model load and huggingface_hub's downloads report progress through callbacks on
the thread that does the work; UI workers and the runtime consume generators. `iterate_callbacks`
joins the two, with one policy for errors (raised in the consumer), cancellation (a poll hook
while nothing arrives) and abandonment (a stop hook, then a bounded join).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Generic, TypeVar

E = TypeVar("E")
R = TypeVar("R")


@dataclass(frozen=True)
class _Done(Generic[R]):
    result: R


@dataclass(frozen=True)
class _Failed:
    error: BaseException


def iterate_callbacks(
    work: Callable[[Callable[[E], None]], R],
    *,
    name: str,
    poll: Callable[[], None] | None = None,
    poll_s: float = 0.1,
    stop: Callable[[], None] | None = None,
    join_s: float = 5.0,
) -> Generator[E, None, R]:
    """Run `work(emit)` on a thread named `name`; yield each item it emits; return its result.

    An exception of the work is raised here. `poll()` runs every `poll_s` while nothing arrives
    and after each item (e.g. to notice a cancel Event, which a blocked get would miss). When
    the consumer closes the generator early, `stop()` asks the work to end and the thread gets
    `join_s` seconds to do so (without `stop`, the work runs on by itself).
    """
    items: queue.Queue[tuple[E] | _Done[R] | _Failed] = queue.Queue()

    def target() -> None:
        try:
            items.put(_Done(work(lambda item: items.put((item,)))))
        except BaseException as exc:  # noqa: BLE001 - re-raised in the consumer's thread
            items.put(_Failed(exc))

    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    try:
        while True:
            try:
                got = items.get(timeout=poll_s if poll is not None else None)
            except queue.Empty:
                if poll is not None:
                    poll()
                continue
            if poll is not None:
                poll()
            if isinstance(got, _Failed):
                raise got.error
            if isinstance(got, _Done):
                return got.result
            yield got[0]
    finally:
        if thread.is_alive() and stop is not None:
            stop()
            thread.join(timeout=join_s)
