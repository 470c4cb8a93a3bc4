"""Choose how to load a model on this computer (GPU, experts on CPU, layer split, CPU) and explain why."""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from app.core.engine import PARTIAL_EXPERT_TENSORS, LoadSettings
from app.core.gguf_info import GgufError, GgufInfo, read_gguf_info
from app.core.hardware import GB, VENDOR_BACKENDS, GpuInfo, HardwareProfile

if TYPE_CHECKING:
    from app.core.remote.rpc import WorkerDevice

MiB = 1 << 20
# Memory is shown in GiB, labelled "GiB" (app/core/units.py: one convention for every size the app
# shows): RAM and VRAM come in binary amounts (an "8 GB" card holds 8 GiB).
GiB = 1 << 30

# --- the memory model -----------------------------------------------------------------------------
# Checked against llama.cpp's own buffer reports (tests/core/test_planner.py loads tiny models on
# the CPU and compares) and against design.md's H200 figures for the 20b shape with F16 dense
# matrices (13.8 GB file): all on GPU 13.3 GB, experts on CPU 3.6 GB, 12 layers 7.3 GB, and
# n_gpu_layers=0 2.2 GB. The model below gives 13.5, 3.8, 7.7 and 2.4 GB for those: 0.2-0.45 GB
# above each measurement, on the safe side.

KV_PAD = 256  # llama.cpp sizes KV caches in multiples of 256 cells
# The engine sets llama.cpp's micro-batch (n_ubatch) to its batch, so compute buffers and the
# sliding-window cache scale with min(n_ctx, n_batch); llama.cpp clamps the batch to the context.

# Bytes per cached value, by KV cache type (ggml block sizes: q8_0 34 B / 32 values, q4_0 18 / 32).
KV_TYPE_BYTES: dict[str, float] = {
    "f32": 4.0,
    "f16": 2.0,
    "bf16": 2.0,
    "q8_0": 34 / 32,
    "q5_1": 24 / 32,
    "q5_0": 22 / 32,
    "q4_1": 20 / 32,
    "q4_0": 18 / 32,
    "iq4_nl": 18 / 32,
}

# GPU memory the backend takes besides llama.cpp's buffers: CUDA/HIP context, cuBLAS/hipBLAS
# workspace and llama.cpp's scratch pool. NVML, above the buffers llama.cpp reported, whatever the
# placement: 697-713 MiB on the H200 (bench/gpu/offload_sweep-h200-*.json, 28 loads), 705-722 MiB
# on the H100 (bench/RESULTS.md, peer runs). Consumer cards show 250-450 MiB for the context; the
# CUDA figure takes the measured one.
GPU_RUNTIME_RESERVE: dict[str, int] = {
    "CUDA": 736 * MiB,
    "ROCm": 450 * MiB,
    "Vulkan": 350 * MiB,
    "Metal": 256 * MiB,
    "": 350 * MiB,
}
# Left free on the GPU beyond the estimate: other programs (the desktop, a browser) grow and
# allocations fragment. A fixed size, not a share of the card: what can go wrong does not grow with
# the card (a share left 3 GB idle on an 80 GB card and starved a 6 GB one). The estimate itself is
# checked against llama.cpp's buffers and NVML peaks (tests, bench/RESULTS.md), so this is not
# where its error is absorbed. llama.cpp's --fit leaves 1 GiB.
GPU_MARGIN = 384 * MiB
# Left free in RAM (the OS file cache, other apps growing): 3% of RAM, at least 512 MiB.
RAM_MARGIN_SHARE = 0.03
RAM_MARGIN_MIN = 512 * MiB
# Host memory llama.cpp adds besides weights, caches and buffers (vocabulary tables, threads); a GPU
# driver adds its own host allocations on top.
HOST_RUNTIME = 200 * MiB
HOST_GPU_DRIVER = 300 * MiB

AUTO_CTX_BASE = 8192
# Prompt micro-batches tried when Wishes.n_batch is None, largest first; the last is the fallback.
AUTO_BATCHES = (2048, 1024, 512)
AUTO_CTX_STEPS = (16384, 32768, 65536, 131072)
AUTO_CTX_FALLBACK = (4096, 2048)
AUTO_CTX_CAP_PARTIAL = 32768  # bigger automatic contexts only when everything is on the GPU
MIN_CTX = 512

MODE_RANK = {"gpu": 0, "gpu+cpu-experts": 1, "layer-split": 2, "cpu": 3, "none": 4}


@dataclass
class Wishes:
    """What the user asked for: the context size and optional overrides of every setting."""

    n_ctx: int | None = None  # None: the largest that keeps the best placement (from 8,192 up)
    n_gpu_layers: int | None = None  # llama.cpp meaning: output layer + the last n-1 blocks; -1 = all
    n_cpu_moe: int | None = None
    flash_attn: bool | None = None
    kv_type: str | None = None
    n_threads: int | None = None
    n_threads_batch: int | None = None
    use_mmap: bool | None = None
    use_mlock: bool | None = None
    gpu_index: int | None = None  # position in HardwareProfile.gpus
    backend: str | None = None  # "cpu" forces CPU only; "gpu" refuses plans without the GPU
    # Prompt micro-batch (the engine's n_batch = n_ubatch). None: the largest of AUTO_BATCHES that
    # costs the placement nothing (bigger batches read long prompts faster, most of all with
    # experts in RAM, whose weights cross to the GPU once per batch).
    n_batch: int | None = None


@dataclass
class MemoryEstimate:
    """Where the bytes go, in the units llama.cpp reports them."""

    gpu_weights: int = 0
    gpu_kv: int = 0
    gpu_compute: int = 0  # compute buffer, including copies of host weights for GPU prompt work
    gpu_runtime: int = 0
    host_weights: int = 0
    host_kv: int = 0
    host_compute: int = 0
    host_runtime: int = 0

    @property
    def vram(self) -> int:
        return self.gpu_weights + self.gpu_kv + self.gpu_compute + self.gpu_runtime

    @property
    def ram(self) -> int:
        return self.host_weights + self.host_kv + self.host_compute + self.host_runtime


