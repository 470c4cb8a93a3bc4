"""Tools in the window: approval on the card, the loop's rounds stored, cards again when the chat reopens."""

from __future__ import annotations

from PySide6.QtCore import Qt

from app.ui.message_widget import AssistantMessageWidget

REASON = "<|channel|>analysis<|message|>{}<|end|><|start|>assistant"
PY = REASON.format("Let me compute it.") + "<|channel|>analysis to=python code<|message|>print(6 * 7)<|call|>"
CALC = (
    REASON.format("Math.")
    + '<|channel|>commentary to=functions.calculate <|constrain|>json<|message|>{"expression":"2**10"}<|call|>'
)
FINAL = REASON.format("Done.") + "<|channel|>final<|message|>The answer is {}.<|return|>"


def _assistants(w):  # type: ignore[no-untyped-def]
    return [x for x in w.chat.widgets if isinstance(x, AssistantMessageWidget)]


def test_python_call_asks_first_then_runs_and_is_stored(make_window, qtbot) -> None:  # type: ignore[no-untyped-def]
    w, engine = make_window(PY, FINAL.format("42"))
    w.composer.edit.setPlainText("What is six times seven? Use python.")
    qtbot.keyClick(w.composer.edit, Qt.Key.Key_Return)
    qtbot.waitUntil(
        lambda: bool(
            _assistants(w)
            and _assistants(w)[0].tool_cards
            and _assistants(w)[0].tool_cards[0].allow_once_button.isVisibleTo(_assistants(w)[0])
        ),
        timeout=10000,
    )
    card = _assistants(w)[0].tool_cards[0]
    assert "approval" in w.status_speed.text()
    assert w.generating  # the loop waits for the user, the UI does not
    qtbot.waitUntil(lambda: card.armed, timeout=2000)  # the buttons ignore input for half a second
    qtbot.mouseClick(card.allow_once_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not w.generating, timeout=30000)
    answers = _assistants(w)
    assert len(answers) == 2 and answers[1].continuation and answers[1].answer_text == "The answer is 42."
    assert card.run.status == "done" and "42" in card.run.output
    assert "<|start|>python to=assistant<|channel|>analysis<|message|>42" in engine.prompts[1]  # the result went back
    roles = [m.role for m in w.conversation.messages]
    assert roles == ["user", "assistant", "tool", "assistant"]

    # Reopened, the chat shows the same card with its output, and one answer.
    cid = w.session.conversation_id
    w.new_chat()
    w.open_conversation(cid)
    reopened = _assistants(w)
    assert len(reopened) == 2 and reopened[1].continuation
    assert reopened[0].tool_cards[0].run.status == "done" and "42" in reopened[0].tool_cards[0].run.output


def test_function_tool_runs_without_asking_and_deny_is_read_by_the_model(make_window, qtbot) -> None:  # type: ignore[no-untyped-def]
    w, engine = make_window(CALC, FINAL.format("1024"), PY, FINAL.format("unknown"))
    w.composer.edit.setPlainText("2 to the 10th?")
    qtbot.keyClick(w.composer.edit, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: not w.generating, timeout=20000)
    card = _assistants(w)[0].tool_cards[0]
    assert card.run.recipient == "functions.calculate" and "1024" in card.run.output
    assert _assistants(w)[-1].answer_text == "The answer is 1024."

    w.composer.edit.setPlainText("now with python")
    qtbot.keyClick(w.composer.edit, Qt.Key.Key_Return)
    qtbot.waitUntil(
        lambda: any(c.deny_button.isVisibleTo(c) for a in _assistants(w) for c in a.tool_cards), timeout=10000
    )
    py_card = _assistants(w)[-1].tool_cards[0]
    qtbot.wait(50)  # the window scrolls the question into view
    assert py_card.deny_button.visibleRegion().boundingRect().height() == py_card.deny_button.height()
    qtbot.waitUntil(lambda: py_card.armed, timeout=2000)
    qtbot.mouseClick(py_card.deny_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not w.generating, timeout=20000)
    assert py_card.run.status == "denied"
    assert "denied" in engine.prompts[-1].lower()  # the model reads that the user said no


def test_the_header_says_when_web_browsing_is_on(make_window, qtbot) -> None:  # type: ignore[no-untyped-def]
    w, _ = make_window()
    reg = w.runtime.tool_registry
    assert "web browsing" not in w.header.badges.text()  # off by default
    reg.set_enabled("browser", True)
    w.refresh()
    assert "web browsing on" in w.header.badges.text()
    w.runtime.offline = True  # offline mode hides the browser altogether
    w.refresh()
    assert "web browsing" not in w.header.badges.text()
