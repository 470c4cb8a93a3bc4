"""The planner's extra input: GPU workers. Places a model's layers across this computer's GPU, the workers' devices and the CPU.

llama.cpp puts layers [0, n_layer + 1 - n_gpu_layers) on the CPU and the rest on the listed
devices in order, each taking the share `tensor_split` gives it (llama-model.cpp: a layer at
offset k goes to the first device whose cumulative share exceeds k / n_gpu_layers); the output
layer is the last one. So the plan fills devices from the top layer down: this computer's GPU
last in the list (it holds the output layer, and the logits never cross the network), the
workers before it, and whatever is left stays on the CPU. A device's budget is the free memory
its backend reports, less a safety margin and its compute buffer.

Whole layers only: the experts-on-CPU placement (`n_cpu_moe`) is not combined with workers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from app.core.engine import LoadSettings
from app.core.gguf_info import GgufInfo
from app.core.planner import (
    GPU_MARGIN,
    GiB,
    Plan,
    compute_bytes,
    kv_layer_bytes,
)
from app.core.remote.rpc import UNENCRYPTED_WARNING, WorkerDevice

MiB = 1 << 20
WORKER_RUNTIME = 350 * MiB  # what a worker's backend takes before any buffer (a CUDA context; less on a CPU)


@dataclass(frozen=True)
class DeviceShare:
    """One device of a pooled plan and what it holds."""

    device: str  # llama.cpp device name ("RPC0", "CUDA0", "CPU")
    label: str  # for people ("gpu-box (RPC0)", "this computer's GPU", "this computer's CPU")
    layers: int  # blocks (+ the output layer on the last device)
    bytes: int  # weights + KV cache it holds
    budget: int  # usable memory (0: the CPU, checked against RAM)
    remote: bool = False


@dataclass
class PooledPlan(Plan):
    """A Plan whose layers span this computer and GPU workers; `shares` says which device holds what."""

    shares: list[DeviceShare] = field(default_factory=list)
    tensor_split: tuple[float, ...] = ()
    pooled_devices: tuple[str, ...] = ()
    warning: str = UNENCRYPTED_WARNING

    def to_load_settings(self) -> LoadSettings:
        settings = super().to_load_settings()
        settings.devices = self.pooled_devices
        settings.tensor_split = self.tensor_split
        return settings

    def summary(self) -> str:
        parts = ", ".join(f"{s.layers} layers on {s.label}" for s in self.shares if s.layers)
        return f"{parts}; context {self.n_ctx:,} tokens"

    def split_lines(self) -> list[str]:
        """One line per device for the plan panel."""
        return [
            f"{s.label}: {s.layers} layers, ~{s.bytes / GiB:.1f} GiB"
            + (f" of {s.budget / GiB:.1f} GiB usable" if s.budget else "")
            for s in self.shares
        ]


def _budget(free: int, total: int, overhead: int) -> int:
    """What a device may take: its free memory less the planner's fixed margin and the overhead."""
    return max(0, free - GPU_MARGIN - overhead)


