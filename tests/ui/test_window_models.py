"""Getting and loading models from the window: planned loads, the last model at start, the panels."""

from __future__ import annotations

from pathlib import Path

import pytest
from PySide6.QtCore import Qt

from app.core.engine import LoadSettings
from app.core.hardware import HardwareProfile
from app.ui.main_window import MainWindow

pytest.importorskip("llama_cpp")

GRAMMAR = (
    'root ::= <|channel|> "analysis" <|message|> [a-z ]{4,12} <|end|> <|start|> "assistant" '
    '<|channel|> "final" <|message|> [a-z ]{2,12} <|return|>'
)


def _cpu_profile() -> HardwareProfile:
    return HardwareProfile(
        ram_total=16 * 2**30,
        ram_available=12 * 2**30,
        cores_physical=2,
        cores_logical=2,
        os="Linux",
        machine="x86_64",
        cpu_name="test CPU",
        backends=["CPU"],
    )


def test_planned_load_then_the_last_model_loads_at_start(qtbot, tiny_model_path: Path) -> None:  # type: ignore[no-untyped-def]
    w = MainWindow()
    qtbot.addWidget(w)
    w.runtime.profile = _cpu_profile()  # no probing: a known machine
    assert w.runtime.load_settings is None  # the planner decides
    assert w.open_model(tiny_model_path)
    qtbot.waitUntil(lambda: not w.loading, timeout=20000)
    assert w.runtime.engine.loaded, w.banner.text.text()
    assert w.runtime.plan is not None and w.runtime.plan.fits and w.runtime.plan.mode == "cpu"
    assert w.status_model.text().endswith("· CPU") and "CPU only" in w.status_model.toolTip()
    assert w.runtime.engine.info.n_ctx == w.runtime.plan.n_ctx
    w.answers.grammar = GRAMMAR
    w.composer.edit.setPlainText("hello")
    qtbot.keyClick(w.composer.edit, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: not w.generating, timeout=20000)
    assert w.conversation.messages[-1].stop_reason == "return"
    w.close()

    # Next start: the same model loads by itself, and the chat is where the user left it.
    w2 = MainWindow()
    qtbot.addWidget(w2)
    w2.runtime.profile = _cpu_profile()
    assert w2.stack.currentWidget() is w2.empty  # not the first-run page while the model loads
    qtbot.waitUntil(
        lambda: w2.runtime.engine is not None and w2.runtime.engine.loaded and not w2.loading, timeout=20000
    )
    assert w2.runtime.engine.info.path == tiny_model_path
    assert w2.sidebar.conversation_ids()
    w2.close()


def test_a_model_that_cannot_fit_is_refused_before_loading(qtbot, tiny_model_path: Path) -> None:  # type: ignore[no-untyped-def]
    w = MainWindow()
    qtbot.addWidget(w)
    w.runtime.profile = HardwareProfile(
        ram_total=64 * 2**20,
        ram_available=8 * 2**20,
        cores_physical=1,
        cores_logical=1,
        os="Linux",
        machine="x86_64",
        cpu_name="tiny",
        backends=["CPU"],
    )
    assert w.open_model(tiny_model_path)
    qtbot.waitUntil(lambda: not w.loading, timeout=20000)
    assert not getattr(w.runtime.engine, "loaded", False)
    text = w.banner.text.text()
    assert "could not be loaded" in text and "What would help" in text


def test_models_hardware_and_lab_open_from_the_window(qtbot, tiny_model_path: Path) -> None:  # type: ignore[no-untyped-def]
    w = MainWindow()
    qtbot.addWidget(w)
    w.runtime.profile = _cpu_profile()
    w.runtime.load_settings = LoadSettings(n_ctx=2048, n_threads=1)
    w.open_model(tiny_model_path)
    qtbot.waitUntil(lambda: not w.loading, timeout=20000)
    dlg = w.panels.show_models()
    assert dlg.isVisible()
    chosen: list[str] = []
    w.open_model = lambda p: chosen.append(str(p)) or True  # type: ignore[method-assign]
    dlg.model_chosen.emit(str(tiny_model_path))
    assert chosen == [str(tiny_model_path)]
    panel = w.show_hardware()
    assert panel.isVisible()
    qtbot.waitUntil(lambda: panel.plan is not None, timeout=10000)
    lab = w.panels.show_lab()
    assert lab.isVisible()
    client = lab.engine()  # the lab generates through the scheduler, as "lab"
    assert client is not None and client.name == "lab" and client.info.path == tiny_model_path
    w.close()
    assert not lab.isVisible()
