"""Benchmark: Harmonica's automatic plan against llama.cpp's own server (`--fit on`) at each VRAM budget.

Given a llama.cpp build (llama-server and llama-bench built from the sources vendored in the
llama-cpp-python sdist, the same ggml Harmonica runs on) and a model, for each budget:
- a ballast process (torch) fills the GPU until only the budget is free, as on a smaller card;
- llama-server runs with its defaults (`--fit on` places the model in the free memory; only the
  context is set, to --ctx) and gets one completion request: the prompt (--prompt-tokens token
  ids), --gen-tokens tokens, temperature 1, top_p 1 (top_k 0, min_p 0: the whole vocabulary),
  a seed, no prompt cache. Its own timings are recorded;
- Harmonica plans with the card's total and free memory both set to the budget (a consumer card
  of that size), loads the plan and streams the same prompt with the same sampler through
  Engine.stream;
- each side's peak VRAM is the device's used memory (NVML) above what was used before it started.
Then llama-bench gives the ceiling (tg128 and pp512, at depth 0 and at the prompt's depth).

    python bench/peer.py --bin BUILD/bin --model MODEL.gguf --out DIR
    python bench/peer.py --bin BUILD/bin --model SMALL.gguf --out DIR --dry-run   # no GPU: rehearsal

Writes DIR/peer.json and DIR/peer.md (the table for bench/RESULTS.md).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

GiB = 1 << 30
MiB = 1 << 20
OOM_WORDS = ("out of memory", "failed to allocate", "cudaMalloc failed", "unable to allocate", "CUDA error")


@dataclass
class Side:
    """One program at one budget."""

    who: str  # "llama-server", "harmonica", "harmonica (CPU sampler)"
    budget: str  # "all" or GiB as text
    status: str = "not run"  # ok, oom, error, timeout
    detail: str = ""
    prompt_tokens: int = 0
    gen_tokens: int = 0
    pp_tok_s: float = 0.0
    tg_tok_s: float = 0.0
    vram_peak: int | None = None  # bytes above the baseline (ballast included in the baseline)
    placement: str = ""  # what the program chose
    extra: dict[str, Any] = field(default_factory=dict)
    wall_s: float = 0.0


# --- GPU memory: NVML sampling and the torch ballast ---------------------------------------------------


class VramPeak(threading.Thread):
    """Polls the device's used memory (NVML) and keeps the peak."""

    def __init__(self, index: int, interval: float = 0.02) -> None:
        super().__init__(daemon=True)
        import pynvml  # type: ignore[import-untyped]

        self.nv = pynvml
        pynvml.nvmlInit()
        self.h = pynvml.nvmlDeviceGetHandleByIndex(index)
        self.base = self.used()
        self.peak = self.base
        self.interval = interval
        self.stop_event = threading.Event()

    def used(self) -> int:
        return int(self.nv.nvmlDeviceGetMemoryInfo(self.h).used)

    def free(self) -> int:
        return int(self.nv.nvmlDeviceGetMemoryInfo(self.h).free)

    def run(self) -> None:
        while not self.stop_event.is_set():
            self.peak = max(self.peak, self.used())
            time.sleep(self.interval)

    def finish(self) -> int:
        self.stop_event.set()
        self.join(2)
        self.peak = max(self.peak, self.used())
        return self.peak - self.base


BALLAST_CODE = r"""
import sys, torch
want_free = int(sys.argv[1])
torch.cuda.init()
held = []
def free(): return torch.cuda.mem_get_info()[0]
step = 1 << 30
while free() - want_free > (16 << 20):
    n = min(step, free() - want_free)
    if n < (2 << 20):
        break
    try:
        t = torch.empty(n, dtype=torch.uint8, device="cuda"); t.fill_(1); held.append(t)
    except RuntimeError:
        step //= 2
        if step < (2 << 20):
            break
    if free() - want_free < step:
        step = max(2 << 20, (free() - want_free) // 2)
torch.cuda.synchronize()
print("ready", free(), flush=True)
sys.stdin.read()
"""


