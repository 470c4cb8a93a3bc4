"""The planner proper: choose the GPU, try placements from fastest to slowest, size the context and batch, explain."""

from __future__ import annotations

from dataclasses import dataclass, replace

from app.core.engine import PARTIAL_EXPERT_TENSORS
from app.core.gguf_info import GgufInfo
from app.core.hardware import GB, GpuInfo, HardwareProfile
from app.core.planner.budgets import (
    _VENDOR_BACKENDS,
    backend_display_name,
    gpu_margin,
    ram_budget,
    ram_margin,
    usable_backend,
    vram_budget,
)
from app.core.planner.memory import (
    KV_TYPE_BYTES,
    estimate,
    kv_bytes_per_cell,
    kv_cells,
    kv_total_bytes,
    partial_expert_bytes,
)
from app.core.planner.types import GiB, MemoryEstimate, Placement, Plan, Wishes

AUTO_CTX_BASE = 8192
# Prompt micro-batches tried when Wishes.n_batch is None, largest first; the last is the fallback.
AUTO_BATCHES = (2048, 1024, 512)
AUTO_CTX_STEPS = (16384, 32768, 65536, 131072)
AUTO_CTX_FALLBACK = (4096, 2048)
AUTO_CTX_CAP_PARTIAL = 32768  # bigger automatic contexts only when everything is on the GPU
MIN_CTX = 512


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
