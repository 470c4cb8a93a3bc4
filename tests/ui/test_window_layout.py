"""The window from 640×480 to 4K: the chat reflows and nothing is cut off; windows fit the screen and come back where they were."""

from __future__ import annotations

from PySide6.QtCore import QRect, QSize
from PySide6.QtGui import QTextCursor
from PySide6.QtWidgets import QApplication, QWidget

from app.core.chat import Conversation, Message
from app.core.runtime import Runtime
from app.ui.demo import DEMO_ANSWER, demo_conversation
from app.ui.main_window import MainWindow
from app.ui.message_widget import AssistantMessageWidget, UserMessageWidget
from tests.ui.a11y import clipped_widgets

LONG_QUESTION = (
    "Please compare these three approaches for reading a very large CSV file in Python, with the memory each "
    "one needs and when to choose it: " + "csv.DictReader, pandas.read_csv(chunksize=…), polars.scan_csv. " * 3
)


def _settle(qtbot, w: QWidget) -> None:  # type: ignore[no-untyped-def]
    for _ in range(6):
        QApplication.processEvents()
        qtbot.wait(10)


def _conversation() -> Conversation:
    conv = demo_conversation()
    conv.add_user(LONG_QUESTION)
    conv.add(Message(role="assistant", content=DEMO_ANSWER, model="gpt-oss-20b", effort="high"))
    return conv


def _copy_link_rects(view) -> list[QRect]:  # type: ignore[no-untyped-def]
    """Where each code block's Copy link is painted, in the answer view's viewport."""
    rects = []
    block = view.document().begin()
    while block.isValid():
        it = block.begin()
        while not it.atEnd():
            frag = it.fragment()
            if frag.charFormat().anchorHref().startswith("copy:"):
                c = QTextCursor(view.document())
                c.setPosition(frag.position())
                left = view.cursorRect(c)
                c.setPosition(frag.position() + frag.length())
                right = view.cursorRect(c)
                rects.append(QRect(left.topLeft(), right.bottomRight()))
            it += 1
        block = block.next()
    return rects


def _assert_chat_fits(w: MainWindow) -> None:
    viewport = w.chat.viewport()
    assert w.chat.widget().width() <= viewport.width(), "the chat column is wider than the chat"
    for m in w.chat.widgets:
        top_left = m.mapTo(viewport, m.rect().topLeft())
        assert top_left.x() >= 0 and top_left.x() + m.width() <= viewport.width(), type(m).__name__
        if isinstance(m, UserMessageWidget):
            b = m.bubble.mapTo(viewport, m.bubble.rect().topRight())
            assert b.x() <= viewport.width(), "the bubble is cut off"
            assert m.label.width() <= m.bubble.width()
        if isinstance(m, AssistantMessageWidget):
            view = m.answer_view
            assert view.document().size().width() <= view.viewport().width() + 1
            links = _copy_link_rects(view)
            assert links, "the code block has its Copy link"
            for r in links:
                assert r.left() >= 0 and r.right() <= view.viewport().width(), "a code block's Copy is cut off"
            for b in m.actions.buttons.values():
                assert b.mapTo(viewport, b.rect().topRight()).x() <= viewport.width()


def test_the_chat_reflows_from_640x480_to_4k_and_back_with_nothing_cut_off(make_window, qtbot) -> None:  # type: ignore[no-untyped-def]
    w, _ = make_window()
    w.set_conversation(_conversation())
    for size in ((1240, 800), (1024, 768), (800, 600), (640, 480), (3840, 2160), (640, 480)):
        w.resize(*size)
        _settle(qtbot, w)
        assert (w.width(), w.height()) == size, f"the window cannot be {size}"
        assert clipped_widgets(w) == [], size
        _assert_chat_fits(w)
    # Narrow: the conversation list made room for the chat, without forgetting that it is wanted …
    assert not w.sidebar.isVisible() and w.runtime.settings.window.sidebar_visible
    w.view.toggle_sidebar()  # … and the user can still have it: the chat gets narrower, still uncut
    _settle(qtbot, w)
    assert w.sidebar.isVisible()
    assert clipped_widgets(w) == []
    _assert_chat_fits(w)
    w.resize(1400, 900)
    _settle(qtbot, w)
    assert w.sidebar.isVisible()
    column = w.chat.widget().column  # type: ignore[attr-defined]
    assert column.width() == 820  # a wide window keeps a readable column, centred


def test_the_first_run_page_and_notices_fit_640x480(make_window, qtbot) -> None:  # type: ignore[no-untyped-def]
    w, _ = make_window(loaded=False)
    w.notices.error(
        "The model could not be loaded. gpt-oss-20b-mxfp4.gguf is incomplete: it is 4.5 GiB but its tensors need 11.3 GiB.",
        actions=[("Locate…", lambda: None), ("Download…", lambda: None)],
    )
    w.resize(640, 480)
    _settle(qtbot, w)
    assert w.stack.currentWidget() is w.panels.first_run
    assert clipped_widgets(w) == []


