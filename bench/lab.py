"""Benchmark: what the effort lab adds per token, how fast model files hash, how fast results redraw.

1. Python time per token of `lab.run_one` (run_turn + token recorder + channel marks + batched
   deltas) against plain `chat.run_turn` and a bare `engine.stream` loop, on a scripted engine with
   no delay, so only Python work is timed. At gpt-oss speeds (3.4 ms per token on an H200) this
   is the share of generation time the lab costs.
2. SHA-256 throughput of `filehash.hash_events` on a temporary file (page cache warm and cold
   where the OS allows dropping it), and the implied time for the 12.1 GB gpt-oss-20b file.
3. The Compare view: `refresh_results` (figures, 3 charts, the problem table) for a finished
   27-problem × 3-effort × 3-run experiment, and rebuilding the run columns of one problem.

Run:  python -m bench.lab [--tokens 20000] [--hash-mb 1024] [--reps 5]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

from app.core.chat import Conversation, run_turn
from app.core.engine import LoadSettings, Sampling
from app.core.filehash import hash_events
from app.core.lab import Experiment, RunResult, run_experiment, run_one
from app.core.scripted_engine import EffortScript, ScriptedEngine


def _script(n_tokens: int) -> str:
    words = " ".join(["think"] * (n_tokens - 20))
    return (
        f"<|channel|>analysis<|message|>{words}<|end|>"
        "<|start|>assistant<|channel|>final<|message|>The answer is **42**.<|return|>"
    )


def per_token(n_tokens: int, reps: int) -> dict[str, float]:
    engine = ScriptedEngine(_script(n_tokens), n_ctx=4 * n_tokens)
    engine.load("scripted:bench", LoadSettings(n_ctx=4 * n_tokens))
    exp = Experiment.create("What is six times seven?", efforts=["high"])
    key = exp.spec.plan()[0]
    out: dict[str, list[float]] = {"engine.stream": [], "chat.run_turn": [], "lab.run_one": []}
    n = 0
    for _ in range(reps):
        t0 = time.perf_counter()
        n = sum(
            1 for _ in engine.stream(engine.tokenize("<|start|>user<|message|>x<|end|><|start|>assistant"), Sampling())
        )
        out["engine.stream"].append((time.perf_counter() - t0) / n)
        conv = Conversation()
        conv.add_user("What is six times seven?")
        t0 = time.perf_counter()
        for _ in run_turn(engine, conv, effort="high"):
            pass
        out["chat.run_turn"].append((time.perf_counter() - t0) / n)
        t0 = time.perf_counter()
        results = [x for x in run_one(engine, exp.spec, key) if isinstance(x, RunResult)]
        out["lab.run_one"].append((time.perf_counter() - t0) / n)
        assert len(results) == 1 and results[0].generated_tokens == n and results[0].stop_reason == "return"
    print(f"  {n} tokens per generation, {reps} repetitions")
    return {k: statistics.median(v) * 1e6 for k, v in out.items()}


def hashing(size_mb: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "model.gguf"
        chunk = os.urandom(1 << 20)
        with open(p, "wb") as f:
            for _ in range(size_mb):
                f.write(chunk)
        os.environ["HARMONICA_HOME"] = d  # a private cache, so every pass really hashes
        res: dict[str, float] = {}
        t0 = time.perf_counter()
        list(hash_events(p))
        res["warm"] = size_mb / (time.perf_counter() - t0)
        (Path(d) / "cache" / "file-sha256.json").unlink(missing_ok=True)
        try:
            fd = os.open(p, os.O_RDONLY)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)  # type: ignore[attr-defined]
            os.close(fd)
            t0 = time.perf_counter()
            list(hash_events(p))
            res["after fadvise(DONTNEED)"] = size_mb / (time.perf_counter() - t0)
        except (AttributeError, OSError):
            pass
        t0 = time.perf_counter()
        list(hash_events(p))
        res["cached digest (s)"] = time.perf_counter() - t0
        return res


def ui(reps: int) -> dict[str, float]:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtWidgets import QApplication

    from app.core.problem_sets import builtin_problem_set
    from app.ui import style
    from app.ui.compare import CompareWindow

    app = QApplication.instance() or QApplication(sys.argv[:1])
    style.apply(app, False)  # type: ignore[arg-type]
    ps = builtin_problem_set()
    engine = ScriptedEngine(EffortScript({"low": 60, "medium": 200, "high": 600}, step=10))
    engine.load("scripted:bench")
    exp = Experiment.create(ps.problems, runs=3, problem_set=ps.name)
    list(run_experiment(engine, exp))
    w = CompareWindow(lambda: engine)
    w.show()
    w.set_experiment(exp)
    app.processEvents()
    refresh, grid = [], []
    for _ in range(reps):
        t0 = time.perf_counter()
        w.refresh_results()
        app.processEvents()
        refresh.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        w.results.rebuild_grid()
        app.processEvents()
        grid.append(time.perf_counter() - t0)
    w.close()
    return {
        "refresh_results (ms)": statistics.median(refresh) * 1e3,
        "rebuild 9 run cards (ms)": statistics.median(grid) * 1e3,
        "runs": float(len(exp.results())),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=20_000)
    ap.add_argument("--hash-mb", type=int, default=1024)
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    print(
        f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.machine()}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}"
    )
    print("Python time per token (median µs):")
    pt = per_token(args.tokens, args.reps)
    for k, v in pt.items():
        print(f"  {k:16s} {v:7.2f} µs")
    lab_extra = pt["lab.run_one"] - pt["chat.run_turn"]
    print(f"  lab adds {lab_extra:.2f} µs per token over run_turn = {lab_extra / 3380:.2%} of a 3.38 ms H200 token")
    print(f"SHA-256 of a {args.hash_mb} MiB file:")
    for k, v in hashing(args.hash_mb).items():
        print(f"  {k}: {v:.4f}" if "(s)" in k else f"  {k}: {v:.0f} MiB/s → 12.1 GB in {12.1e9 / 2**20 / v:.0f} s")
    print("Compare view, finished 27 × 3 × 3 experiment:")
    for k, v in ui(args.reps).items():
        print(f"  {k}: {v:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
