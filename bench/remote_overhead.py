"""Benchmark: generation through a remote connection (RemoteEngine + run_turn) versus the same server's own client-side rate.

Raw harmony: llama.cpp's llama-server (built by tests/fixtures/llama_tools.py, or --server) with a
grammar that forces --tokens tokens. Chat completions: Harmonica's own API server in a process of
its own (its test grammar hook forces endless output, capped by max_tokens). Both on the MID_SHAPE
random-weight gpt-oss GGUF of bench/engine_overhead.py (0.5 GB, real vocabulary). Each rep sends
the *same request body* twice, interleaved: once from a bare streaming client (httpx, stamping each
chunk that carries text: what the server itself delivers to a client), once through the app
(chat.run_turn over RemoteEngine: prompt rendering, the request, SSE reading, delta mapping,
harmony parsing, events), stamped where each text piece reaches run_turn, so both sides count the
same tokens and each piece's parsing is inside the measured rate.

Figures: median tokens/s of each side and their ratio (app / bare, target ≥ 0.95), and time to
first token added by the app (target < 20 ms), two ways: median app TTFT − median bare TTFT (the
app's clock starts before it renders the prompt, the bare client's when it sends the request; on
a busy machine this difference carries the server's own variation), and the app's own work in
each run, which no server variation touches: from run_turn's start until the request leaves, plus
from the event that carried the first text off the wire until that text reaches the parser.
Run:  python -m bench.remote_overhead [--reps 7] [--tokens 200] [--threads 2]
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
from app.core.engine import EngineWrapper, Sampling, split_grammar_stops
from app.core.harmony import FinalDelta, ReasoningDelta
from app.core.remote.dialects import TEXT_ID, chat_body, chat_messages, kind_of, raw_body
from app.core.remote.engine import RemoteEngine
from app.core.remote.http import HttpClient
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


class Stamped(EngineWrapper):
    """Stamps each text piece as it reaches run_turn (markers the app writes itself are not tokens)."""

    def __init__(self, inner: RemoteEngine) -> None:
        super().__init__(inner)
        self.stamps: list[float] = []

    def stream(self, prompt: Any, sampling: Any = None, *, cancel: Any = None, grammar: Any = None) -> Any:
        inner = super().stream(prompt, sampling, cancel=cancel, grammar=grammar)

        def run() -> Any:
            for tid, piece in inner:
                if tid == TEXT_ID and piece:
                    self.stamps.append(time.perf_counter())
                yield tid, piece

        return run()


class _HttpStamps:
    """When the app's HTTP client sends the request and when the first event comes off the wire."""

    def __init__(self) -> None:
        self.sent: float | None = None
        self.arrivals: list[float] = []
        self._orig = HttpClient.stream_events

    def __enter__(self) -> _HttpStamps:
        stamps = self

        def stream_events(client: HttpClient, path: str, body: Any, *, cancel: Any = None) -> Any:
            stamps.sent = time.perf_counter()
            for ev in stamps._orig(client, path, body, cancel=cancel):
                stamps.arrivals.append(time.perf_counter())
                yield ev

        HttpClient.stream_events = stream_events  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        HttpClient.stream_events = self._orig  # type: ignore[method-assign]


def app_run(engine: RemoteEngine, conv: Conversation, sampling: Sampling, grammar: str | None) -> dict[str, float]:
    """One answer through the app. Besides TTFT and the rate, the app's own share of TTFT: the time
    before the request leaves (render, tokenize estimate, request body) plus the time from the event
    that carried the first text off the wire to that text reaching run_turn's parser."""
    stamped = Stamped(engine)
    events = 0
    c = Conversation(messages=list(conv.messages))
    with _HttpStamps() as http:
        t0 = time.perf_counter()
        for ev in chat.run_turn(stamped, c, effort="low", sampling=sampling, grammar=grammar):
            events += isinstance(ev, (ReasoningDelta, FinalDelta))
    st = stamped.stamps
    assert http.sent is not None
    # the event that brought the first text piece is the last one to arrive before it
    arrived = max(t for t in http.arrivals if t <= st[0])
    own = (http.sent - t0) + (st[0] - arrived)
    return {"ttft": st[0] - t0, "tps": (len(st) - 1) / (st[-1] - st[0]), "n": len(st), "events": events, "own": own}


