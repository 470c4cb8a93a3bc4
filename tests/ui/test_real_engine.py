"""The window on the real llama-cpp-python engine and a tiny random-weight gpt-oss model."""

from __future__ import annotations

from pathlib import Path

import pytest
from PySide6.QtCore import Qt

from app.core.engine import LoadSettings, Sampling
from app.ui.main_window import MainWindow
from app.ui.message_widget import AssistantMessageWidget

pytest.importorskip("llama_cpp")

# Random weights say nothing sensible; the grammar forces harmony-shaped output through the real
# tokenizer, sampler and stop tokens: reasoning, then a final answer with markdown in it.
GRAMMAR = (
    'root ::= <|channel|> "analysis" <|message|> [a-z ]{4,12} <|end|> <|start|> "assistant" '
    '<|channel|> "final" <|message|> "**" [a-z]{2,6} "** " [a-z ]{1,8} <|return|>'
)


def test_open_model_and_chat_with_real_engine(qtbot, tiny_model_path: Path) -> None:  # type: ignore[no-untyped-def]
    w = MainWindow()
    qtbot.addWidget(w)
    w.runtime.load_settings = LoadSettings(
        n_ctx=4096, n_threads=1
    )  # the tiny vocabulary spends a token per byte of the tool definitions
    w.answers.sampling = Sampling(seed=5, max_tokens=80)
    w.answers.grammar = GRAMMAR
    w.show()
    assert w.open_model(tiny_model_path)
    qtbot.waitUntil(lambda: not w.loading, timeout=20000)
    assert w.runtime.engine.loaded, w.banner.text.text()
    assert w.status_model.text() == w.runtime.engine.info.name
    w.composer.set_effort("high")
    w.composer.edit.setPlainText("hello world")
    qtbot.keyClick(w.composer.edit, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: not w.generating, timeout=20000)
    assert not w.banner.isVisible(), w.banner.text.text()
    msg = w.conversation.messages[-1]
    assert msg.role == "assistant" and msg.stop_reason == "return" and msg.effort == "high"
    a = [x for x in w.chat.widgets if isinstance(x, AssistantMessageWidget)][-1]
    assert a.reasoning_text == msg.thinking and len(msg.thinking) >= 4
    assert a.reasoning_toggle.text().startswith("Thought for") and not a.reasoning_expanded
    assert a.answer_view.markdown == msg.content and msg.content.startswith("**")
    assert "**" not in a.answer_view.toPlainText()  # rendered as bold, not shown raw
    assert "tok/s" in w.status_speed.text() and "/ 4,096" in w.status_context.text()
    w.close()
