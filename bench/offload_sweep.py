"""Benchmark: the planner's offload plan against a layer-only split and a sweep, at VRAM budgets of 6–24 GB.

For each budget (GiB of free VRAM handed to the planner, with the real GPU's free memory replaced):
the planned configuration is loaded in a child process that first fills the rest of the GPU with a
ballast allocation, so only the budget is really free, then reads a 512-token prompt and generates
128 tokens. Each configuration's peak VRAM (NVML, this process; falling back to the device's used
memory), its prompt and generation speed and llama.cpp's own buffer report are recorded. The same
is done, without ballast, for the largest layer-only split the estimate allows and for a sweep of
n_gpu_layers × experts-on-CPU blocks around the plans; a configuration fits a budget when its
measured peak is within it. Every configuration runs in its own process: an out-of-memory or a
crash is recorded as such and the sweep goes on.

    python bench/offload_sweep.py MODEL.gguf --out DIR            # on an NVIDIA GPU
    python bench/offload_sweep.py MODEL.gguf --out DIR --dry-run  # anywhere: CPU, estimates for VRAM

Targets (issue 4): the plan reaches ≥ 95% of the sweep's best generation speed; it beats the
layer-only split ≥ 2× at 8–12 GB; no plan runs out of memory. Writes DIR/offload_sweep.json and
DIR/offload_sweep.md.
"""

from __future__ import annotations

import argparse
import ctypes
import faulthandler
import json
import os
import platform
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

GiB = 1 << 30
MiB = 1 << 20
DEFAULT_BUDGETS = (6.0, 8.0, 12.0, 16.0, 24.0)
OOM_WORDS = ("out of memory", "failed to allocate", "cudaMalloc failed", "unable to allocate", "ErrorOutOfDeviceMemory")


# --- configurations ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    """One way to load the model (what the child process runs)."""

    n_gpu_layers: int
    n_cpu_moe: int
    use_mmap: bool

    @property
    def key(self) -> str:
        return f"ngl={self.n_gpu_layers},cmoe={self.n_cpu_moe},mmap={int(self.use_mmap)}"

    def label(self, n_layer: int) -> str:
        blocks = f"{self.n_cpu_moe} block{'s' if self.n_cpu_moe != 1 else ''}"
        if self.n_gpu_layers >= n_layer + 1:
            return "all on GPU" if self.n_cpu_moe == 0 else f"experts of {blocks} on CPU"
        if self.n_cpu_moe > n_layer + 1 - self.n_gpu_layers:
            return f"{self.n_gpu_layers} layers + experts of {blocks} on CPU"
        return f"{self.n_gpu_layers} layers on GPU"

    def normalized(self, n_layer: int) -> Config:
        """The same placement with no redundant expert override (blocks already on the CPU)."""
        if self.n_gpu_layers <= n_layer and self.n_cpu_moe <= n_layer + 1 - self.n_gpu_layers:
            return Config(self.n_gpu_layers, 0, self.use_mmap)
        return self


@dataclass
class Run:
    """What one child process measured."""

    config: Config
    ballast_budget_gib: float | None = None  # set when the run had only this much VRAM free
    status: str = "not run"  # ok, oom, crash, timeout, error, skipped
    detail: str = ""
    load_s: float = 0.0
    prompt_tok_s: float = 0.0
    gen_tok_s: float = 0.0
    peak_vram_proc: int | None = None  # NVML per-process, ballast subtracted
    peak_vram_device: int | None = None  # device used memory minus what was used before, ballast subtracted
    llama_device_buffers: int | None = None  # what llama.cpp reported in device (non-host) buffers
    buffers: dict[str, int] = field(default_factory=dict)
    offloaded_layers: list[int] | None = None
    notes: list[str] = field(default_factory=list)
    wall_s: float = 0.0

    @property
    def peak_vram(self) -> int | None:
        return self.peak_vram_proc if self.peak_vram_proc is not None else self.peak_vram_device


def mmap_rule(c_ngl: int, c_cmoe: int, n_layer: int) -> bool:
    """mmap only when every weight goes to the GPU (design.md: pinned host memory makes prompt
    processing ~5x faster whenever some weights stay in RAM)."""
    return c_ngl >= n_layer + 1 and c_cmoe == 0


# --- the child: load one configuration and measure it -------------------------------------------------


