"""What memory a plan may use (free memory less a safety margin), and which llama.cpp backend drives a GPU."""

from __future__ import annotations

from app.core.hardware import VENDOR_BACKENDS, GpuInfo, HardwareProfile
from app.core.planner.types import MiB

# Left free on the GPU beyond the estimate: other programs (the desktop, a browser) grow and
# allocations fragment. A fixed size, not a share of the card: what can go wrong does not grow with
# the card (a share left 3 GB idle on an 80 GB card and starved a 6 GB one). The estimate itself is
# checked against llama.cpp's buffers and NVML peaks (tests, bench/RESULTS.md), so this is not
# where its error is absorbed. llama.cpp's --fit leaves 1 GiB.
GPU_MARGIN = 384 * MiB
# Left free in RAM (the OS file cache, other apps growing): 3% of RAM, at least 512 MiB.
RAM_MARGIN_SHARE = 0.03
RAM_MARGIN_MIN = 512 * MiB


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
