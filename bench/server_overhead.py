"""Benchmark: generation speed through the local API server (streamed, openai client) versus the in-process engine.

Same model, prompt tokens, sampler and seed on both paths, so both generate the same tokens; runs
are interleaved and the KV cache is cleared before each. The HTTP client is the official openai
package in a separate process (as a user's script would be); it timestamps every streamed chunk.
Figures: median generation speed of each path and their ratio (HTTP / in-process, target ≥ 0.95),
and time to first token over HTTP. Run:  python -m bench.server_overhead [--model PATH] [--reps 7]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from app.core.engine import Engine, LoadSettings, Sampling
from app.core.scheduler import EngineScheduler
from app.core.server import ApiServer, ServerSettings, ServerTesting

# Import llama_cpp before numpy (design.md); bench.engine_overhead does that and has the model shape.
from bench.engine_overhead import MID_SHAPE, machine, speed
from tests.fixtures.gguf_factory import write_gpt_oss_gguf

MESSAGES = [{"role": "user", "content": "Write a long story about the sea."}]


def client_run(url: str, n_tokens: int, seed: int) -> dict[str, object]:
    """One streamed chat completion; chunk arrival times (perf_counter, this process)."""
    from openai import OpenAI

    client = OpenAI(base_url=url, api_key="bench", max_retries=0, timeout=120)
    client.models.list()  # connect and warm the client before the timed request
    t_send = time.perf_counter()
    stamps: list[float] = []
    usage = None
    stream = client.chat.completions.create(
        model="bench",
        messages=MESSAGES,
        stream=True,
        stream_options={"include_usage": True},
        max_tokens=n_tokens,
        seed=seed,
        temperature=1.0,
        top_p=1.0,
        reasoning_effort="low",
    )
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        if chunk.choices:
            d = chunk.choices[0].delta
            if d.content or (d.model_extra or {}).get("reasoning_content"):
                stamps.append(time.perf_counter())
    return {
        "ttft_s": stamps[0] - t_send if stamps else None,
        "stamps": stamps,
        "completion_tokens": usage.completion_tokens if usage else 0,
    }


def http_loop(engine: Engine, url: str, n_tokens: int, seed: int) -> tuple[float, float, int]:
    """(tok/s between the first and the last streamed chunk, ttft, tokens) seen by a separate client process.

    Also leaves the engine's own figure for the same run in engine.last_stats.tokens_per_s: the
    speed the client saw divided by it is the delivery ratio of that very run, which the load of
    other processes (it changes from run to run on a shared machine) cannot skew.
    """
    engine._reset_cache()
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.server_overhead",
            "--client",
            url,
            "--tokens",
            str(n_tokens),
            "--seed",
            str(seed),
        ],
        check=True,
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    data = json.loads(out.stdout.strip().splitlines()[-1])
    stamps = data["stamps"]
    return speed(stamps), float(data["ttft_s"]), int(data["completion_tokens"])


def engine_loop(
    engine: Engine, prompt: list[int], n_tokens: int, seed: int, on_thread: bool = True
) -> tuple[float, float, int]:
    """Engine.stream consumed in this process; on a fresh thread by default, as the server (and the
    app's workers) run generations, because llama.cpp's CPU thread team belongs to the calling thread."""
    engine._reset_cache()
    out: list[tuple[float, float, int]] = []

    def run() -> None:
        t0 = time.perf_counter()
        stamps = [time.perf_counter() for _ in engine.stream(prompt, Sampling(seed=seed, max_tokens=n_tokens))]
        out.append((speed(stamps), stamps[0] - t0, len(stamps)))

    if on_thread:
        th = threading.Thread(target=run)
        th.start()
        th.join()
    else:
        run()
    return out[0]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=Path("/tmp/harmonica-bench/gpt-oss-mid.gguf"))
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--n-gpu-layers", type=int, default=0)
    ap.add_argument("--client", help=argparse.SUPPRESS)  # internal: run one HTTP client request
    ap.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.client:
        print(json.dumps(client_run(args.client, args.tokens, args.seed)))
        return 0

    if not args.model.exists():
        args.model.parent.mkdir(parents=True, exist_ok=True)
        print(f"writing {args.model} …", flush=True)
        write_gpt_oss_gguf(args.model, **MID_SHAPE)  # type: ignore[arg-type]
    print(machine())
    engine = Engine()
    info = engine.load(args.model, LoadSettings(n_ctx=2048, n_threads=args.threads, n_gpu_layers=args.n_gpu_layers))
    print(
        f"model: {info.description}, {info.size_bytes / 1e9:.2f} GB; threads {args.threads}; {args.tokens} tokens per run"
    )
    testing = ServerTesting()
    server = ApiServer(EngineScheduler(engine), ServerSettings(port=0), testing=testing)
    server.start()
    try:
        # Warm-up both paths; the server's rendered prompt is what the in-process runs use too.
        http_loop(engine, server.base_url, 16, 1)
        prompt = engine.tokenize(testing.prompts[-1])
        engine_loop(engine, prompt, 16, 1)
        res: dict[str, list[float]] = {"http": [], "engine": [], "http_ttft": [], "engine_ttft": [], "delivery": []}
        for rep in range(args.reps):
            seed = 1000 + rep
            order = ("engine", "http") if rep % 2 == 0 else ("http", "engine")
            counts = {}
            for path in order:
                if path == "http":
                    tps, ttft, n = http_loop(engine, server.base_url, args.tokens, seed)
                    assert engine.last_stats is not None
                    res["delivery"].append(tps / engine.last_stats.tokens_per_s)
                else:
                    tps, ttft, n = engine_loop(engine, prompt, args.tokens, seed)
                res[path].append(tps)
                res[path + "_ttft"].append(ttft)
                counts[path] = n
            print(
                f"rep {rep + 1}: in-process {res['engine'][-1]:7.2f} tok/s ({counts['engine']} tok)   "
                f"HTTP {res['http'][-1]:7.2f} tok/s ({counts['http']} tok), ratio {res['http'][-1] / res['engine'][-1]:.3f}, "
                f"client/engine same run {res['delivery'][-1]:.3f}   "
                f"TTFT in-process {res['engine_ttft'][-1] * 1000:.0f} ms, HTTP {res['http_ttft'][-1] * 1000:.0f} ms",
                flush=True,
            )
        me, mh = statistics.median(res["engine"]), statistics.median(res["http"])
        ratios = [h / e for h, e in zip(res["http"], res["engine"], strict=False)]
        print(
            f"median: in-process {me:.2f} tok/s, HTTP {mh:.2f} tok/s, ratio of medians {mh / me:.3f}, "
            f"median of per-rep ratios {statistics.median(ratios):.3f}"
        )
        print(
            f"client-seen / engine-measured speed within the same HTTP run: median {statistics.median(res['delivery']):.3f} "
            f"(min {min(res['delivery']):.3f}, max {max(res['delivery']):.3f})"
        )
        print(
            f"time to first token: in-process median {statistics.median(res['engine_ttft']) * 1000:.0f} ms, "
            f"HTTP median {statistics.median(res['http_ttft']) * 1000:.0f} ms "
            f"(HTTP adds {(statistics.median(res['http_ttft']) - statistics.median(res['engine_ttft'])) * 1000:.0f} ms: "
            "request, prompt rendering, queue, first chunk)"
        )
    finally:
        server.stop()
        engine.unload()
    return 0


if __name__ == "__main__":
    sys.exit(main())