def start_peer(threads: int) -> tuple[subprocess.Popen[str], str]:
    """Harmonica's API server on the MID model in its own process (chat completions)."""
    import tempfile

    folder = tempfile.mkdtemp(prefix="bench-peer-")
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.fixtures.harmonica_api_process", folder, "", str(max(2, threads))],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("PORT "):
        raise SystemExit(f"the Harmonica peer did not start: {line!r}")
    return proc, f"http://127.0.0.1:{int(line.split()[1])}"


def measure(mode: str, llama_root: str, peer_root: str, conv: Conversation, args: Any) -> dict[str, Any]:
    sampling = Sampling(seed=7, max_tokens=args.tokens)
    if mode == "raw":
        info = probe_server(llama_root)
        engine = RemoteEngine.connect("bench", "bench", info, info.models[0].id)
        prompt = chat.build_prompt(conv, engine.info, effort="low")
        body = raw_body("m", prompt, kind=kind_of("llama-server"), sampling=sampling, room=args.tokens)
        body["grammar"] = split_grammar_stops(GRAMMAR, ["<|return|>", "<|call|>", "<|endoftext|>"])[0]
        url, key, grammar = llama_root + "/completion", "content", GRAMMAR
    else:
        info = probe_server(peer_root)
        engine = RemoteEngine.connect("bench", "bench", info, info.models[0].id)
        msgs = chat_messages(conv.to_render_messages(None), kind_of(info.kind))
        body = chat_body(info.models[0].id, msgs, kind=kind_of(info.kind), effort="low", sampling=sampling, tools=[])
        url, key, grammar = info.api_url + "/chat/completions", "delta", None
    bare_runs: list[dict[str, float]] = []
    app_runs: list[dict[str, float]] = []
    app_run(engine, conv, sampling, grammar)  # warm both paths (prompt cache, connections)
    bare_run(url, body, key)
    for rep in range(args.reps):
        for side in ("bare", "app") if rep % 2 == 0 else ("app", "bare"):
            if side == "bare":
                bare_runs.append(bare_run(url, body, key))
            else:
                app_runs.append(app_run(engine, conv, sampling, grammar))
    med = {
        side: {k: statistics.median(r[k] for r in runs) for k in ("ttft", "tps", "n")}
        for side, runs in (("bare", bare_runs), ("app", app_runs))
    }
    own_ms = 1000 * statistics.median(r["own"] for r in app_runs)
    out = {
        "server": "llama-server /completion (raw harmony)" if mode == "raw" else "Harmonica /v1/chat/completions",
        "app_own_ttft_ms": own_ms,
        "bare": med["bare"],
        "app": med["app"],
        "ratio": med["app"]["tps"] / med["bare"]["tps"],
        "ttft_added_ms": 1000 * (med["app"]["ttft"] - med["bare"]["ttft"]),
        "runs": {"bare": bare_runs, "app": app_runs},
    }
    print(
        f"{mode:4}: bare {med['bare']['tps']:.1f} tok/s, app {med['app']['tps']:.1f} tok/s, "
        f"ratio {out['ratio']:.3f}; TTFT bare {1000 * med['bare']['ttft']:.1f} ms, "
        f"app {1000 * med['app']['ttft']:.1f} ms, added {out['ttft_added_ms']:.1f} ms (app's own work {own_ms:.2f} ms) "
        f"({med['app']['n']:.0f}/{med['bare']['n']:.0f} tokens)"
    )
    return out


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
    Path("bench/out").mkdir(parents=True, exist_ok=True)
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
        conv.add_user("endless: write a long story about the sea.")  # the peer's grammar hook: endless output
        peer, peer_url = start_peer(args.threads)
        try:
            for mode in ("raw", "chat"):
                results[mode] = measure(mode, root, peer_url, conv, args)
        finally:
            assert peer.stdin is not None
            peer.stdin.close()
            peer.wait(30)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=1))
        print(results["machine"])
    finally:
        proc.terminate()
        proc.wait(15)


if __name__ == "__main__":
    main()
