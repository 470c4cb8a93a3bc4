"""What generation speed to expect on this computer, from the load plan: a range shown before a model is downloaded or loaded.

Generating one token reads the weights it uses once: with gpt-oss's mixture of experts that is
the active experts (4 of 32 per block for the 20b) plus the attention and output weights. So a
token costs (bytes read on the CPU) / (the CPU's memory bandwidth) + (bytes read on the GPU) /
(the GPU's) + a fixed per-token overhead on a GPU (kernel launches). The bandwidths are typical
effective figures, calibrated on design.md's measurements (a 16-core Xeon reading CPU-only at
14.9 tok/s, experts on CPU at 31-32 tok/s, all on an H200 at 250-300 tok/s); the result is a
range, labelled as an estimate, never a promise. The status bar shows the measured speed after
the first answer.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from dataclasses import dataclass

from app.core.gguf_info import GPT_OSS_20B_SHAPE, GPT_OSS_120B_SHAPE, GgufInfo, info_for_shape
from app.core.hardware import GiB, HardwareProfile
from app.core.models import OS_RESERVE_BYTES
from app.core.planner import Plan, Wishes, plan

CPU_GBPS_PER_THREAD = 3.5  # effective memory bandwidth one generating thread gets (GB/s)
CPU_GBPS_MAX = 60.0  # what a many-core machine's memory gives at most
GPU_GBPS = (250.0, 900.0)  # typical effective range of desktop and laptop GPUs, low-end to high-end
DATACENTER_GBPS = (1500.0, 3500.0)  # cards with HBM (40 GiB and more: A100, H100, H200)
DATACENTER_VRAM = 40 * GiB
GPU_TOKEN_OVERHEAD_S = 0.0025  # per token on a GPU whatever its speed (most of the H200's 3.4 ms/token)
# Apple unified memory by chip class (GB/s, effective): M-series base, Pro, Max, Ultra.
APPLE_GBPS = (("Ultra", 500.0), ("Max", 280.0), ("Pro", 140.0), ("", 70.0))
TYPICAL_ANSWER_TOKENS = 500  # a few paragraphs with medium reasoning
# Tokens gpt-oss typically writes for a reasoning problem (reasoning and answer) at each effort:
# what the effort lab's time estimate assumes before it has measured any run.
TYPICAL_RUN_TOKENS = {"low": 300, "medium": 900, "high": 2200}

SHAPES = {"gpt-oss-20b": GPT_OSS_20B_SHAPE, "gpt-oss-120b": GPT_OSS_120B_SHAPE}


@dataclass(frozen=True)
class SpeedEstimate:
    """Tokens per second, as a range, and where the model runs."""

    low: float
    high: float
    where: str  # "on the GPU", "on the GPU and the CPU", "on the CPU (8 threads)"

    def tokens_per_s(self) -> str:
        """'about 9–16 tokens a second'."""
        lo, hi = _nice(self.low), _nice(self.high)
        return f"about {lo} tokens a second" if lo == hi else f"about {lo}–{hi} tokens a second"

    def answer_time(self, tokens: int = TYPICAL_ANSWER_TOKENS) -> str:
        """How long an answer of `tokens` tokens takes at this speed: 'about 1–2 minutes'."""
        return _duration(tokens / self.high, tokens / self.low)


def _nice(x: float) -> str:
    if x >= 100:
        return f"{round(x, -1):.0f}"
    if x >= 3:
        return f"{round(x):.0f}"
    return f"{x:.1f}".removesuffix(".0")


def _duration(short: float, long: float) -> str:
    if long < 100:
        step = 5 if short >= 10 else 1
        lo, hi = max(1, round(short / step) * step), max(1, round(long / step) * step)
        return f"about {lo} seconds" if lo == hi else f"about {lo}–{hi} seconds"
    lo, hi = max(1, round(short / 60)), max(1, round(long / 60))
    unit = "minute" if hi == 1 else "minutes"
    return f"about {lo} {unit}" if lo == hi else f"about {lo}–{hi} {unit}"


def experiment_seconds(efforts: Sequence[str], questions: int, runs: int, tokens_per_s: float) -> float:
    """About how long an effort-lab experiment takes at `tokens_per_s` (typical lengths per effort)."""
    per_question = sum(TYPICAL_RUN_TOKENS.get(e, TYPICAL_RUN_TOKENS["medium"]) for e in efforts)
    return questions * runs * per_question / max(tokens_per_s, 1e-6)


def _bytes_per_token(model: GgufInfo, p: Plan) -> tuple[float, float]:
    """(bytes read on the CPU, bytes read on the GPU) to generate one token with plan `p`."""
    used = model.n_expert_used / model.n_expert if model.n_expert else 1.0
    n = len(model.blocks)
    cpu = gpu = 0.0
    gpu_blocks = set(range(n))
    cpu_expert_blocks: set[int] = set()
    output_on_gpu = True
    if p.mode == "cpu" or not p.use_gpu:
        gpu_blocks, output_on_gpu = set(), False
    elif p.mode == "layer-split":
        on_gpu = max(0, min(n, p.n_gpu_layers - 1))  # the output layer, then the last blocks
        gpu_blocks = set(range(n - on_gpu, n))
        output_on_gpu = p.n_gpu_layers >= 1
    elif p.mode == "gpu+cpu-experts":
        cpu_expert_blocks = set(range(min(n, p.n_cpu_moe)))
    for i, b in enumerate(model.blocks):
        experts = b.experts * used
        if i in gpu_blocks:
            gpu += b.non_expert
            if i in cpu_expert_blocks:
                cpu += experts
            else:
                gpu += experts
        else:
            cpu += b.non_expert + experts
    if output_on_gpu:
        gpu += model.output_bytes
    else:
        cpu += model.output_bytes
    return cpu, gpu


def _apple_gbps(chip: str) -> float:
    for word, gbps in APPLE_GBPS:
        if not word or re.search(rf"\b{word}\b", chip):
            return gbps
    return APPLE_GBPS[-1][1]


def estimate_speed(p: Plan, model: GgufInfo, profile: HardwareProfile) -> SpeedEstimate | None:
    """The generation speed to expect with plan `p`, or None when the plan does not fit."""
    if not p.fits or p.mode == "none":
        return None
    cpu_bytes, gpu_bytes = _bytes_per_token(model, p)
    threads = max(1, p.n_threads or profile.threads_generation)
    cpu_bw = min(CPU_GBPS_MAX, threads * CPU_GBPS_PER_THREAD) * 1e9
    if profile.apple is not None and gpu_bytes:
        bw = _apple_gbps(profile.apple.chip) * 1e9
        gpu_range = (bw * 0.75, bw * 1.1)
    else:
        gpu = profile.gpus[p.gpu_index] if p.gpu_index is not None and p.gpu_index < len(profile.gpus) else None
        lo, hi = DATACENTER_GBPS if gpu is not None and gpu.vram_total >= DATACENTER_VRAM else GPU_GBPS
        gpu_range = (lo * 1e9, hi * 1e9)

    def seconds(gpu_bw: float, cpu_factor: float) -> float:
        t = cpu_bytes / (cpu_bw * cpu_factor)
        if gpu_bytes:
            t += gpu_bytes / gpu_bw + GPU_TOKEN_OVERHEAD_S
        return t

    slow, fast = seconds(gpu_range[0], 0.75), seconds(gpu_range[1], 1.25)
    if not gpu_bytes:
        where = f"on the CPU ({threads} thread{'s' if threads != 1 else ''})"
    elif cpu_bytes:
        where = "on the GPU and the CPU"
    else:
        where = "on the GPU"
    return SpeedEstimate(1 / slow, 1 / fast, where)


def expected_speed(model_id: str, profile: HardwareProfile, wishes: Wishes | None = None) -> SpeedEstimate | None:
    """The speed to expect for a catalog model (planned from its published shape, before any download)."""
    shape = SHAPES.get(model_id)
    if shape is None:
        return None
    # Planned with the memory the computer has once other apps make room (as models.assess_fit
    # judges the fit), not only what happens to be free this minute.
    roomy = dataclasses.replace(profile, ram_available=max(profile.ram_available, profile.ram_total - OS_RESERVE_BYTES))
    info = info_for_shape(model_id, shape)
    return estimate_speed(plan(roomy, info, wishes or Wishes()), info, roomy)
