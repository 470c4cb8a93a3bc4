"""Find out what this computer has for running a model: RAM, CPU, GPUs and usable llama.cpp backends."""

from __future__ import annotations

import importlib
import json
import platform
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import ModuleType
from typing import Any

from app.core.errors import HarmonicaError

GB = 1_000_000_000
GiB = 1 << 30

# Apple does not publish the rule behind Metal's recommendedMaxWorkingSetSize (and it is only
# reachable through Metal). Observed values, which llama.cpp users and Apple's own docs quote, are
# about two thirds of RAM on machines up to 36 GB and about three quarters above that; macOS 14+
# lets the user raise it with `sysctl iogpu.wired_limit_mb`, which we honour when set.
APPLE_SMALL_RAM_LIMIT = 36 * GiB
APPLE_SMALL_SHARE = 2 / 3
APPLE_LARGE_SHARE = 3 / 4

_CPU_FLAGS_OF_INTEREST = (
    "avx",
    "avx2",
    "avx512f",
    "avx512bw",
    "avx512_vnni",
    "avx_vnni",
    "fma",
    "f16c",
    "sse4_2",
    "amx_tile",
    "neon",
    "asimd",
    "sve",
)


@dataclass
class GpuInfo:
    """One GPU as a probe saw it."""

    vendor: str  # "nvidia", "amd", "apple", ...
    name: str
    vram_total: int  # bytes
    vram_free: int  # bytes
    index: int = 0  # the vendor's own device index (CUDA/ROCm ordinal)
    driver: str = ""
    backend_hint: str = ""  # the llama.cpp backend that would drive it: "CUDA", "ROCm", "Metal", "Vulkan"
    unified_memory: bool = False  # shares system RAM (Apple Silicon, APUs)
    device: str = ""  # the ggml device llama.cpp would drive it through ("CUDA0", "Metal"); "" = not matched


@dataclass(frozen=True)
class LlamaDevice:
    """One device in the installed llama.cpp's backend registry."""

    name: str  # "CPU", "CUDA0", "Vulkan0", "Metal", ...
    backend: str  # registry name: "CPU", "CUDA", "ROCm", "Vulkan", "Metal", "BLAS", ...
    description: str  # usually the product name, e.g. "NVIDIA GeForce RTX 4070"
    kind: str  # "cpu", "gpu", "igpu", "accel"
    memory_total: int = 0  # bytes; 0 = not asked
    memory_free: int = 0


@dataclass
class AppleSiliconInfo:
    """Apple Silicon details; the GPU shares RAM with the CPU."""

    chip: str
    unified_memory: int  # bytes (= RAM)
    gpu_budget: int  # bytes the GPU may use (the Metal working-set estimate or the user's limit)
    performance_cores: int | None = None
    budget_source: str = ""  # how gpu_budget was found, in words


@dataclass
class HardwareProfile:
    """What this computer offers; every number can also be written by hand (tests, 'what if')."""

    ram_total: int
    ram_available: int
    cores_physical: int
    cores_logical: int
    os: str = ""
    machine: str = ""
    cpu_name: str = ""
    cpu_features: list[str] = field(default_factory=list)
    gpus: list[GpuInfo] = field(default_factory=list)
    apple: AppleSiliconInfo | None = None
    # llama.cpp backends the installed library can use ("CPU", "CUDA", "Metal", ...);
    # None = not known (the library could not be asked).
    backends: list[str] | None = None
    llama_devices: list[LlamaDevice] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # Hybrid CPUs (Intel P/E cores, Arm big.LITTLE): physical performance and efficiency cores;
    # both 0 when every core is alike or it could not be told.
    cores_performance: int = 0
    cores_efficiency: int = 0

    @property
    def unified_memory(self) -> bool:
        return self.apple is not None or any(g.unified_memory for g in self.gpus)

    @property
    def threads_generation(self) -> int:
        """Threads for token generation: one per physical performance core.

        Each token ends in a barrier that waits for the slowest thread, so on a hybrid CPU a
        thread on an efficiency core holds every other one back (llama.cpp's own default also
        counts performance cores only). Elsewhere: one per physical core.
        """
        if self.apple and self.apple.performance_cores:
            return self.apple.performance_cores
        if self.cores_performance > 0:
            return self.cores_performance
        return max(1, self.cores_physical or self.cores_logical or 1)

    @property
    def threads_batch(self) -> int:
        """Threads for prompt processing: all logical cores (Apple: performance cores)."""
        if self.apple and self.apple.performance_cores:
            return self.apple.performance_cores
        return max(1, self.cores_logical or self.cores_physical or 1)

    def describe(self) -> list[str]:
        """Short lines for the hardware panel."""
        lines = [f"{self.os or 'Unknown OS'} {self.machine}".strip()]
        cpu = self.cpu_name or "CPU"
        hybrid = (
            f" ({self.cores_performance} performance + {self.cores_efficiency} efficiency)"
            if self.cores_performance
            else ""
        )
        lines.append(f"{cpu}: {self.cores_physical} cores{hybrid}, {self.cores_logical} threads")
        lines.append(f"RAM: {self.ram_total / GiB:.1f} GiB, {self.ram_available / GiB:.1f} GiB available")
        if self.apple:
            lines.append(
                f"{self.apple.chip}: unified memory, GPU may use about {self.apple.gpu_budget / GiB:.1f} GiB ({self.apple.budget_source})"
            )
        for g in self.gpus:
            if g.vendor == "apple":
                continue
            drv = f", driver {g.driver}" if g.driver else ""
            lines.append(
                f"GPU {g.index}: {g.name}, {g.vram_total / GiB:.1f} GiB ({g.vram_free / GiB:.1f} GiB free){drv}"
            )
        if self.backends is not None:
            lines.append("llama.cpp backends: " + (", ".join(self.backends) or "none"))
        return lines