def plan_with_workers(base: Plan, model: GgufInfo, workers: Sequence[WorkerDevice]) -> Plan:
    """`base` (the planner's plan for this computer alone), or a PooledPlan when workers let more of the model off the CPU."""
    if not workers or not model.blocks:
        return base
    if base.fits and base.mode == "gpu":
        base.reasons.append("Everything fits on this computer's GPU, so the GPU workers are not used.")
        return base
    L = model.n_layer
    n_ctx, kv_type, n_batch = base.n_ctx, base.kv_type, base.n_batch
    compute = compute_bytes(model, n_ctx, base.flash_attn, n_batch)
    layer_bytes = [model.blocks[il].total + kv_layer_bytes(model, il, n_ctx, kv_type, n_batch) for il in range(L)]
    layer_bytes.append(model.output_bytes)  # the output layer: index L
    # Devices in llama.cpp's order: workers first, this computer's GPU last.
    devices: list[tuple[str, str, int, bool]] = []
    for w in workers:
        label = f"{w.label or w.endpoint} ({w.name})" if w.device else (w.label or w.endpoint)
        devices.append((w.name, label, _budget(w.memory_free, w.memory_total, WORKER_RUNTIME + compute), True))
    if base.use_gpu and base.device:
        from app.core.planner import GPU_RUNTIME_RESERVE

        reserve = GPU_RUNTIME_RESERVE.get(base.backend, GPU_RUNTIME_RESERVE[""])
        devices.append(
            (
                base.device,
                f"this computer's GPU ({base.gpu_name or base.device})",
                max(0, base.vram_budget - reserve - compute),
                False,
            )
        )
    # Fill from the top layer down, last device first.
    counts = [0] * len(devices)
    used = [0] * len(devices)
    top = L  # next layer to place (L = the output layer)
    for d in range(len(devices) - 1, -1, -1):
        budget = devices[d][2]
        while top >= 0 and used[d] + layer_bytes[top] <= budget:
            used[d] += layer_bytes[top]
            counts[d] += 1
            top -= 1
        if top < 0:
            break
    on_devices = sum(counts)
    if on_devices == 0:
        base.reasons.append("The GPU workers have too little free memory for even one layer, so they are not used.")
        return base
    cpu_layers = top + 1  # layers 0..top stay on the CPU
    host = sum(layer_bytes[:cpu_layers]) + model.embedding_bytes + model.extra_bytes + compute
    if cpu_layers > L:  # the output layer stayed on the CPU too (cannot happen: it is placed first)
        host += 0
    ram_ok = host <= base.ram_budget
    base_on_devices = base.n_gpu_layers if base.use_gpu else 0
    better = cpu_layers == 0 or on_devices > base_on_devices or not base.fits
    if not better:
        base.reasons.append(
            f"The GPU workers would hold {on_devices} layers, no more than this computer's own plan; they are not used."
        )
        return base
    active = [(dev, c) for dev, c in zip(devices, counts, strict=False) if c]
    shares = [
        DeviceShare(dev[0], dev[1], c, u, dev[2], dev[3]) for dev, c, u in zip(devices, counts, used, strict=False) if c
    ]
    if cpu_layers:
        shares.insert(0, DeviceShare("CPU", "this computer's CPU", cpu_layers, sum(layer_bytes[:cpu_layers]), 0))
    total_on = sum(c for _, c in active)
    reasons = [
        f"Pooled over {len([d for d in devices if d[3]])} GPU worker device(s)"
        + (" and this computer's GPU" if any(not d[3] for d, _ in active) else "")
        + f": {total_on} of {L + 1} layers (with the output layer) run on the pooled devices"
        + (f", the first {cpu_layers} on this computer's CPU." if cpu_layers else "."),
        *[
            f"{s.label}: {s.layers} layers, ~{s.bytes / GiB:.1f} GiB"
            + (f" of {s.budget / GiB:.1f} GiB usable." if s.budget else ".")
            for s in shares
        ],
        "Each worker's budget is the free memory its backend reports, less a safety margin and its work buffers.",
        UNENCRYPTED_WARNING,
    ]
    if not ram_ok:
        reasons.append(f"RAM: ~{host / GiB:.1f} GiB needed, but only {base.ram_budget / GiB:.1f} GiB is usable.")
    pooled = PooledPlan(
        **{f: getattr(base, f) for f in Plan.__dataclass_fields__},
    )
    pooled = replace(
        pooled,
        n_gpu_layers=total_on,
        n_cpu_moe=0,
        fits=ram_ok,
        mode="gpu" if cpu_layers == 0 else "layer-split",
        use_gpu=True,
        backend="RPC" if not base.use_gpu else f"{base.backend}+RPC",
        est_vram_bytes=sum(used),
        est_ram_bytes=host,
        reasons=reasons + [r for r in base.reasons if r.startswith(("Threads", "mmap"))],
        shares=shares,
        tensor_split=tuple(float(c) for _, c in active),
        pooled_devices=tuple(dev[0] for dev, _ in active),
    )
    return pooled
