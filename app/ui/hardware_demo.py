"""A standalone look at the hardware panel with made-up machines (screenshots, trying profiles).

python -m app.ui.hardware_demo [--fake nvidia-8gb|apple-16gb|cpu-16gb] [--model PATH] [--advanced]
"""

from __future__ import annotations

import sys

from PySide6.QtWidgets import QApplication

from app.core.hardware import HardwareProfile, detect
from app.ui import style
from app.ui.hardware_panel import HardwarePanel


def _fake_profile(name: str) -> HardwareProfile:
    from app.core.hardware import (
        AppleSiliconInfo,
        GiB,
        GpuInfo,
        LlamaDevice,
        apple_gpu_budget,
    )

    if name.startswith("nvidia-"):
        vram = float(name.split("-")[1].rstrip("gb"))
        total = int(vram * GiB)
        return HardwareProfile(
            ram_total=32 * GiB,
            ram_available=int(25.3 * GiB),
            cores_physical=8,
            cores_logical=16,
            os="Linux",
            machine="x86_64",
            cpu_name="AMD Ryzen 7 5800X 8-Core Processor",
            cpu_features=["avx", "avx2", "fma", "f16c"],
            gpus=[
                GpuInfo(
                    "nvidia",
                    "NVIDIA GeForce RTX 3070" if vram == 8 else f"NVIDIA GPU ({vram:g} GiB)",
                    total,
                    total - 420 * (1 << 20),
                    driver="550.120",
                    backend_hint="CUDA",
                    device="CUDA0",
                )
            ],
            backends=["CUDA", "CPU"],
            llama_devices=[
                LlamaDevice("CUDA0", "CUDA", "NVIDIA GeForce RTX 3070", "gpu"),
                LlamaDevice("CPU", "CPU", "AMD Ryzen 7 5800X", "cpu"),
            ],
            notes=["AMD: no AMD GPU in sysfs", "AMD: rocm-smi is not installed"],
        )
    if name.startswith("apple-"):
        ram = int(name.split("-")[1].rstrip("gb"))
        budget, source = apple_gpu_budget(ram * GiB)
        chip = "Apple M1" if ram <= 16 else "Apple M2 Max"
        return HardwareProfile(
            ram_total=ram * GiB,
            ram_available=int(ram * 0.8 * GiB),
            cores_physical=8,
            cores_logical=8,
            os="Darwin",
            machine="arm64",
            cpu_name=chip,
            cpu_features=["neon"],
            apple=AppleSiliconInfo(chip, ram * GiB, budget, 4, source),
            gpus=[
                GpuInfo(
                    "apple",
                    chip + " GPU",
                    budget,
                    budget,
                    driver="Metal",
                    backend_hint="Metal",
                    unified_memory=True,
                    device="MTL0",
                )
            ],
            backends=["MTL", "BLAS", "CPU"],
        )
    ram = int(name.split("-")[1].rstrip("gb")) if name.startswith("cpu-") else 16
    return HardwareProfile(
        ram_total=ram * GiB,
        ram_available=int(ram * 0.8 * GiB),
        cores_physical=4,
        cores_logical=8,
        os="Linux",
        machine="x86_64",
        cpu_name="Intel(R) Core(TM) i7-8550U CPU @ 1.80GHz",
        cpu_features=["avx", "avx2", "fma"],
        backends=["CPU"],
        notes=["NVIDIA: no driver found (NVML Shared Library Not Found)", "AMD: no AMD GPU in sysfs"],
    )


def main(argv: list[str] | None = None) -> int:
    """python -m app.ui.hardware_panel [--fake nvidia-8gb|apple-16gb|cpu-16gb] [--model PATH] [--advanced]"""
    import argparse

    from app.core.gguf_info import info_for_shape
    from app.core.planner import model_info_for_file

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("--fake", help="a made-up machine instead of detecting this one")
    ap.add_argument("--model", help="a GGUF file (default: the gpt-oss-20b shape)")
    ap.add_argument("--advanced", action="store_true", help="open the Advanced section")
    ap.add_argument("--dark", action="store_true")
    args = ap.parse_args(argv)
    app = QApplication.instance() or QApplication(sys.argv[:1])
    style.apply(app, dark=args.dark)  # type: ignore[arg-type]
    info = model_info_for_file(args.model) if args.model else info_for_shape("gpt-oss-20b")
    provider = (lambda: _fake_profile(args.fake)) if args.fake else detect
    panel = HardwarePanel(provider, info)
    panel.adv_toggle.setChecked(args.advanced)
    panel.load_requested.connect(lambda s: print("load:", s))
    panel.show()
    return app.exec()


if __name__ == "__main__":
    sys.exit(main())
