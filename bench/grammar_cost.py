"""Benchmark: what a GBNF grammar costs per generated token with gpt-oss's real vocabulary (why the API's grammars are lazy).

    python -m bench.grammar_cost [--runs 5] [--tokens 200] [--no-record]

A tiny random-weight gpt-oss model with the real 201,088-token vocabulary (so the model's own
compute is negligible and the grammar's pass over the vocabulary shows), the same sampler and
seeds with and without the free-text grammar the API server would use for reasoning
(app/core/server/structured.FREE_TEXT). Stop tokens are banned so every run makes the same number
of tokens. Figures: median ms per token of each, interleaved runs.
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

from app.core.engine import Engine, LoadSettings, Sampling  # noqa: E402
from app.core.server.structured import FREE_TEXT  # noqa: E402
from bench.store import record  # noqa: E402
from tests.fixtures.gguf_factory import REAL_VOCAB_SIZE, write_gpt_oss_gguf  # noqa: E402

SECTION = "Grammar cost per token (API structured output)"
STOPS = (199999, 200002, 200012)  # <|endoftext|>, <|return|>, <|call|>


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--no-record", action="store_true", help="print only; do not update bench/RESULTS.md")
    args = parser.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="harmonica-grammar-"))
    engine = Engine()
    engine.load(write_gpt_oss_gguf(tmp / "vocab.gguf", vocab_size=REAL_VOCAB_SIZE), LoadSettings(n_ctx=2048))
    prompt = engine.tokenize("<|start|>user<|message|>hi<|end|><|start|>assistant", special=True)
    free = f"root ::= {FREE_TEXT}"  # free text, any length; the banned stop tokens keep it going
    ban = dict.fromkeys(STOPS, -100.0)
    times: dict[str, list[float]] = {"no grammar": [], "free-text grammar": []}
    for run in range(args.runs):
        for name, grammar in (("no grammar", None), ("free-text grammar", free)):
            sampling = Sampling(max_tokens=args.tokens, seed=run, logit_bias=ban)
            t0 = time.perf_counter()
            n = sum(1 for _ in engine.stream(prompt, sampling, grammar=grammar))
            times[name].append((time.perf_counter() - t0) * 1000 / max(n, 1))
    engine.unload()
    base, with_grammar = (statistics.median(v) for v in times.values())
    text = (
        f"## {SECTION}\n\n"
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU threads (load average {os.getloadavg()[0]:.1f} while it ran:\n"
        "the figures are for comparing the two rows), CPU backend; tiny random-weight gpt-oss with the\n"
        f"real {REAL_VOCAB_SIZE:,}-token vocabulary; {args.tokens} tokens per run, {args.runs} interleaved runs,\n"
        "median ms per token.\n\n"
        "| sampling | ms / token |\n|---|---|\n"
        f"| no grammar | {base:.1f} |\n| free-text grammar (every token checked) | {with_grammar:.1f} |\n\n"
        "A grammar checks every candidate token of the vocabulary at every step, so the API server\n"
        "never puts one over the reasoning: reasoning and preambles run free, and only the answer\n"
        "(structured output) or the call (tool_choice required/named, strict tools) is generated under\n"
        "its grammar (app/core/server/generation.HeaderGate).\n"
    )
    print(text)
    if not args.no_record:
        record(text, SECTION)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