class _VramSampler(threading.Thread):
    """Polls NVML for this process's and the device's memory use and keeps the peaks."""

    def __init__(self, nv: Any, handle: Any, interval: float = 0.01) -> None:
        super().__init__(daemon=True)
        self.nv, self.h, self.interval = nv, handle, interval
        self.stop_event = threading.Event()
        self.peak_proc: int | None = None
        self.peak_dev = 0
        self.pid = os.getpid()

    def sample(self) -> None:
        nv = self.nv
        try:
            self.peak_dev = max(self.peak_dev, int(nv.nvmlDeviceGetMemoryInfo(self.h).used))
        except Exception:  # noqa: BLE001
            pass
        try:
            for p in nv.nvmlDeviceGetComputeRunningProcesses(self.h):
                if int(p.pid) == self.pid and p.usedGpuMemory is not None:
                    self.peak_proc = max(self.peak_proc or 0, int(p.usedGpuMemory))
        except Exception:  # noqa: BLE001 - not supported in some containers
            pass

    def run(self) -> None:
        while not self.stop_event.is_set():
            self.sample()
            time.sleep(self.interval)
        self.sample()


def _ballast(device: str, nbytes: int) -> tuple[list[int], int]:
    """Allocate nbytes on the device through ggml (cudaMalloc), in pieces if one is refused."""
    from app.core import llama_ext

    lib = llama_ext.ggml_lib()
    vp, sz = ctypes.c_void_p, ctypes.c_size_t
    lib.ggml_backend_buft_alloc_buffer.argtypes = [vp, sz]
    lib.ggml_backend_buft_alloc_buffer.restype = vp
    lib.ggml_backend_buffer_get_size.argtypes = [vp]
    lib.ggml_backend_buffer_get_size.restype = sz
    lib.ggml_backend_buffer_clear.argtypes = [vp, ctypes.c_uint8]
    lib.ggml_backend_buffer_clear.restype = None
    dev = lib.ggml_backend_dev_by_name(device.encode())
    if not dev:
        raise RuntimeError(f"no ggml device {device}")
    buft = lib.ggml_backend_dev_buffer_type(dev)
    held: list[int] = []
    total = 0
    piece = nbytes
    while total < nbytes and piece >= 64 * MiB:
        want = min(piece, nbytes - total)
        buf = lib.ggml_backend_buft_alloc_buffer(buft, want)
        if not buf:
            piece //= 2
            continue
        lib.ggml_backend_buffer_clear(buf, 0)  # touch it, so the memory is really taken
        held.append(int(buf))
        total += int(lib.ggml_backend_buffer_get_size(buf))
    return held, total


