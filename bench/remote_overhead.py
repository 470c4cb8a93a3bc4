"""Benchmark: generation through a remote connection (RemoteEngine + run_turn) versus the same server's own client-side rate.

The server is llama.cpp's llama-server (built by tests/fixtures/llama_tools.py, or --server) on the
MID_SHAPE random-weight gpt-oss GGUF of bench/engine_overhead.py. Each rep sends the *same request
body* twice, interleaved: once from a bare streaming client (httpx, counting chunks: what the
server itself delivers), once through the app (chat.run_turn over RemoteEngine: prompt rendering,
the request, SSE parsing, harmony parsing, events). A grammar forces exactly --tokens tokens in
raw mode; chat mode (llama-server's /v1/chat/completions, which parses harmony itself) uses the
same seed and max_tokens on both sides.

Figures: median tokens/s of each side and their ratio (app / bare, target ≥ 0.95), and time to
first token added by the app (median app TTFT − median bare TTFT, target < 20 ms; the app's clock
starts before it renders the prompt). Run:  python -m bench.remote_overhead [--reps 7] [--tokens 200]
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from app.core import chat
from app.core.chat import Conversation
from app.core.engine import Sampling, split_grammar_stops
from app.core.harmony import FinalDelta, ReasoningDelta
from app.core.remote.dialects import chat_body, chat_messages, kind_of, raw_body
from app.core.remote.engine import RemoteEngine
from app.core.remote.probe import probe_server

# Import llama_cpp before numpy (design.md); bench.engine_overhead does that and has the model shape.
from bench.engine_overhead import MID_SHAPE, machine
from tests.fixtures.gguf_factory import write_gpt_oss_gguf

GRAMMAR = 'root ::= <|channel|> "analysis" <|message|> [a-z ]{2,4} <|end|> <|start|> "assistant" <|channel|> "final" <|message|> more\nmore ::= [a-z ] more'


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def bare_run(url: str, body: dict[str, Any], content_key: str) -> dict[str, float]:
    """POST `body` and timestamp every chunk that carries text (the server's own rate, seen by a client)."""
    import httpx

    stamps: list[float] = []
    with httpx.Client(trust_env=False, timeout=300) as client:
        client.get(url.rsplit("/", 1)[0] + "/health")  # connect before the timed request, as the app's client is kept
        t0 = time.perf_counter()
        with client.stream("POST", url, json=body) as resp:
            buf = b""
            for chunk in resp.iter_raw():
                buf += chunk
                while b"\n\n" in buf:
                    event, buf = buf.split(b"\n\n", 1)
                    data = event.removeprefix(b"data: ").strip()
                    if not data or data == b"[DONE]":
                        continue
                    obj = json.loads(data)
                    if content_key == "content":
                        has = bool(obj.get("content"))
                    else:
                        choices = obj.get("choices") or [{}]
                        d = choices[0].get("delta") or {}
                        has = bool(d.get("content") or d.get("reasoning_content") or d.get("reasoning"))
                    if has:
                        stamps.append(time.perf_counter())
    return {"ttft": stamps[0] - t0, "tps": (len(stamps) - 1) / (stamps[-1] - stamps[0]), "n": len(stamps)}


def app_run(engine: RemoteEngine, conv: Conversation, sampling: Sampling, grammar: str | None) -> dict[str, float]:
    stamps: list[float] = []
    t0 = time.perf_counter()
    c = Conversation(messages=list(conv.messages))
    for ev in chat.run_turn(engine, c, effort="low", sampling=sampling, grammar=grammar):
        if isinstance(ev, (ReasoningDelta, FinalDelta)):
            stamps.append(time.perf_counter())
    return {"ttft": stamps[0] - t0, "tps": (len(stamps) - 1) / (stamps[-1] - stamps[0]), "n": len(stamps)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--server", help="llama-server binary (default: the one tests/fixtures/llama_tools.py built)")
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--tokens", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--gpu-layers", type=int, default=0)
    ap.add_argument("--out", default="bench/out/remote_overhead.json")
    args = ap.parse_args()
    if args.server:
        server_bin = Path(args.server)
    else:
        from tests.fixtures import llama_tools

        built = llama_tools.tools()
        if isinstance(built, str):
            sys.exit(f"no llama-server: {built}")
        server_bin = built.server
    model = write_gpt_oss_gguf(Path("bench/out/remote-mid.gguf"), **MID_SHAPE)  # type: ignore[arg-type]
    port = _free_port()
    proc = subprocess.Popen(
        [
            str(server_bin),
            "-m",
            str(model),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "-c",
            "4096",
            "-t",
            str(args.threads),
            "-np",
            "1",
            "-ngl",
            str(args.gpu_layers),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    root = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                with urllib.request.urlopen(root + "/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.2)
        results: dict[str, Any] = {"machine": machine(), "tokens": args.tokens, "reps": args.reps}
        conv = Conversation()
        conv.add_user("Write a long story about the sea.")
        for mode in ("raw", "chat"):
            info = probe_server(root)
            if mode == "chat":
                info.kind = "openai"  # llama-server's /v1/chat/completions, harmony parsed by the server
            engine = RemoteEngine.connect("bench", "bench", info, info.models[0].id)
            sampling = Sampling(seed=7, max_tokens=args.tokens)
            if mode == "raw":
                prompt = chat.build_prompt(conv, engine.info, effort="low")
                body = raw_body("m", prompt, kind=kind_of("llama-server"), sampling=sampling, room=args.tokens)
                body["grammar"] = split_grammar_stops(GRAMMAR, ["<|return|>", "<|call|>", "<|endoftext|>"])[0]
                url, key, grammar = root + "/completion", "content", GRAMMAR
            else:
                msgs = chat_messages(conv.to_render_messages(None), kind_of("openai"))
                body = chat_body(
                    info.models[0].id, msgs, kind=kind_of("openai"), effort="low", sampling=sampling, tools=[]
                )
                url, key, grammar = root + "/v1/chat/completions", "delta", None
            bare_runs, app_runs = [], []
            app_run(engine, conv, sampling, grammar)  # warm both paths (prompt cache, connections)
            bare_run(url, body, key)
            for rep in range(args.reps):
                order = ("bare", "app") if rep % 2 == 0 else ("app", "bare")
                for side in order:
                    if side == "bare":
                        bare_runs.append(bare_run(url, body, key))
                    else:
                        app_runs.append(app_run(engine, conv, sampling, grammar))
            med = {
                side: {k: statistics.median(r[k] for r in runs) for k in ("ttft", "tps", "n")}
                for side, runs in (("bare", bare_runs), ("app", app_runs))
            }
            results[mode] = {
                "bare": med["bare"],
                "app": med["app"],
                "ratio": med["app"]["tps"] / med["bare"]["tps"],
                "ttft_added_ms": 1000 * (med["app"]["ttft"] - med["bare"]["ttft"]),
                "runs": {"bare": bare_runs, "app": app_runs},
            }
            print(
                f"{mode:4}: bare {med['bare']['tps']:.1f} tok/s, app {med['app']['tps']:.1f} tok/s, "
                f"ratio {results[mode]['ratio']:.3f}; TTFT bare {1000 * med['bare']['ttft']:.1f} ms, "
                f"app {1000 * med['app']['ttft']:.1f} ms, added {results[mode]['ttft_added_ms']:.1f} ms "
                f"({med['app']['n']:.0f}/{med['bare']['n']:.0f} pieces)"
            )
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=1))
        print(results["machine"])
    finally:
        proc.terminate()
        proc.wait(15)


if __name__ == "__main__":
    main()