@dataclass(frozen=True)
class Placement:
    """Where the model's parts go."""

    n_gpu_layers: int  # llama.cpp: >= 1 puts the output layer on the GPU plus the last n-1 blocks
    n_cpu_moe: int  # the first n blocks keep their experts in host memory
    use_gpu: bool  # False: the GPU is hidden from llama.cpp (true CPU-only)
    # Of block n_cpu_moe, how many of its 3 expert tensors also stay in host memory (1: down;
    # 2: gate and up; engine.PARTIAL_EXPERT_TENSORS): a third of a block at a time.
    n_cpu_moe_partial: int = 0


@dataclass
class Plan:
    """A complete, explained way to load the model."""

    n_gpu_layers: int
    n_cpu_moe: int
    n_ctx: int
    flash_attn: bool
    kv_type: str
    n_threads: int
    n_threads_batch: int
    use_mmap: bool
    use_mlock: bool
    est_vram_bytes: int
    est_ram_bytes: int
    fits: bool
    mode: str  # "gpu", "gpu+cpu-experts", "layer-split", "cpu" or "none"
    reasons: list[str] = field(default_factory=list)
    suggestions: list[str] = field(default_factory=list)
    n_batch: int = 512
    gpu_index: int | None = None  # position in HardwareProfile.gpus; None: no GPU is used
    n_cpu_moe_partial: int = 0  # see Placement
    gpu_name: str = ""
    use_gpu: bool = False  # False with a GPU present: hide it from llama.cpp
    backend: str = "CPU"  # what computes: "CUDA", "Metal", "ROCm", "Vulkan", ... or "CPU"
    device: str = ""  # the ggml device of the chosen GPU ("CUDA0"); "" = unknown or none
    vram_budget: int = 0  # usable VRAM after the safety margin
    ram_budget: int = 0
    estimate: MemoryEstimate = field(default_factory=MemoryEstimate)

    def to_load_settings(self) -> LoadSettings:
        return LoadSettings(
            n_ctx=self.n_ctx,
            n_gpu_layers=self.n_gpu_layers,
            n_cpu_moe=self.n_cpu_moe,
            n_cpu_moe_partial=self.n_cpu_moe_partial,
            n_threads=self.n_threads,
            n_threads_batch=self.n_threads_batch,
            n_batch=self.n_batch,
            flash_attn=self.flash_attn,
            kv_type=self.kv_type,
            use_mmap=self.use_mmap,
            use_mlock=self.use_mlock,
            swa_full=False,
            devices=self.load_devices(),
        )

    def load_devices(self) -> tuple[str, ...] | None:
        """llama.cpp devices for this plan: none (GPUs hidden), the planned GPU, or its default."""
        if not self.use_gpu:
            return ()
        return (self.device,) if self.device else None

    def summary(self) -> str:
        where = {
            "gpu": "everything on the GPU",
            "gpu+cpu-experts": f"GPU, with the experts of {_blocks_text(self.n_cpu_moe, self.n_cpu_moe_partial)} in RAM",
            "layer-split": f"{self.n_gpu_layers} layers on the GPU, the rest on the CPU",
            "cpu": "CPU only",
            "none": "does not fit",
        }[self.mode]
        return f"{where}; context {self.n_ctx:,} tokens; ~{self.est_vram_bytes / GiB:.1f} GiB GPU, ~{self.est_ram_bytes / GiB:.1f} GiB RAM"


def _blocks_text(n_cpu_moe: int, partial: int) -> str:
    """ "12 blocks", "12⅓ blocks", "⅔ of a block"."""
    frac = {0: "", 1: "⅓", 2: "⅔"}[max(0, min(partial, 2))]
    if n_cpu_moe == 0 and frac:
        return f"{frac} of a block"
    return f"{n_cpu_moe}{frac} block{'' if n_cpu_moe == 1 and not frac else 's'}"


# --- estimates ------------------------------------------------------------------------------------


def _pad(n: int, to: int) -> int:
    return (n + to - 1) // to * to


def _ubatch(n_ctx: int, n_batch: int) -> int:
    return max(1, min(n_ctx, n_batch))


def kv_cells(model: GgufInfo, n_ctx: int, n_batch: int = 512) -> tuple[int, int]:
    """Cells per full-attention layer and per sliding-window layer (swa_full=False)."""
    full = _pad(max(n_ctx, 1), KV_PAD)
    ub = _ubatch(n_ctx, n_batch)
    swa = min(full, _pad(model.sliding_window + ub, KV_PAD)) if model.sliding_window else full
    return full, swa


def kv_bytes_per_cell(model: GgufInfo, kv_type: str) -> int:
    per_value = KV_TYPE_BYTES.get(kv_type, 2.0)
    return int(model.n_head_kv * (model.head_dim + model.head_dim_v) * per_value)


def kv_layer_bytes(model: GgufInfo, il: int, n_ctx: int, kv_type: str, n_batch: int = 512) -> int:
    full, swa = kv_cells(model, n_ctx, n_batch)
    swa_layer = il < len(model.swa_layers) and model.swa_layers[il]
    return (swa if swa_layer else full) * kv_bytes_per_cell(model, kv_type)


def kv_total_bytes(model: GgufInfo, n_ctx: int, kv_type: str = "f16", n_batch: int = 512) -> int:
    return sum(kv_layer_bytes(model, il, n_ctx, kv_type, n_batch) for il in range(model.n_layer))


def _act_floats(model: GgufInfo) -> int:
    # Live activations per token in the busiest part of a block (fits llama.cpp's CPU reports for
    # several tiny shapes): expert gate/up/act, attention q and output, two residual streams.
    return 3 * model.n_expert_used * model.n_ff_exp + 2 * model.n_head * model.head_dim + 2 * model.n_embd


# Rows of logits one micro-batch computes: the engine asks llama.cpp for one output per batch (the
# last token's; llama_context_params.n_outputs_max = 1), so the output phase no longer holds a
# whole micro-batch of 201k-wide logits (~400 MB at 512 tokens).
N_OUTPUTS = 1


