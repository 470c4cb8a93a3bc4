"""Benchmark: Harmonica's download path vs a bare hf_hub_download of the same file from a loopback hub.

Both download the same file from the same loopback server (tests/fixtures/hf_server.py, which
sends bodies with sendfile) into fresh HF cache folders, in interleaved runs with alternating
order. Harmonica's time includes what it does on top: metadata + HEAD, resumable writes, the
streamed sha256 verification and the cache placement. Xet is disabled (the loopback server
speaks plain HTTP).

    python bench/download.py [--size-mb 300] [--runs 3] [--no-record]
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ["HF_HUB_DISABLE_XET"] = "1"  # read by huggingface_hub at import
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from huggingface_hub import hf_hub_download  # noqa: E402

from app.core.download import DownloadManager, DownloadRequest  # noqa: E402
from tests.fixtures.hf_server import FakeHub  # noqa: E402

REPO = "bench/gpt-oss-bench-GGUF"
FILE = "bench.gguf"
RESULTS = ROOT / "bench" / "RESULTS.md"
SECTION = "Downloads"


def write_file(path: Path, size: int) -> None:
    block = os.urandom(1 << 20)
    with path.open("wb") as f:
        f.write(b"GGUF" + (3).to_bytes(4, "little"))
        written = 8
        while written < size:
            n = min(len(block), size - written)
            f.write(block[:n])
            written += n


def run_app(hub: FakeHub, cache: Path) -> float:
    manager = DownloadManager(cache_dir=cache, state_dir=cache / "_state", endpoint=hub.url)
    started = time.perf_counter()
    result = manager.job(DownloadRequest(REPO, (FILE,))).run(lambda p: None)
    elapsed = time.perf_counter() - started
    assert result.path is not None and result.path.exists()
    return elapsed


def run_bare(hub: FakeHub, cache: Path) -> float:
    started = time.perf_counter()
    path = hf_hub_download(REPO, FILE, cache_dir=cache, endpoint=hub.url)
    elapsed = time.perf_counter() - started
    assert Path(path).exists()
    return elapsed


def record(text: str) -> None:
    """Replace (or append) only the "## Downloads" section; other helpers own the other sections."""
    old = RESULTS.read_text("utf-8") if RESULTS.exists() else "# Benchmark results\n"
    pattern = re.compile(rf"^## {SECTION}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(old):
        new = pattern.sub(lambda _: text, old, count=1)
    else:
        new = old.rstrip("\n") + "\n\n" + text
    RESULTS.write_text(new, "utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=300)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-record", action="store_true", help="print only; do not update bench/RESULTS.md")
    args = parser.parse_args(argv)

    size = args.size_mb * 1_000_000
    work = Path(tempfile.mkdtemp(prefix="harmonica-dl-bench-"))
    try:
        source = work / "source.gguf"
        write_file(source, size)
        app_times: list[float] = []
        bare_times: list[float] = []
        with FakeHub() as hub:
            hub.add_file(REPO, FILE, source)
            # One untimed round each: imports, HTTP session and page cache warm up equally.
            for fn in (run_app, run_bare):
                fn(hub, work / "warmup")
                shutil.rmtree(work / "warmup", ignore_errors=True)
            for i in range(args.runs):
                order = (("app", run_app), ("bare", run_bare)) if i % 2 == 0 else (("bare", run_bare), ("app", run_app))
                for name, fn in order:
                    cache = work / f"cache-{name}-{i}"
                    seconds = fn(hub, cache)
                    (app_times if name == "app" else bare_times).append(seconds)
                    shutil.rmtree(cache, ignore_errors=True)
                    print(f"run {i + 1} {name:4}: {seconds:6.2f} s  {size / seconds / 1e6:7.1f} MB/s", flush=True)
        app_mbs = size / statistics.median(app_times) / 1e6
        bare_mbs = size / statistics.median(bare_times) / 1e6
        ratio = app_mbs / bare_mbs
        print(f"median: app {app_mbs:.1f} MB/s, bare hf_hub_download {bare_mbs:.1f} MB/s, ratio {ratio:.2f}")
        if not args.no_record:
            machine = f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
            record(
                f"## {SECTION}\n\n"
                f"`python bench/download.py --size-mb {args.size_mb} --runs {args.runs}` ({time.strftime('%Y-%m-%d')}, "
                f"{machine}; loopback server, plain HTTP, fresh cache per run, interleaved).\n\n"
                "| path | median time | throughput |\n|---|---:|---:|\n"
                f"| Harmonica (`DownloadManager`: metadata, resumable writes, streamed sha256, cache placement) "
                f"| {statistics.median(app_times):.2f} s | {app_mbs:.0f} MB/s |\n"
                f"| bare `hf_hub_download` (no verification) | {statistics.median(bare_times):.2f} s "
                f"| {bare_mbs:.0f} MB/s |\n\n"
                f"Ratio app / bare: **{ratio:.2f}** (target ≥ 0.9). All runs (s): app "
                f"{', '.join(f'{t:.2f}' for t in app_times)}; bare {', '.join(f'{t:.2f}' for t in bare_times)}.\n\n"
            )
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