# --- probes -------------------------------------------------------------------------------------


class ProbeError(HarmonicaError):
    """A probe could not answer; the message is the reason shown in notes."""


def _run(args: Sequence[str], timeout: float = 5.0) -> str:
    try:
        done = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError:
        raise ProbeError(f"{args[0]} is not installed") from None
    except subprocess.TimeoutExpired:
        raise ProbeError(f"{args[0]} did not answer within {timeout:.0f} s") from None
    except OSError as e:
        raise ProbeError(f"{args[0]} could not run: {e}") from None
    if done.returncode != 0:
        msg = (done.stderr or done.stdout).strip().splitlines()
        raise ProbeError(f"{args[0]} failed ({msg[-1] if msg else 'exit ' + str(done.returncode)})")
    return done.stdout


def _import_pynvml() -> ModuleType:
    return importlib.import_module("pynvml")


def _default_backends() -> list[str]:
    # Imported lazily: the engine helper's module loads llama.cpp, which is slow and may not exist.
    mod = importlib.import_module("app.core.llama_ext")
    fn = mod.available_backends
    return [str(b) for b in fn()]


def _default_devices() -> list[LlamaDevice]:
    mod = importlib.import_module("app.core.llama_ext")
    # Without memory: asking CUDA for it creates a context that holds VRAM for the process's life.
    return [LlamaDevice(d.name, d.backend, d.description, d.kind) for d in mod.backend_devices(memory=False)]


def _default_device_memory(name: str) -> tuple[int, int]:
    mod = importlib.import_module("app.core.llama_ext")
    free, total = mod.device_memory(name)
    return int(free), int(total)


def _psutil() -> Any:
    return importlib.import_module("psutil")


@dataclass
class Probes:
    """Everything the detector asks the outside world; tests replace any of these."""

    system: Callable[[], str] = platform.system
    machine: Callable[[], str] = platform.machine
    psutil: Callable[[], Any] = _psutil
    pynvml: Callable[[], ModuleType] = _import_pynvml
    run: Callable[[Sequence[str]], str] = _run
    sysfs_root: Path = Path("/sys")
    proc_root: Path = Path("/proc")
    backends: Callable[[], list[str]] = _default_backends
    devices: Callable[[], list[LlamaDevice]] = _default_devices
    device_memory: Callable[[str], tuple[int, int]] = _default_device_memory  # (free, total)


def _as_str(v: Any) -> str:
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)