def compute_bytes(
    model: GgufInfo,
    n_ctx: int,
    flash_attn: bool,
    n_batch: int = 512,
    *,
    output: bool = True,
    n_outputs: int = N_OUTPUTS,
) -> int:
    """A backend's compute buffer: attention masks plus the larger of the block and output phases.

    With one output row the block phase (expert activations of the micro-batch) dominates; without
    flash attention the full-attention scores (heads × context × batch) dominate at long context.
    """
    ub = _ubatch(n_ctx, n_batch)
    full, swa = kv_cells(model, n_ctx, n_batch)
    mask_el = 2 if flash_attn else 4
    masks = ub * (full + (swa if model.sliding_window else 0)) * mask_el
    act = ub * 4 * _act_floats(model)
    if not flash_attn:
        act += model.n_head * full * ub * 4
    # Logits of the output rows, the final norm's input and output, and (seen at n_ctx <= n_ubatch,
    # where the allocator keeps it alive) the last block's per-expert outputs.
    rows = max(1, min(ub, n_outputs))
    out = rows * 4 * (model.n_vocab + (2 + model.n_expert_used) * model.n_embd) if output else 0
    return masks + max(act, out)


# llama.cpp's AMX buffers (CPUs with AMX, CPU-only loads) keep matrices of these types in a VNNI
# layout with extra bytes per block (ggml-cpu/amx/mmq.cpp get_row_size): type -> (extra, block bytes).
_AMX_EXTRA: dict[str, tuple[int, int]] = {"Q8_0": (4, 34), "Q4_K": (4, 144), "Q5_K": (4, 176), "IQ4_XS": (2, 136)}
_AMX_MATRIX = re.compile(r"^(blk\.(\d+)\.attn_(q|k|v|output)\.weight|output\.weight)$")
_amx_cache: dict[int, tuple[GgufInfo, list[int], int]] = {}


def amx_extra_bytes(model: GgufInfo) -> tuple[list[int], int]:
    """Extra bytes the AMX layout adds: per block (its attention matrices), and for the output."""
    hit = _amx_cache.get(id(model))
    if hit is not None and hit[0] is model:
        return hit[1], hit[2]
    per_block = [0] * model.n_layer
    output = 0
    for t in model.tensors:
        grow = _AMX_EXTRA.get(t.type_name)
        m = _AMX_MATRIX.match(t.name) if grow else None
        if m is None or grow is None or len(t.shape) != 2:
            continue
        extra = t.nbytes // grow[1] * grow[0]
        if m.group(2) is None:
            output += extra
        elif int(m.group(2)) < model.n_layer:
            per_block[int(m.group(2))] += extra
    if len(_amx_cache) > 16:
        _amx_cache.clear()
    _amx_cache[id(model)] = (model, per_block, output)
    return per_block, output


_EXPERT_KIND = re.compile(r"^blk\.(\d+)\.ffn_(gate|up|down)_exps")
_expert_cache: dict[int, tuple[GgufInfo, list[dict[str, int]]]] = {}


def expert_tensor_bytes(model: GgufInfo) -> list[dict[str, int]]:
    """Per block, bytes of its gate, up and down expert tensors (weights and biases)."""
    hit = _expert_cache.get(id(model))
    if hit is not None and hit[0] is model:
        return hit[1]
    out: list[dict[str, int]] = [{"gate": 0, "up": 0, "down": 0} for _ in range(model.n_layer)]
    for t in model.tensors:
        m = _EXPERT_KIND.match(t.name)
        if m and int(m.group(1)) < model.n_layer:
            out[int(m.group(1))][m.group(2)] += t.nbytes
    for il, b in enumerate(model.blocks[: model.n_layer]):
        if sum(out[il].values()) != b.experts:  # no tensor list: three equal thirds
            third = b.experts // 3
            out[il] = {"gate": third, "up": third, "down": b.experts - 2 * third}
    if len(_expert_cache) > 16:
        _expert_cache.clear()
    _expert_cache[id(model)] = (model, out)
    return out


def partial_expert_bytes(model: GgufInfo, block: int, partial: int) -> int:
    """Bytes of block `block` kept in host memory when `partial` of its 3 expert tensors are."""
    if partial <= 0 or not 0 <= block < model.n_layer:
        return 0
    if partial >= 3:
        return model.blocks[block].experts
    kinds = expert_tensor_bytes(model)[block]
    return sum(kinds[k] for k in PARTIAL_EXPERT_TENSORS[partial])


