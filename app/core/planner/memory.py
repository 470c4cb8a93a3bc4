"""The memory model: bytes of weights, KV cache and compute buffers on the GPU and in RAM for one placement."""

from __future__ import annotations

import re

from app.core.engine import PARTIAL_EXPERT_TENSORS
from app.core.gguf_info import GgufInfo
from app.core.hardware import GpuInfo
from app.core.planner.types import MemoryEstimate, MiB, Placement

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
# Host memory llama.cpp adds besides weights, caches and buffers (vocabulary tables, threads); a GPU
# driver adds its own host allocations on top.
HOST_RUNTIME = 200 * MiB
HOST_GPU_DRIVER = 300 * MiB


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