def probe_memory_cpu(probes: Probes) -> tuple[dict[str, Any], list[str]]:
    """RAM and core counts via psutil."""
    notes: list[str] = []
    out: dict[str, Any] = {"ram_total": 0, "ram_available": 0, "cores_physical": 0, "cores_logical": 0}
    try:
        ps = probes.psutil()
    except Exception as e:  # noqa: BLE001 - any failure is a reason, never a crash
        return out, [f"RAM/CPU: psutil is not available ({e})"]
    try:
        vm = ps.virtual_memory()
        out["ram_total"], out["ram_available"] = int(vm.total), int(vm.available)
    except Exception as e:  # noqa: BLE001
        notes.append(f"RAM: could not be read ({e})")
    try:
        logical = ps.cpu_count(logical=True)
        physical = ps.cpu_count(logical=False)
        out["cores_logical"] = int(logical or 0)
        out["cores_physical"] = int(physical or logical or 0)
        if not physical:
            notes.append("CPU: physical core count unknown; using the logical count")
    except Exception as e:  # noqa: BLE001
        notes.append(f"CPU: core count could not be read ({e})")
    return out, notes


def _cpu_list(text: str | None) -> set[int]:
    """ "0-7,16,18-19" → {0..7, 16, 18, 19}; malformed parts are skipped."""
    out: set[int] = set()
    for part in (text or "").strip().split(","):
        lo, _, hi = part.strip().partition("-")
        try:
            out.update(range(int(lo), int(hi or lo) + 1))
        except ValueError:
            continue
    return out


def probe_core_types(probes: Probes) -> tuple[int, int]:
    """Physical (performance, efficiency) cores of a hybrid CPU on Linux; (0, 0) if not hybrid.

    Intel hybrid CPUs expose a perf PMU per core type (/sys/devices/cpu_core and cpu_atom, each
    with a `cpus` list); Arm big.LITTLE gives each CPU a relative `cpu_capacity`, the big cores the
    highest. Hyper-threads of one core share its topology core_id, so each core counts once.
    """
    sys_root = probes.sysfs_root
    cpu_dir = sys_root / "devices" / "system" / "cpu"

    def physical(cpus: set[int]) -> int:
        cores = set()
        for c in cpus:
            topo = cpu_dir / f"cpu{c}" / "topology"
            core = _read(topo / "core_id")
            pkg = _read(topo / "physical_package_id") or "0"
            cores.add((pkg, core) if core is not None else ("cpu", str(c)))
        return len(cores)

    p_cpus = _cpu_list(_read(sys_root / "devices" / "cpu_core" / "cpus"))
    e_cpus = _cpu_list(_read(sys_root / "devices" / "cpu_atom" / "cpus"))
    if p_cpus and e_cpus:
        return physical(p_cpus), physical(e_cpus)
    capacity: dict[int, int] = {}
    try:
        entries = list(cpu_dir.iterdir())
    except OSError:
        return 0, 0
    for d in entries:
        if d.name.startswith("cpu") and d.name[3:].isdigit():
            v = _read(d / "cpu_capacity")
            if v is not None and v.isdigit():
                capacity[int(d.name[3:])] = int(v)
    if len(set(capacity.values())) < 2:
        return 0, 0
    top = max(capacity.values())
    big = {c for c, v in capacity.items() if v == top}
    return physical(big), physical(set(capacity) - big)


def probe_cpu_name(probes: Probes, system: str) -> tuple[str, list[str], list[str]]:
    """CPU model name and the SIMD features llama.cpp cares about (cheap sources only)."""
    notes: list[str] = []
    if system == "Linux":
        try:
            text = (probes.proc_root / "cpuinfo").read_text(errors="replace")
        except OSError as e:
            return "", [], [f"CPU name: {e.strerror or e}"]
        name, flags = "", set[str]()
        for line in text.splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key in ("model name", "Hardware", "cpu model") and not name:
                name = value.strip()
            elif key in ("flags", "Features") and not flags:
                flags = set(value.split())
        feats = [f for f in _CPU_FLAGS_OF_INTEREST if f in flags]
        return name, feats, notes
    if system == "Darwin":
        try:
            name = probes.run(["sysctl", "-n", "machdep.cpu.brand_string"]).strip()
        except ProbeError as e:
            return "", [], [f"CPU name: {e}"]
        return name, (["neon"] if name.startswith("Apple") else []), notes
    if system == "Windows":
        return platform.processor(), [], notes
    return "", [], notes