def estimate(
    model: GgufInfo,
    placement: Placement,
    n_ctx: int,
    *,
    kv_type: str = "f16",
    flash_attn: bool = True,
    n_batch: int = 512,
    gpu: GpuInfo | None = None,
    amx: bool = False,
    n_outputs: int = N_OUTPUTS,
) -> MemoryEstimate:
    """Bytes on the GPU and in RAM for one placement (no margins).

    amx: the CPU has AMX, so a CPU-only load stores Q8_0 (and some K-quant) matrices larger.
    n_outputs: logits rows per micro-batch (the engine's 1; llama.cpp's default is the whole batch).
    """
    L = model.n_layer
    use_gpu = placement.use_gpu and gpu is not None
    ngl = max(0, min(placement.n_gpu_layers, L + 1)) if use_gpu else 0
    first_gpu_block = L + 1 - ngl  # llama.cpp's i_gpu_start
    output_on_gpu = use_gpu and ngl >= 1
    unified = bool(gpu and gpu.unified_memory)
    e = MemoryEstimate()
    # Host-resident tensors the GPU copies in, one at a time, for prompt work (op offload).
    host_units: list[int] = []
    expert_kinds = expert_tensor_bytes(model)
    any_host_block_part = False
    full_cells, swa_cells = kv_cells(model, n_ctx, n_batch)
    per_cell = kv_bytes_per_cell(model, kv_type)
    n_swa = len(model.swa_layers)
    partial_block = placement.n_cpu_moe if 0 < placement.n_cpu_moe_partial < 3 else -1
    for il, b in enumerate(model.blocks):
        on_gpu = use_gpu and il >= first_gpu_block
        kv = (swa_cells if il < n_swa and model.swa_layers[il] else full_cells) * per_cell
        if on_gpu:
            e.gpu_weights += b.non_expert
            e.gpu_kv += kv
            if il < placement.n_cpu_moe:
                e.host_weights += b.experts
                host_units.append(max(expert_kinds[il].values()))
                any_host_block_part = True
            elif il == partial_block:
                moved = partial_expert_bytes(model, il, placement.n_cpu_moe_partial)
                e.host_weights += moved
                e.gpu_weights += b.experts - moved
                host_units.append(max(expert_kinds[il][k] for k in PARTIAL_EXPERT_TENSORS[placement.n_cpu_moe_partial]))
                any_host_block_part = True
            else:
                e.gpu_weights += b.experts
        else:
            e.host_weights += b.total
            e.host_kv += kv
            # Its largest tensor: an expert tensor (attention matrices are smaller), or all of a
            # dense block's weights where the split is unknown.
            host_units.append(max(expert_kinds[il].values()) if b.experts else b.total)
            any_host_block_part = True
    e.host_weights += model.embedding_bytes + model.extra_bytes
    if output_on_gpu:
        e.gpu_weights += model.output_bytes
    else:
        e.host_weights += model.output_bytes
    if amx and not use_gpu:
        # With a GPU in play, CPU-side weights go to its pinned host buffers instead (llama.cpp
        # lists those before the CPU's extra buffer types).
        per_block, out_extra = amx_extra_bytes(model)
        e.host_weights += sum(per_block) + out_extra
    e.host_runtime = HOST_RUNTIME + model.n_vocab * 4  # + the logits output buffer
    if use_gpu:
        e.gpu_compute = compute_bytes(model, n_ctx, flash_attn, n_batch, n_outputs=n_outputs)
        if not unified:
            # With weights in host memory, llama.cpp copies them to the GPU for large batches
            # (prompt processing), one piece at a time, inside the compute buffer.
            staging = max(host_units, default=0)
            if not output_on_gpu:
                staging += model.output_bytes
            e.gpu_compute += staging
            e.host_runtime += HOST_GPU_DRIVER
        e.gpu_runtime = GPU_RUNTIME_RESERVE.get(gpu.backend_hint if gpu else "", GPU_RUNTIME_RESERVE[""])
        if not output_on_gpu:
            e.host_compute = compute_bytes(model, n_ctx, flash_attn, n_batch, n_outputs=n_outputs)
        elif any_host_block_part:
            ub = _ubatch(n_ctx, n_batch)
            e.host_compute = ub * 4 * _act_floats(model)
        else:
            e.host_compute = _ubatch(n_ctx, n_batch) * 4 * 2 * model.n_embd
    else:
        e.host_compute = compute_bytes(model, n_ctx, flash_attn, n_batch, n_outputs=n_outputs)
    return e


# --- budgets --------------------------------------------------------------------------------------


def gpu_margin(gpu: GpuInfo) -> int:
    return GPU_MARGIN


def ram_margin(profile: HardwareProfile) -> int:
    return max(RAM_MARGIN_MIN, int(RAM_MARGIN_SHARE * profile.ram_total))


def vram_budget(gpu: GpuInfo) -> int:
    return max(0, gpu.vram_free - gpu_margin(gpu))


UNKNOWN_RAM_BUDGET = 1 << 50  # psutil missing: RAM cannot be checked, so it does not limit the plan


def ram_budget(profile: HardwareProfile) -> int:
    if profile.ram_total <= 0:
        return UNKNOWN_RAM_BUDGET
    return max(0, profile.ram_available - ram_margin(profile))


_VENDOR_BACKENDS = VENDOR_BACKENDS
# Registry names shown the way people know them (ggml registers Metal as "MTL").
_BACKEND_DISPLAY = {"mtl": "Metal", "hip": "ROCm"}


def backend_display_name(name: str) -> str:
    return _BACKEND_DISPLAY.get(name.lower(), name)


def usable_backend(gpu: GpuInfo, backends: list[str] | None) -> str | None:
    """The llama.cpp backend that would drive this GPU, or None if the installed build has none."""
    wanted = _VENDOR_BACKENDS.get(gpu.vendor, (gpu.backend_hint,) if gpu.backend_hint else ())
    if backends is None:  # unknown: assume the vendor's usual backend
        hint = gpu.backend_hint or (wanted[0] if wanted else None)
        return backend_display_name(hint) if hint else None
    have = {b.lower() for b in backends}
    for w in wanted:
        if w.lower() in have:
            return backend_display_name(w)
    return None


# --- the planner ----------------------------------------------------------------------------------


@dataclass
class _Check:
    placement: Placement
    est: MemoryEstimate
    vram_ok: bool
    ram_ok: bool
    ram_need: int  # RAM counted against the budget (on unified memory: everything)

    @property
    def ok(self) -> bool:
        return self.vram_ok and self.ram_ok


def _mode(p: Placement, model: GgufInfo) -> str:
    if not p.use_gpu or p.n_gpu_layers <= 0:
        return "cpu"
    if p.n_gpu_layers >= model.n_layer + 1:
        return "gpu" if p.n_cpu_moe <= 0 and p.n_cpu_moe_partial <= 0 else "gpu+cpu-experts"
    return "layer-split"


