"""A user's long unbroken word wraps inside its bubble, and copying gives back the exact text."""

from __future__ import annotations

from PySide6.QtGui import QGuiApplication

from app.core.chat import Message
from app.ui.message_widget import UserMessageWidget
from app.ui.wrap_label import ZWSP, WrapLabel, breakable


def test_breaks_only_long_runs_and_maps_back() -> None:
    text = "short words stay " + "x" * 50 + " and\u200bown zwsp"
    shown, index = breakable(text)
    assert shown.startswith("short words stay ") and ZWSP in shown
    assert "".join(text[i] for i in index if i >= 0) == text
    # the user's own zero-width space is kept as text, not mistaken for an inserted break
    assert [i for i, ch in zip(index, shown, strict=True) if ch == ZWSP and i >= 0] == [text.index("\u200b")]
    assert breakable("no long run here")[0] == "no long run here"


def test_long_word_wraps_inside_the_bubble(qtbot) -> None:  # type: ignore[no-untyped-def]
    url = "https://example.com/" + "a1b2c3d4" * 40
    w = UserMessageWidget(Message(role="user", content=url))
    qtbot.addWidget(w)
    w.resize(400, 300)
    w.show()
    qtbot.waitExposed(w)
    qtbot.waitUntil(lambda: w.label.width() < 400)
    label = w.label
    assert label.width() <= w.bubble.width() <= w.width()
    line = label.fontMetrics().lineSpacing()
    # several lines at this width: the word wraps instead of running past the bubble's edge
    assert label.heightForWidth(label.width()) >= 3 * line
    assert label.original() == url


def test_copy_gives_the_original_text(qtbot) -> None:  # type: ignore[no-untyped-def]
    text = "see " + "z" * 60 + " end"
    label = WrapLabel(text)
    qtbot.addWidget(label)
    label.setSelection(0, len(label.text()))
    assert label.original_selection() == text
    label._copy()
    assert QGuiApplication.clipboard().text() == text
    label.setSelection(4, 20)
    assert label.original_selection() == label.selectedText().replace(ZWSP, "")