def probe_nvidia(probes: Probes) -> tuple[list[GpuInfo], list[str]]:
    """NVIDIA GPUs via NVML: name, total and free VRAM, driver."""
    try:
        nv = probes.pynvml()
    except Exception as e:  # noqa: BLE001
        return [], [f"NVIDIA: nvidia-ml-py is not installed ({e})"]
    try:
        nv.nvmlInit()
    except Exception as e:  # noqa: BLE001 - NVMLError when there is no driver or no GPU
        return [], [f"NVIDIA: no driver found ({_as_str(e) or type(e).__name__})"]
    gpus: list[GpuInfo] = []
    notes: list[str] = []
    try:
        try:
            driver = _as_str(nv.nvmlSystemGetDriverVersion())
        except Exception:  # noqa: BLE001
            driver = ""
        count = int(nv.nvmlDeviceGetCount())
        for i in range(count):
            try:
                h = nv.nvmlDeviceGetHandleByIndex(i)
                name = _as_str(nv.nvmlDeviceGetName(h))
                mem = nv.nvmlDeviceGetMemoryInfo(h)
                gpus.append(
                    GpuInfo("nvidia", name, int(mem.total), int(mem.free), index=i, driver=driver, backend_hint="CUDA")
                )
            except Exception as e:  # noqa: BLE001
                notes.append(f"NVIDIA GPU {i}: could not be read ({_as_str(e) or type(e).__name__})")
        if count == 0:
            notes.append("NVIDIA: the driver is installed but sees no GPU")
    except Exception as e:  # noqa: BLE001
        notes.append(f"NVIDIA: {_as_str(e) or type(e).__name__}")
    finally:
        try:
            nv.nvmlShutdown()
        except Exception:  # noqa: BLE001
            pass
    return gpus, notes


def _sysctl_int(probes: Probes, key: str) -> int | None:
    try:
        return int(probes.run(["sysctl", "-n", key]).strip())
    except (ProbeError, ValueError):
        return None


def apple_gpu_budget(memsize: int, wired_limit_mb: int | None = None) -> tuple[int, str]:
    """The share of unified memory the GPU may use, and how it was decided (see the constants)."""
    if wired_limit_mb and wired_limit_mb > 0:
        return min(memsize, wired_limit_mb * 1024 * 1024), "set by iogpu.wired_limit_mb"
    share = APPLE_SMALL_SHARE if memsize <= APPLE_SMALL_RAM_LIMIT else APPLE_LARGE_SHARE
    return int(
        memsize * share
    ), f"about {'two thirds' if share == APPLE_SMALL_SHARE else 'three quarters'} of RAM, as macOS allows by default"


def probe_apple(probes: Probes) -> tuple[AppleSiliconInfo | None, list[str]]:
    """Apple Silicon chip, unified memory and the GPU working-set budget via sysctl."""
    try:
        brand = probes.run(["sysctl", "-n", "machdep.cpu.brand_string"]).strip()
    except ProbeError as e:
        return None, [f"Apple: sysctl failed ({e})"]
    arm64 = _sysctl_int(probes, "hw.optional.arm64")
    if not brand.startswith("Apple") and arm64 != 1:
        return None, [f"Apple: {brand or 'this Mac'} has no Apple Silicon GPU; Metal offload is not used on Intel Macs"]
    memsize = _sysctl_int(probes, "hw.memsize")
    if not memsize:
        return None, ["Apple: could not read the memory size (hw.memsize)"]
    budget, source = apple_gpu_budget(memsize, _sysctl_int(probes, "iogpu.wired_limit_mb"))
    perf = _sysctl_int(probes, "hw.perflevel0.physicalcpu")
    return AppleSiliconInfo(brand or "Apple Silicon", memsize, budget, perf, source), []


def _read(path: Path) -> str | None:
    try:
        return path.read_text(errors="replace").strip()
    except OSError:
        return None


def probe_amd_sysfs(probes: Probes) -> tuple[list[GpuInfo], list[str]]:
    """AMD GPUs from the amdgpu driver's sysfs files (Linux)."""
    drm = probes.sysfs_root / "class" / "drm"
    try:
        cards = sorted(p for p in drm.iterdir() if p.name.startswith("card") and p.name[4:].isdigit())
    except OSError:
        return [], [f"AMD: {drm} does not exist (no GPU driver loaded)"]
    gpus: list[GpuInfo] = []
    notes: list[str] = []
    driver = _read(probes.sysfs_root / "module" / "amdgpu" / "version") or ""
    for card in cards:
        dev = card / "device"
        if (_read(dev / "vendor") or "").lower() != "0x1002":
            continue
        total_s, used_s = _read(dev / "mem_info_vram_total"), _read(dev / "mem_info_vram_used")
        try:
            total, used = int(total_s or ""), int(used_s or "")
        except ValueError:
            notes.append(f"AMD {card.name}: VRAM size not reported by the driver")
            continue
        name = _read(dev / "product_name") or f"AMD GPU ({(_read(dev / 'device') or '?')})"
        # APUs report a small carve-out as VRAM and use system RAM through GTT.
        unified = total < 1 * GiB
        gpus.append(
            GpuInfo(
                "amd",
                name,
                total,
                max(0, total - used),
                index=len(gpus),
                driver=driver or "amdgpu",
                backend_hint="ROCm",
                unified_memory=unified,
            )
        )
    if not gpus and not notes:
        notes.append("AMD: no AMD GPU in sysfs")
    return gpus, notes


