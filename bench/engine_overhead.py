"""Benchmark: generation speed through Engine.stream versus a bare llama.cpp decode loop.

Both loops run on the same model and context, with the same sampler (temperature 1, seeded
dist sampler), in interleaved repetitions; the figure is the median generation speed of each and
their ratio (Engine / bare). Run:  python -m bench.engine_overhead [--model PATH] [--reps 7]
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import statistics
import sys
import time
from pathlib import Path

# Import llama_cpp before numpy (see design.md: the CUDA build crashed the other way round).
import llama_cpp

from app.core.engine import Engine, LoadSettings, Sampling
from tests.fixtures.gguf_factory import REAL_VOCAB_SIZE, write_gpt_oss_gguf

# A mid-size gpt-oss-shaped model (~0.5 GB): real vocabulary and expert layout, fewer/narrower
# blocks. Dense weights are F16 rather than the real file's Q8_0: on the 2-core benchmark VM,
# llama.cpp's AMX kernels for Q8_0 die with SIGILL (the CPU flags AMX but the VM cannot run it).
MID_SHAPE: dict[str, object] = dict(
    n_layer=6,
    n_embd=512,
    n_head=8,
    n_head_kv=2,
    head_dim=64,
    n_expert=32,
    n_expert_used=4,
    n_ff_exp=512,
    n_ctx_train=131072,
    sliding_window=128,
    expert_type="MXFP4",
    dense_type="F16",
    vocab_size=REAL_VOCAB_SIZE,
    name="gpt-oss-mid-random",
)
PROMPT = "<|start|>user<|message|>Write a long story about the sea.<|end|><|start|>assistant"


def bare_loop(engine: Engine, prompt: list[int], n_tokens: int, seed: int) -> list[float]:
    """Token times of the leanest possible loop on the engine's own model/context (no stops, no Python work)."""
    ctx = engine._ctx
    llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(ctx), True)
    engine._cache_tokens = []
    engine._checkpoints = []
    arr = (llama_cpp.llama_token * len(prompt))(*prompt)
    if llama_cpp.llama_decode(ctx, llama_cpp.llama_batch_get_one(arr, len(prompt))) != 0:
        raise RuntimeError("prompt decode failed")
    chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
    llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_dist(seed))
    tok = (llama_cpp.llama_token * 1)()
    batch = llama_cpp.llama_batch_get_one(tok, 1)
    sample, decode = llama_cpp.llama_sampler_sample, llama_cpp.llama_decode
    clock = time.perf_counter
    stamps = [0.0] * n_tokens
    try:
        tok[0] = sample(chain, ctx, -1)
        stamps[0] = clock()
        for i in range(1, n_tokens):
            decode(ctx, batch)
            tok[0] = sample(chain, ctx, -1)
            stamps[i] = clock()
    finally:
        llama_cpp.llama_sampler_free(chain)
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(ctx), True)
    return stamps


def engine_loop(engine: Engine, prompt: list[int], n_tokens: int, seed: int) -> list[float]:
    """Token times as a consumer of Engine.stream sees them."""
    engine._reset_cache()
    clock = time.perf_counter
    stamps: list[float] = []
    for _tok, _piece in engine.stream(prompt, Sampling(seed=seed, max_tokens=n_tokens)):
        stamps.append(clock())
    if len(stamps) < min(2, n_tokens):
        raise RuntimeError("the engine stopped early")
    return stamps


def speed(stamps: list[float]) -> float:
    """Tokens/s from the first token to the last (the prompt is excluded)."""
    return (len(stamps) - 1) / (stamps[-1] - stamps[0])


def gaps(stamps: list[float]) -> list[float]:
    return [b - a for a, b in itertools.pairwise(stamps)]


