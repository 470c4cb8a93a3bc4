"""The hardware panel with fake profiles: what it shows, live estimates, the guardrail, and a real load."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from pytestqt.qtbot import QtBot

from app.core.engine import LoadSettings
from app.core.gguf_info import info_for_shape
from app.core.hardware import (
    AppleSiliconInfo,
    GiB,
    GpuInfo,
    HardwareProfile,
    apple_gpu_budget,
)
from app.core.planner import Wishes, model_info_for_file
from app.ui import hardware_panel, workers
from app.ui.hardware_panel import HardwarePanel

M20 = info_for_shape("gpt-oss-20b")


def nvidia_8gb() -> HardwareProfile:
    total = 8 * GiB
    return HardwareProfile(
        ram_total=32 * GiB,
        ram_available=25 * GiB,
        cores_physical=8,
        cores_logical=16,
        os="Linux",
        cpu_name="AMD Ryzen 7 5800X",
        gpus=[
            GpuInfo(
                "nvidia",
                "NVIDIA GeForce RTX 3070",
                total,
                total - 400 * (1 << 20),
                driver="550.120",
                backend_hint="CUDA",
                device="CUDA0",
            )
        ],
        backends=["CUDA", "CPU"],
        notes=["AMD: rocm-smi is not installed"],
    )


def m1_16gb() -> HardwareProfile:
    budget, source = apple_gpu_budget(16 * GiB)
    return HardwareProfile(
        ram_total=16 * GiB,
        ram_available=int(14.5 * GiB),
        cores_physical=8,
        cores_logical=8,
        os="Darwin",
        apple=AppleSiliconInfo("Apple M1", 16 * GiB, budget, 4, source),
        gpus=[
            GpuInfo("apple", "Apple M1 GPU", budget, budget, backend_hint="Metal", unified_memory=True, device="MTL0")
        ],
        backends=["MTL", "BLAS", "CPU"],
    )


def cpu_only(ram_gib: float, avail_gib: float) -> HardwareProfile:
    return HardwareProfile(
        ram_total=int(ram_gib * GiB),
        ram_available=int(avail_gib * GiB),
        cores_physical=4,
        cores_logical=8,
        os="Linux",
        backends=["CPU"],
    )


@pytest.fixture
def make_panel(qtbot: QtBot) -> Iterator[Callable[..., HardwarePanel]]:
    made: list[HardwarePanel] = []

    def make(
        profile: HardwareProfile | Callable[[], HardwareProfile],
        model: object = M20,
        wait: bool = True,
        wishes: Wishes | None = None,
    ) -> HardwarePanel:
        provider = profile if callable(profile) else (lambda: profile)
        panel = HardwarePanel(provider, model, wishes=wishes)  # type: ignore[arg-type]
        qtbot.addWidget(panel)
        panel.show()
        made.append(panel)
        if wait:
            qtbot.waitUntil(
                lambda: panel.plan is not None or (panel.profile is not None and model is None), timeout=5000
            )
        return panel

    yield make
    workers.stop_all()


def reasons_text(panel: HardwarePanel) -> str:
    return panel.reasons.text()


def test_8gb_gpu_shows_experts_on_cpu_and_why(make_panel: Callable[..., HardwarePanel], qtbot: QtBot) -> None:
    panel = make_panel(nvidia_8gb())
    p = panel.plan
    assert p is not None and p.fits and p.mode == "gpu+cpu-experts"
    assert 10 <= p.n_cpu_moe <= 14 and p.n_gpu_layers == 25
    assert panel.mode_chip.text() == "GPU + experts in RAM"
    assert panel.backend_chip.text() == "Runs on CUDA · NVIDIA GeForce RTX 3070 (CUDA0)"
    text = reasons_text(panel)
    assert f"expert weights of the first {p.n_cpu_moe}" in text and "3x faster" in text
    assert "pinned memory" in text  # why mmap is off
    assert "12 full-attention layers" in text  # why the KV cache is that size
    assert not panel.guard.isVisible()
    # What was found.
    hw = " ".join(panel.hw_grid.itemAt(i).widget().text() for i in range(panel.hw_grid.count()))  # type: ignore[union-attr]
    assert "NVIDIA GeForce RTX 3070" in hw and "driver 550.120" in hw and "via CUDA (CUDA0)" in hw
    assert "CUDA, CPU" in hw and "8 cores, 16 threads" in hw
    assert "rocm-smi is not installed" in panel.hw_notes.text()
    # The bars show the estimate against the budget.
    assert panel.vram_bar.used == p.estimate.vram and panel.vram_bar.budget == p.vram_budget
    assert not panel.vram_bar.over and panel.vram_figure.text().endswith("GiB usable")
    # "Automatic" says what it means.
    assert panel.cpu_moe.specialValueText() == f"Automatic ({p.n_cpu_moe})"
    # Loading hands over the plan's settings, pinned to the planned GPU.
    with qtbot.waitSignal(panel.load_requested) as sig:
        panel.load_button.click()
    s = sig.args[0]
    assert isinstance(s, LoadSettings)
    assert (s.n_gpu_layers, s.n_cpu_moe, s.n_ctx, s.devices, s.use_mmap, s.flash_attn) == (
        25,
        p.n_cpu_moe,
        p.n_ctx,
        ("CUDA0",),
        False,
        True,
    )


def test_override_that_does_not_fit_shows_the_guardrail(
    make_panel: Callable[..., HardwarePanel], qtbot: QtBot, monkeypatch: pytest.MonkeyPatch
) -> None:
    panel = make_panel(nvidia_8gb())
    panel.adv_toggle.setChecked(True)
    with qtbot.waitSignal(panel.settings_changed):
        panel.cpu_moe.setValue(0)  # everything on an 8 GB card: no
    p = panel.plan
    assert p is not None and not p.fits and (p.n_cpu_moe, p.mode) == (0, "gpu")
    assert panel.guard.isVisible() and panel.guard_title.text() == "These settings would not fit"
    assert "GiB of GPU memory, but only" in panel.guard_text.text()
    assert "Suggested: GPU, with the experts of" in panel.guard_text.text()
    assert panel.fix_button.isVisible() and panel.load_button.text() == "Load anyway…"
    assert panel.vram_bar.over and panel.vram_figure.property("over") is True

    # Load anyway asks first; cancelling loads nothing.
    emitted: list[LoadSettings] = []
    panel.load_requested.connect(emitted.append)
    monkeypatch.setattr(hardware_panel, "confirm_unfit", lambda parent, plan, fix: "cancel")
    panel.load_button.click()
    assert emitted == []
    # Choosing the suggestion loads the planner's fix.
    monkeypatch.setattr(hardware_panel, "confirm_unfit", lambda parent, plan, fix: "fix")
    panel.load_button.click()
    assert len(emitted) == 1 and emitted[0].n_cpu_moe > 0
    assert panel.plan is not None and panel.plan.fits and panel.cpu_moe.value() == -1
    assert not panel.isVisible()  # a load closes the dialog
    panel.show()

    # The inline button applies the same fix; an explicit "load anyway" keeps the user's choice.
    panel.cpu_moe.setValue(0)
    qtbot.waitUntil(lambda: panel.guard.isVisible(), timeout=2000)
    panel.fix_button.click()
    assert not panel.guard.isVisible() and panel.plan is not None and panel.plan.fits
    panel.cpu_moe.setValue(0)
    qtbot.waitUntil(lambda: panel.guard.isVisible(), timeout=2000)
    monkeypatch.setattr(hardware_panel, "confirm_unfit", lambda parent, plan, fix: "load")
    panel.load_button.click()
    assert emitted[-1].n_cpu_moe == 0 and emitted[-1].n_gpu_layers == 25


def test_live_estimate_follows_the_context_size(make_panel: Callable[..., HardwarePanel], qtbot: QtBot) -> None:
    panel = make_panel(nvidia_8gb())
    panel.adv_toggle.setChecked(True)
    seen: list[object] = []
    panel.settings_changed.connect(seen.append)

    def set_ctx(n: int) -> tuple[int, str, int]:
        with qtbot.waitSignal(panel.settings_changed):
            panel.context.setCurrentIndex(panel.context.findData(n))
        p = panel.plan
        assert p is not None and p.n_ctx == n
        return p.estimate.gpu_kv, panel.vram_figure.text(), p.n_cpu_moe

    kv_small, fig_small, moe_small = set_ctx(4096)
    kv_big, fig_big, moe_big = set_ctx(65536)
    assert kv_big > kv_small * 8 and fig_big != fig_small
    assert moe_big > moe_small  # a bigger cache pushes more experts to RAM
    assert f"Context {65536:,} tokens" in reasons_text(panel)
    assert panel.vram_bar.used == panel.plan.estimate.vram  # type: ignore[union-attr]
    assert len(seen) >= 2
    # Contexts beyond what the model reads are not offered.
    item = panel.context.model().item(panel.context.findData(131072))  # type: ignore[attr-defined]
    assert item.isEnabled()
    short = replace(M20, context_length=8192)
    panel.set_model(short)
    assert not panel.context.model().item(panel.context.findData(16384)).isEnabled()  # type: ignore[attr-defined]
    assert panel.context.model().item(panel.context.findData(8192)).isEnabled()  # type: ignore[attr-defined]


def test_saved_wishes_are_shown_and_used(make_panel: Callable[..., HardwarePanel], qtbot: QtBot) -> None:
    panel = make_panel(
        nvidia_8gb(), wishes=Wishes(n_ctx=32768, kv_type="q8_0", n_gpu_layers=-1, n_threads=3, use_mlock=True)
    )
    p = panel.plan
    assert p is not None and (p.n_ctx, p.kv_type, p.n_threads, p.use_mlock) == (32768, "q8_0", 3, True)
    assert panel.context.currentData() == 32768 and panel.kv_type.currentData() == "q8_0"
    assert panel.gpu_layers.value() == 25 and panel.threads.value() == 3 and panel.mlock.isChecked()
    # The automatic plan ignores them.
    assert panel.auto_plan is not None and panel.auto_plan.kv_type == "f16" and not panel.auto_plan.use_mlock
    with qtbot.waitSignal(panel.settings_changed):
        panel.set_wishes(Wishes(n_ctx=12000, backend="cpu"))
    assert panel.context.currentData() == 12000 and panel.run_on.currentData() == "cpu"
    assert panel.plan is not None and panel.plan.n_ctx == 12000 and panel.plan.mode == "cpu"
    assert panel.gpu_layers.value() == -1 and not panel.mlock.isChecked()


def test_8gb_ram_machine_is_refused_with_what_would_help(make_panel: Callable[..., HardwarePanel]) -> None:
    panel = make_panel(cpu_only(8, 5.5))
    p = panel.plan
    assert p is not None and not p.fits and p.mode == "none"
    assert panel.mode_chip.text() == "Does not fit"
    assert panel.guard.isVisible() and "does not fit on this computer" in panel.guard_title.text()
    assert not panel.fix_button.isVisible()
    assert not panel.load_button.isEnabled()  # it would fail: nothing is started
    text = reasons_text(panel)
    assert "What would help" in text and "every other app closed" in text


def test_apple_unified_memory_shows_one_pool(make_panel: Callable[..., HardwarePanel]) -> None:
    panel = make_panel(m1_16gb())
    p = panel.plan
    assert p is not None and p.fits and p.backend == "Metal"
    assert panel.backend_chip.text().startswith("Runs on Metal · Apple M1 GPU")
    assert panel.ram_label.text() == "Memory (shared)" and panel.vram_label.text() == "GPU share"
    assert panel.ram_bar.segments[0][0] == "GPU share"
    hw = " ".join(panel.hw_grid.itemAt(i).widget().text() for i in range(panel.hw_grid.count()))  # type: ignore[union-attr]
    assert "Apple M1 · 16.0 GiB unified memory" in hw and "Metal" in hw


def test_cpu_only_choice_hides_the_gpu(make_panel: Callable[..., HardwarePanel], qtbot: QtBot) -> None:
    panel = make_panel(nvidia_8gb())
    with qtbot.waitSignal(panel.settings_changed):
        panel.run_on.setCurrentIndex(panel.run_on.findData("cpu"))
    p = panel.plan
    assert p is not None and p.mode == "cpu" and not p.use_gpu
    assert panel.backend_chip.text() == "Runs on the CPU · 8 threads"
    assert not panel.vram_bar.isVisible()
    assert panel.load_settings() is not None and panel.load_settings().devices == ()  # type: ignore[union-attr]
    panel.reset_overrides()
    qtbot.waitUntil(lambda: panel.plan is not None and panel.plan.use_gpu, timeout=2000)


def test_detection_runs_off_the_ui_thread_and_failures_are_shown(
    make_panel: Callable[..., HardwarePanel], qtbot: QtBot
) -> None:
    threads: list[threading.Thread] = []
    release = threading.Event()

    def slow() -> HardwareProfile:
        threads.append(threading.current_thread())
        release.wait(5)
        return nvidia_8gb()

    panel = make_panel(slow, wait=False)
    assert panel.detecting and panel.plan is None and not panel.load_button.isEnabled()
    assert panel.hw_status.text() == "Looking at this computer…"
    release.set()
    qtbot.waitUntil(lambda: panel.plan is not None and not panel.detecting, timeout=5000)
    assert threads and threads[0] is not threading.main_thread()

    def broken() -> HardwareProfile:
        raise RuntimeError("probe exploded")

    bad = make_panel(broken, wait=False)
    qtbot.waitUntil(lambda: not bad.detecting, timeout=5000)
    assert "could not be checked: probe exploded" in bad.hw_status.text()
    assert bad.plan is None and not bad.load_button.isEnabled()


def test_without_a_model_only_the_hardware_is_shown(make_panel: Callable[..., HardwarePanel], qtbot: QtBot) -> None:
    panel = make_panel(nvidia_8gb(), model=None)
    assert panel.plan is None and not panel.load_button.isEnabled()
    assert "Choose a model" in panel.summary.text()
    with qtbot.waitSignal(panel.settings_changed):
        panel.set_model(M20)
    assert panel.plan is not None and panel.plan.fits and panel.load_button.isEnabled()


def test_panel_settings_load_the_real_engine(
    make_panel: Callable[..., HardwarePanel], qtbot: QtBot, tiny_model_path: Path
) -> None:
    from app.core.engine import Engine, Sampling

    panel = make_panel(cpu_only(16, 12), model=model_info_for_file(tiny_model_path))
    panel.context.setCurrentIndex(panel.context.findData(2048))
    qtbot.waitUntil(lambda: panel.plan is not None and panel.plan.n_ctx == 2048, timeout=2000)
    with qtbot.waitSignal(panel.load_requested) as sig:
        panel.load_button.click()
    settings = sig.args[0]
    e = Engine()
    info = e.load(tiny_model_path, settings)
    try:
        assert info.n_ctx == 2048 and settings.devices == ()
        assert (
            len(list(e.stream("<|start|>user<|message|>hi<|end|><|start|>assistant", Sampling(seed=3, max_tokens=4))))
            == 4
        )
        # The planner's KV estimate is what llama.cpp allocated.
        kv = sum(v for k, v in info.buffers.items() if k.endswith(" KV"))
        assert kv == pytest.approx(panel.plan.estimate.host_kv, abs=64 * 1024)  # type: ignore[union-attr]
    finally:
        e.unload()