def test_a_saved_place_on_a_screen_that_is_gone_comes_back_on_this_one() -> None:
    from app.ui.window_state import place_rect

    screen = QRect(0, 0, 1280, 800)
    # On the screen: kept as it was.
    assert place_rect(QRect(100, 80, 900, 600), QSize(1240, 800), [screen]) == QRect(100, 80, 900, 600)
    # Bigger than this screen (saved on a 4K monitor, or before QT_SCALE_FACTOR=2): shrunk to fit.
    assert place_rect(QRect(50, 40, 2400, 1400), QSize(1240, 800), [screen]) == QRect(0, 0, 1280, 800)
    # Half off the right edge: moved on.
    assert place_rect(QRect(1000, 100, 800, 600), QSize(1240, 800), [screen]) == QRect(480, 100, 800, 600)
    # On a second monitor that is unplugged now: centred here, at its size.
    moved = place_rect(QRect(3000, 200, 900, 700), QSize(1240, 800), [screen], screen)
    assert moved.size() == QSize(900, 700) and screen.contains(moved)


def test_the_window_comes_back_at_its_size_and_place(make_window, qtbot) -> None:  # type: ignore[no-untyped-def]
    w, engine = make_window()
    area = w.screen().availableGeometry()
    w.setGeometry(area.x() + 40, area.y() + 30, 700, 500)
    w.close()
    saved = w.runtime.settings.window.geometries["main"]
    assert (saved["w"], saved["h"]) == (700, 500)
    w2 = MainWindow(Runtime(store=_store_of(w), engine_factory=lambda: engine))
    qtbot.addWidget(w2)
    assert w2.size() == QSize(700, 500)
    # A place saved on a monitor that is not there now is not restored off-screen.
    w2.runtime.settings.window.geometries = {"main": {"x": 9000, "y": 9000, "w": 5000, "h": 4000, "maximized": False}}
    w2.geometry_keeper.restore(w2)
    assert area.contains(w2.geometry())


def _store_of(w: MainWindow):  # type: ignore[no-untyped-def]
    from app.core.store import Store

    return Store.open(w.runtime.store.path)


def test_dialogs_fit_a_small_screen(make_window, qtbot, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """At QT_SCALE_FACTOR=2 a 1280×800 laptop is a 640×400 screen to Qt: every dialog must fit it."""
    from app.ui import window_state

    small = QRect(0, 0, 640, 400)
    monkeypatch.setattr(window_state, "available_rects", lambda: [small])
    monkeypatch.setattr(window_state, "screen_for", lambda widget: _FakeScreen(small))
    w, _ = make_window()
    w.geometry_keeper.restore(w)
    assert small.contains(w.geometry())
    for open_panel in (
        w.show_hardware,
        w.panels.show_tools,
        w.show_server,
        w.view.show_shortcuts,
        w.panels.show_models,
        w.panels.show_lab,
    ):
        panel = open_panel()
        _settle(qtbot, w)
        top = panel.window()
        assert small.contains(top.frameGeometry()), (top.objectName(), top.frameGeometry())
        top.close()


class _FakeScreen:
    def __init__(self, rect: QRect) -> None:
        self._rect = rect

    def availableGeometry(self) -> QRect:
        return self._rect


def test_the_users_own_choice_of_the_list_wins_while_narrow(make_window, qtbot) -> None:  # type: ignore[no-untyped-def]
    w, _ = make_window()
    w.resize(640, 480)
    _settle(qtbot, w)
    assert not w.sidebar.isVisible()
    w.view.toggle_sidebar()
    for size in ((660, 480), (700, 500)):  # still narrow: it stays, as asked
        w.resize(*size)
        _settle(qtbot, w)
        assert w.sidebar.isVisible()
    w.resize(1200, 800)
    w.resize(640, 480)  # narrow again after being wide: it makes room again
    _settle(qtbot, w)
    assert not w.sidebar.isVisible() and w.runtime.settings.window.sidebar_visible


def test_a_damaged_saved_place_is_ignored(make_window, qtbot) -> None:  # type: ignore[no-untyped-def]
    w, _ = make_window()
    area = w.screen().availableGeometry()
    for bad in (
        {"x": "left", "y": 0, "w": 800, "h": 600},
        {"x": 0, "y": 0, "w": -5, "h": 600},
        {"x": -(10**12), "y": 10**12, "w": 10**9, "h": 10**9},
        {"w": 800},
    ):
        w.runtime.settings.window.geometries = {"main": bad}
        w.geometry_keeper.restore(w)  # never raises, never leaves the window off the screen
        assert area.intersects(w.geometry()) and w.width() <= area.width() and w.height() <= area.height()
