"""Assistant message widget: live reasoning, collapse, markdown answer, copy and link behaviour."""

from __future__ import annotations

import pytest
from PySide6.QtCore import QPoint, Qt, QUrl
from PySide6.QtGui import QDesktopServices, QGuiApplication, QTextCursor

from app.core.chat import Message, ToolCallRecord
from app.core.engine import GenerationStats
from app.ui import markdown_view
from app.ui.message_widget import AssistantMessageWidget, UserMessageWidget


@pytest.fixture
def widget(qtbot) -> AssistantMessageWidget:  # type: ignore[no-untyped-def]
    w = AssistantMessageWidget(model="gpt-oss-20b", effort="high")
    qtbot.addWidget(w)
    w.resize(700, 400)
    w.show()
    return w


def test_reasoning_streams_expanded_then_collapses_and_toggles(widget: AssistantMessageWidget, qtbot) -> None:  # type: ignore[no-untyped-def]
    assert widget.reasoning_toggle.isHidden()
    widget.append_reasoning("Let me think")
    widget.append_reasoning(" about it.")
    widget.flush()
    assert widget.reasoning_expanded and widget.thinking
    assert widget.reasoning_toggle.text().startswith("Thinking")
    assert widget.reasoning_view.toPlainText() == "Let me think about it."
    widget.append_answer("The answer")
    assert not widget.reasoning_expanded
    assert widget.reasoning_toggle.text().startswith("Thought for")
    qtbot.mouseClick(widget.reasoning_toggle, Qt.MouseButton.LeftButton)
    assert widget.reasoning_expanded
    assert widget.reasoning_view.toPlainText() == "Let me think about it."
    qtbot.mouseClick(widget.reasoning_toggle, Qt.MouseButton.LeftButton)
    assert not widget.reasoning_expanded


def test_finish_shows_seconds_stats_and_effort(widget: AssistantMessageWidget) -> None:
    widget.append_reasoning("hmm")
    widget.append_answer("Done **now**")
    msg = Message(
        role="assistant",
        content="Done **now**",
        thinking="hmm",
        effort="high",
        thinking_s=4.4,
        stop_reason="return",
        stats=GenerationStats(generated_tokens=120, tokens_per_s=55.5),
    )
    widget.finish(msg)
    assert widget.reasoning_toggle.text() == "Thought for 4 seconds"
    assert "high" in widget.effort_chip.text()
    assert "55.5 tok/s" in widget.meta.text() and "120 tokens" in widget.meta.text()
    assert widget.answer_view.toPlainText() == "Done now"
    assert widget.stop_note.isHidden()


def test_cancelled_and_cut_off_notes(qtbot) -> None:  # type: ignore[no-untyped-def]
    for reason, needle in (("cancelled", "Stopped"), ("length", "cut off")):
        w = AssistantMessageWidget.from_message(Message(role="assistant", content="partial", stop_reason=reason))
        qtbot.addWidget(w)
        assert needle in w.stop_note.text() and not w.stop_note.isHidden()


def test_answer_is_throttled(widget: AssistantMessageWidget, qtbot) -> None:  # type: ignore[no-untyped-def]
    calls = []
    orig = widget.answer_view.set_markdown
    widget.answer_view.set_markdown = lambda t, final=False: (calls.append(t), orig(t, final=final))  # type: ignore[method-assign]
    for i in range(200):
        widget.append_answer(f"word{i} ")
    assert calls == []  # nothing rendered synchronously per token
    qtbot.waitUntil(lambda: len(calls) >= 1, timeout=1000)
    assert len(calls) <= 2 and calls[-1].startswith("word0 ") and "word199" in calls[-1]


def test_history_message_renders_collapsed_with_tool_card(qtbot) -> None:  # type: ignore[no-untyped-def]
    msg = Message(
        role="assistant",
        thinking="need weather",
        preamble="Checking the weather…",
        thinking_s=2.0,
        tool_calls=[ToolCallRecord("functions.get_weather", '{"city":"Paris","units":"c"}')],
        stop_reason="call",
    )
    w = AssistantMessageWidget.from_message(msg)
    qtbot.addWidget(w)
    w.show()
    assert not w.reasoning_expanded and w.reasoning_toggle.text() == "Thought for 2 seconds"
    assert w.preamble_label.text() == "Checking the weather…"
    assert len(w.tool_cards) == 1
    card = w.tool_cards[0]
    assert card.toggle_button.text() == "get_weather" and "functions.get_weather" in card.toggle_button.toolTip()
    assert card.args_view.toPlainText() == '{\n  "city": "Paris",\n  "units": "c"\n}'


