"""Rendering hostile answers: how long the UI thread is blocked by huge lines, huge tables, deep nesting.

Each input goes through the assistant message widget the way the app shows answers: streamed in
8 pieces (append + flush, each flush re-rendering the growing tail), then `finish` (the final
render). A figure is the longest single stretch the UI thread was busy: the call itself, or one
turn of the event loop while a long answer is inserted in slices (Qt's layout included).
Target (issue 19): no stretch longer than 100 ms.

    python bench/markdown_render.py [--runs 3] [--no-stream] [--no-record]

`--no-stream` times only the final render (for the code before the bounds, where streaming a
nested quote costs minutes).
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

RESULTS = Path(__file__).with_name("RESULTS.md")
SECTION = "## Rendering hostile answers"


def _prose(size: int) -> str:
    rng = random.Random(0)
    words = ["alpha", "beta", "harmonica", "reed", "x", "delta", "**bold**", "_it_"]
    return " ".join(rng.choice(words) for _ in range(size // 5))[:size]


INPUTS: dict[str, Callable[[], str]] = {
    "1 MB single line of prose": lambda: _prose(1_000_000),
    "1 MB single line of inline code": lambda: "`" + ("a = b + c; " * 100_000)[:999_998] + "`",
    "table 1,000 rows × 20 columns": lambda: (
        "| "
        + " | ".join(f"h{i}" for i in range(20))
        + " |\n|"
        + "---|" * 20
        + "\n"
        + "".join("| " + " | ".join(f"r{r}c{c}" for c in range(20)) + " |\n" for r in range(1000))
    ),
    "`>` × 1,000 (nested quotes)": lambda: ">" * 1000 + " x",
    "300 quote blocks 20 deep": lambda: "\n\n".join(">" * 20 + " x" for _ in range(300)),
    "list nested 1,000 deep": lambda: "".join("  " * i + "- x\n" for i in range(1000)),
}


def measure(text: str, stream: bool) -> tuple[float, float]:
    """(final render s, worst streaming update s) through a fresh AssistantMessageWidget."""
    from PySide6.QtGui import QGuiApplication

    from app.core.chat import Message
    from app.ui.message_widget import AssistantMessageWidget

    def settle() -> float:
        """The longest turn of the event loop until a sliced render is done."""
        longest = 0.0
        while True:
            t1 = time.perf_counter()
            QGuiApplication.processEvents()
            longest = max(longest, time.perf_counter() - t1)
            if not w.answer_view.rendering:
                return longest

    worst = 0.0
    if stream:
        w = AssistantMessageWidget(model="gpt-oss-20b", effort="high")
        w.resize(800, 600)
        w.show()
        step = max(1, len(text) // 8)
        for i in range(0, len(text), step):
            w.append_answer(text[i : i + step])
            t0 = time.perf_counter()
            w.flush()
            worst = max(worst, time.perf_counter() - t0, settle())
        w.close()
        w.deleteLater()
    w = AssistantMessageWidget(model="gpt-oss-20b", effort="high")
    w.resize(800, 600)
    w.show()
    QGuiApplication.processEvents()
    t0 = time.perf_counter()
    w.finish(Message("assistant", text))
    final = time.perf_counter() - t0
    final = max(final, settle()) if hasattr(w.answer_view, "rendering") else final + _plain_settle()
    w.close()
    w.deleteLater()
    return final, worst


def _plain_settle() -> float:
    """Layout for code without sliced rendering (the code before the bounds): one turn."""
    from PySide6.QtGui import QGuiApplication

    t0 = time.perf_counter()
    QGuiApplication.processEvents()
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-stream", action="store_true")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()

    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication([])
    from app.core.markdown import warm_up

    warm_up()
    rows = []
    for name, make in INPUTS.items():
        text = make()
        finals, worsts = [], []
        for _ in range(args.runs):
            final, worst = measure(text, not args.no_stream)
            finals.append(final)
            worsts.append(worst)
        row = (name, len(text), statistics.median(finals), max(finals), max(worsts))
        rows.append(row)
        stream = "" if args.no_stream else f", worst streaming update {row[4] * 1000:.0f} ms"
        print(f"{name}: final render median {row[2] * 1000:.0f} ms (worst {row[3] * 1000:.0f} ms){stream}", flush=True)
    del app
    if args.no_record:
        return
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    machine = (
        f"{platform.machine()}, {os.cpu_count()} CPUs, load average {load:.1f}, Python "
        f"{platform.python_version()}, QT_QPA_PLATFORM={os.environ['QT_QPA_PLATFORM']}"
    )
    lines = [
        f"- {when}, {machine}, {args.runs} runs each:",
        "",
        "| input | chars | final render, longest UI stretch (median) | (worst) | worst streaming update |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, size, median, worst_final, worst_stream in rows:
        streamed = "—" if args.no_stream else f"{worst_stream * 1000:.0f} ms"
        lines.append(f"| {name} | {size:,} | {median * 1000:.0f} ms | {worst_final * 1000:.0f} ms | {streamed} |")
    _record("\n".join(lines))


def _record(block: str) -> None:
    text = RESULTS.read_text("utf-8") if RESULTS.exists() else "# Benchmark results\n"
    intro = (
        "`python bench/markdown_render.py`: hostile answers (issue 19) through the assistant message widget, "
        "streamed in 8 pieces and then finished, Qt layout included. Target: no step blocks the UI thread "
        "more than 100 ms."
    )
    if SECTION not in text:
        text = text.rstrip("\n") + f"\n\n{SECTION}\n\n{intro}\n"
    head, _, tail = text.partition(SECTION)
    nxt = tail.find("\n## ")
    body, rest = (tail, "") if nxt < 0 else (tail[:nxt], tail[nxt:])
    text = head + SECTION + body.rstrip("\n") + "\n\n" + block + "\n" + rest
    RESULTS.write_text(text, "utf-8")


if __name__ == "__main__":
    main()