class _Planner:
    def __init__(self, profile: HardwareProfile, model: GgufInfo, wishes: Wishes) -> None:
        self.profile = profile
        self.model = model
        self.wishes = wishes
        self.reasons: list[str] = []
        self.suggestions: list[str] = []
        self.gpu_index, self.gpu = self._choose_gpu()
        self.flash_attn, self.kv_type = self._attention_settings()
        self.n_batch = max(1, wishes.n_batch or AUTO_BATCHES[-1])
        self.amx = "amx_tile" in (profile.cpu_features or [])
        self._checks: dict[tuple[Placement, int], _Check] = {}

    # settings that do not depend on the placement

    def _choose_gpu(self) -> tuple[int | None, GpuInfo | None]:
        w, p = self.wishes, self.profile
        if (w.backend or "").lower() == "cpu":
            self.reasons.append("CPU only, as you asked.")
            return None, None
        candidates: list[tuple[int, GpuInfo]] = []
        for i, g in enumerate(p.gpus):
            backend = usable_backend(g, p.backends)
            if backend is None:
                wanted = " or ".join(
                    dict.fromkeys(
                        backend_display_name(b)
                        for b in _VENDOR_BACKENDS.get(g.vendor, (g.backend_hint or "a GPU backend",))
                    )
                )
                self.reasons.append(
                    f"Found {g.name}, but the installed llama.cpp was built without {wanted} support, so it cannot use it."
                )
                self.suggestions.append(f"Install a llama.cpp build with {wanted} support to use {g.name}.")
                continue
            if g.backend_hint != backend:
                g = replace(g, backend_hint=backend)
            candidates.append((i, g))
        if w.gpu_index is not None:
            chosen = [c for c in candidates if c[0] == w.gpu_index]
            if not chosen:
                self.reasons.append(f"GPU {w.gpu_index} is not available; choosing automatically.")
            else:
                candidates = chosen
        if not candidates:
            if not p.gpus:
                self.reasons.append("No GPU found, so only the CPU can run the model.")
            return None, None
        i, g = max(candidates, key=lambda c: c[1].vram_free)
        if p.backends is None:
            self.reasons.append(f"Could not ask llama.cpp which GPU backends it has; assuming {g.backend_hint} works.")
        if len(candidates) > 1:
            self.reasons.append(
                f"Using {g.name}, the GPU with the most free memory; splitting across GPUs is not planned."
            )
        return i, g

    def _attention_settings(self) -> tuple[bool, str]:
        w = self.wishes
        flash = True if w.flash_attn is None else bool(w.flash_attn)
        kv = (w.kv_type or "f16").lower()
        if kv not in KV_TYPE_BYTES:
            self.reasons.append(f"KV cache type '{w.kv_type}' is not known; using f16.")
            kv = "f16"
        block = 1 if kv in ("f16", "f32", "bf16") else 32  # ggml block size of the quantized KV types
        if block > 1 and (self.model.head_dim % block or self.model.head_dim_v % block):
            # llama.cpp refuses such a context outright; say so instead of failing the load.
            self.reasons.append(
                f"A {kv} KV cache needs heads of a multiple of {block} values; this model's are {self.model.head_dim}, so f16 is used."
            )
            kv = "f16"
        if kv not in ("f16", "f32", "bf16") and not flash:
            if w.flash_attn is False:
                self.reasons.append(f"A {kv} KV cache needs flash attention, which you turned off; using f16.")
                kv = "f16"
            else:
                flash = True
        return flash, kv

    def n_ctx_limit(self) -> int:
        return self.model.context_length or 131072

    # evaluation

    def check(self, p: Placement, n_ctx: int) -> _Check:
        key = (p, n_ctx)
        if key not in self._checks:
            self._checks[key] = self._check(p, n_ctx)
        return self._checks[key]

    def _check(self, p: Placement, n_ctx: int) -> _Check:
        gpu = self.gpu if p.use_gpu else None
        est = estimate(
            self.model,
            p,
            n_ctx,
            kv_type=self.kv_type,
            flash_attn=self.flash_attn,
            n_batch=self.n_batch,
            gpu=gpu,
            amx=self.amx,
        )
        ram_need = est.ram
        if gpu is None:
            vram_ok = True
        else:
            vram_ok = est.vram <= vram_budget(gpu)
            if gpu.unified_memory:
                ram_need += est.vram  # one pool: what the GPU holds comes out of RAM
        ram_ok = ram_need <= ram_budget(self.profile)
        return _Check(p, est, vram_ok, ram_ok, ram_need)

    def candidates(self) -> list[Placement]:
        L = self.model.n_layer
        w = self.wishes
        cands: list[Placement] = []
        if self.gpu is not None:
            # Experts to RAM a third of a block at a time (one tensor of three), fastest first.
            cands += [Placement(L + 1, m, True, part) for m in range(L + 1) for part in ((0, 1, 2) if m < L else (0,))]
            cands += [Placement(k, 0, True) for k in range(L, 0, -1)]
            cands.append(Placement(0, 0, True))  # GPU only helps with prompts
        if (w.backend or "").lower() != "gpu" or self.gpu is None:
            cands.append(Placement(0, 0, False))
        ngl = w.n_gpu_layers
        if ngl is not None and ngl < 0:
            ngl = L + 1
        if ngl is not None:
            ngl = min(ngl, L + 1)
        cmoe = None if w.n_cpu_moe is None else max(0, min(w.n_cpu_moe, L))
        if ngl is None and cmoe is None:
            return cands
        if ngl is None:
            ngl = L + 1 if self.gpu is not None else 0
        if cmoe is None:
            filtered = [c for c in cands if c.n_gpu_layers == ngl and (c.use_gpu or ngl == 0)]
            if filtered:
                return filtered
            cmoe = 0
        if self.gpu is None:
            if ngl > 0 or cmoe > 0:
                self.reasons.append("Your GPU layer settings are ignored: no usable GPU.")
            return [Placement(0, 0, False)]
        return [Placement(ngl, cmoe, True)]

    def first_fit(self, n_ctx: int, cands: list[Placement]) -> _Check | None:
        for p in cands:
            c = self.check(p, n_ctx)
            if c.ok:
                return c
        return None

    def choose_ctx(self, cands: list[Placement]) -> tuple[int, _Check | None]:
        limit = self.n_ctx_limit()
        w = self.wishes
        if w.n_ctx is not None:
            n_ctx = int(w.n_ctx)
            if n_ctx > limit:
                self.reasons.append(f"The model reads at most {limit:,} tokens; context set to that.")
                n_ctx = limit
            if n_ctx < MIN_CTX:
                self.reasons.append(f"A context under {MIN_CTX} tokens is too small for a chat; using {MIN_CTX}.")
                n_ctx = MIN_CTX
            return n_ctx, self.first_fit(n_ctx, cands)
        base = min(AUTO_CTX_BASE, limit)
        best = self.first_fit(base, cands)
        if best is None:
            for small in AUTO_CTX_FALLBACK:
                if small < base:
                    best = self.first_fit(small, cands)
                    if best is not None:
                        self.reasons.append(f"Context reduced to {small:,} tokens so the model fits at all.")
                        return small, best
            return base, None
        n_ctx = base
        cap = limit if _mode(best.placement, self.model) == "gpu" else min(limit, AUTO_CTX_CAP_PARTIAL)
        for bigger in AUTO_CTX_STEPS:
            if bigger > cap:
                break
            c = self.check(best.placement, bigger)
            if not c.ok:
                break
            n_ctx, best = bigger, c
        return n_ctx, best

    def choose_mmap(self, c: _Check) -> bool:
        w = self.wishes
        mode = _mode(c.placement, self.model)
        if w.use_mmap is not None:
            if w.use_mmap is False and mode not in ("gpu",) and self.gpu is not None and not self.gpu.unified_memory:
                self.reasons.append(
                    "mmap off (your choice): weights in RAM sit in pinned memory, which speeds up GPU prompt processing."
                )
            return bool(w.use_mmap)
        if self.gpu is not None and self.gpu.unified_memory:
            self.reasons.append(
                "mmap on: on unified memory the GPU reads the weights straight from the mapped file, with no second copy."
            )
            return True
        if mode == "gpu":
            self.reasons.append(
                "mmap on: the weights are copied to the GPU once, and mapping the file makes loading fastest."
            )
            return True
        if c.placement.use_gpu:
            slack = int(0.10 * c.ram_need)
            if c.ram_need + slack <= ram_budget(self.profile):
                self.reasons.append(
                    "mmap off: the weights kept in RAM go into pinned memory, which makes prompt processing about 5x "
                    "faster with a GPU (loading takes a few seconds longer)."
                )
                return False
            self.reasons.append(
                "mmap on: RAM is too tight for pinned memory, so the file stays mapped (prompt processing is slower)."
            )
            return True
        self.reasons.append(
            "mmap off: llama.cpp repacks the weights for this CPU's fast kernels; with mmap the file would also stay "
            "mapped and memory use would look twice as large."
        )
        return False

    # explanations

    def _explain(self, c: _Check, n_ctx: int) -> None:
        m, e, p = self.model, c.est, c.placement
        mode = _mode(p, m)
        full_gpu_need = self.check(Placement(m.n_layer + 1, 0, True), n_ctx).est.vram if self.gpu else 0
        if self.gpu is not None and self.gpu.unified_memory:
            self.reasons.insert(
                0,
                f"Found {self.gpu.name}: it shares unified memory with the CPU and may use about "
                f"{self.gpu.vram_free / GiB:.1f} GiB of the {self.profile.ram_total / GiB:.1f} GiB.",
            )
        elif self.gpu is not None:
            self.reasons.insert(
                0,
                f"Found {self.gpu.name} with {self.gpu.vram_free / GiB:.1f} GiB free of {self.gpu.vram_total / GiB:.1f} GiB.",
            )
        if mode == "gpu":
            self.reasons.append(
                f"Everything runs on the GPU ({m.tensor_bytes / GiB:.1f} GiB of weights): the fastest option."
            )
        elif mode == "gpu+cpu-experts":
            moved = sum(b.experts for b in m.blocks[: p.n_cpu_moe])
            moved += partial_expert_bytes(m, p.n_cpu_moe, p.n_cpu_moe_partial)
            which = f"the first {p.n_cpu_moe}" if p.n_cpu_moe else ""
            if p.n_cpu_moe_partial:
                part = " and ".join(PARTIAL_EXPERT_TENSORS[p.n_cpu_moe_partial])
                extra = f"the {part} expert tensor{'s' if p.n_cpu_moe_partial > 1 else ''} of block {p.n_cpu_moe + 1}"
                which = f"{which} and {extra}" if which else extra
            self.reasons.append(
                f"The whole model would need {full_gpu_need / GiB:.1f} GiB on the GPU, but {vram_budget(self.gpu) / GiB:.1f} GiB is usable "  # type: ignore[arg-type]
                f"after a safety margin. So all {m.n_layer} blocks run on the GPU except the expert weights of {which}, "
                f"which stay in RAM ({moved / GiB:.1f} GiB). Keeping attention on the GPU and moving only "
                "experts is about 3x faster than splitting whole layers; they move a third of a block at a time, so "
                "the GPU stays full."
            )
        elif mode == "layer-split":
            blocks = p.n_gpu_layers - 1
            if blocks <= 0:
                self.reasons.append(
                    "Even with all experts in RAM the GPU is too small for the blocks, so it holds only the output "
                    f"layer ({m.output_bytes / GiB:.1f} GiB, the largest single matrix) and the CPU runs the rest."
                )
            else:
                self.reasons.append(
                    f"Even with all experts in RAM the GPU is too small for every block, so {blocks} of {m.n_layer} "
                    "blocks and the output layer run on the GPU and the rest on the CPU."
                )
        elif mode == "cpu":
            if p.use_gpu:
                self.reasons.append(
                    "No block fits on the GPU, so the model runs on the CPU; the GPU still speeds up reading long prompts."
                )
            elif self.gpu is not None:
                self.reasons.append(
                    "The model runs on the CPU only; the GPU is hidden from llama.cpp so it takes no GPU memory."
                )
            else:
                self.reasons.append("The model runs on the CPU.")
        full_layers = m.n_full_attention_layers
        per_tok = kv_bytes_per_cell(m, self.kv_type) * full_layers
        if m.sliding_window and full_layers < m.n_layer:
            _, swa = kv_cells(m, n_ctx, self.n_batch)
            self.reasons.append(
                f"Context {n_ctx:,} tokens: the {self.kv_type} KV cache grows only on the {full_layers} full-attention layers "
                f"({per_tok / 1024:.0f} KiB per token, {kv_total_bytes(m, n_ctx, self.kv_type, self.n_batch) / GiB:.2f} GiB in all); "
                f"the {m.n_layer - full_layers} sliding-window layers keep {swa:,} tokens each."
            )
        else:
            self.reasons.append(
                f"Context {n_ctx:,} tokens: KV cache {kv_total_bytes(m, n_ctx, self.kv_type, self.n_batch) / GiB:.2f} GiB."
            )
        if self.wishes.n_ctx is None:
            if n_ctx >= self.n_ctx_limit():
                self.reasons.append("That is the model's full context, and it still fits.")
            else:
                self.reasons.append("The context is the largest that keeps this placement (change it in Advanced).")
        if self.flash_attn:
            self.reasons.append("Flash attention on: it keeps work buffers small at long contexts.")
        else:
            self.reasons.append("Flash attention off: attention buffers grow with the context.")
        if self.gpu is not None and p.use_gpu:
            self.reasons.append(
                f"GPU memory: ~{e.vram / GiB:.1f} GiB (weights {e.gpu_weights / GiB:.1f}, KV cache {e.gpu_kv / GiB:.2f}, "
                f"work buffers {e.gpu_compute / GiB:.2f}, driver {e.gpu_runtime / GiB:.2f}) of {vram_budget(self.gpu) / GiB:.1f} GiB usable "
                f"({gpu_margin(self.gpu) / GiB:.1f} GiB kept free for other programs and estimate error)."
            )
        ram_what = "RAM (shared with the GPU)" if self.gpu is not None and self.gpu.unified_memory else "RAM"
        if self.profile.ram_total <= 0:
            self.reasons.append(
                f"{ram_what}: ~{c.ram_need / GiB:.1f} GiB needed; the amount of RAM could not be read, so it was not checked."
            )
            return
        self.reasons.append(
            f"{ram_what}: ~{c.ram_need / GiB:.1f} GiB needed of {ram_budget(self.profile) / GiB:.1f} GiB usable "
            f"({self.profile.ram_available / GiB:.1f} GiB available minus {ram_margin(self.profile) / GiB:.1f} GiB spare)."
        )

    def _why_not(self, c: _Check, n_ctx: int) -> None:
        p = self.profile
        if not c.vram_ok and self.gpu is not None:
            self.reasons.append(
                f"Needs ~{c.est.vram / GiB:.1f} GiB of GPU memory, but only {vram_budget(self.gpu) / GiB:.1f} GiB is usable."
            )
        if not c.ram_ok:
            self.reasons.append(
                f"Needs ~{c.ram_need / GiB:.1f} GiB of RAM, but only {ram_budget(p) / GiB:.1f} GiB is usable ({p.ram_available / GiB:.1f} GiB available)."
            )

    def _suggest(self, n_ctx: int, cands: list[Placement]) -> None:
        m, p = self.model, self.profile
        # A smaller context?
        ctx = n_ctx // 2
        while ctx >= MIN_CTX:
            if self.first_fit(ctx, cands) is not None:
                self.suggestions.append(f"Use a smaller context: {ctx:,} tokens would fit.")
                break
            ctx //= 2
        # Closing apps: how much RAM the cheapest-in-RAM placement lacks.
        checks = [self.check(c, min(n_ctx, 4096)) for c in cands]
        vram_ok = [c for c in checks if c.vram_ok] or checks
        least = min(vram_ok, key=lambda c: c.ram_need)
        short = least.ram_need - ram_budget(p)
        if short > 0:
            reachable = least.ram_need + ram_margin(p) <= p.ram_total - 2 * GB
            if reachable:
                self.suggestions.append(f"Close other apps to free about {max(short, 1) / GiB:.1f} GiB of RAM.")
            else:
                self.suggestions.append(
                    f"This computer has {p.ram_total / GiB:.1f} GiB of RAM; running {m.name} needs about "
                    f"{(least.ram_need + ram_margin(p)) / GiB:.0f} GiB even with every other app closed."
                )
        if m.n_expert > 32 or m.file_size > 30 * GB:
            self.suggestions.append("Use the smaller gpt-oss-20b model (about 11 GiB), which needs far less memory.")

    def run(self) -> Plan:
        cands = self.candidates()
        n_ctx, chosen = self.choose_ctx(cands)
        fits = chosen is not None
        if chosen is None:
            # Report the preferred candidate's shortfall (the user's own settings, or CPU only).
            shown = self.check(cands[0] if self._has_overrides() else cands[-1], n_ctx)
        else:
            shown = chosen
        mode = _mode(shown.placement, self.model) if fits or self._has_overrides() else "none"
        before = len(self.reasons)
        use_mmap = self.choose_mmap(shown)
        mmap_reasons = self.reasons[before:]
        del self.reasons[before:]
        if fits:
            self._explain(shown, n_ctx)
        else:
            if self._has_overrides():
                self.reasons.append("Your settings do not fit in this computer's memory.")
            else:
                self.reasons.append(f"{self.model.name} does not fit in this computer's memory in any configuration.")
            self._why_not(shown, n_ctx)
            self._suggest(n_ctx, cands)
        if fits:
            self.reasons += mmap_reasons
        w = self.wishes
        n_threads = w.n_threads or self.profile.threads_generation
        n_threads_batch = w.n_threads_batch or self.profile.threads_batch
        self.reasons.append(
            f"Threads: {n_threads} for generating (one per {'performance ' if self.profile.apple or self.profile.cores_performance else 'physical '}core), "
            f"{n_threads_batch} for reading prompts."
        )
        use_mlock = bool(w.use_mlock)
        if use_mlock:
            self.reasons.append(
                f"mlock on: {shown.est.host_weights / GiB:.1f} GiB of weights are locked in RAM and never swapped out."
            )
        p = shown.placement
        return Plan(
            n_gpu_layers=p.n_gpu_layers if p.use_gpu else 0,
            n_cpu_moe=p.n_cpu_moe if p.use_gpu else 0,
            n_cpu_moe_partial=p.n_cpu_moe_partial if p.use_gpu else 0,
            n_ctx=n_ctx,
            flash_attn=self.flash_attn,
            kv_type=self.kv_type,
            n_threads=n_threads,
            n_threads_batch=n_threads_batch,
            use_mmap=use_mmap,
            use_mlock=use_mlock,
            est_vram_bytes=shown.est.vram if p.use_gpu else 0,
            est_ram_bytes=shown.ram_need,
            fits=fits,
            mode=mode,
            reasons=self.reasons,
            suggestions=self.suggestions,
            n_batch=self.n_batch,
            gpu_index=self.gpu_index if p.use_gpu else None,
            gpu_name=self.gpu.name if self.gpu is not None and p.use_gpu else "",
            use_gpu=p.use_gpu,
            backend=(self.gpu.backend_hint or "GPU") if self.gpu is not None and p.use_gpu else "CPU",
            device=self.gpu.device if self.gpu is not None and p.use_gpu else "",
            vram_budget=vram_budget(self.gpu) if self.gpu is not None else 0,
            ram_budget=ram_budget(self.profile),
            estimate=shown.est,
        )

    def _has_overrides(self) -> bool:
        w = self.wishes
        return w.n_gpu_layers is not None or w.n_cpu_moe is not None