def child_main(args: argparse.Namespace) -> int:
    """Load one configuration, run prompt + generation, write the measurements as JSON."""
    result_path = Path(args.result)
    out: dict[str, Any] = {"status": "error", "notes": []}

    def write() -> None:
        result_path.write_text(json.dumps(out), encoding="utf-8")

    fault = open(result_path.with_suffix(".fault"), "w")  # noqa: SIM115 - kept open for faulthandler
    faulthandler.enable(fault)
    cfg = json.loads(args.child)
    nv: Any = None
    handle: Any = None
    used0 = free0 = 0
    if not args.dry_run:
        import pynvml

        nv = pynvml
        nv.nvmlInit()
        handle = nv.nvmlDeviceGetHandleByIndex(int(cfg["nvml_index"]))
        mem = nv.nvmlDeviceGetMemoryInfo(handle)
        used0, free0 = int(mem.used), int(mem.free)
    # llama_cpp before numpy (design.md: the other order crashed the CUDA build at load).
    import llama_cpp

    from app.core import llama_ext
    from app.core.engine import Engine, EngineError, LoadSettings

    ballast_bytes = 0
    held: list[int] = []
    if not args.dry_run and cfg.get("budget_bytes"):
        want = free0 - int(cfg["budget_bytes"])
        if want > 0:
            held, ballast_bytes = _ballast(cfg["device"], want)
            out["notes"].append(
                f"ballast {ballast_bytes / GiB:.2f} GiB of {want / GiB:.2f} GiB wanted; free after: {int(nv.nvmlDeviceGetMemoryInfo(handle).free) / GiB:.2f} GiB"
            )  # type: ignore[union-attr]
    out["ballast_bytes"] = ballast_bytes
    sampler = None
    if nv is not None:
        sampler = _VramSampler(nv, handle)
        sampler.start()
    settings = LoadSettings(
        n_ctx=int(cfg["n_ctx"]),
        n_gpu_layers=int(cfg["n_gpu_layers"]),
        n_cpu_moe=int(cfg["n_cpu_moe"]),
        n_threads=int(cfg["n_threads"]),
        n_threads_batch=int(cfg["n_threads_batch"]),
        n_batch=512,
        flash_attn=True,
        kv_type="f16",
        use_mmap=bool(cfg["use_mmap"]),
        swa_full=False,
        cpu_extra_buffers=bool(cfg.get("cpu_extra_buffers", True)),
        devices=tuple(cfg["devices"]) if cfg.get("devices") is not None else None,
    )
    engine = Engine()
    try:
        t0 = time.perf_counter()
        with llama_ext.capture_llama_log() as lines:
            info = engine.load(cfg["model"], settings)
        out["load_s"] = time.perf_counter() - t0
        report = llama_ext.parse_buffer_report(t for _, t in lines)
        out["buffers"] = info.buffers
        out["offloaded_layers"] = list(info.offloaded_layers) if info.offloaded_layers else None
        out["llama_device_buffers"] = report.total(where="device")
        out["status"] = "loaded"
        write()
        ctx = engine._ctx
        rng = random.Random(7)
        n_prompt, n_gen = int(cfg["prompt_tokens"]), int(cfg["gen_tokens"])
        vocab_hi = min(150000, engine._n_vocab - 1)
        prompt = [rng.randrange(300, vocab_hi) for _ in range(n_prompt)]
        mem_h = llama_cpp.llama_get_memory(ctx)

        def decode_prompt() -> float:
            llama_cpp.llama_memory_clear(mem_h, True)
            arr = (llama_cpp.llama_token * n_prompt)(*prompt)
            t = time.perf_counter()
            rc = llama_cpp.llama_decode(ctx, llama_cpp.llama_batch_get_one(arr, n_prompt))
            llama_cpp.llama_synchronize(ctx)
            if rc != 0:
                raise RuntimeError(f"llama_decode returned {rc} for the prompt")
            return time.perf_counter() - t

        def generate(n: int, seed: int) -> list[float]:
            chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
            llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_dist(seed))
            tok = (llama_cpp.llama_token * 1)()
            batch = llama_cpp.llama_batch_get_one(tok, 1)
            stamps: list[float] = []
            try:
                tok[0] = llama_cpp.llama_sampler_sample(chain, ctx, -1)
                stamps.append(time.perf_counter())
                for _ in range(n - 1):
                    rc = llama_cpp.llama_decode(ctx, batch)
                    if rc != 0:
                        raise RuntimeError(f"llama_decode returned {rc} while generating")
                    tok[0] = llama_cpp.llama_sampler_sample(chain, ctx, -1)
                    stamps.append(time.perf_counter())
            finally:
                llama_cpp.llama_sampler_free(chain)
            return stamps

        decode_prompt()  # warm-up: kernels, cuBLAS handles, the CUDA pool, pages of the weights
        generate(8, 1)
        prompt_s = decode_prompt()
        stamps = generate(n_gen, 2)
        out["prompt_tok_s"] = n_prompt / prompt_s
        out["gen_tok_s"] = (len(stamps) - 1) / (stamps[-1] - stamps[0])
        out["status"] = "ok"
    except EngineError as e:
        msg = str(e)
        out["status"] = "oom" if any(w.lower() in msg.lower() for w in OOM_WORDS) else "error"
        out["detail"] = msg[-600:]
    except Exception as e:  # noqa: BLE001 - recorded, never fatal for the sweep
        out["status"], out["detail"] = "error", f"{type(e).__name__}: {e}"[-600:]
    finally:
        if sampler is not None:
            sampler.stop_event.set()
            sampler.join(2)
            if sampler.peak_proc is not None:
                out["peak_vram_proc"] = max(0, sampler.peak_proc - ballast_bytes)
            out["peak_vram_device"] = max(0, sampler.peak_dev - used0 - ballast_bytes)
        write()
    try:
        engine.unload()
    except Exception:  # noqa: BLE001
        pass
    del held  # freed with the process
    return 0


