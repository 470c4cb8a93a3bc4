"""Fixtures for UI tests: a main window driven by a ScriptedEngine."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from app.core.engine import LoadSettings
from app.core.runtime import Runtime
from app.core.scripted_engine import ScriptedEngine
from app.ui import workers
from app.ui.main_window import MainWindow

REASONING = "The user says hello. I should greet them back and offer help."
ANSWER = "Hello! Here is some code:\n\n```python\nprint('hi')\n```\n\nAnything else?"
SCRIPT = (
    f"<|channel|>analysis<|message|>{REASONING}<|end|><|start|>assistant<|channel|>final<|message|>{ANSWER}<|return|>"
)


@pytest.fixture
def make_window(qtbot: object) -> Iterator[Callable[..., tuple[MainWindow, ScriptedEngine]]]:
    made: list[MainWindow] = []

    def make(
        *scripts: object, loaded: bool = True, auto_title: bool = False, **engine_kw: object
    ) -> tuple[MainWindow, ScriptedEngine]:
        engine = ScriptedEngine(list(scripts) or [SCRIPT], **engine_kw)  # type: ignore[arg-type]
        w = MainWindow(Runtime(engine_factory=lambda: engine))
        w.runtime.settings.chat.auto_title = auto_title  # a model-written title would take a script from the queue
        w.runtime.load_settings = LoadSettings()  # scripted "models" are not GGUF files the planner could read
        qtbot.addWidget(w)  # type: ignore[attr-defined]
        if loaded:
            engine.load("scripted:gpt-oss-20b")
            w.adopt_engine(engine)
        w.resize(900, 700)
        w.show()
        made.append(w)
        return w, engine

    yield make
    workers.stop_all()  # the answer, load and title workers of every window made
