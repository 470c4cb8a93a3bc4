"""The composer's three-stop effort slider: keys, clicks, tooltip, and what Send carries."""

from __future__ import annotations

import pytest
from PySide6.QtCore import QPoint, Qt

from app.core.chat import EFFORTS
from app.ui.composer import EFFORT_HELP, Composer, EffortSlider


@pytest.fixture
def composer(qtbot) -> Composer:  # type: ignore[no-untyped-def]
    c = Composer()
    qtbot.addWidget(c)
    c.resize(700, 80)
    c.show()
    return c


def test_defaults_to_medium_and_set_effort_round_trips(composer: Composer) -> None:
    assert composer.current_effort() == "medium"
    assert composer.effort.caption.text() == "Medium effort"
    for e in EFFORTS:
        composer.set_effort(e)
        assert composer.current_effort() == e and composer.effort.slider.value() == EFFORTS.index(e)
        assert composer.effort.caption.text() == f"{e.capitalize()} effort"
    with pytest.raises(ValueError):
        composer.set_effort("extreme")


def test_keyboard_moves_between_stops_and_stops_at_the_ends(composer: Composer, qtbot) -> None:  # type: ignore[no-untyped-def]
    s = composer.effort.slider
    assert s.focusPolicy() & Qt.FocusPolicy.TabFocus  # reachable with Tab
    s.setFocus()
    qtbot.keyClick(s, Qt.Key.Key_Right)
    assert composer.current_effort() == "high"
    qtbot.keyClick(s, Qt.Key.Key_Right)
    assert composer.current_effort() == "high"
    qtbot.keyClick(s, Qt.Key.Key_Home)
    assert composer.current_effort() == "low"
    qtbot.keyClick(s, Qt.Key.Key_Left)
    assert composer.current_effort() == "low"
    qtbot.keyClick(s, Qt.Key.Key_End)
    assert composer.current_effort() == "high"


def test_tab_from_the_message_box_reaches_the_slider(composer: Composer, qtbot) -> None:  # type: ignore[no-untyped-def]
    composer.activateWindow()
    composer.edit.setFocus()
    qtbot.waitUntil(composer.edit.hasFocus, timeout=2000)
    qtbot.keyClick(composer.edit, Qt.Key.Key_Tab)
    assert composer.effort.slider.hasFocus()


def test_clicking_jumps_to_the_nearest_stop(composer: Composer, qtbot) -> None:  # type: ignore[no-untyped-def]
    s: EffortSlider = composer.effort.slider
    y = s.height() // 2
    qtbot.mouseClick(s, Qt.MouseButton.LeftButton, pos=QPoint(1, y))
    assert composer.current_effort() == "low"
    qtbot.mouseClick(s, Qt.MouseButton.LeftButton, pos=QPoint(s.width() - 1, y))
    assert composer.current_effort() == "high"
    qtbot.mouseClick(s, Qt.MouseButton.LeftButton, pos=QPoint(int(s._stop_x(1)) + 3, y))
    assert composer.current_effort() == "medium"


def test_tooltip_explains_every_stop_and_marks_the_current_one(composer: Composer) -> None:
    composer.set_effort("high")
    tip = composer.effort.slider.toolTip()
    for e in EFFORTS:
        assert EFFORT_HELP[e] in tip
    assert "<b>High</b>" in tip and "<b>Low</b>" not in tip
    assert composer.effort.slider.accessibleName() == "Reasoning effort"
    assert EFFORT_HELP["high"] in composer.effort.slider.accessibleDescription()


def test_send_carries_the_slider_effort(composer: Composer, qtbot) -> None:  # type: ignore[no-untyped-def]
    got: list[tuple[str, str]] = []
    composer.send.connect(lambda text, effort: got.append((text, effort)))
    composer.effort.slider.setFocus()
    qtbot.keyClick(composer.effort.slider, Qt.Key.Key_Left)
    composer.edit.setPlainText("what is 2+2?")
    qtbot.keyClick(composer.edit, Qt.Key.Key_Return)
    assert got == [("what is 2+2?", "low")]