def plan(profile: HardwareProfile, model_info: GgufInfo, wishes: Wishes | None = None) -> Plan:
    """The best way to load `model_info` on `profile`, honouring `wishes`; never raises on odd input."""
    wishes = wishes or Wishes()
    if model_info.n_layer <= 0 or not model_info.blocks:
        return refusal(profile, f"{model_info.name} has no transformer blocks; the file is not a usable model.", wishes)
    if wishes.n_batch is not None:
        return _Planner(profile, model_info, wishes).run()
    # The prompt batch: the largest that costs nothing else. A bigger batch takes more compute
    # buffer, which must never push weights off the GPU or shrink the context: generation speed
    # comes first. It pays most with experts in RAM, which cross to the GPU once per batch.
    base = _Planner(profile, model_info, replace(wishes, n_batch=AUTO_BATCHES[-1])).run()
    if not base.fits:
        return base
    if base.fits:
        for nb in AUTO_BATCHES[:-1]:
            p = _Planner(profile, model_info, replace(wishes, n_batch=nb)).run()
            same = (p.n_gpu_layers, p.n_cpu_moe, p.n_cpu_moe_partial, p.use_gpu) == (
                base.n_gpu_layers,
                base.n_cpu_moe,
                base.n_cpu_moe_partial,
                base.use_gpu,
            )
            if p.fits and same and p.n_ctx >= base.n_ctx:
                p.reasons.append(
                    f"Prompts are read {nb:,} tokens at a time: the larger work buffer still fits without moving "
                    "any weights off the GPU or shrinking the context, and long prompts are read faster."
                )
                return p
    base.reasons.append(
        f"Prompts are read {base.n_batch:,} tokens at a time: a larger batch would need memory that the weights "
        "or the context use better."
    )
    return base


