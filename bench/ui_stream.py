"""UI streaming benchmark: a 10,000-token scripted answer through the message widget at full speed.

Every token is followed by a full update (render + Qt layout), with no throttling, so the figures
are the worst case; the app itself updates at most every 50 ms. Target: worst update < 50 ms and
no growth with length (the last 1,000 tokens cost what the first 1,000 cost).

    python bench/ui_stream.py [--tokens 10000] [--no-record]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.core.scripted_engine import split_pieces

RESULTS = Path(__file__).with_name("RESULTS.md")
SECTION = "## UI streaming"
INTRO = (
    "`python bench/ui_stream.py`: a scripted 10,000-token answer (prose, lists, code blocks, tables) pushed "
    "through the assistant message widget inside the chat's scroll area, with a full update (markdown render, "
    "Qt layout and paint) after every token and no throttling, so these are worst cases; the app updates at "
    "most every 50 ms. Target: worst update < 50 ms, not growing with the answer's length."
)

_PROSE = (
    "The model streams its answer one token at a time, and the view must keep up without ever "
    "making the window stutter. This paragraph is ordinary prose with **bold**, *italic* and "
    "`inline code`, plus a [link](https://example.org/docs) for good measure.\n\n"
)
_LIST = "Steps to follow:\n\n1. Read the file in chunks.\n2. Aggregate each chunk.\n3. Merge the partial results.\n\n- a bullet\n- another bullet with `code`\n\n"
_CODE = (
    "```python\nimport pandas as pd\n\n\ndef total(path: str) -> float:\n    s = 0.0\n"
    "    for chunk in pd.read_csv(path, chunksize=100_000):\n        s += chunk['amount'].sum()\n"
    "    return s\n```\n\n"
)
_TABLE = "| Approach | Memory | Speed |\n|:--|:--|--:|\n| csv module | one row | 1× |\n| pandas chunks | one chunk | 4× |\n| polars lazy | streaming | 12× |\n\n"
_HEADING = "### Section\n\n"


def answer_pieces(n_tokens: int) -> list[str]:
    """Token-sized pieces of a long mixed markdown answer, at least n_tokens of them."""
    parts = [_HEADING, _PROSE, _LIST, _PROSE, _CODE, _TABLE, _PROSE]
    pieces: list[str] = []
    i = 0
    while len(pieces) < n_tokens:
        pieces.extend(p for p in split_pieces(parts[i % len(parts)]) if isinstance(p, str))
        i += 1
    return pieces[:n_tokens]


def run(n_tokens: int) -> dict[str, float]:
    from PySide6.QtCore import qInstallMessageHandler
    from PySide6.QtWidgets import QApplication

    # The offscreen platform warns on every window size-hint change; that is noise here.
    qInstallMessageHandler(lambda mode, ctx, msg: None if "propagateSizeHints" in msg else sys.stderr.write(msg + "\n"))

    from app.core.markdown import warm_up
    from app.ui import style
    from app.ui.chat_view import ChatView

    app = QApplication.instance() or QApplication([])
    style.apply(app, dark=False)  # type: ignore[arg-type]
    warm_up()  # the app does this on a worker thread at start
    # The message sits in the chat's scroll area, as in the app: only the visible part is painted.
    view = ChatView()
    view.resize(900, 700)
    view.show()
    w = view.start_assistant(model="gpt-oss-20b", effort="medium")
    app.processEvents()
    pieces = answer_pieces(n_tokens)
    times: list[float] = []
    t_all = time.perf_counter()
    for piece in pieces:
        t0 = time.perf_counter()
        w.append_answer(piece)
        w.flush()  # render now: one update per token, no throttling
        app.processEvents()  # let Qt lay out and paint as it would in the running app
        times.append(time.perf_counter() - t0)
    total = time.perf_counter() - t_all
    k = min(1000, len(times) // 2)
    first, last = times[:k], times[-k:]
    ms = 1000.0
    return {
        "tokens": len(times),
        "chars": len(w.answer_text),
        "total_s": total,
        "worst_ms": max(times) * ms,
        "p50_ms": statistics.median(times) * ms,
        "p99_ms": sorted(times)[int(len(times) * 0.99)] * ms,
        "first_mean_ms": statistics.mean(first) * ms,
        "first_worst_ms": max(first) * ms,
        "last_mean_ms": statistics.mean(last) * ms,
        "last_worst_ms": max(last) * ms,
        "height_px": w.answer_view.height(),
    }


def report(r: dict[str, float]) -> str:
    growth = r["last_mean_ms"] / r["first_mean_ms"]
    ok = r["worst_ms"] < 50 and r["last_worst_ms"] < 50
    return (
        f"- {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.node()} ({platform.machine()}, "
        f"Python {platform.python_version()}, QT_QPA_PLATFORM={os.environ.get('QT_QPA_PLATFORM')}): "
        f"{int(r['tokens']):,} tokens / {int(r['chars']):,} chars, one update per token, "
        f"total {r['total_s']:.1f} s. Per update: median {r['p50_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms, "
        f"**worst {r['worst_ms']:.1f} ms**. First 1,000 tokens: mean {r['first_mean_ms']:.2f} ms, "
        f"worst {r['first_worst_ms']:.1f} ms; last 1,000: mean {r['last_mean_ms']:.2f} ms, "
        f"worst {r['last_worst_ms']:.1f} ms (mean ×{growth:.1f}). {'PASS' if ok else 'FAIL'} (target: worst < 50 ms at any length)."
    )


def record(line: str) -> None:
    """Append under the "UI streaming" section, leaving every other section alone."""
    text = RESULTS.read_text(encoding="utf-8") if RESULTS.exists() else "# Benchmark results\n"
    if SECTION not in text:
        text = text.rstrip("\n") + f"\n\n{SECTION}\n\n{INTRO}\n"
    start = text.index(SECTION)
    nxt = text.find("\n## ", start + len(SECTION))
    end = len(text) if nxt < 0 else nxt
    body = text[start:end].rstrip("\n")
    body += ("\n" if body.splitlines()[-1].startswith("- ") else "\n\n") + line + "\n"
    text = text[:start] + body + ("\n" + text[end:].lstrip("\n") if nxt >= 0 else "")
    RESULTS.write_text(text, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=10_000)
    ap.add_argument("--no-record", action="store_true", help="print only; do not append to bench/RESULTS.md")
    args = ap.parse_args(argv)
    r = run(args.tokens)
    line = report(r)
    print(line)
    if not args.no_record:
        record(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
