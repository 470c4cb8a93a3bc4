"""Tool cards: the approval flow with the real tool loop on a worker thread, file picks, stored cards."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QImage

from app.core.chat import Conversation
from app.core.scripted_engine import ScriptedEngine
from app.core.tools.loop import (
    ApprovalRequest,
    FileRequest,
    LoopFinished,
    ToolCallStarted,
    ToolFinished,
    ToolRun,
    ToolRunning,
    run_tool_loop,
)
from app.core.tools.python_tool import SandboxLimits
from app.core.tools.registry import ToolRegistry, ToolSession
from app.ui import workers
from app.ui.message_widget import AssistantMessageWidget
from app.ui.tool_card import ToolCard
from app.ui.workers import GeneratorWorker, start_worker

REASON = "<|channel|>analysis<|message|>{}<|end|><|start|>assistant"
PY = REASON.format("Use python.") + "<|channel|>analysis to=python code<|message|>{}<|call|>"
FINAL = REASON.format("Done.") + "<|channel|>final<|message|>{}<|return|>"
READ = REASON.format("Need the file.") + (
    "<|channel|>commentary to=functions.read_file <|constrain|>json<|message|>"
    '{"purpose": "to summarise your notes"}<|call|>'
)


class Harness:
    """What the main window will do: run the loop on a worker and route its events to cards."""

    def __init__(self, qtbot: Any, tmp_path: Path, *scripts: str) -> None:
        self.engine = ScriptedEngine(list(scripts))
        self.engine.load("scripted:gpt-oss-20b")
        self.registry = ToolRegistry(tools_dir=tmp_path / "tools", settings_file=tmp_path / "tools.json")
        self.session = ToolSession(
            self.registry, "c", scratch=tmp_path / "scratch", sandbox_limits=SandboxLimits(timeout_s=20)
        )
        self.conv = Conversation()
        self.widget = AssistantMessageWidget(model="gpt-oss-20b", effort="low")
        qtbot.addWidget(self.widget)
        self.widget.resize(700, 500)
        self.widget.show()
        self.events: list[Any] = []
        self.done = False
        self.worker: GeneratorWorker | None = None

    def start(self, text: str) -> None:
        self.conv.add_user(text)
        self.done = False
        self.worker = GeneratorWorker(run_tool_loop, self.engine, self.conv, self.session)
        self.worker.yielded.connect(self.on_event)
        self.worker.finished.connect(lambda: setattr(self, "done", True))
        start_worker(self.worker)

    def on_event(self, ev: Any) -> None:
        self.events.append(ev)
        if isinstance(ev, (ToolCallStarted, ToolRunning, ToolFinished)):
            self.widget.add_tool_run(ev.run)
        elif isinstance(ev, ApprovalRequest):
            self.widget.add_tool_run(ev.run).attach_approval(ev)
        elif isinstance(ev, FileRequest):
            self.widget.add_tool_run(ev.run).attach_file_request(ev)

    def card(self) -> ToolCard:
        return self.widget.tool_cards[-1]

    def close(self) -> None:
        if self.worker is not None:
            self.worker.quit()
            self.worker.wait(10)
        workers.stop_all()
        self.session.close()
        self.registry.close()


@pytest.fixture
def harness(qtbot: Any, tmp_path: Path) -> Iterator[Any]:
    made: list[Harness] = []

    def make(*scripts: str) -> Harness:
        h = Harness(qtbot, tmp_path, *scripts)
        made.append(h)
        return h

    yield make
    for h in made:
        h.close()


def test_allow_once_runs_the_code(qtbot: Any, harness: Any) -> None:
    h = harness(PY.format("print(6 * 7)"), FINAL.format("42"))
    h.start("compute")
    qtbot.waitUntil(
        lambda: bool(h.widget.tool_cards) and h.card().waiting_for_user and h.card().ask_bar.isVisible(), timeout=10000
    )
    card = h.card()
    assert card.ask_bar.isVisible() and card.status_label.text() == "Waiting for approval"
    assert card.expanded and card.args_caption.text() == "Code" and card.args_view.toPlainText() == "print(6 * 7)"
    assert card.allow_always_button.isVisible() and not card.choose_file_button.isVisible()
    assert "color:" in card.args_view.toHtml()  # highlighted as python
    qtbot.waitUntil(lambda: card.armed, timeout=2000)  # the buttons ignore input for half a second
    with qtbot.waitSignal(card.decided, timeout=2000) as sig:
        qtbot.mouseClick(card.allow_once_button, Qt.MouseButton.LeftButton)
    assert sig.args[1] == "allow_once"
    qtbot.waitUntil(lambda: h.done, timeout=20000)
    assert card.status_label.text() == "Done" and card.output_view.toPlainText() == "42"
    assert not card.ask_bar.isVisible() and card.duration_label.text().endswith(("ms", "s"))
    assert card.restart_button.isVisible()
    assert [type(e) for e in h.events if isinstance(e, LoopFinished)] and h.conv.messages[-1].content == "42"
    assert len(h.widget.tool_cards) == 1  # one card per call, updated in place


def test_deny_and_always(qtbot: Any, harness: Any) -> None:
    h = harness(PY.format("print(1)"), FINAL.format("ok"))
    h.start("run")
    qtbot.waitUntil(
        lambda: bool(h.widget.tool_cards) and h.card().waiting_for_user and h.card().ask_bar.isVisible(), timeout=10000
    )
    qtbot.waitUntil(lambda: h.card().armed, timeout=2000)
    qtbot.mouseClick(h.card().deny_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: h.done, timeout=10000)
    assert h.card().status_label.text() == "Denied" and "denied" in h.card().output_view.toPlainText()
    assert not h.session.has_kernel

    h2 = harness(PY.format("x = 2"), PY.format("print(x * 21)"), FINAL.format("42"))
    h2.start("run twice")
    qtbot.waitUntil(
        lambda: bool(h2.widget.tool_cards) and h2.card().waiting_for_user and h2.card().ask_bar.isVisible(),
        timeout=10000,
    )
    qtbot.waitUntil(lambda: h2.card().armed, timeout=2000)
    qtbot.mouseClick(h2.card().allow_always_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: h2.done, timeout=20000)
    assert len(h2.widget.tool_cards) == 2 and len([e for e in h2.events if isinstance(e, ApprovalRequest)]) == 1
    assert h2.widget.tool_cards[1].output_view.toPlainText() == "42"


def test_file_request_card(qtbot: Any, harness: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("Ship on Friday.")
    asked: list[Any] = []
    monkeypatch.setattr(
        ToolCard, "pick_file", staticmethod(lambda parent, purpose, suggested: asked.append(purpose) or str(notes))
    )
    h = harness(READ, FINAL.format("Ship on Friday."))
    h.start("summarise")
    qtbot.waitUntil(
        lambda: bool(h.widget.tool_cards) and h.card().waiting_for_user and h.card().ask_bar.isVisible(), timeout=10000
    )
    card = h.card()
    assert card.status_label.text() == "Waiting for a file" and "to summarise your notes" in card.ask_label.text()
    assert card.choose_file_button.isVisible() and not card.allow_once_button.isVisible()
    qtbot.waitUntil(lambda: card.armed, timeout=2000)
    with qtbot.waitSignal(card.file_chosen, timeout=2000):
        qtbot.mouseClick(card.choose_file_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: h.done, timeout=10000)
    assert asked == ["to summarise your notes"]
    assert card.status_label.text() == "Done" and "Ship on Friday." in card.output_view.toPlainText()


def _png(path: Path) -> str:
    img = QImage(640, 320, QImage.Format.Format_RGB32)
    img.fill(QColor("#4f5bd5"))
    assert img.save(str(path))
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()  # as the kernel sends it


def test_stored_card_renders_the_same(qtbot: Any, tmp_path: Path) -> None:
    run = ToolRun(
        "python",
        "import matplotlib\nplt.show()",
        kind="python",
        tool="python",
        status="done",
        duration_s=2.25,
        output="\n".join(f"line {i}" for i in range(40)),
        result="...",
        images=[_png(tmp_path / "fig.png")],
    )
    card = ToolCard.from_stored(run.to_dict())
    qtbot.addWidget(card)
    card.show()
    assert not card.expanded  # stored cards start folded
    card.toggle()
    assert card.expanded and card.body.isVisible()
    assert card.toggle_button.text() == "python" and card.status_label.text() == "Done"
    assert card.duration_label.text() == "2.2 s" or card.duration_label.text() == "2.3 s"
    assert (
        card.output_folded
        and card.output_view.toPlainText().count("\n") == 13
        and "39 more" not in card.show_more.text()
    )
    assert card.show_more.text().startswith("Show more (26 more lines)")
    qtbot.mouseClick(card.show_more, Qt.MouseButton.LeftButton)
    assert not card.output_folded and "line 39" in card.output_view.toPlainText()
    assert len(card.image_labels) == 1 and card.image_labels[0].pixmap().width() == 460  # scaled to the card
    with qtbot.waitSignal(card.restart_requested, timeout=1000):
        qtbot.mouseClick(card.restart_button, Qt.MouseButton.LeftButton)


def test_error_card_is_styled(qtbot: Any) -> None:
    run = ToolRun(
        "functions.get_weather",
        '{"city": "Atlantis"}',
        tool="get_weather",
        status="error",
        duration_s=0.012,
        output="Error: LookupError: no such city",
        is_error=True,
    )
    card = ToolCard(run)
    qtbot.addWidget(card)
    assert card.property("state") == "error" and card.status_label.text() == "Error"
    assert card.output_caption.text() == "Error" and card.duration_label.text() == "12 ms"
    assert not card.restart_button.isVisible() and card.args_caption.text() == "Arguments"
    assert card.args_view.toPlainText() == '{\n  "city": "Atlantis"\n}'


def test_a_stored_card_never_shows_or_opens_a_host_file(qtbot: Any, tmp_path: Path, monkeypatch: Any) -> None:
    """A chat (imported, or stored by an old version) names host files as images: they are not shown,
    and double-click opens only a copy of checked bytes that the app wrote itself."""
    from app.core import paths

    host = tmp_path / "holiday.png"  # a picture of the user's, outside every scratch folder
    embedded = _png(host)
    scratch = paths.scratch_root() / "0123456789abcdef0123456789abcdef"
    scratch.mkdir(parents=True)
    (scratch / "link.png").symlink_to(host)
    (scratch / "fig.png").write_bytes(host.read_bytes())
    opened: list[str] = []
    monkeypatch.setattr(
        "app.ui.tool_card.QDesktopServices.openUrl", lambda url: opened.append(url.toLocalFile()) or True
    )
    run = ToolRun(
        "python",
        "plot()",
        kind="python",
        status="done",
        images=[str(host), f"file://{host}", str(scratch / "link.png"), str(scratch / "fig.png"), embedded],
    )
    card = ToolCard.from_stored(run.to_dict())
    qtbot.addWidget(card)
    card.toggle()
    shown = [lbl for lbl in card.image_labels if not lbl.pixmap().isNull()]
    refused = [lbl.text() for lbl in card.image_labels if lbl.pixmap().isNull()]
    assert len(shown) == 2 and len(refused) == 3 and all("not available" in t for t in refused)
    assert all(str(host) not in lbl.toolTip() for lbl in card.image_labels)
    for lbl in shown:
        lbl.mouseDoubleClickEvent(None)
    assert len(opened) == 2 and all(Path(p).parent == paths.cache_dir() / "figures" for p in opened)
    assert all(p.endswith(".png") and Path(p).read_bytes() == host.read_bytes() for p in opened)
    assert str(host) not in opened
