"""Choose how to load a model on this computer (GPU, experts on CPU, layer split, CPU) and explain why.

The package is split by job: ``types`` (Wishes, Placement, MemoryEstimate, Plan), ``memory`` (the
memory model: KV cache, compute buffers and weights per placement, checked against llama.cpp's
buffer reports), ``budgets`` (safety margins, usable memory, which backend drives a GPU),
``search`` (the planner: placements from fastest to slowest, context and batch sizes, the reasons
in words) and ``plans`` (the entry points: plan, plan_for_file, refusal, suggest_fix). Import from
``app.core.planner``; the modules are its inside.
"""

from __future__ import annotations

from app.core.planner.budgets import (
    GPU_MARGIN,
    RAM_MARGIN_MIN,
    RAM_MARGIN_SHARE,
    UNKNOWN_RAM_BUDGET,
    backend_display_name,
    gpu_margin,
    ram_budget,
    ram_margin,
    usable_backend,
    vram_budget,
)
from app.core.planner.memory import (
    GPU_RUNTIME_RESERVE,
    HOST_GPU_DRIVER,
    HOST_RUNTIME,
    KV_PAD,
    KV_TYPE_BYTES,
    N_OUTPUTS,
    amx_extra_bytes,
    compute_bytes,
    estimate,
    expert_tensor_bytes,
    kv_bytes_per_cell,
    kv_cells,
    kv_layer_bytes,
    kv_total_bytes,
    partial_expert_bytes,
)
from app.core.planner.plans import model_info_for_file, plan, plan_for_file, refusal, suggest_fix
from app.core.planner.search import (
    AUTO_BATCHES,
    AUTO_CTX_BASE,
    AUTO_CTX_CAP_PARTIAL,
    AUTO_CTX_FALLBACK,
    AUTO_CTX_STEPS,
    MIN_CTX,
)
from app.core.planner.types import MODE_RANK, GiB, MemoryEstimate, MiB, Placement, Plan, Wishes

__all__ = [
    "AUTO_BATCHES",
    "AUTO_CTX_BASE",
    "AUTO_CTX_CAP_PARTIAL",
    "AUTO_CTX_FALLBACK",
    "AUTO_CTX_STEPS",
    "GPU_MARGIN",
    "GPU_RUNTIME_RESERVE",
    "HOST_GPU_DRIVER",
    "HOST_RUNTIME",
    "KV_PAD",
    "KV_TYPE_BYTES",
    "MIN_CTX",
    "MODE_RANK",
    "N_OUTPUTS",
    "RAM_MARGIN_MIN",
    "RAM_MARGIN_SHARE",
    "UNKNOWN_RAM_BUDGET",
    "GiB",
    "MemoryEstimate",
    "MiB",
    "Placement",
    "Plan",
    "Wishes",
    "amx_extra_bytes",
    "backend_display_name",
    "compute_bytes",
    "estimate",
    "expert_tensor_bytes",
    "gpu_margin",
    "kv_bytes_per_cell",
    "kv_cells",
    "kv_layer_bytes",
    "kv_total_bytes",
    "model_info_for_file",
    "partial_expert_bytes",
    "plan",
    "plan_for_file",
    "ram_budget",
    "ram_margin",
    "refusal",
    "suggest_fix",
    "usable_backend",
    "vram_budget",
]