class Ballast:
    """A torch process holding all but `budget` bytes of the GPU until closed."""

    def __init__(self, budget: int, gpu: int) -> None:
        env = dict(os.environ, CUDA_VISIBLE_DEVICES=str(gpu))
        self.proc = subprocess.Popen(
            [sys.executable, "-c", BALLAST_CODE, str(budget)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().split()
        if not line or line[0] != "ready":
            self.close()
            raise RuntimeError("the ballast process did not start")
        self.free_after = int(line[1])

    def close(self) -> None:
        try:
            if self.proc.stdin:
                self.proc.stdin.close()
            self.proc.wait(20)
        except Exception:  # noqa: BLE001
            self.proc.kill()


# --- llama-server -----------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _post(url: str, body: dict[str, Any], timeout: float) -> dict[str, Any]:
    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return dict(json.loads(r.read()))


_FRACTION = {"UP": "gate+down in RAM", "GATE": "down in RAM", "ATTN": "all its FFN in RAM"}


def _fit_choice(log: str) -> str:
    """What llama.cpp's --fit chose, from the server's trace log (-lv 4 prints it)."""
    if "no changes needed" in log:
        return "all on GPU (fit: no change needed)"
    layers = re.findall(r"(\d+) layers \(\s*(\d+) overflowing\),\s*(\d+) MiB used", log)
    if not layers:
        return ""
    n, part, used = layers[-1]
    text = f"{n} layers on GPU, experts of {part} in RAM"
    kind = re.findall(r"overflow_type\)=\(\d+, \d+, (\w+)\)", log)
    if kind and int(part) > 0:
        text += f" (the first of them partly: {_FRACTION.get(kind[-1], kind[-1])})"
    return text + f"; fit's estimate {int(used) / 1024:.1f} GiB"


def run_server(args: argparse.Namespace, prompt: list[int], budget: str, vram: VramPeak | None) -> Side:
    side = Side("llama-server", budget)
    port = _free_port()
    log_path = args.out / f"server-{budget}.log"
    cmd = [str(args.bin / "llama-server"), "-m", str(args.model), "-c", str(args.ctx), "--host", "127.0.0.1"]
    # -lv 4: trace logging only (it prints what --fit decided); nothing else changes.
    cmd += ["--port", str(port), "-lv", "4", *args.server_args]
    t0 = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=_child_env(args))
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.time() + args.load_timeout
        while time.time() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"llama-server exited with code {proc.returncode}")
            try:
                with urllib.request.urlopen(base + "/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.5)
        else:
            raise TimeoutError("llama-server did not become ready")
        sampler = {"temperature": 1.0, "top_p": 1.0, "top_k": 0, "min_p": 0.0, "seed": args.seed}
        _post(base + "/completion", {"prompt": prompt[:32], "n_predict": 8, "cache_prompt": False, **sampler}, 300)
        r = _post(
            base + "/completion",
            {"prompt": prompt, "n_predict": args.gen_tokens, "cache_prompt": False, **sampler},
            args.run_timeout,
        )
        t = r.get("timings", {})
        side.prompt_tokens = int(t.get("prompt_n", 0))
        side.gen_tokens = int(t.get("predicted_n", 0))
        side.pp_tok_s = float(t.get("prompt_per_second", 0.0))
        side.tg_tok_s = float(t.get("predicted_per_second", 0.0))
        side.status = "ok"
    except Exception as e:  # noqa: BLE001 - recorded, the benchmark goes on
        side.status, side.detail = "error", f"{type(e).__name__}: {e}"[-300:]
    finally:
        if vram is not None:
            side.vram_peak = vram.finish()
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    text = log_path.read_text(errors="replace")
    side.placement = _fit_choice(text)
    if side.status != "ok" and any(w.lower() in text.lower() for w in OOM_WORDS):
        side.status = "oom"
    side.wall_s = time.perf_counter() - t0
    return side


# --- Harmonica (a child process per run, so each has a fresh CUDA context) ---------------------------


def harmonica_child(args: argparse.Namespace) -> int:
    """Plan for the budget, load, stream the prompt; print one JSON line."""
    out: dict[str, Any] = {"status": "error"}
    try:
        import llama_cpp  # noqa: F401 - before numpy (design.md: the CUDA build crashed the other way)

        from app.core import hardware
        from app.core.engine import Engine, Sampling
        from app.core.planner import Wishes, plan_for_file

        spec = json.loads(args.harmonica_child)
        prof = hardware.detect()
        gpus = [g for g in prof.gpus if g.vendor == "nvidia"]
        if spec["budget"] is not None and gpus:
            b = int(spec["budget"])
            g = gpus[0]
            prof.gpus = [g.__class__(**{**asdict(g), "vram_total": b, "vram_free": min(b, g.vram_free)})]
        if args.dry_run:
            from app.core.hardware import GpuInfo

            fake = GpuInfo("nvidia", "pretend GPU (dry run)", 24 * GiB, 24 * GiB, backend_hint="CUDA", device="")
            prof.gpus, prof.backends = [fake], ["CUDA", "CPU"]
        wishes = Wishes(n_ctx=args.ctx, backend="cpu" if spec.get("cpu") else None, n_threads=spec.get("n_threads"))
        p = plan_for_file(args.model, prof, wishes)
        out["plan"] = p.summary()
        out["est_vram"] = p.est_vram_bytes
        out["n_batch"] = p.n_batch
        out["n_threads"] = p.n_threads
        if not p.fits:
            raise RuntimeError("the plan does not fit: " + " ".join(p.reasons[-2:]))
        settings = p.to_load_settings()
        if spec.get("backend_sampling") is not None:
            settings.backend_sampling = bool(spec["backend_sampling"])
        if args.dry_run:
            settings.n_gpu_layers, settings.n_cpu_moe, settings.n_cpu_moe_partial, settings.devices = 0, 0, 0, ()
        engine = Engine()
        t0 = time.perf_counter()
        info = engine.load(args.model, settings)
        out["load_s"] = time.perf_counter() - t0
        out["buffers"] = info.buffers
        prompt = spec["prompt"]
        sampling = Sampling(temperature=1.0, top_p=1.0, top_k=0, min_p=0.0, seed=args.seed, max_tokens=8)
        # Warm-up on another prompt (its first token differs, so nothing of it is reused), with the
        # same sampler settings, as the messages of a chat have: a new sampler on the GPU costs
        # llama.cpp one re-reservation of its graphs (tens of ms) at the next prompt.
        if spec.get("cold_sampler"):
            sampling.seed = args.seed + 1
        list(engine.stream(prompt[1:33], sampling))
        sampling.seed = args.seed
        sampling.max_tokens = int(spec.get("gen_tokens") or args.gen_tokens)
        n = sum(1 for _ in engine.stream(prompt, sampling))
        s = engine.last_stats
        assert s is not None
        out.update(
            status="ok",
            prompt_tokens=s.prompt_tokens - s.cached_tokens,
            gen_tokens=n,
            pp_tok_s=s.prompt_tokens_per_s,
            tg_tok_s=s.tokens_per_s,
            stop=s.stop_reason,
            sampling_used="backend" if engine._bchain is not None else "cpu",
        )
        engine.unload()
    except Exception as e:  # noqa: BLE001
        out["detail"] = f"{type(e).__name__}: {e}"[-400:]
    print("RESULT " + json.dumps(out), flush=True)
    return 0


def run_harmonica(
    args: argparse.Namespace, prompt: list[int], budget: str, nbytes: int | None, vram: VramPeak | None, **spec: Any
) -> Side:
    who = (
        "harmonica"
        if spec.get("backend_sampling") is None
        else f"harmonica (backend_sampling={spec['backend_sampling']})"
    )
    side = Side(who, budget)
    payload = json.dumps({"budget": nbytes, "prompt": prompt, **spec})
    cmd = [sys.executable, str(Path(__file__).resolve()), "--model", str(args.model), "--ctx", str(args.ctx)]
    cmd += ["--gen-tokens", str(args.gen_tokens), "--seed", str(args.seed), "--harmonica-child", payload]
    if args.dry_run:
        cmd.append("--dry-run")
    env = _child_env(args, cpu=bool(spec.get("cpu")))
    t0 = time.perf_counter()
    log_path = args.out / f"harmonica-{budget}{'-' + str(spec.get('backend_sampling')) if spec else ''}.log"
    try:
        done = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            timeout=args.run_timeout + args.load_timeout,
            cwd=ROOT,
            env=env,
        )
        log_path.write_text(done.stdout + done.stderr)
        line = next((ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")), None)
        data = json.loads(line[7:]) if line else {"status": "error", "detail": f"exit {done.returncode}"}
    except subprocess.TimeoutExpired:
        data = {"status": "timeout"}
    if vram is not None:
        side.vram_peak = vram.finish()
    side.status = str(data.get("status", "error"))
    side.detail = str(data.get("detail", ""))
    if (
        side.status != "ok"
        and log_path.exists()
        and any(w.lower() in log_path.read_text(errors="replace").lower() for w in OOM_WORDS)
    ):
        side.status = "oom"
    side.prompt_tokens = int(data.get("prompt_tokens", 0))
    side.gen_tokens = int(data.get("gen_tokens", 0))
    side.pp_tok_s = float(data.get("pp_tok_s", 0.0))
    side.tg_tok_s = float(data.get("tg_tok_s", 0.0))
    side.placement = str(data.get("plan", ""))
    keys = ("est_vram", "n_batch", "n_threads", "sampling_used", "stop", "load_s", "buffers")
    side.extra = {k: data[k] for k in keys if k in data}
    side.wall_s = time.perf_counter() - t0
    return side


def _child_env(args: argparse.Namespace, cpu: bool = False) -> dict[str, str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if args.dry_run or cpu:
        env["CUDA_VISIBLE_DEVICES"] = ""
    return env


def run_cpu(args: argparse.Namespace, prompt: list[int]) -> list[Side]:
    """CPU only (GPU hidden from both): llama-bench tg at the prompt's depth against Engine.stream,
    alternating --cpu-reps times; each side's figure is its median."""
    n_prompt, n_gen = args.cpu_prompt_tokens, args.cpu_gen_tokens
    har_runs: list[Side] = []
    bench_tg: list[float] = []
    side = Side("llama-bench (CPU only)", "cpu")
    threads = args.cpu_threads
    t0 = time.perf_counter()
    for _ in range(max(1, args.cpu_reps)):
        spec: dict[str, Any] = {"cpu": True, "gen_tokens": n_gen}
        if args.cpu_threads:
            spec["n_threads"] = args.cpu_threads
        har_runs.append(run_harmonica(args, prompt[:n_prompt], "cpu", None, None, **spec))
        threads = threads or int(har_runs[-1].extra.get("n_threads") or os.cpu_count() or 1)
        cmd = [str(args.bin / "llama-bench"), "-m", str(args.model), "-ngl", "0", "-fa", "1", "-p", "0"]
        cmd += ["-n", str(n_gen), "-d", str(n_prompt), "-r", "1", "-t", str(threads), "-o", "json"]
        try:
            done = subprocess.run(
                cmd, capture_output=True, text=True, timeout=args.run_timeout, env=_child_env(args, cpu=True)
            )
            (args.out / "llama-bench-cpu.log").write_text(done.stderr)
            bench_tg.append(float(json.loads(done.stdout)[0]["avg_ts"]))
        except Exception as e:  # noqa: BLE001
            side.status, side.detail = "error", f"{type(e).__name__}: {e}"[-300:]
    ok = [h for h in har_runs if h.status == "ok"]
    har = sorted(ok, key=lambda h: h.tg_tok_s)[len(ok) // 2] if ok else har_runs[-1]
    har.who = "harmonica (CPU only)"
    har.extra["all_tg"] = [round(h.tg_tok_s, 2) for h in har_runs]
    if bench_tg:
        side.tg_tok_s = sorted(bench_tg)[len(bench_tg) // 2]
        side.gen_tokens, side.status = n_gen, "ok"
        side.placement = f"{threads} threads"
        side.extra["all_tg"] = [round(v, 2) for v in bench_tg]
    side.wall_s = time.perf_counter() - t0
    return [side, har]


# --- llama-bench -----------------------------------------------------------------------------------


def run_bench(args: argparse.Namespace) -> list[dict[str, Any]]:
    cmd = [str(args.bin / "llama-bench"), "-m", str(args.model), "-p", "512", "-n", "128", "-fa", "1", "-r", "3"]
    cmd += ["-d", f"0,{args.prompt_tokens}", "-o", "json"]
    cmd += ["-ngl", "0" if args.dry_run else "99", *args.bench_args]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=args.run_timeout * 2, env=_child_env(args))
        (args.out / "llama-bench.log").write_text(done.stderr)
        rows = json.loads(done.stdout)
    except Exception as e:  # noqa: BLE001
        return [{"error": f"{type(e).__name__}: {e}"[-300:]}]
    return [
        {
            "test": ("pp" if r.get("n_prompt") else "tg") + str(r.get("n_prompt") or r.get("n_gen")),
            "depth": r.get("n_depth", 0),
            "tok_s": r.get("avg_ts"),
            "stddev": r.get("stddev_ts"),
            "threads": r.get("n_threads"),
        }
        for r in rows
    ]


# --- the table --------------------------------------------------------------------------------------


def _gib(b: int | None) -> str:
    return "" if b is None else f"{b / GiB:.2f}"


def markdown(meta: dict[str, Any], sides: list[Side], bench: list[dict[str, Any]]) -> str:
    lines = [
        f"`python bench/peer.py` ({meta['date']}). GPU: {meta['gpu']}; CPU: {meta['cpu']}; model {meta['model']} "
        f"({meta['model_gb']:.2f} GB); context {meta['ctx']}; prompt {meta['prompt_tokens']} tokens; "
        f"{meta['gen_tokens']} generated; temperature 1, top_p 1 (top_k 0, min_p 0), seed {meta['seed']}. "
        "VRAM: device memory used above what was in use before the program started (ballast excluded).",
        "",
        "| free VRAM | llama-server tg / pp (tok/s) | its placement | VRAM | Harmonica tg / pp (tok/s) | its plan | VRAM | tg ratio | pp ratio |",
        "|---|---:|---|---:|---:|---|---:|---:|---:|",
    ]
    by: dict[str, dict[str, Side]] = {}
    for s in sides:
        if s.budget != "cpu":
            by.setdefault(s.budget, {})[s.who] = s
    for budget, d in by.items():
        srv, har = d.get("llama-server"), d.get("harmonica")

        def cell(s: Side | None) -> tuple[str, str, str]:
            if s is None:
                return "", "", ""
            if s.status != "ok":
                return f"**{s.status}** {s.detail[:80]}", s.placement, _gib(s.vram_peak)
            return f"{s.tg_tok_s:,.1f} / {s.pp_tok_s:,.0f}", s.placement, _gib(s.vram_peak)

        a, b = cell(srv), cell(har)
        tg = f"{har.tg_tok_s / srv.tg_tok_s:.2f}" if srv and har and srv.tg_tok_s and har.tg_tok_s else ""
        pp = f"{har.pp_tok_s / srv.pp_tok_s:.2f}" if srv and har and srv.pp_tok_s and har.pp_tok_s else ""
        label = "all" if budget == "all" else f"{budget} GiB"
        lines.append(f"| {label} | {a[0]} | {a[1]} | {a[2]} | {b[0]} | {b[1]} | {b[2]} | {tg} | {pp} |")
    others = [s for s in sides if s.who not in ("llama-server", "harmonica")]
    if others:
        lines += ["", "| variant | free VRAM | tg / pp (tok/s) | VRAM | notes |", "|---|---|---:|---:|---|"]
        for s in others:
            res = f"{s.tg_tok_s:,.1f} / {s.pp_tok_s:,.0f}" if s.status == "ok" else s.status
            lines.append(f"| {s.who} | {s.budget} | {res} | {_gib(s.vram_peak)} | {s.extra.get('sampling_used', '')} |")
    cpu = {s.who: s for s in sides if s.budget == "cpu"}
    lb, hc = cpu.get("llama-bench (CPU only)"), cpu.get("harmonica (CPU only)")
    if lb and hc and lb.tg_tok_s and hc.tg_tok_s:
        lines += [
            "",
            f"CPU only (GPU hidden from both): Harmonica {hc.tg_tok_s:.2f} tok/s ({hc.extra.get('n_threads')} threads) "
            f"against llama-bench tg{lb.gen_tokens} at the same depth {lb.tg_tok_s:.2f} tok/s ({lb.placement}): "
            f"ratio {hc.tg_tok_s / lb.tg_tok_s:.3f} (medians; all runs: Harmonica {hc.extra.get('all_tg')}, "
            f"llama-bench {lb.extra.get('all_tg')}).",
        ]
    if bench:
        lines += [
            "",
            "llama-bench (`-fa 1 -ngl 99 -r 3`):",
            "",
            "| test | depth | tok/s | threads |",
            "|---|---:|---:|---:|",
        ]
        for r in bench:
            if "error" in r:
                lines.append(f"| error: {r['error']} | | | |")
            else:
                lines.append(f"| {r['test']} | {r['depth']} | {r['tok_s']:.1f} ± {r['stddev']:.1f} | {r['threads']} |")
    return "\n".join(lines) + "\n"


# --- main -------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", type=Path, help="folder with llama-server and llama-bench")
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--out", type=Path, default=Path("peer-out"))
    ap.add_argument("--budgets", default="all,24,16,12,8,6", help="'all' and GiB of free VRAM, comma-separated")
    ap.add_argument("--ctx", type=int, default=8192)
    ap.add_argument("--prompt-tokens", type=int, default=2000)
    ap.add_argument("--gen-tokens", type=int, default=256)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--gpu", type=int, default=0, help="NVML index of the GPU")
    ap.add_argument("--variants", default="all", help="budgets that also run Harmonica with the other sampling path")
    ap.add_argument("--no-bench", action="store_true")
    ap.add_argument("--cpu", action="store_true", help="also compare CPU only: Harmonica against llama-bench")
    ap.add_argument("--cpu-prompt-tokens", type=int, default=64)
    ap.add_argument("--cpu-gen-tokens", type=int, default=64)
    ap.add_argument("--cpu-reps", type=int, default=1, help="alternating repetitions of the CPU-only pair")
    ap.add_argument("--cpu-threads", type=int, default=0, help="threads for both (default: Harmonica's plan)")
    ap.add_argument("--only", choices=("server", "harmonica"), help="run one side only")
    ap.add_argument("--load-timeout", type=float, default=240.0)
    ap.add_argument("--run-timeout", type=float, default=240.0)
    ap.add_argument("--server-args", default="", help="extra llama-server arguments (quoted)")
    ap.add_argument("--bench-args", default="", help="extra llama-bench arguments (quoted)")
    ap.add_argument("--dry-run", action="store_true", help="no GPU: everything on the CPU, no ballast, no NVML")
    ap.add_argument("--harmonica-child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.server_args = args.server_args.split()
    args.bench_args = args.bench_args.split()
    if args.harmonica_child:
        return harmonica_child(args)
    if args.bin is None:
        ap.error("--bin is required")
    args.out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(7)
    from app.core.gguf_info import read_gguf_info

    info = read_gguf_info(args.model)
    prompt = [rng.randrange(300, min(150_000, info.n_vocab - 1)) for _ in range(args.prompt_tokens)]
    gpu_name, total = "none (dry run)", 0
    if not args.dry_run:
        import pynvml  # type: ignore[import-untyped]

        pynvml.nvmlInit()
        h = pynvml.nvmlDeviceGetHandleByIndex(args.gpu)
        name = pynvml.nvmlDeviceGetName(h)
        gpu_name = name.decode() if isinstance(name, bytes) else str(name)
        total = int(pynvml.nvmlDeviceGetMemoryInfo(h).total)
        gpu_name += f" ({total / GiB:.1f} GiB)"
    meta = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "gpu": gpu_name,
        "cpu": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "model": args.model.name,
        "model_gb": info.file_size / 1e9,
        "ctx": args.ctx,
        "prompt_tokens": args.prompt_tokens,
        "gen_tokens": args.gen_tokens,
        "seed": args.seed,
    }
    variants = {v.strip() for v in args.variants.split(",") if v.strip()}
    sides: list[Side] = []
    bench: list[dict[str, Any]] = []
    t_all = time.perf_counter()

    def save() -> None:
        data = {"meta": meta, "runs": [asdict(s) for s in sides], "llama_bench": bench}
        (args.out / "peer.json").write_text(json.dumps(data, indent=1))
        (args.out / "peer.md").write_text(markdown(meta, sides, bench))

    if not args.no_bench:  # first: the ceiling matters most and takes half a minute
        bench = run_bench(args)
        print(json.dumps(bench), flush=True)
        save()
    for budget in [b.strip() for b in args.budgets.split(",") if b.strip()]:
        nbytes = None if budget == "all" else int(float(budget) * GiB)
        runs: list[tuple[str, dict[str, Any]]] = []
        if args.only != "harmonica":
            runs.append(("server", {}))
        if args.only != "server":
            runs.append(("harmonica", {}))
            if budget in variants:
                runs.append(("harmonica", {"backend_sampling": False}))
        for kind, spec in runs:
            ballast = None
            try:
                if nbytes is not None and not args.dry_run:
                    ballast = Ballast(nbytes, args.gpu)
                vram = None if args.dry_run else VramPeak(args.gpu)
                if vram is not None:
                    vram.start()
                if kind == "server":
                    s = run_server(args, prompt, budget, vram)
                else:
                    s = run_harmonica(args, prompt, budget, nbytes, vram, **spec)
                if ballast is not None:
                    s.extra["free_before"] = ballast.free_after
            finally:
                if ballast is not None:
                    ballast.close()
            sides.append(s)
            print(
                f"[{time.perf_counter() - t_all:6.1f}s] {budget:>4} {s.who:<40} {s.status:<6} tg {s.tg_tok_s:7.1f} "
                f"pp {s.pp_tok_s:8.1f} vram {_gib(s.vram_peak):>6} | {s.placement} {s.detail[:120]}",
                flush=True,
            )
            save()
    if args.cpu:
        for s in run_cpu(args, prompt):
            sides.append(s)
            print(
                f"[{time.perf_counter() - t_all:6.1f}s]  cpu {s.who:<40} {s.status:<6} tg {s.tg_tok_s:7.2f} | {s.placement} {s.detail[:120]}"
            )
        save()
    print(markdown(meta, sides, bench), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
