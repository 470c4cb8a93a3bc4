"""Benchmark: show a 1,000-message conversation and search 10,000 conversations in the real window.

Uses the store that bench/store.py builds (10,000 conversations plus one of 1,000 messages with
branches). Each run opens the long conversation in a MainWindow from another one and times
until the window has painted (store read, widgets for the latest page, markdown, layout, paint);
then types a query into the sidebar and times until the hits are shown and painted.

    python bench/ui_open.py [--conversations 10000] [--runs 7] [--no-record]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.store import OUT, build, record  # noqa: E402

SECTION = "Conversations in the window"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=10000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args(argv)

    from PySide6.QtWidgets import QApplication

    from app.core.runtime import Runtime
    from app.core.scripted_engine import ScriptedEngine
    from app.core.store import Store
    from app.ui import chat_view, style
    from app.ui.main_window import MainWindow

    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"store-{args.conversations}.sqlite3"
    if not path.exists():
        build(path, args.conversations)
    app = QApplication.instance() or QApplication([])
    style.apply(app, False)  # type: ignore[arg-type]
    store = Store.open(path)
    long_id = int(store.get_setting("bench_long_conversation"))
    other = store.list_conversations(limit=2)[-1].id
    engine = ScriptedEngine("<|channel|>final<|message|>ok<|return|>")
    engine.load("scripted:gpt-oss-20b")
    w = MainWindow(Runtime(store=store, engine_factory=lambda: engine))
    w.resize(1240, 800)
    w.show()
    app.processEvents()

    def painted() -> None:
        app.processEvents()
        w.grab()  # forces layout and a full paint of the window

    load = os.getloadavg()[0]
    show_ms: list[float] = []
    for _ in range(args.runs):
        w.open_conversation(other)
        painted()
        t0 = time.perf_counter()
        w.open_conversation(long_id)
        painted()
        show_ms.append((time.perf_counter() - t0) * 1000)
    n_path = len(store.active_path(long_id))
    widgets = len(w.chat.widgets)
    for _ in range(50):  # let the idle-time build finish the first page
        app.processEvents()
    t0 = time.perf_counter()
    w.chat.show_earlier()
    painted()
    earlier_ms = (time.perf_counter() - t0) * 1000

    search_ms: dict[str, list[float]] = {}
    for query in ("python", "zanzibar", "the model"):
        for _ in range(args.runs):
            w.sidebar.search.clear()
            painted()
            t0 = time.perf_counter()
            w.sidebar.search.setText(query)
            w.sidebar.run_search()
            painted()
            search_ms.setdefault(query, []).append((time.perf_counter() - t0) * 1000)
        hits = w.sidebar.hit_count()
        search_ms[query].append(-hits)  # stash the hit count at the end
    w.close()
    store.close()

    lines = [
        f"## {SECTION}",
        "",
        f"`python bench/ui_open.py` ({time.strftime('%Y-%m-%d')}, {platform.system()} {platform.machine()}, "
        f"Python {platform.python_version()}, QT_QPA_PLATFORM={os.environ.get('QT_QPA_PLATFORM')}; the store of "
        f"bench/store.py, {args.conversations:,} conversations). Times run until the window has painted. "
        f"Runs: {args.runs}. Load average during the run: {load:.1f} on {os.cpu_count()} CPUs (other jobs "
        "share this machine; on a quiet one the times are lower).",
        "",
        "| what | target | median | worst |",
        "|---|---:|---:|---:|",
        f"| open the {n_path:,}-message conversation in the window (store read + the latest {widgets} message "
        f"widgets, markdown, layout, paint; earlier pages of {chat_view.PAGE} build on scroll) | < 300 ms "
        f"| {statistics.median(show_ms):.0f} ms | {max(show_ms):.0f} ms |",
        f"| scrolling up to earlier messages: the next {chat_view.FIRST_BATCH} built and painted (the rest of "
        f"that page of {chat_view.PAGE} follows while idle) | | {earlier_ms:.0f} ms | |",
    ]
    for query, times in search_ms.items():
        hits = -int(times.pop())
        lines.append(
            f"| sidebar search `{query}`: {hits} hits shown with highlighted snippets | < 100 ms "
            f"| {statistics.median(times):.0f} ms | {max(times):.0f} ms |"
        )
    lines.append("")
    text = "\n".join(lines)
    print(text)
    if not args.no_record:
        record(text, SECTION)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
