"""The planner's entry points: plan a model, or a file on disk (cached headers, refusals), and suggest a fix."""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from app.core.gguf_info import GgufError, GgufInfo, read_gguf_info
from app.core.hardware import HardwareProfile
from app.core.planner.budgets import ram_budget
from app.core.planner.search import AUTO_BATCHES, AUTO_CTX_BASE, _Planner
from app.core.planner.types import Plan, Wishes

if TYPE_CHECKING:
    from app.core.remote.rpc import WorkerDevice


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