# --- planning for a file on disk ------------------------------------------------------------------

_info_cache: dict[tuple[str, int, int], GgufInfo] = {}
_info_lock = threading.Lock()


def model_info_for_file(path: str | os.PathLike[str]) -> GgufInfo:
    """read_gguf_info, remembered per file (path, size, modification time). Raises GgufError."""
    p = Path(path)
    try:
        st = p.stat()
        key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    except OSError:
        return read_gguf_info(p)  # raises the clear "does not exist" / "cannot open" error
    with _info_lock:
        hit = _info_cache.get(key)
    if hit is not None:
        return hit
    info = read_gguf_info(p)
    with _info_lock:
        if len(_info_cache) > 32:
            _info_cache.clear()
        _info_cache[key] = info
    return info


def refusal(profile: HardwareProfile, reason: str, wishes: Wishes | None = None) -> Plan:
    """A plan that must not be loaded, with the reason in plain words."""
    w = wishes or Wishes()
    return Plan(
        n_gpu_layers=0,
        n_cpu_moe=0,
        n_ctx=w.n_ctx or AUTO_CTX_BASE,
        flash_attn=True,
        kv_type="f16",
        n_threads=w.n_threads or profile.threads_generation,
        n_threads_batch=w.n_threads_batch or profile.threads_batch,
        use_mmap=True,
        use_mlock=False,
        est_vram_bytes=0,
        est_ram_bytes=0,
        fits=False,
        mode="none",
        reasons=[reason],
        ram_budget=ram_budget(profile),
    )


