"""Hostile model output cannot freeze the chat: huge lines, huge tables and deep nesting stay quick.

The answers below are what a prompt-injected or broken model could stream. They go in the way the
app shows answers: through AssistantMessageWidget (append_answer + flush while streaming, finish at
the end). What is laid out as rich text is bounded (app.core.markdown.bound_for_display and the
view's layout budget); the whole answer stays available through "Show all".

The timing bound below is generous (a shared, busy test machine); bench/markdown_render.py
measures the real figures, recorded in bench/RESULTS.md.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

import pytest
from PySide6.QtGui import QGuiApplication

from app.core.chat import Message
from app.core.markdown import DISPLAY_CHARS
from app.ui.markdown_view import FullTextDialog, MarkdownView
from app.ui.message_widget import AssistantMessageWidget

SLOW_S = 1.0  # before: 1-25 s for these inputs; after: tens of milliseconds


def prose_line(size: int = 1_000_000) -> str:
    rng = random.Random(0)
    words = ["alpha", "beta", "harmonica", "reed", "x", "delta", "**bold**", "_it_"]
    return " ".join(rng.choice(words) for _ in range(size // 5))[:size]


HOSTILE: dict[str, Callable[[], str]] = {
    "1MB-prose-line": prose_line,
    "1MB-inline-code": lambda: "`" + ("a = b + c; " * 100_000)[:999_998] + "`",
    "1MB-code-block-line": lambda: "```python\n" + "x = 1; " * 150_000 + "\n```",
    "1MB-no-spaces": lambda: "a" * 1_000_000,
    "table-1000x20": lambda: (
        "| "
        + " | ".join(f"h{i}" for i in range(20))
        + " |\n|"
        + "---|" * 20
        + "\n"
        + "".join("| " + " | ".join(f"r{r}c{c}" for c in range(20)) + " |\n" for r in range(1000))
    ),
    "table-5000x2": lambda: "| a | b |\n|---|---|\n" + "| 1 | 2 |\n" * 5000,
    "many-tables": lambda: "\n\n".join("| a | b | c |\n|---|---|---|\n" + "| 1 | 2 | 3 |\n" * 20 for _ in range(100)),
    "quotes-1000-deep": lambda: ">" * 1000 + " x",
    "quotes-spaced-500-deep": lambda: "> " * 500 + "x",
    "quotes-each-line-deeper": lambda: "\n".join(">" * i + " x" for i in range(1, 300)),
    "many-deep-quote-blocks": lambda: "\n\n".join(">" * 20 + " x" for _ in range(300)),
    "lists-1000-deep": lambda: "".join("  " * i + "- x\n" for i in range(1000)),
    "ordered-lists-500-deep": lambda: "".join("   " * i + "1. x\n" for i in range(500)),
    "code-in-deep-lists": lambda: "".join(
        "  " * i + f"- x\n{'  ' * (i + 1)}```\n{'  ' * (i + 1)}c\n{'  ' * (i + 1)}```\n" for i in range(100)
    ),
    "tables-in-quotes": lambda: "\n\n".join("> > | a | b |\n> > |---|---|\n> > | 1 | 2 |" for _ in range(200)),
    "emphasis-flood": lambda: "*a **b " * 20_000,
    "links-flood": lambda: "[x](https://e.org/) " * 30_000,
    "many-code-blocks": lambda: "\n".join("```\nx\n```" for _ in range(2_000)),
    "many-code-blocks-apart": lambda: "\n\n".join("```\nx\n```" for _ in range(2_000)),
    "13000-tiny-paragraphs": lambda: "x\n\n" * 13_000,
    "10000-headings-one-block": lambda: "# h\n" * 10_000,
    "twenty-300-cell-tables": lambda: "\n\n".join(
        "| "
        + " | ".join("h" for _ in range(10))
        + " |\n|"
        + "---|" * 10
        + "\n"
        + ("| " + " | ".join("c" for _ in range(10)) + " |\n") * 30
        for _ in range(20)
    ),
}


@pytest.fixture
def widget(qtbot) -> AssistantMessageWidget:  # type: ignore[no-untyped-def]
    w = AssistantMessageWidget(model="gpt-oss-20b", effort="high")
    qtbot.addWidget(w)
    w.resize(800, 600)
    w.show()
    return w


def settle(view: MarkdownView) -> float:
    """Let a sliced render finish; the longest single turn of the event loop it took."""
    worst = 0.0
    while True:
        started = time.perf_counter()
        QGuiApplication.processEvents()
        worst = max(worst, time.perf_counter() - started)
        if not view.rendering:
            return worst


@pytest.mark.parametrize("make", list(HOSTILE.values()), ids=list(HOSTILE))
def test_hostile_answers_render_quickly_and_stay_whole(widget: AssistantMessageWidget, qtbot, make) -> None:  # type: ignore[no-untyped-def]
    text = make()
    view = widget.answer_view
    # Streamed in 8 pieces (each flush re-renders the growing tail, as the live view does) ...
    worst = 0.0
    step = max(1, len(text) // 8)
    for i in range(0, len(text), step):
        widget.append_answer(text[i : i + step])
        started = time.perf_counter()
        widget.flush()
        worst = max(worst, time.perf_counter() - started, settle(view))
    # ... then finished, as the app does when the model stops.
    started = time.perf_counter()
    widget.finish(Message("assistant", text))
    worst = max(worst, time.perf_counter() - started, settle(view))
    assert worst < SLOW_S, f"the UI thread was blocked {worst:.2f} s"
    assert view.document().characterCount() <= DISPLAY_CHARS + 2_000
    assert view.markdown == text  # nothing is lost: the whole answer is kept
    if view.is_cut:
        assert "Show all" in view.toPlainText()


def test_show_all_opens_the_whole_answer_in_pages(widget: AssistantMessageWidget, qtbot) -> None:  # type: ignore[no-untyped-def]
    text = prose_line(1_000_000)
    widget.finish(Message("assistant", text))
    view = widget.answer_view
    settle(view)
    assert view.is_cut and "Show all" in view.toPlainText()
    started = time.perf_counter()
    view._on_anchor(__import__("PySide6.QtCore", fromlist=["QUrl"]).QUrl("showall:"))
    dialog = view._full_view
    assert isinstance(dialog, FullTextDialog) and dialog.isVisible()
    assert time.perf_counter() - started < SLOW_S
    assert dialog.pages == 50 and dialog.page_label.text() == "Part 1 of 50"
    assert dialog.view.toPlainText() == text[:20_000]
    qtbot.mouseClick(dialog.next_button, __import__("PySide6.QtCore", fromlist=["Qt"]).Qt.MouseButton.LeftButton)
    assert dialog.view.toPlainText() == text[20_000:40_000] and dialog.page_label.text() == "Part 2 of 50"
    dialog.copy_button.click()
    assert QGuiApplication.clipboard().text() == text
    dialog.close()


def test_ordinary_answers_are_not_cut(widget: AssistantMessageWidget) -> None:
    text = "# Title\n\nSome **bold** text.\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n> quote\n\n```python\nprint(1)\n```\n"
    widget.finish(Message("assistant", text))
    view = widget.answer_view
    settle(view)
    assert not view.is_cut and "Show all" not in view.toPlainText()
    assert "print(1)" in view.toPlainText() and "quote" in view.toPlainText()


def test_a_long_table_shows_its_first_rows_and_says_where_the_rest_is(widget: AssistantMessageWidget) -> None:
    text = HOSTILE["table-1000x20"]()
    widget.finish(Message("assistant", text))
    settle(widget.answer_view)
    plain = widget.answer_view.toPlainText()
    assert "r0c0" in plain and "r5c19" in plain and "r999c0" not in plain
    assert "More rows of this table are in “Show all”" in plain