def python_share(engine: Engine, prompt: list[int], n_tokens: int, reps: int) -> tuple[float, float, float]:
    """Median µs per token spent outside llama_decode/llama_sampler_sample, for bare and Engine loops.

    Wraps the two C calls with timers (the same wrapper on both sides) and subtracts the time
    inside them between the first and the last token; what is left is each loop's own Python
    work. Unlike tok/s, this barely moves when other processes load the CPU.
    """
    real_decode, real_sample = llama_cpp.llama_decode, llama_cpp.llama_sampler_sample
    calls: list[tuple[float, float]] = []
    clock = time.perf_counter

    def decode(ctx, batch):  # type: ignore[no-untyped-def]
        t = clock()
        r = real_decode(ctx, batch)
        calls.append((t, clock()))
        return r

    def sample(chain, ctx, idx):  # type: ignore[no-untyped-def]
        t = clock()
        r = real_sample(chain, ctx, idx)
        calls.append((t, clock()))
        return r

    out: dict[str, list[float]] = {"bare": [], "engine": [], "engine_cached": []}
    llama_cpp.llama_decode, llama_cpp.llama_sampler_sample = decode, sample
    try:
        for rep in range(reps):
            # A random model samples almost uniformly from 201k tokens, so nearly every token's text
            # is looked up for the first time; the repeat run (same seed, same tokens) shows the
            # usual case of real text, where the per-token text cache hits.
            runs = (("bare", bare_loop), ("engine", engine_loop), ("engine_cached", engine_loop))
            for name, fn in runs:
                calls.clear()
                stamps = fn(engine, prompt, n_tokens, 2000 + rep)
                first, last = stamps[0], stamps[-1]
                in_c = sum(b - a for a, b in calls if a >= first and b <= last)
                out[name].append((last - first - in_c) / (len(stamps) - 1) * 1e6)
    finally:
        llama_cpp.llama_decode, llama_cpp.llama_sampler_sample = real_decode, real_sample
    return statistics.median(out["bare"]), statistics.median(out["engine"]), statistics.median(out["engine_cached"])


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    return (
        f"{cpu}, {os.cpu_count()} logical CPUs, Python {platform.python_version()}, "
        f"llama-cpp-python {llama_cpp.__version__}, load average before run {load[0]:.2f}/{load[1]:.2f}/{load[2]:.2f}"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=Path("/tmp/harmonica-bench/gpt-oss-mid.gguf"))
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--n-gpu-layers", type=int, default=0)
    args = ap.parse_args(argv)

    if not args.model.exists():
        args.model.parent.mkdir(parents=True, exist_ok=True)
        print(f"writing {args.model} …", flush=True)
        write_gpt_oss_gguf(args.model, **MID_SHAPE)  # type: ignore[arg-type]
    print(machine())
    engine = Engine()
    info = engine.load(args.model, LoadSettings(n_ctx=2048, n_threads=args.threads, n_gpu_layers=args.n_gpu_layers))
    print(f"model: {info.description}, {info.size_bytes / 1e9:.2f} GB, {info.n_params / 1e6:.0f} M params")
    prompt = engine.tokenize(PROMPT)
    # Warm-up (page in the weights, settle the caches) on both paths.
    bare_loop(engine, prompt, 16, 1)
    engine_loop(engine, prompt, 16, 1)
    bare: list[float] = []
    eng: list[float] = []
    bare_gaps: list[float] = []
    eng_gaps: list[float] = []
    for rep in range(args.reps):
        order = (bare_loop, engine_loop) if rep % 2 == 0 else (engine_loop, bare_loop)
        for fn in order:
            stamps = fn(engine, prompt, args.tokens, 1000 + rep)
            if fn is bare_loop:
                bare.append(speed(stamps))
                bare_gaps += gaps(stamps)
            else:
                eng.append(speed(stamps))
                eng_gaps += gaps(stamps)
        print(f"rep {rep + 1}: bare {bare[-1]:7.2f} tok/s   engine {eng[-1]:7.2f} tok/s", flush=True)
    mb, me = statistics.median(bare), statistics.median(eng)
    # Per-token medians shrug off bursts of CPU contention from other processes.
    gb, ge = 1 / statistics.median(bare_gaps), 1 / statistics.median(eng_gaps)
    print(f"median of runs:       bare {mb:.2f} tok/s, engine {me:.2f} tok/s, ratio {me / mb:.3f}")
    print(f"median token time:    bare {gb:.2f} tok/s, engine {ge:.2f} tok/s, ratio {ge / gb:.3f}")
    ob, oe, oc = python_share(engine, prompt, args.tokens, max(3, args.reps // 2))
    print(
        "Python work per token outside llama_decode/llama_sampler_sample: "
        f"bare {ob:.1f} µs, engine {oe:.1f} µs (new token texts), {oc:.1f} µs (token texts cached)"
    )
    for label, ms in (("this machine", 1000 / gb), ("H200, all on GPU (design.md: 296 tok/s)", 1000 / 296)):
        worst, usual = ms / (ms + (oe - ob) / 1000), ms / (ms + (oc - ob) / 1000)
        print(
            f"  → Engine/bare ratio implied at {label}, {ms:.2f} ms/token: {worst:.4f} (new texts), {usual:.4f} (cached)"
        )
    engine.unload()
    return 0


if __name__ == "__main__":
    sys.exit(main())
