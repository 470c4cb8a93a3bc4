"""The app never touches the network unless the user starts a download.

Sockets are blocked twice over: the Python entry points (`socket.socket.connect`,
`socket.create_connection`, `socket.getaddrinfo`) raise, and an audit hook records every
connect / name lookup / HTTP connection the interpreter sees, from any thread. Then the app
starts through `app.__main__.main`, finds a model on disk, loads it in the real llama.cpp engine
and answers a message; the model manager and the first-run page open and settle. Nothing may
try to connect until Download is pressed, and pressing it must (which proves the guard works).
"""

from __future__ import annotations

import shutil
import socket
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication

from app.core.models import ModelLibrary, Source
from app.ui import style, workers
from app.ui.downloads import DownloadController, State
from tests.fixtures.hf_server import FakeHub
from tests.ui.download_helpers import SMALL, make_manager, publish_entry, serve_hub

pytest.importorskip("llama_cpp")

GRAMMAR = (
    'root ::= <|channel|> "analysis" <|message|> [a-z ]{4,12} <|end|> <|start|> "assistant" '
    '<|channel|> "final" <|message|> [a-z ]{2,12} <|return|>'
)
_NETWORK_EVENTS = {
    "socket.connect",
    "socket.getaddrinfo",
    "socket.gethostbyname",
    "socket.gethostbyname_ex",
    "socket.gethostbyaddr",
    "socket.sendto",
    "http.client.connect",
    "urllib.Request",
}
_attempts: list[str] = []
_guarding = threading.Event()


def _audit(event: str, args: tuple[object, ...]) -> None:
    if _guarding.is_set() and event in _NETWORK_EVENTS:
        _attempts.append(f"{event}{args[1:] if event == 'socket.connect' else args!r}")


sys.addaudithook(_audit)  # audit hooks cannot be removed; it records only while _guarding is set


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    yield from serve_hub(monkeypatch)


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    def refuse(name: str) -> object:
        def blocked(*args: object, **kwargs: object) -> object:
            _attempts.append(f"{name}{args!r}")
            raise OSError(f"network blocked by the test ({name})")

        return blocked

    monkeypatch.setattr(socket.socket, "connect", refuse("socket.socket.connect"))
    monkeypatch.setattr(socket.socket, "connect_ex", refuse("socket.socket.connect_ex"))
    monkeypatch.setattr(socket, "create_connection", refuse("socket.create_connection"))
    monkeypatch.setattr(socket, "getaddrinfo", refuse("socket.getaddrinfo"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)  # the app itself must stay off the network
    _attempts.clear()
    _guarding.set()
    try:
        yield _attempts
    finally:
        _guarding.clear()


def test_app_starts_finds_a_model_and_chats_without_network(
    qtbot, no_network: list[str], tiny_model_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    from app.__main__ import main
    from app.core.engine import LoadSettings, Sampling
    from app.ui import main_window

    home = tmp_path / "home"
    lms = home / ".lmstudio" / "models" / "lmstudio-community" / "gpt-oss-20b-GGUF"
    lms.mkdir(parents=True)
    shutil.copy(tiny_model_path, lms / "gpt-oss-20b-MXFP4.gguf")
    monkeypatch.setenv("HOME", str(home))

    windows: list[main_window.MainWindow] = []

    class Recorded(main_window.MainWindow):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, **kwargs)  # type: ignore[arg-type]
            windows.append(self)

    answers: list[str] = []

    def scenario(app: object) -> int:
        [w] = windows
        qtbot.addWidget(w)
        [found] = ModelLibrary().discover().models  # discovery: the HF cache and LM Studio's folder
        assert found.source == Source.LMSTUDIO
        w.runtime.load_settings = LoadSettings(n_ctx=4096, n_threads=1)  # a token per byte of the tool definitions
        w.answers.sampling = Sampling(seed=3, max_tokens=60)
        w.answers.grammar = GRAMMAR
        assert w.open_model(str(found.path))
        qtbot.waitUntil(lambda: not w.loading, timeout=30000)
        assert w.runtime.engine is not None and w.runtime.engine.loaded
        w.composer.edit.setPlainText("hello world")
        qtbot.keyClick(w.composer.edit, Qt.Key.Key_Return)
        qtbot.waitUntil(lambda: not w.generating, timeout=30000)
        msg = w.conversation.messages[-1]
        assert msg.role == "assistant" and msg.stop_reason == "return" and msg.content
        answers.append(msg.content)
        w.close()
        return 0

    monkeypatch.setattr(main_window, "MainWindow", Recorded)
    monkeypatch.setattr(QApplication, "exec", scenario)
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)
    monkeypatch.setattr(threading, "excepthook", threading.excepthook)
    monkeypatch.setattr(style, "_current", style.current())
    qapp = QApplication.instance()
    palette, font = qapp.palette(), qapp.font()  # type: ignore[union-attr]
    try:
        assert main([]) == 0
    finally:
        qapp.setStyleSheet("")  # type: ignore[union-attr]
        qapp.setPalette(palette)  # type: ignore[union-attr]
        qapp.setFont(font)  # type: ignore[union-attr]
    assert answers, "the chat did not run"
    assert no_network == [], no_network


def test_manager_and_first_run_stay_offline_until_download_is_pressed(
    qtbot, hub: FakeHub, no_network: list[str], tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    from app.ui.first_run import FirstRunPage
    from app.ui.model_manager import ModelManagerDialog

    # `hub` (HF_ENDPOINT points at it) was started before the guard went up, so its own name
    # lookups are not counted; it must not get a single request until Download is pressed.
    publish_entry(hub, SMALL, tmp_path)
    controller = DownloadController(make_manager(hub, max_retries=0), ModelLibrary())
    try:
        page = FirstRunPage(controller)  # hardware=None: the real probes run, off the UI thread
        dialog = ModelManagerDialog(controller)
        for w in (page, dialog):
            qtbot.addWidget(w)
            w.show()
        qtbot.waitUntil(
            lambda: page.facts is not None and dialog.discovery is not None and dialog.hardware is not None,
            timeout=20000,
        )
        qtbot.wait(300)
        assert no_network == [], no_network
        assert hub.requests() == []

        qtbot.mouseClick(dialog.cards["gpt-oss-20b"].panel.download_button, Qt.MouseButton.LeftButton)
        request = SMALL.download_request()
        qtbot.waitUntil(lambda: controller.status(request).state == State.FAILED, timeout=10000)
        assert no_network, "pressing Download must reach for the network (else the guard is blind)"
        box = dialog.cards["gpt-oss-20b"].panel.error_box
        assert box.isVisible() and box.headline.text() == "Connection problem", box.headline.text()
        assert "blocked by the test" in box.text.text(), box.text.text()
    finally:
        controller.shutdown()
        workers.stop_all()
    assert hub.requests() == []
