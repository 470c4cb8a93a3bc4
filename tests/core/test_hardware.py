"""Tests for app.core.hardware: every probe's parsing and failure path, with fake probe results."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from app.core import hardware as hw
from app.core.hardware import GiB, HardwareProfile, ProbeError, Probes, apple_gpu_budget, detect

# --- fakes --------------------------------------------------------------------------------------


def fake_psutil(total: int = 32 * GiB, available: int = 24 * GiB, physical: int | None = 8, logical: int = 16) -> Any:
    return SimpleNamespace(
        virtual_memory=lambda: SimpleNamespace(total=total, available=available),
        cpu_count=lambda logical_=True, **kw: logical if kw.get("logical", logical_) else physical,
    )


class NVMLError(Exception):
    pass


class FakeNvml:
    """The subset of pynvml the probe uses; names come back as bytes like old pynvml versions."""

    def __init__(
        self, devices: list[tuple[str, int, int]], *, init_error: str | None = None, bad: set[int] | None = None
    ) -> None:
        self.devices = devices
        self.init_error = init_error
        self.bad = bad or set()
        self.shutdown_called = False

    def nvmlInit(self) -> None:
        if self.init_error:
            raise NVMLError(self.init_error)

    def nvmlShutdown(self) -> None:
        self.shutdown_called = True

    def nvmlSystemGetDriverVersion(self) -> bytes:
        return b"550.54.14"

    def nvmlDeviceGetCount(self) -> int:
        return len(self.devices)

    def nvmlDeviceGetHandleByIndex(self, i: int) -> int:
        if i in self.bad:
            raise NVMLError("GPU is lost")
        return i

    def nvmlDeviceGetName(self, h: int) -> bytes:
        return self.devices[h][0].encode()

    def nvmlDeviceGetMemoryInfo(self, h: int) -> Any:
        _, total, free = self.devices[h]
        return SimpleNamespace(total=total, free=free, used=total - free)


def fake_run(outputs: dict[str, str]) -> Any:
    def run(args: Sequence[str]) -> str:
        key = " ".join(args)
        for k, v in outputs.items():
            if key == k or key.startswith(k):
                if isinstance(v, Exception):
                    raise v
                return v
        raise ProbeError(f"{args[0]} is not installed")

    return run


def no_module(name: str) -> Any:
    def imp() -> Any:
        raise ModuleNotFoundError(f"No module named '{name}'")

    return imp


CPU_DEV = hw.LlamaDevice("CPU", "CPU", "Intel Xeon", "cpu")


def no_memory(name: str) -> tuple[int, int]:
    raise AssertionError(f"memory of {name} should not be asked")


def probes(**kw: Any) -> Probes:
    base: dict[str, Any] = dict(
        system=lambda: "Linux",
        machine=lambda: "x86_64",
        psutil=fake_psutil,
        pynvml=no_module("pynvml"),
        run=fake_run({}),
        sysfs_root=Path("/nonexistent-sys"),
        proc_root=Path("/nonexistent-proc"),
        backends=lambda: ["CPU"],
        devices=lambda: [CPU_DEV],
        device_memory=no_memory,
    )
    base.update(kw)
    return Probes(**base)


# --- RAM / CPU ------------------------------------------------------------------------------------


def test_memory_and_cores() -> None:
    prof = detect(probes(psutil=lambda: fake_psutil(total=16 * GiB, available=9 * GiB, physical=6, logical=12)))
    assert (prof.ram_total, prof.ram_available) == (16 * GiB, 9 * GiB)
    assert (prof.cores_physical, prof.cores_logical) == (6, 12)
    assert (prof.threads_generation, prof.threads_batch) == (6, 12)


def test_physical_core_count_unknown_falls_back() -> None:
    prof = detect(probes(psutil=lambda: fake_psutil(physical=None, logical=4)))
    assert prof.cores_physical == 4
    assert any("physical core count unknown" in n for n in prof.notes)


def test_psutil_missing_is_a_note() -> None:
    prof = detect(probes(psutil=no_module("psutil")))
    assert prof.ram_total == 0
    assert any(n.startswith("RAM/CPU: psutil is not available") for n in prof.notes)
    assert prof.threads_generation == 1  # still usable


def test_psutil_raising_is_a_note() -> None:
    def broken() -> Any:
        return SimpleNamespace(virtual_memory=lambda: 1 / 0, cpu_count=lambda **kw: 4)

    prof = detect(probes(psutil=broken))
    assert any(n.startswith("RAM: could not be read") for n in prof.notes)
    assert prof.cores_logical == 4


def test_cpuinfo_name_and_flags(tmp_path: Path) -> None:
    (tmp_path / "cpuinfo").write_text(
        "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Platinum 8480+\nflags\t\t: fpu sse4_2 avx avx2 fma f16c avx512f amx_tile\n\n"
        "processor\t: 1\nmodel name\t: Intel(R) Xeon(R) Platinum 8480+\nflags\t\t: fpu\n"
    )
    prof = detect(probes(proc_root=tmp_path))
    assert prof.cpu_name == "Intel(R) Xeon(R) Platinum 8480+"
    assert prof.cpu_features == ["avx", "avx2", "avx512f", "fma", "f16c", "sse4_2", "amx_tile"]


def test_cpuinfo_missing_is_a_note() -> None:
    prof = detect(probes())
    assert prof.cpu_name == ""
    assert any(n.startswith("CPU name:") for n in prof.notes)


# --- NVIDIA ---------------------------------------------------------------------------------------


def test_nvidia_gpus() -> None:
    nv = FakeNvml([("NVIDIA GeForce RTX 4070", 12 * GiB, 11 * GiB), ("NVIDIA RTX A2000", 6 * GiB, 6 * GiB)])
    prof = detect(probes(pynvml=lambda: nv, backends=lambda: ["CUDA", "CPU"]))
    assert [g.name for g in prof.gpus] == ["NVIDIA GeForce RTX 4070", "NVIDIA RTX A2000"]
    g = prof.gpus[0]
    assert (g.vendor, g.vram_total, g.vram_free, g.driver, g.backend_hint, g.index) == (
        "nvidia",
        12 * GiB,
        11 * GiB,
        "550.54.14",
        "CUDA",
        0,
    )
    assert prof.gpus[1].index == 1
    assert nv.shutdown_called
    assert prof.backends == ["CUDA", "CPU"]
    assert not prof.unified_memory


def test_nvidia_not_installed() -> None:
    prof = detect(probes())
    assert prof.gpus == []
    assert any(n.startswith("NVIDIA: nvidia-ml-py is not installed") for n in prof.notes)


def test_nvidia_no_driver() -> None:
    prof = detect(probes(pynvml=lambda: FakeNvml([], init_error="NVML Shared Library Not Found")))
    assert prof.gpus == []
    assert "NVIDIA: no driver found (NVML Shared Library Not Found)" in prof.notes


def test_nvidia_driver_without_gpu() -> None:
    prof = detect(probes(pynvml=lambda: FakeNvml([])))
    assert "NVIDIA: the driver is installed but sees no GPU" in prof.notes


def test_nvidia_one_bad_device_keeps_the_others() -> None:
    nv = FakeNvml([("A", 8 * GiB, 8 * GiB), ("B", 8 * GiB, 8 * GiB)], bad={0})
    prof = detect(probes(pynvml=lambda: nv))
    assert [g.name for g in prof.gpus] == ["B"]
    assert any(n.startswith("NVIDIA GPU 0: could not be read (GPU is lost)") for n in prof.notes)


# --- Apple ----------------------------------------------------------------------------------------


def mac_outputs(chip: str, mem: int, perf: int = 4, wired: str = "0", arm64: str = "1") -> dict[str, Any]:
    return {
        "sysctl -n machdep.cpu.brand_string": chip + "\n",
        "sysctl -n hw.optional.arm64": arm64,
        "sysctl -n hw.memsize": str(mem),
        "sysctl -n iogpu.wired_limit_mb": wired,
        "sysctl -n hw.perflevel0.physicalcpu": str(perf),
    }


def test_apple_m1_16gb() -> None:
    prof = detect(
        probes(
            system=lambda: "Darwin",
            machine=lambda: "arm64",
            run=fake_run(mac_outputs("Apple M1", 16 * GiB)),
            backends=lambda: ["Metal", "BLAS", "CPU"],
        )
    )
    assert prof.apple is not None
    assert prof.apple.chip == "Apple M1"
    assert prof.apple.unified_memory == 16 * GiB
    assert prof.apple.gpu_budget == int(16 * GiB * 2 / 3)
    assert prof.apple.performance_cores == 4
    assert prof.unified_memory
    assert prof.threads_generation == 4 and prof.threads_batch == 4
    (gpu,) = prof.gpus
    assert (gpu.vendor, gpu.backend_hint, gpu.unified_memory, gpu.vram_total) == (
        "apple",
        "Metal",
        True,
        prof.apple.gpu_budget,
    )
    assert prof.cpu_name == "Apple M1" and prof.cpu_features == ["neon"]


def test_apple_budget_rule() -> None:
    assert apple_gpu_budget(8 * GiB)[0] == int(8 * GiB * 2 / 3)
    assert apple_gpu_budget(36 * GiB)[0] == int(36 * GiB * 2 / 3)
    assert apple_gpu_budget(64 * GiB)[0] == int(64 * GiB * 3 / 4)
    budget, source = apple_gpu_budget(64 * GiB, wired_limit_mb=58000)
    assert budget == 58000 * 1024 * 1024 and "iogpu.wired_limit_mb" in source


def test_apple_wired_limit_is_honoured() -> None:
    prof = detect(probes(system=lambda: "Darwin", run=fake_run(mac_outputs("Apple M2 Max", 64 * GiB, wired="57344"))))
    assert prof.apple is not None and prof.apple.gpu_budget == 57344 * 1024 * 1024


def test_intel_mac_has_no_metal_gpu() -> None:
    prof = detect(
        probes(system=lambda: "Darwin", run=fake_run(mac_outputs("Intel(R) Core(TM) i9-9880H", 16 * GiB, arm64="0")))
    )
    assert prof.apple is None and prof.gpus == []
    assert any("no Apple Silicon GPU" in n for n in prof.notes)


def test_apple_sysctl_failure() -> None:
    prof = detect(probes(system=lambda: "Darwin", run=fake_run({})))
    assert prof.apple is None
    assert any(n.startswith("Apple: sysctl failed") for n in prof.notes)


def test_apple_memsize_unreadable() -> None:
    outs = mac_outputs("Apple M3", 16 * GiB)
    outs["sysctl -n hw.memsize"] = "garbage"
    prof = detect(probes(system=lambda: "Darwin", run=fake_run(outs)))
    assert prof.apple is None
    assert "Apple: could not read the memory size (hw.memsize)" in prof.notes


# --- AMD ------------------------------------------------------------------------------------------


def make_card(root: Path, n: int, vendor: str, total: str | None, used: str | None, name: str | None = None) -> None:
    dev = root / "class" / "drm" / f"card{n}" / "device"
    dev.mkdir(parents=True)
    (dev / "vendor").write_text(vendor + "\n")
    if total is not None:
        (dev / "mem_info_vram_total").write_text(total + "\n")
    if used is not None:
        (dev / "mem_info_vram_used").write_text(used + "\n")
    if name:
        (dev / "product_name").write_text(name + "\n")
    (root / "class" / "drm" / f"card{n}-DP-1").mkdir()  # connectors are not cards


def test_amd_sysfs(tmp_path: Path) -> None:
    make_card(tmp_path, 0, "0x1002", str(16 * GiB), str(1 * GiB), "Radeon RX 7800 XT")
    make_card(tmp_path, 1, "0x10de", str(8 * GiB), "0")  # an NVIDIA card: not ours to read here
    (tmp_path / "module" / "amdgpu").mkdir(parents=True)
    (tmp_path / "module" / "amdgpu" / "version").write_text("6.7.0\n")
    prof = detect(probes(sysfs_root=tmp_path, backends=lambda: ["ROCm", "CPU"]))
    (g,) = prof.gpus
    assert (g.vendor, g.name, g.vram_total, g.vram_free, g.driver, g.backend_hint) == (
        "amd",
        "Radeon RX 7800 XT",
        16 * GiB,
        15 * GiB,
        "6.7.0",
        "ROCm",
    )
    assert not g.unified_memory


def test_amd_apu_is_marked_unified(tmp_path: Path) -> None:
    make_card(tmp_path, 0, "0x1002", str(512 * 1024 * 1024), "0")
    (g,) = detect(probes(sysfs_root=tmp_path)).gpus
    assert g.unified_memory
    assert g.name.startswith("AMD GPU")


def test_amd_sysfs_bad_numbers(tmp_path: Path) -> None:
    make_card(tmp_path, 0, "0x1002", "n/a", None)
    prof = detect(probes(sysfs_root=tmp_path))
    assert prof.gpus == []
    assert "AMD card0: VRAM size not reported by the driver" in prof.notes


ROCM_JSON = json.dumps(
    {
        "card0": {
            "VRAM Total Memory (B)": str(24 * GiB),
            "VRAM Total Used Memory (B)": str(2 * GiB),
            "Card Series": "Radeon RX 7900 XTX",
        },
        "card1": {"VRAM Total Memory (B)": "oops"},
        "system": {"Driver version": "6.7.0"},
    }
)


def test_rocm_smi_fills_in_without_sysfs() -> None:
    prof = detect(probes(run=fake_run({"rocm-smi": ROCM_JSON})))
    (g,) = prof.gpus
    assert (g.name, g.vram_total, g.vram_free, g.backend_hint) == ("Radeon RX 7900 XTX", 24 * GiB, 22 * GiB, "ROCm")
    assert any("does not exist" in n for n in prof.notes)  # the sysfs reason is kept too


def test_rocm_smi_not_installed_and_bad_output() -> None:
    prof = detect(probes())
    assert "AMD: rocm-smi is not installed" in prof.notes
    prof = detect(probes(run=fake_run({"rocm-smi": "WARNING: no GPU\n"})))
    assert "AMD: rocm-smi printed something that is not JSON" in prof.notes
    prof = detect(probes(run=fake_run({"rocm-smi": "[1, 2]"})))
    assert "AMD: rocm-smi gave an unexpected answer" in prof.notes
    prof = detect(probes(run=fake_run({"rocm-smi": "{}"})))
    assert "AMD: rocm-smi reported no GPU memory" in prof.notes


def test_run_reports_missing_and_failing_commands() -> None:
    with pytest.raises(ProbeError, match="is not installed"):
        hw._run(["harmonica-no-such-command-xyz"])
    with pytest.raises(ProbeError, match="failed"):
        hw._run(["sh", "-c", "echo boom >&2; exit 3"])
    assert hw._run(["sh", "-c", "echo ok"]).strip() == "ok"


# --- backends and the whole profile ---------------------------------------------------------------


def test_backends_failure_is_soft() -> None:
    def broken() -> list[str]:
        raise OSError("libggml.so: cannot open shared object file")

    prof = detect(probes(backends=broken))
    assert prof.backends is None
    assert any(n.startswith("llama.cpp backends: could not ask the library (OSError") for n in prof.notes)


def test_os_probe_failure_is_soft() -> None:
    def boom() -> str:
        raise RuntimeError("no uname")

    prof = detect(probes(system=boom))
    assert prof.os == "" and any(n.startswith("OS: unknown") for n in prof.notes)


def test_describe_lines() -> None:
    nv = FakeNvml([("NVIDIA GeForce RTX 3060", 12 * GiB, 11 * GiB)])
    prof = detect(probes(pynvml=lambda: nv, backends=lambda: ["CUDA", "CPU"]))
    text = "\n".join(prof.describe())
    assert "NVIDIA GeForce RTX 3060" in text and "driver 550.54.14" in text
    assert "llama.cpp backends: CUDA, CPU" in text
    assert "RAM: 32.0 GiB, 24.0 GiB available" in text


def test_profile_can_be_written_by_hand() -> None:
    prof = HardwareProfile(ram_total=8 * GiB, ram_available=5 * GiB, cores_physical=0, cores_logical=0)
    assert prof.threads_generation == 1 and prof.backends is None and prof.gpus == []


def test_detect_on_this_machine_never_raises() -> None:
    prof = detect(Probes(backends=lambda: ["CPU"]))
    assert prof.ram_total > 0 and prof.cores_logical > 0
    assert all(isinstance(n, str) and n for n in prof.notes)


def test_default_backend_probe_asks_the_installed_library() -> None:
    pytest.importorskip("llama_cpp")
    names = hw._default_backends()
    assert "CPU" in names


# --- llama.cpp's devices --------------------------------------------------------------------------


def cuda(i: int, desc: str) -> hw.LlamaDevice:
    return hw.LlamaDevice(f"CUDA{i}", "CUDA", desc, "gpu")


def test_nvidia_gpus_are_tied_to_cuda_devices() -> None:
    nv = FakeNvml([("NVIDIA GeForce RTX 4070", 12 * GiB, 11 * GiB), ("NVIDIA RTX A2000", 6 * GiB, 6 * GiB)])
    # CUDA numbers the fastest card first by default; names decide, not positions.
    devs = [CPU_DEV, cuda(0, "NVIDIA RTX A2000"), cuda(1, "NVIDIA GeForce RTX 4070")]
    prof = detect(probes(pynvml=lambda: nv, backends=lambda: ["CUDA", "CPU"], devices=lambda: devs))
    assert [(g.name, g.device) for g in prof.gpus] == [
        ("NVIDIA GeForce RTX 4070", "CUDA1"),
        ("NVIDIA RTX A2000", "CUDA0"),
    ]
    assert prof.llama_devices == devs


def test_identical_cards_keep_registry_order_and_vulkan_is_a_fallback() -> None:
    nv = FakeNvml([("NVIDIA A100", 40 * GiB, 40 * GiB), ("NVIDIA A100", 40 * GiB, 39 * GiB)])
    devs = [hw.LlamaDevice("Vulkan0", "Vulkan", "NVIDIA A100", "gpu"), cuda(0, "NVIDIA A100"), cuda(1, "NVIDIA A100")]
    prof = detect(probes(pynvml=lambda: nv, devices=lambda: devs))
    assert [g.device for g in prof.gpus] == ["CUDA0", "CUDA1"]
    # A Vulkan-only build drives the same cards through Vulkan.
    prof = detect(probes(pynvml=lambda: FakeNvml([("NVIDIA A100", 40 * GiB, 40 * GiB)]), devices=lambda: devs[:1]))
    assert [(g.device, g.backend_hint) for g in prof.gpus] == [("Vulkan0", "Vulkan")]


def test_gpu_only_llama_cpp_sees_is_added_with_its_memory() -> None:
    asked: list[str] = []

    def mem(name: str) -> tuple[int, int]:
        asked.append(name)
        return 7 * GiB, 8 * GiB

    devs = [CPU_DEV, hw.LlamaDevice("Vulkan0", "Vulkan", "Intel(R) Arc(tm) A750 Graphics (DG2)", "gpu")]
    prof = detect(probes(devices=lambda: devs, device_memory=mem, backends=lambda: ["Vulkan", "CPU"]))
    (g,) = prof.gpus
    assert (g.vendor, g.name, g.vram_total, g.vram_free, g.device, g.backend_hint) == (
        "intel",
        "Intel(R) Arc(tm) A750 Graphics (DG2)",
        8 * GiB,
        7 * GiB,
        "Vulkan0",
        "Vulkan",
    )
    assert asked == ["Vulkan0"]
    assert any("found through llama.cpp's Vulkan backend" in n for n in prof.notes)


def test_llama_device_without_memory_is_a_note() -> None:
    def broken(name: str) -> tuple[int, int]:
        raise RuntimeError("driver hiccup")

    devs = [CPU_DEV, hw.LlamaDevice("Vulkan0", "Vulkan", "llvmpipe (LLVM 15.0.6, 256 bits)", "gpu")]
    prof = detect(probes(devices=lambda: devs, device_memory=broken))
    assert prof.gpus == []
    assert any("llvmpipe" in n and "could not say how much memory" in n for n in prof.notes)
    prof = detect(probes(devices=lambda: devs, device_memory=lambda n: (0, 0)))
    assert prof.gpus == [] and any("reports no memory" in n for n in prof.notes)


def test_metal_reports_the_real_gpu_budget() -> None:
    outs = mac_outputs("Apple M1", 16 * GiB)
    devs = [
        hw.LlamaDevice("MTL0", "MTL", "Apple M1", "gpu"),
        hw.LlamaDevice("BLAS", "BLAS", "Accelerate", "accel"),
        CPU_DEV,
    ]
    budget = int(10.67 * GiB)
    prof = detect(
        probes(
            system=lambda: "Darwin",
            run=fake_run(outs),
            devices=lambda: devs,
            device_memory=lambda n: (budget, budget),
            backends=lambda: ["MTL", "BLAS", "CPU"],
        )
    )
    assert prof.apple is not None and prof.apple.gpu_budget == budget
    assert "recommendedMaxWorkingSetSize" in prof.apple.budget_source
    (g,) = prof.gpus
    assert (g.device, g.vram_total, g.backend_hint) == ("MTL0", budget, "MTL")


def test_devices_probe_failure_is_soft() -> None:
    def boom() -> list[hw.LlamaDevice]:
        raise OSError("no libggml")

    nv = FakeNvml([("NVIDIA GeForce RTX 3060", 12 * GiB, 11 * GiB)])
    prof = detect(probes(pynvml=lambda: nv, devices=boom))
    assert [g.device for g in prof.gpus] == [""]
    assert any(n.startswith("llama.cpp devices: could not ask the library (OSError") for n in prof.notes)


def test_default_device_probe_asks_the_installed_library() -> None:
    pytest.importorskip("llama_cpp")
    devs = hw._default_devices()
    assert any(d.kind == "cpu" and d.name == "CPU" for d in devs)
    assert all(d.memory_total == 0 for d in devs)


# --- hybrid CPUs ----------------------------------------------------------------------------------


def _cpu_topology(root: Path, cores: dict[int, tuple[int, int | None]]) -> None:
    """cpuN → (core_id, cpu_capacity or None) under root/devices/system/cpu."""
    for cpu, (core, capacity) in cores.items():
        d = root / "devices" / "system" / "cpu" / f"cpu{cpu}"
        (d / "topology").mkdir(parents=True)
        (d / "topology" / "core_id").write_text(f"{core}\n")
        (d / "topology" / "physical_package_id").write_text("0\n")
        if capacity is not None:
            (d / "cpu_capacity").write_text(f"{capacity}\n")


def test_intel_hybrid_uses_physical_performance_cores_for_generation(tmp_path: Path) -> None:
    # Like a Core i7-12700H: 6 P-cores with hyper-threading (cpus 0-11), 8 E-cores (12-19).
    topo: dict[int, tuple[int, int | None]] = {c: (c // 2, None) for c in range(12)}
    topo |= {c: (100 + c, None) for c in range(12, 20)}
    _cpu_topology(tmp_path, topo)
    (tmp_path / "devices" / "cpu_core").mkdir(parents=True)
    (tmp_path / "devices" / "cpu_core" / "cpus").write_text("0-11\n")
    (tmp_path / "devices" / "cpu_atom").mkdir(parents=True)
    (tmp_path / "devices" / "cpu_atom" / "cpus").write_text("12-19\n")
    prof = detect(
        probes(
            sysfs_root=tmp_path, psutil=lambda: fake_psutil(total=16 * GiB, available=9 * GiB, physical=14, logical=20)
        )
    )
    assert (prof.cores_performance, prof.cores_efficiency) == (6, 8)
    assert prof.threads_generation == 6
    assert prof.threads_batch == 20
    assert any("hybrid, 6 performance and 8 efficiency" in n for n in prof.notes)
    assert "(6 performance + 8 efficiency)" in "\n".join(prof.describe())


def test_arm_big_little_by_capacity(tmp_path: Path) -> None:
    _cpu_topology(tmp_path, {0: (0, 446), 1: (1, 446), 2: (2, 446), 3: (3, 446), 4: (4, 1024), 5: (5, 1024)})
    prof = detect(probes(sysfs_root=tmp_path, psutil=lambda: fake_psutil(physical=6, logical=6)))
    assert (prof.cores_performance, prof.cores_efficiency) == (2, 4)
    assert prof.threads_generation == 2


def test_uniform_cores_are_not_hybrid(tmp_path: Path) -> None:
    _cpu_topology(tmp_path, {c: (c % 4, 1024) for c in range(8)})  # 4 cores, 2 threads each, equal capacity
    prof = detect(probes(sysfs_root=tmp_path, psutil=lambda: fake_psutil(physical=4, logical=8)))
    assert (prof.cores_performance, prof.cores_efficiency) == (0, 0)
    assert (prof.threads_generation, prof.threads_batch) == (4, 8)
    assert not any("hybrid" in n for n in prof.notes)


def test_cpu_list_parsing() -> None:
    assert hw._cpu_list("0-3,8,10-11\n") == {0, 1, 2, 3, 8, 10, 11}
    assert hw._cpu_list("") == set() and hw._cpu_list(None) == set() and hw._cpu_list("x,2") == {2}