def test_user_bubble_is_plain_text(qtbot) -> None:  # type: ignore[no-untyped-def]
    w = UserMessageWidget(Message(role="user", content="<b>not bold</b> & <script>"))
    qtbot.addWidget(w)
    assert w.label.textFormat() == Qt.TextFormat.PlainText
    assert w.label.text() == "<b>not bold</b> & <script>"


def _anchor_point(view: markdown_view.MarkdownView, href: str) -> QPoint:
    doc = view.document()
    block = doc.begin()
    while block.isValid():
        it = block.begin()
        while not it.atEnd():
            frag = it.fragment()
            if frag.charFormat().anchorHref() == href:
                c = QTextCursor(doc)
                c.setPosition(frag.position() + 1)
                return view.cursorRect(c).center()
            it += 1
        block = block.next()
    raise AssertionError(f"no anchor {href}")


def test_copy_link_click_puts_code_on_clipboard(widget: AssistantMessageWidget, qtbot) -> None:  # type: ignore[no-untyped-def]
    widget.append_answer("Intro\n\n```python\nx = 1\n```\n\nand\n\n```sh\necho hi\n```\n")
    widget.flush()
    view = widget.answer_view
    assert view.code_blocks == ["x = 1", "echo hi"]
    QGuiApplication.clipboard().clear()
    with qtbot.waitSignal(view.copied, timeout=1000) as sig:
        qtbot.mouseClick(view.viewport(), Qt.MouseButton.LeftButton, pos=_anchor_point(view, "copy:1"))
    assert sig.args == ["echo hi"]
    assert QGuiApplication.clipboard().text() == "echo hi"


def test_links_open_only_on_click_and_only_safe_schemes(widget: AssistantMessageWidget, qtbot, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    opened: list[str] = []
    monkeypatch.setattr(QDesktopServices, "openUrl", lambda url: opened.append(url.toString()) or True)
    widget.append_answer("See [the docs](https://example.org/docs) or [bad](javascript:alert(1)).\n")
    widget.flush()
    view = widget.answer_view
    pos = _anchor_point(view, "https://example.org/docs")
    qtbot.mouseMove(view.viewport(), pos)  # hovering opens nothing
    assert opened == []
    qtbot.mouseClick(view.viewport(), Qt.MouseButton.LeftButton, pos=pos)
    assert opened == ["https://example.org/docs"]
    for url in (
        "file:///etc/passwd",
        "javascript:alert(1)",
        "ftp://x.org/",
        "smb://host/share",
        "mailto:a@b.c",
        "http://x.org",
    ):
        view._on_anchor(QUrl(url))
    assert opened == ["https://example.org/docs", "mailto:a@b.c", "http://x.org"]
    assert 'href="javascript' not in view.toHtml()


def test_incremental_view_matches_full_render(widget: AssistantMessageWidget) -> None:
    text = "# Title\n\nPara **one**.\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n- x\n- y\n\n```py\ncode\n```\n\nEnd."
    for i in range(0, len(text), 3):
        widget._answer = text[: i + 3]
        widget.flush()
    widget.finish(Message(role="assistant", content=text, stop_reason="return"))
    fresh = markdown_view.MarkdownView(widget.answer_view._inc.renderer.theme)
    fresh.set_markdown(text, final=True)
    assert widget.answer_view.toPlainText() == fresh.toPlainText()
    assert "Title" in fresh.toPlainText() and "End." in fresh.toPlainText()


def test_dangling_bold_is_bold_while_streaming_and_literal_when_final(widget: AssistantMessageWidget) -> None:
    widget.append_answer("Say **bol")
    widget.flush()
    assert widget.answer_view.toPlainText() == "Say bol"
    widget.finish(Message(role="assistant", content="Say **bol", stop_reason="length"))
    assert widget.answer_view.toPlainText() == "Say **bol"