# --- the parent: plan, schedule, run children, report -------------------------------------------------


def _run_child(args: argparse.Namespace, payload: dict[str, Any], workdir: Path, tag: str) -> dict[str, Any]:
    result = workdir / f"{tag}.json"
    for p in (result, result.with_suffix(".fault"), result.with_suffix(".log")):
        p.unlink(missing_ok=True)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(payload), "--result", str(result)]
    if args.dry_run:
        cmd.append("--dry-run")
    env = dict(os.environ)
    if args.dry_run:
        env["CUDA_VISIBLE_DEVICES"] = ""
    t0 = time.perf_counter()
    with open(result.with_suffix(".log"), "w") as log:
        try:
            proc = subprocess.run(
                cmd, stdout=log, stderr=subprocess.STDOUT, timeout=args.run_timeout, env=env, cwd=ROOT, check=False
            )
            rc: int | None = proc.returncode
        except subprocess.TimeoutExpired:
            rc = None
    wall = time.perf_counter() - t0
    data: dict[str, Any] = {}
    if result.exists():
        try:
            data = json.loads(result.read_text(encoding="utf-8"))
        except ValueError:
            data = {}
    tail = ""
    try:
        tail = (
            result.with_suffix(".log").read_text(errors="replace")[-3000:]
            + result.with_suffix(".fault").read_text(errors="replace")[-1000:]
        )
    except OSError:
        pass
    if rc is None:
        data["status"], data["detail"] = "timeout", f"killed after {args.run_timeout:.0f} s"
    elif rc != 0 or data.get("status") in (None, "loaded", "error"):
        oom = any(w.lower() in tail.lower() for w in OOM_WORDS)
        if rc != 0:
            sig = -rc if rc < 0 else None
            data["status"] = "oom" if oom else "crash"
            name = signal.Signals(sig).name if sig and sig in signal.Signals._value2member_map_ else f"exit {rc}"
            data["detail"] = f"{name}: " + (tail.strip().splitlines()[-1][-300:] if tail.strip() else "")
            data["signal"] = sig
        elif oom and data.get("status") != "ok":
            data["status"] = "oom"
    data["wall_s"] = wall
    return data


def _to_run(cfg: Config, data: dict[str, Any], budget: float | None) -> Run:
    r = Run(cfg, ballast_budget_gib=budget)
    r.status = str(data.get("status", "error"))
    r.detail = str(data.get("detail", ""))
    for k in ("load_s", "prompt_tok_s", "gen_tok_s", "wall_s"):
        setattr(r, k, float(data.get(k) or 0.0))
    for k in ("peak_vram_proc", "peak_vram_device", "llama_device_buffers"):
        v = data.get(k)
        setattr(r, k, int(v) if v is not None else None)
    r.buffers = {str(k): int(v) for k, v in (data.get("buffers") or {}).items()}
    r.offloaded_layers = data.get("offloaded_layers")
    r.notes = list(data.get("notes") or [])
    return r


def budget_profile(real: Any, gpu_index: int, budget_gib: float) -> Any:
    """The real profile with the chosen GPU's memory replaced by the budget.

    Total = free = budget: the planner's margin (4% of the card, at least 256 MiB) then matches a
    card of that size rather than the H200's 141 GB.
    """
    b = int(budget_gib * GiB)
    gpus = list(real.gpus)
    gpus[gpu_index] = replace(gpus[gpu_index], vram_total=b, vram_free=b)
    return replace(real, gpus=gpus)


