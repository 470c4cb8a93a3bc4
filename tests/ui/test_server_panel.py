"""ServerPanel: start/stop off the UI thread, settings, warnings, example code and the live request log."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.core.scheduler import EngineScheduler
from app.core.scripted_engine import ScriptedEngine
from app.core.server import ApiServer, ServerSettings, ServerTesting
from app.ui import workers
from app.ui.server_panel import ServerPanel

openai = pytest.importorskip("openai")

SCRIPT = "<|channel|>analysis<|message|>Greet back.<|end|><|start|>assistant<|channel|>final<|message|>Hello!<|return|>"


@pytest.fixture
def panel(qtbot: Any) -> Iterator[ServerPanel]:
    e = ScriptedEngine([SCRIPT])
    e.load("scripted:gpt-oss-20b")
    p = ServerPanel(EngineScheduler(e), settings=ServerSettings(port=0))
    qtbot.addWidget(p)
    p.show()
    yield p
    p.shutdown()
    workers.stop_all()


def test_start_request_log_and_stop(qtbot: Any, panel: ServerPanel) -> None:
    states: list[str] = []
    panel.state_changed.connect(states.append)
    with qtbot.waitSignal(panel.running_changed, timeout=10000) as sig:
        qtbot.mouseClick(panel.toggle, _left())
    assert sig.args == [True] and panel.is_running and states[:2] == ["starting", "running"]
    url = panel.server.base_url  # type: ignore[union-attr]
    assert url in panel.status.text() and panel.toggle.text() == "Stop server"
    assert f'base_url="{url}"' in panel.code.toPlainText() and 'api_key="not-needed"' in panel.code.toPlainText()
    assert not panel.port.isEnabled() and not panel.network.isEnabled()
    with qtbot.waitSignal(panel.request_logged, timeout=10000):
        r = openai.OpenAI(base_url=url, api_key="x", max_retries=0).chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hi"}]
        )
    assert r.choices[0].message.content == "Hello!"
    row = panel.log.topLevelItem(0)
    assert row.text(1) == "POST /v1/chat/completions" and row.text(2) == "200" and row.text(6) == "stop"
    assert "/" in row.text(3)
    with qtbot.waitSignal(panel.running_changed, timeout=10000) as sig:
        qtbot.mouseClick(panel.toggle, _left())
    assert sig.args == [False]  # no longer running as soon as stopping begins
    qtbot.waitUntil(lambda: panel.state == "stopped", timeout=10000)
    assert not panel.server.running  # type: ignore[union-attr]
    assert panel.port.isEnabled() and panel.status.text() == "Stopped"


def _left() -> Any:
    from PySide6.QtCore import Qt

    return Qt.MouseButton.LeftButton


def test_port_taken_shows_the_error(qtbot: Any, panel: ServerPanel) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        panel.port.setValue(port)
        errors: list[str] = []
        panel.error.connect(errors.append)
        panel.start()
        qtbot.waitUntil(lambda: panel.state == "error", timeout=10000)
    assert errors and f"Port {port} is already in use" in errors[0]
    assert errors[0] in panel.status.text() and panel.toggle.text() == "Start server" and panel.port.isEnabled()
    panel.port.setValue(0)
    panel.start()
    qtbot.waitUntil(lambda: panel.is_running, timeout=10000)


def test_settings_key_and_network_warning(qtbot: Any, panel: ServerPanel) -> None:
    seen: list[ServerSettings] = []
    panel.settings_changed.connect(seen.append)
    assert not panel.warning.isVisibleTo(panel)
    panel.network.setChecked(True)
    assert panel.warning.isVisibleTo(panel) and "Set an API key" in panel.warning.text()
    assert seen[-1].allow_network and seen[-1].host == "0.0.0.0"
    qtbot.mouseClick(panel.generate, _left())
    key = panel.key.text()
    assert key.startswith("sk-") and seen[-1].api_key == key and panel.settings().api_key == key
    assert "Anyone who knows the API key" in panel.warning.text()
    assert f'api_key="{key}"' in panel.code.toPlainText()
    panel.set_settings(ServerSettings(port=9999, api_key="", allow_network=False))
    assert panel.port.value() == 9999 and panel.key.text() == "" and not panel.network.isChecked()
    assert "http://127.0.0.1:9999/v1" in panel.code.toPlainText()


def test_key_change_applies_to_a_running_server(qtbot: Any, panel: ServerPanel) -> None:
    panel.start()
    qtbot.waitUntil(lambda: panel.is_running, timeout=10000)
    url = panel.server.base_url  # type: ignore[union-attr]
    panel.key.setText("sk-secret-1")
    panel.key.textEdited.emit("sk-secret-1")
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=url, api_key="sk-other", max_retries=0).models.list()
    assert openai.OpenAI(base_url=url, api_key="sk-secret-1", max_retries=0).models.list().data


def test_starting_does_not_block_the_ui_thread(qtbot: Any) -> None:
    e = ScriptedEngine([SCRIPT])
    e.load("scripted:x")
    gate = threading.Event()

    class SlowServer(ApiServer):
        def start(self, timeout: float = 10.0) -> None:
            gate.wait(5)  # e.g. a slow firewall prompt or interface lookup
            super().start(timeout)

    p = ServerPanel(server_factory=lambda s: SlowServer(EngineScheduler(e), s), settings=ServerSettings(port=0))
    qtbot.addWidget(p)
    t0 = time.perf_counter()
    p.start()
    assert time.perf_counter() - t0 < 0.5 and p.state == "starting"
    assert not p.toggle.isEnabled() and p.toggle.text() == "Starting…"
    gate.set()
    qtbot.waitUntil(lambda: p.is_running, timeout=10000)
    p.shutdown()
    assert p.state == "stopped"


def test_queue_state_is_shown(qtbot: Any) -> None:
    e = ScriptedEngine([SCRIPT])
    e.load("scripted:x")
    sched = EngineScheduler(e)
    p = ServerPanel(sched, settings=ServerSettings(port=0))
    qtbot.addWidget(p)
    assert p.queue_label.text() == "Model: idle"
    ticket = sched.acquire("chat")
    qtbot.waitUntil(lambda: p.queue_label.text() == "Model: chat is generating", timeout=5000)
    sched.release(ticket)
    qtbot.waitUntil(lambda: p.queue_label.text() == "Model: idle", timeout=5000)


def test_panel_with_the_real_engine(qtbot: Any, tiny_model_path: Path) -> None:
    pytest.importorskip("llama_cpp")
    from app.core.engine import Engine, LoadSettings

    engine = Engine()
    engine.load(tiny_model_path, LoadSettings(n_ctx=1024, n_threads=1))
    grammar = (
        'root ::= <|channel|> "analysis" <|message|> [a-z ]{2,8} <|end|> <|start|> "assistant" '
        '<|channel|> "final" <|message|> "real answer" <|return|>'
    )
    sched = EngineScheduler(engine)
    p = ServerPanel(
        server_factory=lambda s: ApiServer(sched, s, testing=ServerTesting(grammar=lambda b: grammar)),
        settings=ServerSettings(port=0, api_key="sk-test"),
    )
    qtbot.addWidget(p)
    try:
        p.start()
        qtbot.waitUntil(lambda: p.is_running, timeout=10000)
        assert 'model="tiny-gpt-oss"' in p.code.toPlainText() and 'api_key="sk-test"' in p.code.toPlainText()
        client = openai.OpenAI(base_url=p.server.base_url, api_key="sk-test", max_retries=0)  # type: ignore[union-attr]
        with qtbot.waitSignal(p.request_logged, timeout=20000) as sig:
            chunks = list(
                client.chat.completions.create(
                    model="tiny-gpt-oss", messages=[{"role": "user", "content": "hi"}], stream=True, max_tokens=60
                )
            )
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "real answer"
        rec = sig.args[0]
        assert rec.stream and rec.status == 200 and rec.completion_tokens == engine.last_stats.generated_tokens
        assert p.log.topLevelItem(0).text(1) == "POST /v1/chat/completions (stream)"
    finally:
        p.shutdown()
        engine.unload()
