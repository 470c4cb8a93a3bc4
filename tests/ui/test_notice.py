"""The one notice bar: actions, details, timeout, headline; every notice shown is logged, errors with their traceback."""

from __future__ import annotations

import logging

import pytest
from PySide6.QtCore import Qt

from app.ui.notice import Notice, NoticeBar, NoticeChannel


@pytest.fixture
def bar(qtbot) -> NoticeBar:  # type: ignore[no-untyped-def]
    b = NoticeBar()
    qtbot.addWidget(b)
    return b


def test_an_error_with_an_action_hides_when_the_action_runs(bar: NoticeBar, qtbot) -> None:  # type: ignore[no-untyped-def]
    done: list[str] = []
    bar.show_message("Nothing was saved.", "error", [("Try again", lambda: done.append("again"))])
    assert bar.isVisibleTo(bar.parentWidget() or bar) and bar.kind == "error" and bar.property("kind") == "error"
    assert bar.text.text() == "Nothing was saved." and not bar.headline.isVisibleTo(bar)
    button = bar.button("Try again")
    assert button is not None and bar.button("Nope") is None
    bar.show()
    qtbot.mouseClick(button, Qt.MouseButton.LeftButton)
    assert done == ["again"] and bar.isHidden()


def test_headline_details_and_timeout(bar: NoticeBar, qtbot) -> None:  # type: ignore[no-untyped-def]
    bar.show_message("It stopped.", "info", headline="Connection problem", details=["line 2: bad", "line 3: bad"])
    assert bar.headline.text() == "Connection problem" and bar.headline.isVisibleTo(bar)
    assert bar.details.isVisibleTo(bar) and bar.detail_lines == ["line 2: bad", "line 3: bad"]
    bar.show_message("Short-lived.", "info", timeout_ms=50)
    assert not bar.details.isVisibleTo(bar) and not bar.headline.isVisibleTo(bar)
    qtbot.waitUntil(bar.isHidden, timeout=2000)


def test_every_notice_shown_is_logged_errors_with_traceback(bar: NoticeBar, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="app.ui.notice")
    try:
        raise OSError("disk full")
    except OSError as exc:
        bar.show_message("The chat could not be exported: disk full", "error", exc=exc)
    bar.show_message("Open a model first.", "error")
    bar.show_message("Deleted “my secret chat”.", "info", log_text="Deleted conversation 4.")
    records = [r for r in caplog.records if r.name == "app.ui.notice"]
    assert [r.levelno for r in records] == [logging.ERROR, logging.WARNING, logging.INFO]
    assert records[0].exc_info is not None and records[0].exc_info[0] is OSError
    assert "exported" in records[0].getMessage() and records[1].exc_info is None
    assert "Deleted conversation 4." in records[2].getMessage() and "secret" not in caplog.text


def test_the_channel_routes_notices_to_their_slot(qtbot) -> None:  # type: ignore[no-untyped-def]
    channel = NoticeChannel()
    seen: list[Notice] = []
    cleared: list[str] = []
    channel.posted.connect(seen.append)
    channel.cleared.connect(cleared.append)
    channel.error("Broken.")
    channel.info("Almost full.", [("New chat", lambda: None)], slot="context")
    channel.clear("context")
    assert [(n.kind, n.slot, n.text) for n in seen] == [
        ("error", "main", "Broken."),
        ("info", "context", "Almost full."),
    ]
    assert seen[1].actions[0][0] == "New chat" and cleared == ["context"]