def fake_gpu_profile(real: Any) -> Any:
    """Dry run: this machine plus a pretend NVIDIA GPU (llama.cpp is kept on the CPU)."""
    from app.core.hardware import GpuInfo

    g = GpuInfo("nvidia", "pretend GPU (dry run)", 24 * GiB, 24 * GiB, driver="none", backend_hint="CUDA", device="")
    return replace(real, gpus=[g], backends=["CUDA", "CPU"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", nargs="?", type=Path)
    ap.add_argument("--out", type=Path, default=Path("bench-out"))
    ap.add_argument(
        "--budgets", default=",".join(f"{b:g}" for b in DEFAULT_BUDGETS), help="GiB of free VRAM, comma-separated"
    )
    ap.add_argument("--ctx", type=int, default=8192, help="context size of every configuration")
    ap.add_argument("--prompt-tokens", type=int, default=512)
    ap.add_argument("--gen-tokens", type=int, default=128)
    ap.add_argument("--gpu", type=int, default=0, help="index of the GPU in the hardware profile")
    ap.add_argument(
        "--time-budget",
        type=float,
        default=420.0,
        help="seconds for all runs; lower-priority sweep points are skipped past it",
    )
    ap.add_argument("--run-timeout", type=float, default=150.0, help="seconds one configuration may take")
    ap.add_argument("--threads", type=int, default=0, help="generation threads (default: the planner's)")
    ap.add_argument("--no-ballast", action="store_true", help="do not fill the GPU to the budget for the plans' runs")
    ap.add_argument(
        "--dry-run", action="store_true", help="no GPU: run every configuration on the CPU, judge fit by the estimate"
    )
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return child_main(args)
    if args.model is None:
        ap.error("the model path is required")
    return parent_main(args)


def parent_main(args: argparse.Namespace) -> int:
    import llama_cpp

    from app.core import hardware
    from app.core.planner import Placement, Wishes, estimate, model_info_for_file, plan

    t_start = time.perf_counter()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    work = out / "runs"
    work.mkdir(exist_ok=True)
    info = model_info_for_file(args.model)
    L = info.n_layer
    real = hardware.detect()
    if args.dry_run:
        real = fake_gpu_profile(real)
    nvidia = [i for i, g in enumerate(real.gpus) if g.vendor == "nvidia"]
    if not nvidia:
        print("No NVIDIA GPU found (use --dry-run to exercise the script on the CPU).", file=sys.stderr)
        print("\n".join(real.notes), file=sys.stderr)
        return 2
    gi = args.gpu if args.gpu in nvidia else nvidia[0]
    gpu = real.gpus[gi]
    if not args.dry_run and (real.backends is None or "CUDA" not in real.backends):
        print(
            f"llama.cpp here has no CUDA backend (backends: {real.backends}); build llama-cpp-python with -DGGML_CUDA=on.",
            file=sys.stderr,
        )
        return 2
    device = gpu.device or "CUDA0"
    budgets = [float(b) for b in args.budgets.split(",") if b.strip()]
    print(
        f"model {args.model} ({info.file_size / 1e9:.2f} GB, {L} blocks); GPU {gpu.name} {gpu.vram_total / GiB:.1f} GiB ({gpu.vram_free / GiB:.1f} free) as {device}",
        flush=True,
    )

    # What the planner says per budget, and the largest layer-only split its estimate allows.
    plans: dict[float, Any] = {}
    layer_only: dict[float, Config | None] = {}
    threads = threads_batch = 0
    for b in budgets:
        prof = budget_profile(real, gi, b)
        p = plan(prof, info, Wishes(n_ctx=args.ctx, n_threads=args.threads or None))
        plans[b] = p
        threads, threads_batch = p.n_threads, p.n_threads_batch
        lo = None
        for k in range(L + 1, 0, -1):
            q = plan(prof, info, Wishes(n_ctx=args.ctx, n_gpu_layers=k, n_cpu_moe=0))
            if q.fits:
                lo = Config(k, 0, mmap_rule(k, 0, L))
                break
        layer_only[b] = lo
        print(f"  {b:g} GiB: plan {p.summary()}; layer-only {lo.n_gpu_layers if lo else 'none'}", flush=True)

    def plan_config(p: Any) -> Config | None:
        return Config(p.n_gpu_layers, p.n_cpu_moe, p.use_mmap).normalized(L) if p.fits and p.use_gpu else None

    # The queue, by priority: plans (under ballast), layer-only baselines, then sweep neighbours.
    queue: list[tuple[int, Config, float | None]] = []
    seen: set[str] = set()

    def add(prio: int, c: Config | None, ballast: float | None = None) -> None:
        if c is None or not (0 <= c.n_gpu_layers <= L + 1 and 0 <= c.n_cpu_moe <= L):
            return
        c = c.normalized(L)
        # A configuration measured once serves every budget (its allocations do not depend on the
        # free memory); only the plans run again, each under its own budget's ballast.
        if ballast is None and c.key in seen:
            return
        seen.add(c.key)
        queue.append((prio, c, ballast))

    use_ballast = not (args.no_ballast or args.dry_run)
    done_plan: dict[str, float] = {}
    for b in sorted(budgets):
        c = plan_config(plans[b])
        if c is None:
            continue
        # A plan that already ran under a smaller budget cannot fail under a larger one.
        if c.key in done_plan:
            continue
        done_plan[c.key] = b
        add(0, c, b if use_ballast else None)
    for b in budgets:
        add(1, layer_only[b])
    for b in budgets:
        p = plans[b]
        c = plan_config(p)
        if c is None:
            continue
        m = c.n_cpu_moe
        if c.n_gpu_layers == L + 1 and m > 0:
            for d, prio in ((-1, 2), (-2, 2), (1, 3), (2, 3)):
                mm = max(0, min(L, m + d))
                add(prio, Config(L + 1, mm, mmap_rule(L + 1, mm, L)))
            # Mixed: two whole blocks on the CPU and one block's experts fewer (rarely better: a
            # block's experts weigh about 15 times its attention).
            add(4, Config(L - 1, max(0, m - 1), False))
        lo = layer_only[b]
        if lo is not None and lo.n_gpu_layers <= L:
            for d, prio in ((1, 2), (2, 3), (-1, 3)):
                k = max(1, min(L, lo.n_gpu_layers + d))
                add(prio, Config(k, 0, mmap_rule(k, 0, L)))
    add(3, Config(L + 1, L, False))  # every expert on the CPU: the least VRAM with attention on the GPU
    add(3, Config(L + 1, 0, True))
    queue.sort(key=lambda q: q[0])

    runs: list[Run] = []
    measured: dict[str, Run] = {}
    for n, (prio, c, ballast) in enumerate(queue):
        elapsed = time.perf_counter() - t_start
        if prio >= 2 and elapsed > args.time_budget:
            r = Run(
                c,
                ballast_budget_gib=ballast,
                status="skipped",
                detail=f"time budget of {args.time_budget:.0f} s used up",
            )
            runs.append(r)
            continue
        payload = dict(
            model=str(args.model),
            n_ctx=args.ctx,
            n_gpu_layers=c.n_gpu_layers,
            n_cpu_moe=c.n_cpu_moe,
            use_mmap=c.use_mmap,
            n_threads=threads,
            n_threads_batch=threads_batch,
            prompt_tokens=args.prompt_tokens,
            gen_tokens=args.gen_tokens,
            devices=[] if args.dry_run else [device],
            device=device,
            nvml_index=gpu.index,
            budget_bytes=int(ballast * GiB) if ballast is not None else 0,
        )
        tag = f"{n:02d}-" + c.key.replace(",", "_").replace("=", "")
        data = _run_child(args, payload, work, tag)
        if data.get("signal") == signal.SIGILL:
            # Some VMs report AMX but cannot run it; llama.cpp's extra CPU buffers use it.
            payload["cpu_extra_buffers"] = False
            data = _run_child(args, payload, work, tag)
            data.setdefault("notes", []).append("SIGILL with llama.cpp's extra CPU buffers; rerun without them")
        r = _to_run(c, data, ballast)
        runs.append(r)
        if r.status == "ok" and c.key not in measured:
            measured[c.key] = r
        vram = f"{r.peak_vram / GiB:.2f} GiB" if r.peak_vram is not None else "n/a"
        print(
            f"[{time.perf_counter() - t_start:5.0f} s] {c.label(L):40s} {('ballast ' + format(ballast, 'g') + ' GiB') if ballast else '':16s} "
            f"{r.status:7s} VRAM {vram:>10s}  prompt {r.prompt_tok_s:8.1f} tok/s  gen {r.gen_tok_s:7.2f} tok/s  ({r.wall_s:.0f} s) {r.detail[:120]}",
            flush=True,
        )

    # Judge each budget.
    def est_vram(c: Config, b: float) -> int:
        prof = budget_profile(real, gi, b)
        return estimate(info, Placement(c.n_gpu_layers, c.n_cpu_moe, True), args.ctx, gpu=prof.gpus[gi]).vram

    def fits(r: Run, b: float) -> bool:
        if r.status != "ok":
            return False
        if r.peak_vram is None:  # dry run: the estimate stands in for the measurement
            return est_vram(r.config, b) <= b * GiB
        return r.peak_vram <= b * GiB

    summary: list[dict[str, Any]] = []
    for b in budgets:
        p = plans[b]
        c = plan_config(p)
        plan_runs = [r for r in runs if c is not None and r.config == c and r.status != "skipped"]
        # The proof run is the one under this budget's ballast (or a smaller budget's, which is stricter).
        proof = next(
            (r for r in plan_runs if r.ballast_budget_gib is not None and r.ballast_budget_gib <= b), None
        ) or (plan_runs[0] if plan_runs else None)
        lo = layer_only[b]
        fitting = [r for r in measured.values() if fits(r, b)]
        # The layer-only baseline is the fastest measured layer split that really fits (fairer
        # than the one our own estimate picked, which may be conservative), else the estimate's pick.
        splits = [r for r in fitting if r.config.n_cpu_moe == 0]
        lo_run = max(splits, key=lambda r: r.gen_tok_s, default=None) or (
            measured.get(lo.key) if lo is not None else None
        )
        best = max(fitting, key=lambda r: r.gen_tok_s, default=None)
        plan_gen = proof.gen_tok_s if proof is not None and proof.status == "ok" else 0.0
        row = dict(
            budget_gib=b,
            plan=p.summary(),
            plan_mode=p.mode,
            plan_config=c.key if c else None,
            plan_fits_estimate=p.fits,
            plan_est_vram=p.est_vram_bytes,
            plan_status=proof.status if proof else ("no plan" if c is None else "not run"),
            plan_peak_vram=proof.peak_vram if proof else None,
            plan_within_budget=(
                proof is not None and proof.status == "ok" and (proof.peak_vram is None or proof.peak_vram <= b * GiB)
            ),
            plan_prompt_tok_s=proof.prompt_tok_s if proof else 0.0,
            plan_gen_tok_s=plan_gen,
            layer_only_estimate_pick=lo.key if lo else None,
            layer_only_config=lo_run.config.key if lo_run else None,
            layer_only_label=lo_run.config.label(L) if lo_run else None,
            layer_only_gen_tok_s=lo_run.gen_tok_s if lo_run else None,
            layer_only_prompt_tok_s=lo_run.prompt_tok_s if lo_run else None,
            layer_only_peak_vram=lo_run.peak_vram if lo_run else None,
            best_config=best.config.key if best else None,
            best_label=best.config.label(L) if best else None,
            best_gen_tok_s=best.gen_tok_s if best else None,
            best_peak_vram=best.peak_vram if best else None,
            plan_vs_best=(plan_gen / best.gen_tok_s) if best and best.gen_tok_s else None,
            plan_vs_layer_only=(plan_gen / lo_run.gen_tok_s) if lo_run and lo_run.gen_tok_s else None,
        )
        summary.append(row)

    targets = dict(
        plan_at_least_95pct_of_best=all((r["plan_vs_best"] or 0) >= 0.95 for r in summary if r["best_gen_tok_s"]),
        plan_2x_layer_only_at_8_to_12=all(
            (r["plan_vs_layer_only"] or 0) >= 2.0
            for r in summary
            if 8 <= r["budget_gib"] <= 12 and r["layer_only_gen_tok_s"]
        ),
        zero_oom=all(r["plan_status"] == "ok" and r["plan_within_budget"] for r in summary if r["plan_config"]),
    )
    env = dict(
        date=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        host=platform.node(),
        python=platform.python_version(),
        llama_cpp_python=llama_cpp.__version__,
        cpu=real.cpu_name,
        cores=f"{real.cores_physical}/{real.cores_logical}",
        ram_gib=round(real.ram_total / GiB, 1),
        gpu=gpu.name,
        gpu_vram_gib=round(gpu.vram_total / GiB, 1),
        driver=gpu.driver,
        model=str(args.model),
        model_bytes=info.file_size,
        n_ctx=args.ctx,
        prompt_tokens=args.prompt_tokens,
        gen_tokens=args.gen_tokens,
        threads=threads,
        threads_batch=threads_batch,
        dry_run=args.dry_run,
        ballast=use_ballast,
        wall_s=round(time.perf_counter() - t_start, 1),
    )
    doc = dict(
        env=env,
        targets=targets,
        budgets=summary,
        runs=[dict(asdict(r), label=r.config.label(L), peak_vram=r.peak_vram) for r in runs],
    )
    (out / "offload_sweep.json").write_text(json.dumps(doc, indent=2), encoding="utf-8")
    md = render_markdown(doc, L)
    (out / "offload_sweep.md").write_text(md, encoding="utf-8")
    print(md)
    return 0


def _g(n: int | None) -> str:
    return "n/a" if n is None else f"{n / GiB:.2f}"


def _t(x: float | None) -> str:
    return "n/a" if not x else f"{x:,.1f}"


def render_markdown(doc: dict[str, Any], n_layer: int) -> str:
    env, targets = doc["env"], doc["targets"]
    lines = [
        f"`python bench/offload_sweep.py` ({env['date']}{', DRY RUN on the CPU: VRAM columns are estimates' if env['dry_run'] else ''}). "
        f"GPU: {env['gpu']} ({env['gpu_vram_gib']} GiB, driver {env['driver']}); CPU: {env['cpu']} ({env['cores']} cores/threads), {env['ram_gib']} GiB RAM; "
        f"llama-cpp-python {env['llama_cpp_python']}; model {Path(env['model']).name} ({env['model_bytes'] / 1e9:.2f} GB). "
        f"Every run: n_ctx {env['n_ctx']}, flash attention, f16 KV, {env['prompt_tokens']}-token prompt then {env['gen_tokens']} generated tokens, "
        f"{env['threads']}/{env['threads_batch']} threads; mmap only when everything is on the GPU. "
        + (
            "The plans ran with the rest of the GPU filled (ballast), so only the budget was free. "
            if env["ballast"]
            else ""
        )
        + f"Whole script: {env['wall_s']:.0f} s.",
        "",
        "| budget (GiB free) | plan | plan VRAM est. / measured (GiB) | plan prompt / gen tok/s | best layer-only split that fits | its gen tok/s | plan ÷ layer-only | sweep best that fits | its gen tok/s | plan ÷ best | OOM |",
        "|---:|---|---:|---:|---|---:|---:|---|---:|---:|---|",
    ]
    for r in doc["budgets"]:
        lo = r["layer_only_label"] or "none fits"
        lines.append(
            f"| {r['budget_gib']:g} | {r['plan']} | {_g(r['plan_est_vram'])} / {_g(r['plan_peak_vram'])} | {_t(r['plan_prompt_tok_s'])} / {_t(r['plan_gen_tok_s'])} "
            f"| {lo} | {_t(r['layer_only_gen_tok_s'])} | {('{:.2f}×'.format(r['plan_vs_layer_only'])) if r['plan_vs_layer_only'] else 'n/a'} "
            f"| {r['best_label'] or 'n/a'} | {_t(r['best_gen_tok_s'])} | {('%.1f%%' % (100 * r['plan_vs_best'])) if r['plan_vs_best'] else 'n/a'} "
            f"| {'no' if r['plan_status'] == 'ok' and r['plan_within_budget'] else r['plan_status']} |"
        )
    lines += [
        "",
        f"Targets: plan ≥ 95% of the sweep's best: **{'met' if targets['plan_at_least_95pct_of_best'] else 'NOT met'}**; "
        f"plan ≥ 2× layer-only at 8–12 GiB: **{'met' if targets['plan_2x_layer_only_at_8_to_12'] else 'NOT met'}**; "
        f"zero OOM: **{'met' if targets['zero_oom'] else 'NOT met'}**.",
        "",
        "All runs:",
        "",
        "| configuration | n_gpu_layers | experts on CPU | mmap | ballast (GiB free) | status | peak VRAM (GiB) | llama.cpp GPU buffers (GiB) | load s | prompt tok/s | gen tok/s |",
        "|---|---:|---:|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in doc["runs"]:
        c = r["config"]
        lines.append(
            f"| {r['label']} | {c['n_gpu_layers']} | {c['n_cpu_moe']} | {'on' if c['use_mmap'] else 'off'} | {r['ballast_budget_gib'] if r['ballast_budget_gib'] is not None else ''} "
            f"| {r['status']}{(': ' + r['detail'][:80]) if r['status'] not in ('ok',) and r['detail'] else ''} | {_g(r['peak_vram'])} | {_g(r['llama_device_buffers'])} "
            f"| {r['load_s']:.1f} | {_t(r['prompt_tok_s'])} | {_t(r['gen_tok_s'])} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
