"""Issue 13 item 4: an approval card cannot be answered by keys or clicks meant for something else.

The model decides when a card appears, so it can time one to pop up while the user is typing (Space
and Enter would press a focused Allow button) or where the user is about to click. The user here
types into whatever has the keyboard focus, as a real keyboard does, while the card appears.
"""

from __future__ import annotations

import time
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication, QWidget

from app.ui.message_widget import AssistantMessageWidget
from app.ui.tool_card import ARM_DELAY_MS, ToolCard

REASON = "<|channel|>analysis<|message|>{}<|end|><|start|>assistant"
PY = REASON.format("Let me compute it.") + "<|channel|>analysis to=python code<|message|>print(6 * 7)<|call|>"
FINAL = REASON.format("Done.") + "<|channel|>final<|message|>The answer is {}.<|return|>"


def _cards(w: Any) -> list[ToolCard]:
    return [c for x in w.chat.widgets if isinstance(x, AssistantMessageWidget) for c in x.tool_cards]


def _waiting_card(w: Any) -> ToolCard | None:
    return next((c for c in _cards(w) if c.waiting_for_user), None)


def _focus(qtbot: Any, w: Any) -> None:
    w.activateWindow()
    w.raise_()
    qtbot.waitUntil(lambda: QApplication.activeWindow() is w, timeout=5000)
    w.composer.edit.setFocus()
    qtbot.waitUntil(lambda: QApplication.focusWidget() is w.composer.edit, timeout=5000)


def _type(qtbot: Any, keys: list[Any]) -> None:
    """Keys go where the keyboard focus is now, like a real keyboard's."""
    for k in keys:
        target = QApplication.focusWidget()
        assert target is not None
        if isinstance(k, str):
            qtbot.keyClicks(target, k)
        else:
            qtbot.keyClick(target, k)


def test_typing_space_and_enter_while_the_card_appears_never_answers_it(make_window: Any, qtbot: Any) -> None:
    w, _engine = make_window(PY, FINAL.format("42"))
    _focus(qtbot, w)
    w.composer.edit.setPlainText("What is six times seven? Use python.")
    qtbot.keyClick(w.composer.edit, Qt.Key.Key_Return)
    # The user goes on typing the next message, Space and Enter included, before, while and after
    # the card appears.
    appeared: float | None = None
    card: ToolCard | None = None
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        _type(qtbot, ["ok", Qt.Key.Key_Space, Qt.Key.Key_Return, Qt.Key.Key_Enter])
        qtbot.wait(15)
        if appeared is None and _cards(w):
            appeared, card = time.monotonic(), _cards(w)[0]
        if appeared is not None and time.monotonic() - appeared > 1.5:
            break
    assert appeared is not None and card is not None, "the approval card never appeared"
    assert card.waiting_for_user, f"typing answered the card: it is {card.run.status!r}"
    edit: Any = w.composer.edit
    assert "ok ok ok" in edit.toPlainText()  # what was typed landed in the composer
    assert QApplication.focusWidget() is edit  # the composer kept the keyboard
    assert w.generating
    for b in card.ask_buttons:
        assert b.focusPolicy() == Qt.FocusPolicy.TabFocus and not b.hasFocus() and not b.autoDefault()
    # A deliberate click (after the delay) still works.
    qtbot.waitUntil(lambda: card.armed, timeout=5000)
    qtbot.mouseClick(card.allow_once_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not w.generating, timeout=30000)
    assert card.run.status == "done" and "42" in card.run.output


def test_clicks_in_the_first_half_second_fall_on_nothing(make_window: Any, qtbot: Any) -> None:
    w, _engine = make_window(PY, FINAL.format("42"))
    _focus(qtbot, w)
    w.composer.edit.setPlainText("compute")
    qtbot.keyClick(w.composer.edit, Qt.Key.Key_Return)
    # The user is clicking away where the card will appear (as a page would lure them to).
    qtbot.waitUntil(lambda: _waiting_card(w) is not None and _waiting_card(w).ask_bar.isVisible(), timeout=10000)  # type: ignore[union-attr]
    card = _waiting_card(w)
    assert card is not None
    shown = time.monotonic()
    clicks = 0
    while time.monotonic() - shown < (ARM_DELAY_MS / 1000) * 0.8:
        for b in (card.allow_once_button, card.allow_always_button):
            qtbot.mouseClick(b, Qt.MouseButton.LeftButton)
            clicks += 1
        qtbot.wait(10)
    assert clicks and card.waiting_for_user, "a click within the delay answered the card"
    assert not card.allow_once_button.isEnabled()
    qtbot.waitUntil(lambda: card.armed, timeout=5000)
    assert time.monotonic() - shown >= ARM_DELAY_MS / 1000 * 0.9

    # Coming back from another window starts the delay again.
    other = QWidget()
    qtbot.addWidget(other)
    other.show()
    other.activateWindow()
    qtbot.waitUntil(lambda: QApplication.activeWindow() is other, timeout=5000)
    w.activateWindow()
    qtbot.waitUntil(lambda: QApplication.activeWindow() is w, timeout=5000)
    qtbot.mouseClick(card.allow_once_button, Qt.MouseButton.LeftButton)
    assert card.waiting_for_user, "a click right after switching back answered the card"
    qtbot.waitUntil(lambda: card.armed, timeout=5000)
    qtbot.mouseClick(card.deny_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not w.generating, timeout=30000)
    assert card.run.status == "denied"


def test_keys_sent_straight_to_the_buttons_before_the_delay_do_nothing(make_window: Any, qtbot: Any) -> None:
    w, _engine = make_window(PY, FINAL.format("42"))
    _focus(qtbot, w)
    w.composer.edit.setPlainText("compute")
    qtbot.keyClick(w.composer.edit, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: _waiting_card(w) is not None, timeout=10000)
    card = _waiting_card(w)
    assert card is not None
    for b in card.ask_buttons:
        for key in (Qt.Key.Key_Space, Qt.Key.Key_Return, Qt.Key.Key_Enter):
            qtbot.keyClick(b, key)
    assert card.waiting_for_user
    card.deny_button.click()  # a programmatic click before the delay is refused too
    assert card.waiting_for_user
    qtbot.waitUntil(lambda: card.armed, timeout=5000)
    card.deny_button.click()
    qtbot.waitUntil(lambda: not w.generating, timeout=30000)
