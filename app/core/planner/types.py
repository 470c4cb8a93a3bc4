"""The planner's inputs and outputs: Wishes (what the user asked for), Placement, MemoryEstimate and Plan."""

from __future__ import annotations

from dataclasses import dataclass, field

from app.core.engine import LoadSettings

MiB = 1 << 20
# Memory is shown in GiB, labelled "GiB" (app/core/units.py: one convention for every size the app
# shows): RAM and VRAM come in binary amounts (an "8 GB" card holds 8 GiB).
GiB = 1 << 30

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
