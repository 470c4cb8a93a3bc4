"""Benchmark: the harmony stream parser's throughput, and reading a full-size 20b GGUF header.

    python bench/core_speed.py [--runs 7] [--no-record]

- parser: 10,000 token pieces (5,000 of reasoning, then 4,990 of answer) fed as bytes, the way
  the engine delivers them; µs per piece (the engine's own decode step is ~3 ms on a fast GPU).
- GGUF header: the real gpt-oss-20b header (201,088 tokens, 446,189 merges, every tensor entry)
  with a sparse data section of the real 12.1 GB; what the model manager and planner read per file.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.store import record  # noqa: E402

SECTION = "Parser and GGUF header"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args(argv)

    from app.core.gguf_info import read_gguf_info
    from app.core.harmony import StreamParser
    from tests.core.test_gguf_info import _write_full_20b_header

    pieces = [
        p.encode()
        for p in ["<|channel|>", "analysis", "<|message|>"]
        + ["think "] * 5000
        + ["<|end|>", "<|start|>", "assistant", "<|channel|>", "final", "<|message|>"]
        + ["word "] * 4990
    ]
    parse_s: list[float] = []
    for _ in range(args.runs):
        p = StreamParser()
        t0 = time.perf_counter()
        for piece in pieces:
            p.feed(piece, None)
        p.finish("return")
        parse_s.append(time.perf_counter() - t0)
        assert p.completion.final == "word " * 4990

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "gpt-oss-20b-mxfp4.gguf"
        size = _write_full_20b_header(path)
        os.truncate(path, size)
        header_s = []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            info = read_gguf_info(path)
            header_s.append(time.perf_counter() - t0)
        assert info.n_vocab == 201088

    per_piece = statistics.median(parse_s) / len(pieces) * 1e6
    lines = [
        f"## {SECTION}",
        "",
        f"`python bench/core_speed.py` ({time.strftime('%Y-%m-%d')}, {platform.system()} {platform.machine()}, "
        f"Python {platform.python_version()}, load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; "
        f"{args.runs} runs).",
        "",
        "| what | median | worst |",
        "|---|---:|---:|",
        f"| `StreamParser.feed`, {len(pieces):,} byte pieces | {statistics.median(parse_s) * 1000:.1f} ms "
        f"({per_piece:.2f} µs per piece) | {max(parse_s) * 1000:.1f} ms |",
        f"| `read_gguf_info` of the full 20b header ({size / 1e9:.2f} GB file) | {statistics.median(header_s) * 1000:.0f} ms "
        f"| {max(header_s) * 1000:.0f} ms |",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if not args.no_record:
        record(text, SECTION)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
