"""The window shares its engine with the API server: requests queue behind the chat; settings persist."""

from __future__ import annotations

import threading

from PySide6.QtCore import Qt

from app.core.runtime import Runtime
from app.ui.main_window import MainWindow


def test_api_server_shares_the_chat_engine_and_remembers_it_was_on(make_window, qtbot) -> None:  # type: ignore[no-untyped-def]
    openai = __import__("pytest").importorskip("openai")
    long = "<|channel|>final<|message|>" + "word " * 300 + "<|return|>"
    w, engine = make_window(long, "<|channel|>final<|message|>From the API.<|return|>", delay_s=0.003)
    panel = w.panels.server()
    w.panels.server_dialog.hide()
    from app.core.server import ServerSettings

    panel.set_settings(ServerSettings(port=0))
    panel.start()
    qtbot.waitUntil(lambda: panel.is_running, timeout=10000)
    assert w.status_server.isVisibleTo(w) and panel.base_url in w.status_server.text()
    assert w.runtime.settings.server.enabled is True

    # The chat starts a long answer; an API request sent meanwhile waits for it, then runs.
    w.composer.edit.setPlainText("a long one please")
    qtbot.keyClick(w.composer.edit, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: engine.last_stats is not None and w.generating, timeout=3000)
    result: dict[str, object] = {}

    def call() -> None:
        client = openai.OpenAI(base_url=panel.base_url, api_key="x", max_retries=0)
        r = client.chat.completions.create(model="gpt-oss-20b", messages=[{"role": "user", "content": "hi"}])
        result["content"] = r.choices[0].message.content

    t = threading.Thread(target=call)
    t.start()
    qtbot.waitUntil(lambda: w.runtime.scheduler.state.waiting.get("api", 0) == 1, timeout=5000)
    assert w.runtime.scheduler.state.running == "chat"
    qtbot.waitUntil(lambda: not w.generating, timeout=10000)
    t.join(10)
    assert result["content"] == "From the API."
    assert w.conversation.messages[-1].content == "word " * 300  # the chat's answer is whole

    # Quitting stops the server but keeps it switched on for the next start.
    w.close()
    assert not panel.is_running
    w2 = MainWindow(Runtime(engine_factory=lambda: engine))
    qtbot.addWidget(w2)
    assert w2.runtime.settings.server.enabled is True
    qtbot.waitUntil(lambda: w2.panels.server_panel is not None and w2.panels.server_panel.is_running, timeout=10000)
    w2.close()


def test_web_search_for_api_clients_is_a_remembered_opt_in(make_window, qtbot) -> None:  # type: ignore[no-untyped-def]
    w, _engine = make_window()
    panel = w.panels.server()
    w.panels.server_dialog.hide()
    assert not panel.web_search.isChecked() and w.runtime.settings.server.web_search is False
    panel.start()
    qtbot.waitUntil(lambda: panel.is_running, timeout=10000)
    server = panel.server
    assert server is not None and not server.browsing  # off by default
    w.runtime.tool_registry.set_enabled("browser", True)
    w.runtime.offline = False
    qtbot.mouseClick(panel.web_search, Qt.MouseButton.LeftButton)
    assert w.runtime.settings.server.web_search is True
    assert server.browsing  # the running server serves web_search at its next request
    w.runtime.tool_registry.set_enabled("browser", False)
    assert not server.browsing  # web browsing switched off: left out again
    panel.stop()
    w2 = MainWindow(Runtime(engine_factory=lambda: _engine))
    qtbot.addWidget(w2)
    assert w2.runtime.settings.server.web_search is True
    w2.close()