def probe_rocm_smi(probes: Probes) -> tuple[list[GpuInfo], list[str]]:
    """AMD GPUs via `rocm-smi --showmeminfo vram --json` (fills in when sysfs is not readable)."""
    try:
        text = probes.run(["rocm-smi", "--showmeminfo", "vram", "--showproductname", "--json"])
    except ProbeError as e:
        return [], [f"AMD: {e}"]
    try:
        data = json.loads(text)
    except ValueError:
        return [], ["AMD: rocm-smi printed something that is not JSON"]
    if not isinstance(data, dict):
        return [], ["AMD: rocm-smi gave an unexpected answer"]
    gpus: list[GpuInfo] = []
    for key in sorted(k for k in data if k.startswith("card")):
        info = data[key]
        if not isinstance(info, dict):
            continue
        total = used = None
        for k, v in info.items():
            kl = k.lower()
            try:
                if "vram total memory" in kl:
                    total = int(str(v))
                elif "vram total used memory" in kl:
                    used = int(str(v))
            except ValueError:
                pass
        if total is None:
            continue
        name = str(info.get("Card Series") or info.get("Card series") or info.get("Card model") or "AMD GPU")
        idx = int(key[4:]) if key[4:].isdigit() else len(gpus)
        gpus.append(
            GpuInfo("amd", name, total, max(0, total - (used or 0)), index=idx, driver="ROCm", backend_hint="ROCm")
        )
    return gpus, ([] if gpus else ["AMD: rocm-smi reported no GPU memory"])


def probe_backends(probes: Probes) -> tuple[list[str] | None, list[str]]:
    """Ask the installed llama.cpp which backends it can use."""
    try:
        return list(probes.backends()), []
    except Exception as e:  # noqa: BLE001
        return None, [f"llama.cpp backends: could not ask the library ({type(e).__name__}: {e})"]


# Which llama.cpp backends can drive a vendor's GPUs, in order of preference.
VENDOR_BACKENDS: dict[str, tuple[str, ...]] = {
    "nvidia": ("CUDA", "Vulkan"),
    "amd": ("ROCm", "HIP", "Vulkan"),
    "apple": ("Metal", "MTL"),
    "intel": ("SYCL", "Vulkan"),
}


def _backend_vendor(dev: LlamaDevice) -> str:
    b, d = dev.backend.lower(), dev.description.lower()
    if b == "cuda" or any(w in d for w in ("nvidia", "geforce", "quadro", "tesla")):
        return "nvidia"
    if b in ("rocm", "hip") or any(w in d for w in ("amd", "radeon")):
        return "amd"
    if b in ("metal", "mtl") or d.startswith("apple"):
        return "apple"
    if b == "sycl" or "intel" in d:
        return "intel"
    return "other"


def probe_llama_devices(probes: Probes) -> tuple[list[LlamaDevice], list[str]]:
    """The devices the installed llama.cpp registered (GPUs, the CPU, accelerators such as BLAS)."""
    try:
        return list(probes.devices()), []
    except Exception as e:  # noqa: BLE001
        return [], [f"llama.cpp devices: could not ask the library ({type(e).__name__}: {e})"]