def plan_for_file(
    path: str | os.PathLike[str],
    profile: HardwareProfile,
    wishes: Wishes | None = None,
    workers: Sequence[WorkerDevice] = (),
) -> Plan:
    """The automatic plan for a model file (what the main window loads with: plan.to_load_settings()).

    Never raises: an unreadable file gives a plan with fits=False and the reason. Reads only the
    header (a fraction of a second for the 20b, cached afterwards).
    """
    try:
        info = model_info_for_file(path)
    except GgufError as e:
        return refusal(profile, f"This file cannot be planned for: {e}.", wishes)
    except OSError as e:
        return refusal(profile, f"This file cannot be read: {e.strerror or e}.", wishes)
    found = plan(profile, info, wishes)
    if workers:  # GPU workers (llama.cpp RPC) are an extra input, placed by app/core/remote/pool.py
        from app.core.remote.pool import plan_with_workers

        found = plan_with_workers(found, info, workers)
    return found


def suggest_fix(profile: HardwareProfile, model_info: GgufInfo, wishes: Wishes) -> Plan | None:
    """The planner's own plan closest to settings that do not fit, or None if nothing fits.

    First keeps everything but the placement (GPU layers, experts on CPU), then also lets the
    planner choose the context, cache type, attention and mmap.
    """
    keep = replace(wishes, n_gpu_layers=None, n_cpu_moe=None)
    p = plan(profile, model_info, keep)
    if p.fits:
        return p
    auto = replace(keep, n_ctx=None, kv_type=None, flash_attn=None, use_mmap=None, use_mlock=None)
    p = plan(profile, model_info, auto)
    return p if p.fits else None
