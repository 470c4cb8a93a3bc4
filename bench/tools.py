"""Benchmark: what the tool system costs per call — kernel start, cells, output capping, figures, user tools, pages.

Measures, with medians of several runs:
- python kernel: cold start (spawn → sandbox set up → ready), a trivial cell's round trip,
  printing 100 MB (capped), the first matplotlib figure of a fresh kernel and a warm one;
- user tools: loading a folder of 20 tool files in the tool process, and one call's round trip;
- browser: readable-text extraction of a 300 KB HTML page, and find() on it;
- the loop's own overhead per tool call (scripted engine, calculator tool).

    python -m bench.tools [--runs 5] [--no-record]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.core.chat import Conversation  # noqa: E402
from app.core.scripted_engine import ScriptedEngine  # noqa: E402
from app.core.tools.browser import BrowserSession, Page, html_to_text  # noqa: E402
from app.core.tools.loop import ToolFinished, run_tool_loop  # noqa: E402
from app.core.tools.python_tool import PythonKernel  # noqa: E402
from app.core.tools.registry import ToolRegistry, ToolSession  # noqa: E402
from app.core.tools.usertools import UserToolHost  # noqa: E402


def timed(fn: Callable[[], object], runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def ms(values: list[float]) -> str:
    return (
        f"median {statistics.median(values) * 1000:.1f} ms (min {min(values) * 1000:.1f}, max {max(values) * 1000:.1f})"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()
    runs = args.runs
    tmp = Path(tempfile.mkdtemp(prefix="harmonica-bench-tools-"))
    lines: list[str] = []

    def report(name: str, text: str) -> None:
        print(f"{name}: {text}")
        lines.append(f"- {name}: {text}")

    # --- python kernel ---
    kernels: list[PythonKernel] = []

    def cold() -> None:
        k = PythonKernel(tmp / f"k{len(kernels)}")
        k.start()
        kernels.append(k)

    report("Kernel cold start (spawn, namespaces, Landlock, limits, ready)", ms(timed(cold, runs)))
    k = kernels[0]
    report("Trivial cell round trip (`1 + 1`)", ms(timed(lambda: k.execute("1 + 1"), runs * 4)))
    report("Printing 100 MB (capped to 64 KB)", ms(timed(lambda: k.execute("print('x' * 100_000_000)"), runs)))
    try:
        import matplotlib  # noqa: F401

        first = []
        for i in range(max(2, runs // 2)):
            fresh = PythonKernel(tmp / f"mpl{i}")
            t0 = time.perf_counter()
            fresh.execute("import matplotlib.pyplot as plt\nplt.plot([1, 2, 3])\nplt.show()")
            first.append(time.perf_counter() - t0)
            fresh.close()
        report("First figure in a new chat (import matplotlib, font cache, save PNG)", ms(first))
        k.execute("import matplotlib.pyplot as plt")
        report("Figure in a warm kernel", ms(timed(lambda: k.execute("plt.plot([1, 2, 3])\nplt.show()"), runs)))
    except ImportError:
        report("Figures", "matplotlib not installed: not measured")
    for kk in kernels:
        kk.close()

    # --- user tools ---
    folder = tmp / "tools"
    folder.mkdir()
    for i in range(20):
        (folder / f"t{i}.py").write_text(
            f"def tool_{i}(text: str, n: int = 1) -> str:\n    '''Repeat text.\n\n    Args:\n        text: What.\n"
            f"        n: How often.\n    '''\n    return text * n\n"
        )
    host = UserToolHost(folder)
    report("Loading 20 user tool files (fresh tool process)", ms(timed(host.load, runs)))
    report("User tool call round trip", ms(timed(lambda: host.call("tool_3", {"text": "a", "n": 3}), runs * 4)))
    host.close()

    # --- browser ---
    para = "<p>The harmonica is a free reed instrument. <a href='/x{i}'>link {i}</a> and more words here.</p>"
    page_html = (
        "<html><head><title>Big</title></head><body>"
        + "".join(para.format(i=i) for i in range(3000))
        + "</body></html>"
    )
    report(
        f"HTML → numbered text, {len(page_html) // 1024} KB page",
        ms(timed(lambda: html_to_text(page_html, "https://example.com/"), runs)),
    )
    b = BrowserSession("")
    title, text, links = html_to_text(page_html, "https://example.com/")
    b.pages.append(Page("https://example.com/", title, text, links))
    report("find() on that page", ms(timed(lambda: (b.find("reed"), b.pages.pop()), runs)))

    # --- loop overhead ---
    call = (
        "<|channel|>analysis<|message|>x<|end|><|start|>assistant<|channel|>commentary to=functions.calculate "
        '<|constrain|>json<|message|>{"expression":"1+1"}<|call|>'
    )
    final = "<|channel|>final<|message|>2<|return|>"
    reg = ToolRegistry(tools_dir=tmp / "none", settings_file=tmp / "t.json", load_user_tools=False)
    durations: list[float] = []
    for _ in range(runs * 4):
        e = ScriptedEngine([call, final])
        e.load("scripted:x")
        conv = Conversation()
        conv.add_user("q")
        s = ToolSession(reg, "c", scratch=tmp / "s")
        t0 = time.perf_counter()
        tool_time = 0.0
        for ev in run_tool_loop(e, conv, s):
            if isinstance(ev, ToolFinished):
                tool_time += ev.run.duration_s or 0.0
        durations.append(time.perf_counter() - t0)
    report(
        "Whole loop, scripted engine: call → calculator → final (two generations, prompt rendering included)",
        ms(durations),
    )

    if not args.no_record:
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        header = (
            f"\n## Tools\n\n`python -m bench.tools --runs {runs}` ({stamp}, {platform.node()}, "
            f"{platform.machine()}, Python {platform.python_version()}, {platform.system()} {platform.release()}).\n\n"
        )
        results = ROOT / "bench" / "RESULTS.md"
        text = results.read_text(encoding="utf-8") if results.exists() else "# Benchmark results\n"
        if "\n## Tools\n" in text:
            text = text[: text.index("\n## Tools\n")].rstrip("\n") + "\n"
        results.write_text(text + header + "\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