def match_llama_devices(
    gpus: list[GpuInfo], devices: list[LlamaDevice], probes: Probes, apple: AppleSiliconInfo | None
) -> tuple[list[GpuInfo], list[str]]:
    """Tie each GPU a vendor probe found to the llama.cpp device that drives it, and add GPUs
    only llama.cpp sees (e.g. through Vulkan when no vendor tool is installed)."""
    notes: list[str] = []
    free = [d for d in devices if d.kind in ("gpu", "igpu")]
    out: list[GpuInfo] = []
    for g in gpus:
        wanted = [w.lower() for w in VENDOR_BACKENDS.get(g.vendor, (g.backend_hint,))]
        cands = [d for d in free if d.backend.lower() in wanted]
        # Prefer the vendor's first backend, then the same product name; keep registry order otherwise
        # (CUDA and NVML both number identical cards by PCI bus in the usual setups).
        cands.sort(
            key=lambda d: (
                wanted.index(d.backend.lower()),
                g.name.lower() not in d.description.lower() and d.description.lower() not in g.name.lower(),
            )
        )
        if cands:
            d = cands[0]
            free.remove(d)
            g = replace(g, device=d.name, backend_hint="ROCm" if d.backend.upper() == "HIP" else d.backend)
            if g.vendor == "apple" and apple is not None:
                try:
                    _, budget = probes.device_memory(d.name)
                except Exception:  # noqa: BLE001 - keep the rule-of-thumb budget
                    budget = 0
                if budget > 0:
                    apple.gpu_budget = budget
                    apple.budget_source = "as Metal reports it (recommendedMaxWorkingSetSize)"
                    g = replace(g, vram_total=budget, vram_free=budget)
        out.append(g)
    for d in free:
        try:
            dev_free, dev_total = probes.device_memory(d.name)
        except Exception as e:  # noqa: BLE001
            notes.append(
                f"llama.cpp sees {d.description or d.name} ({d.name}) but could not say how much memory it has ({e})"
            )
            continue
        if dev_total <= 0:
            notes.append(f"llama.cpp sees {d.description or d.name} ({d.name}) but reports no memory for it")
            continue
        vendor = _backend_vendor(d)
        out.append(
            GpuInfo(
                vendor,
                d.description or d.name,
                dev_total,
                dev_free,
                index=len([x for x in out if x.vendor == vendor]),
                driver=d.backend,
                backend_hint=d.backend,
                unified_memory=d.kind == "igpu",
                device=d.name,
            )
        )
        notes.append(
            f"{d.description or d.name}: found through llama.cpp's {d.backend} backend (no vendor tool reported it)"
        )
    return out, notes


def detect(probes: Probes | None = None) -> HardwareProfile:
    """Run every probe; each one that fails adds its reason to notes instead of raising."""
    probes = probes or Probes()
    notes: list[str] = []
    try:
        system = probes.system()
        machine = probes.machine()
    except Exception as e:  # noqa: BLE001
        system, machine = "", ""
        notes.append(f"OS: unknown ({e})")
    mem, n = probe_memory_cpu(probes)
    notes += n
    perf_cores, eff_cores = probe_core_types(probes) if system == "Linux" else (0, 0)
    if perf_cores:
        notes.append(
            f"CPU: hybrid, {perf_cores} performance and {eff_cores} efficiency cores; generation uses the performance cores"
        )
    cpu_name, features, n = probe_cpu_name(probes, system)
    notes += n
    gpus: list[GpuInfo] = []
    apple: AppleSiliconInfo | None = None
    if system == "Darwin":
        apple, n = probe_apple(probes)
        notes += n
        if apple:
            gpus.append(
                GpuInfo(
                    "apple",
                    apple.chip + " GPU",
                    apple.gpu_budget,
                    apple.gpu_budget,
                    driver="Metal",
                    backend_hint="Metal",
                    unified_memory=True,
                )
            )
            if not mem["ram_total"]:
                mem["ram_total"] = apple.unified_memory
    else:
        found, n = probe_nvidia(probes)
        gpus += found
        notes += n
        if system == "Linux":
            amd, n = probe_amd_sysfs(probes)
            if not amd:
                amd2, n2 = probe_rocm_smi(probes)
                amd, n = amd2, n + n2
            gpus += amd
            notes += n
    backends, n = probe_backends(probes)
    notes += n
    devices, n = probe_llama_devices(probes)
    notes += n
    if devices:
        gpus, n = match_llama_devices(gpus, devices, probes, apple)
        notes += n
    return HardwareProfile(
        ram_total=mem["ram_total"],
        ram_available=mem["ram_available"],
        cores_physical=mem["cores_physical"],
        cores_logical=mem["cores_logical"],
        os=system,
        machine=machine,
        cpu_name=cpu_name,
        cpu_features=features,
        gpus=gpus,
        apple=apple,
        backends=backends,
        llama_devices=devices,
        notes=notes,
        cores_performance=perf_cores,
        cores_efficiency=eff_cores,
    )
