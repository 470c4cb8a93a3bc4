"""The expected speed shown before a download: a range from the load plan that holds the speeds design.md measured."""

from __future__ import annotations

import pytest

from app.core.gguf_info import GPT_OSS_20B_SHAPE, info_for_shape
from app.core.hardware import GiB, GpuInfo, HardwareProfile
from app.core.planner import Wishes, plan
from app.core.speed import SpeedEstimate, estimate_speed, expected_speed


def machine(cores: int, ram_gib: int = 128, gpu: tuple[str, float] | None = None) -> HardwareProfile:
    gpus = [GpuInfo("nvidia", gpu[0], int(gpu[1] * GiB), int(gpu[1] * GiB), backend_hint="CUDA")] if gpu else []
    return HardwareProfile(
        ram_total=ram_gib * GiB,
        ram_available=int(ram_gib * 0.9 * GiB),
        cores_physical=cores,
        cores_logical=cores,
        os="Linux",
        gpus=gpus,
        backends=["CPU", "CUDA"] if gpu else ["CPU"],
    )


# design.md "Measured facts": the random-weight 20b shape with F16 matrices (13.8 GB) on a 16-core
# Xeon with an H200, n_ctx 4096.
F16_20B = info_for_shape("gpt-oss-20b", GPT_OSS_20B_SHAPE, dense_type="F16")


@pytest.mark.parametrize(
    ("profile", "wishes", "measured"),
    [
        (machine(16), Wishes(backend="CPU"), 14.9),  # CPU only, 16 threads
        (machine(16, gpu=("NVIDIA H200", 140)), Wishes(n_cpu_moe=24), 31.2),  # experts on CPU
        (machine(16, gpu=("NVIDIA H200", 140)), Wishes(), 252.0),  # everything on the GPU
    ],
)
def test_the_range_holds_what_was_measured(profile: HardwareProfile, wishes: Wishes, measured: float) -> None:
    p = plan(profile, F16_20B, wishes)
    est = estimate_speed(p, F16_20B, profile)
    assert est is not None and est.low <= measured <= est.high, (p.mode, est)


def test_an_8_gb_gpu_with_experts_in_ram_is_about_the_36_tokens_a_second_measured() -> None:
    est = expected_speed("gpt-oss-20b", machine(8, 32, ("NVIDIA GeForce RTX 2080", 8)))  # design.md: 36 tok/s
    assert est is not None and est.low <= 36 <= est.high and est.where == "on the GPU and the CPU"


def test_more_cores_or_a_gpu_are_faster_and_what_does_not_fit_has_no_speed() -> None:
    two = expected_speed("gpt-oss-20b", machine(2, 24))
    eight = expected_speed("gpt-oss-20b", machine(8, 32))
    gpu = expected_speed("gpt-oss-20b", machine(8, 32, ("NVIDIA GeForce RTX 4090", 24)))
    assert two is not None and eight is not None and gpu is not None
    assert two.high < eight.low and eight.high < gpu.low and two.where == "on the CPU (2 threads)"
    assert expected_speed("gpt-oss-120b", machine(8, 32)) is None  # does not fit: no number to promise


def test_words() -> None:
    est = SpeedEstimate(2.0, 3.4, "on the CPU (2 threads)")
    assert est.tokens_per_s() == "about 2–3 tokens a second"
    assert est.answer_time() == "about 2–4 minutes"  # 500 tokens
    assert SpeedEstimate(80, 190, "on the GPU").answer_time() == "about 3–6 seconds"
    assert SpeedEstimate(8.2, 13.6, "").answer_time() == "about 35–60 seconds"
