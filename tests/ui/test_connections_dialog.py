"""Connections from the window: add a server, test it, use its model; the header says where the chat runs; workers and offline ranges."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from PySide6.QtCore import Qt

from app.ui.connections_dialog import ConnectionsDialog, ServerDialog, WorkerDialog
from tests.fixtures import stream_dialects as d
from tests.fixtures.openai_server import fake_server


def test_add_a_server_use_its_model_and_chat(make_window: Callable[..., Any], qtbot: Any) -> None:
    w, _ = make_window()
    assert w.header.remote_badge.isHidden()
    with fake_server(kind="ollama", models=[{"id": d.OLLAMA_MODEL}], script=d.OLLAMA_CHAT) as fake:
        dlg = w.panels.add_server()
        assert isinstance(dlg, ServerDialog)
        dlg.address.setText(fake.url)
        dlg.key.setText("sk-ui-secret")
        qtbot.mouseClick(dlg.test_button, Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda: dlg.use_button.isEnabled(), timeout=15000)
        assert "Ollama" in dlg.status.text() and dlg.models.currentData() == d.OLLAMA_MODEL
        dlg.name.setText("studio-pc")
        with qtbot.waitSignal(w.model_loaded, timeout=15000):
            qtbot.mouseClick(dlg.use_button, Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda: not w.loading, timeout=5000)
        assert w.runtime.where_it_runs() == "runs on studio-pc"
        assert w.header.remote_badge.isVisible() and "runs on studio-pc" in w.header.remote_badge.text()
        assert "stays on this computer" not in w.empty.hint.text()
        assert "stays on this computer" not in w.composer.hint.text() and "studio-pc" in w.composer.hint.text()
        assert "studio-pc" in w.status_model.text()
        with qtbot.waitSignal(w.turn_finished, timeout=15000):
            w.send("Hi", "low")
        msgs = w.conversation.messages
        assert msgs[-1].content == "Hello!" and msgs[-1].thinking == "The user greets. Reply briefly."
        assert fake.generations()[-1].headers["Authorization"] == "Bearer sk-ui-secret"
        assert fake.generations()[-1].body["reasoning_effort"] == "low"
        assert "runs on studio-pc" in w.panels.show_hardware().window().windowTitle()
        w.panels.hardware_dialog.close()
        # the Models dialog lists it too
        models = w.panels.show_models()
        assert w.panels.remote_models is not None and "studio-pc" in _texts(w.panels.remote_models)
        models.close()


def _texts(widget: Any) -> str:
    from PySide6.QtWidgets import QLabel

    return " ".join(lbl.text() for lbl in widget.findChildren(QLabel))


def test_unreachable_server_is_said_in_the_dialog(make_window: Callable[..., Any], qtbot: Any) -> None:
    w, _ = make_window()
    with fake_server() as fake:
        url = fake.url
    dlg = w.panels.add_server()
    dlg.address.setText(url)
    qtbot.mouseClick(dlg.test_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: "Cannot reach" in dlg.status.text(), timeout=15000)
    assert not dlg.use_button.isEnabled()
    dlg.close()


def test_worker_dialog_warns_and_manage_lists_it(make_window: Callable[..., Any], qtbot: Any) -> None:
    w, _ = make_window()
    dlg = w.panels.add_worker()
    assert isinstance(dlg, WorkerDialog)
    assert "not encrypted" in _texts(dlg)
    dlg.endpoint.setText("not an endpoint")
    qtbot.mouseClick(dlg.test_button, Qt.MouseButton.LeftButton)
    assert "host:port" in dlg.status.text()
    dlg.endpoint.setText("127.0.0.1:1")  # nothing listens on port 1
    qtbot.mouseClick(dlg.test_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: "Cannot reach" in dlg.status.text(), timeout=10000)
    dlg.name.setText("gpu-box")
    qtbot.mouseClick(dlg.save_button, Qt.MouseButton.LeftButton)
    manage = w.panels.manage_connections()
    assert isinstance(manage, ConnectionsDialog)
    assert manage.workers.count() == 1 and "gpu-box" in manage.workers.item(0).text()
    manage.workers.item(0).setCheckState(Qt.CheckState.Unchecked)
    assert w.runtime.connections.workers(enabled_only=True) == []
    manage.ranges.setText("192.168.1.0/33")
    manage._save_ranges()
    assert "not an address range" in manage.status.text()
    manage.ranges.setText("192.168.1.0/24")
    manage._save_ranges()
    assert w.runtime.settings.connections.allowed_ranges == "192.168.1.0/24"
    manage.close()


def test_the_plan_panel_shows_the_split_over_workers_and_warns(qtbot: Any) -> None:
    from app.core.gguf_info import info_for_shape
    from app.core.remote.pool import PooledPlan
    from app.core.remote.rpc import WorkerDevice
    from app.ui.hardware_panel import HardwarePanel
    from tests.core.test_planner import cpu_only

    panel = HardwarePanel(lambda: cpu_only(64, 60), info_for_shape("gpt-oss-20b"))
    qtbot.addWidget(panel)
    panel.show()
    qtbot.waitUntil(lambda: panel.plan is not None, timeout=5000)
    assert not isinstance(panel.plan, PooledPlan)
    panel.set_workers([WorkerDevice("10.0.0.9:50052", 0, 40 << 30, 41 << 30, "gpu-box")])
    qtbot.waitUntil(lambda: isinstance(panel.plan, PooledPlan), timeout=5000)
    text = panel.reasons.text()
    assert "gpu-box" in text and "not encrypted" in text


def test_a_dropped_remote_answer_is_kept_interrupted_and_continue_finishes_it(
    make_window: Callable[..., Any], qtbot: Any
) -> None:
    w, _ = make_window()
    with fake_server(kind="ollama", models=[{"id": "m"}], script=d.OLLAMA_CHAT) as fake:
        conn = w.runtime.connections.save_server("studio-pc", fake.url + "/v1", model="m")
        with qtbot.waitSignal(w.model_loaded, timeout=15000):
            w.use_remote_model(conn.id, "m")
        qtbot.waitUntil(lambda: not w.loading, timeout=5000)
        fake.mode = "drop"
        w.send("Hi", "medium")
        qtbot.waitUntil(lambda: not w.generating, timeout=15000)
        assert "What arrived is kept" in w.banner.text.text() and "Continue" in w.banner.text.text()
        rows = w.session.view()
        answer = rows[-1][0]
        assert answer.role == "assistant" and answer.status == "interrupted"
        assert (
            answer.thinking == "The user greets. Reply briefly." and answer.content == "Hello"
        )  # what arrived is kept
        fake.mode = ""
        fake.script = [d._ollama({"content": "!"}), d._ollama({"content": ""}, "stop")]
        with qtbot.waitSignal(w.turn_finished, timeout=15000):
            assert w.answers.continue_answer(answer.id)
        done = w.session.view()[-1][0]
        assert done.status == "complete" and done.content == "Hello!"


def test_manage_says_when_lists_are_empty_and_acts_only_on_a_selection(
    make_window: Callable[..., Any], qtbot: Any
) -> None:
    w, _ = make_window()
    manage = w.panels.manage_connections()
    manage.show()
    qtbot.waitExposed(manage)
    assert manage.no_servers.isVisible() and not manage.servers.isVisible()
    assert manage.no_workers.isVisible() and not manage.workers.isVisible()
    assert not manage.use_button.isEnabled() and not manage.remove_server.isEnabled()
    assert not manage.remove_worker.isEnabled()
    w.runtime.connections.save_server("studio-pc", "http://127.0.0.1:9/v1", model="m")
    manage.refresh()
    assert manage.servers.isVisible() and not manage.no_servers.isVisible()
    assert not manage.use_button.isEnabled()  # nothing chosen yet
    manage.servers.setCurrentRow(0)
    assert manage.use_button.isEnabled() and manage.remove_server.isEnabled()
    qtbot.mouseClick(manage.remove_server, Qt.MouseButton.LeftButton)
    assert manage.servers.count() == 0 and manage.no_servers.isVisible() and not manage.use_button.isEnabled()
    manage.close()


def test_a_chat_offers_the_model_it_last_ran_on(make_window: Callable[..., Any], qtbot: Any) -> None:
    w, _ = make_window()
    kw: dict[str, Any] = {"kind": "ollama", "models": [{"id": "m"}], "script": d.OLLAMA_CHAT}
    with fake_server(**kw) as one, fake_server(**kw) as two:
        studio = w.runtime.connections.save_server("studio-pc", one.url + "/v1", model="m")
        lab = w.runtime.connections.save_server("lab-box", two.url + "/v1", model="m")
        with qtbot.waitSignal(w.model_loaded, timeout=15000):
            w.use_remote_model(studio.id, "m")
        qtbot.waitUntil(lambda: not w.loading, timeout=5000)
        with qtbot.waitSignal(w.turn_finished, timeout=15000):
            w.send("Hi", "low")
        first = w.session.conversation_id
        assert first is not None
        qtbot.waitUntil(lambda: not w.generating, timeout=5000)  # turn_finished comes before the worker ends
        with qtbot.waitSignal(w.model_loaded, timeout=15000):
            assert w.use_remote_model(lab.id, "m")
        qtbot.waitUntil(lambda: not w.loading, timeout=5000)
        w.new_chat()
        assert w.banner.isHidden()  # a new chat ran nowhere yet: nothing to offer
        w.open_conversation(first)
        qtbot.waitUntil(lambda: w.banner.isVisible(), timeout=3000)
        assert w.banner.text.text() == "This chat last ran on m on studio-pc."
        assert w.runtime.where_it_runs() == "runs on lab-box"  # nothing switched by itself
        w.new_chat()
        assert w.banner.isHidden()  # the offer was about the other chat
        w.open_conversation(first)
        qtbot.waitUntil(lambda: w.banner.isVisible(), timeout=3000)
        with qtbot.waitSignal(w.model_loaded, timeout=15000):
            qtbot.mouseClick(w.banner.button("Use it again"), Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda: not w.loading, timeout=5000)
        assert w.runtime.where_it_runs() == "runs on studio-pc" and w.banner.isHidden()
