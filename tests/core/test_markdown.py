"""Markdown rendering: safe HTML for Qt, highlighted code with copy links, incremental streaming."""

from __future__ import annotations

import random
import re

from app.core.markdown import DARK, IncrementalMarkdown, MarkdownRenderer, find_block_boundaries, render_markdown

SAMPLE = """# Plan

Intro with **bold**, *italic*, ~~gone~~ and `inline`.

1. first
2. second

   continued paragraph inside item two

3. third

```python
def f(x):
    return x < 2  # <b>not bold</b>


    # blank lines above stay inside the fence
```

| a | b |
|:--|--:|
| 1 | 2 |

> quoted

- [x] done
- [ ] todo

Last [link](https://example.org).
"""


def test_basic_markdown_features() -> None:
    html, code = render_markdown(SAMPLE)
    assert "<h1>Plan</h1>" in html
    assert "<strong>bold</strong>" in html and "<em>italic</em>" in html and "<s>gone</s>" in html
    assert "<table" in html and 'align="right"' in html
    assert "☑" in html and "☐" in html and "<input" not in html
    assert code == ["def f(x):\n    return x < 2  # <b>not bold</b>\n\n\n    # blank lines above stay inside the fence"]
    assert 'href="copy:0"' in html
    assert 'href="https://example.org"' in html


def test_code_is_highlighted_inline_and_escaped() -> None:
    html, _ = render_markdown("```python\nimport os\nx = '<script>'\n```\n")
    assert 'style="color' in html  # pygments inline styles, no CSS classes
    assert "class=" not in html
    assert "<script>" not in html and "&lt;script&gt;" in html


def test_unknown_language_and_indented_code_are_plain_escaped() -> None:
    html, code = render_markdown("```nosuchlang\na < b\n```\n\n    indented <i>\n")
    assert "a &lt; b" in html and "indented &lt;i&gt;" in html
    assert code == ["a < b", "indented <i>"]
    assert 'href="copy:1"' in html


def test_raw_html_is_escaped_never_rendered() -> None:
    src = '<script>alert(1)</script>\n\n<img src=x onerror="alert(1)">\n\nText <b onclick="x()">hi</b> <iframe src="https://e.vil"></iframe>\n'
    html, _ = render_markdown(src)
    assert "<script" not in html and "<img" not in html and "<b " not in html and "<iframe" not in html
    assert "&lt;script&gt;" in html and "&lt;img" in html


def test_dangerous_links_are_not_clickable() -> None:
    src = (
        "[a](javascript:alert(1)) [b](JaVaScRiPt:alert(1)) [c](vbscript:x) [d](file:///etc/passwd) "
        "[e](data:text/html;base64,PHNjcmlwdD4=) <javascript:alert(1)> [ok](http://x.org) [m](mailto:a@b.c)"
    )
    html, _ = render_markdown(src)
    hrefs = re.findall(r'href="([^"]*)"', html)
    assert hrefs == ["http://x.org", "mailto:a@b.c"]


def test_images_are_never_loaded() -> None:
    html, _ = render_markdown(
        "![cat](https://example.org/cat.png) ![x](file:///etc/passwd) ![y](data:image/png;base64,AAAA)"
    )
    assert "<img" not in html
    assert '<a href="https://example.org/cat.png"' in html and "[image: cat]" in html
    assert 'href="file:' not in html and 'href="data:' not in html and "[image: y]" in html


def test_dark_theme_changes_colours() -> None:
    light, _ = render_markdown("```python\nx = 1\n```")
    dark, _ = render_markdown("```python\nx = 1\n```", DARK)
    assert light != dark and DARK.code_bg in dark


def test_block_boundaries_respect_fences_lists_and_indentation() -> None:
    text = "para one\n\n```\na\n\nb\n```\n\n- x\n\n- y\n\n  more y\n\nend para\n"
    b = find_block_boundaries(text)
    starts = [text[i : i + 6] for i in b]
    assert starts == ["```\na\n", "- x\n\n-", "end pa"]
    # an unfinished last line never starts a block: we can't know what it is yet
    assert find_block_boundaries("a\n\nb") == []
    assert find_block_boundaries("a\n\nb\n") == [3]


def _stream(text: str, step_sizes: list[int]) -> IncrementalMarkdown:
    inc = IncrementalMarkdown(MarkdownRenderer())
    pos = 0
    doc_blocks: list[str] = []
    tail = ""
    i = 0
    while pos < len(text):
        pos = min(len(text), pos + step_sizes[i % len(step_sizes)])
        i += 1
        u = inc.update(text[:pos])
        assert not u.reset
        doc_blocks.extend(u.new_blocks)
        tail = u.tail
    u = inc.update(text, final=True)
    doc_blocks.extend(u.new_blocks)
    tail = u.tail
    assert "".join(doc_blocks) + tail == inc.html()
    return inc


def test_incremental_equals_blockwise_render_and_code_indices_are_global() -> None:
    text = SAMPLE + "\n```js\nlet a = 1;\n```\n\nafter\n"
    rng = random.Random(3)
    inc = _stream(text, [rng.randint(1, 9) for _ in range(50)])
    assert inc.code_blocks == [render_markdown(SAMPLE)[1][0], "let a = 1;"]
    html = inc.html()
    assert 'href="copy:0"' in html and 'href="copy:1"' in html and "copy:2" not in html
    # the visible content matches a one-shot render (block splitting loses nothing)
    strip = lambda h: re.sub(r"<[^>]+>|\s+", "", h)  # noqa: E731
    assert strip(html) == strip(render_markdown(text)[0])


def test_incremental_cost_is_bounded_by_the_tail() -> None:
    inc = IncrementalMarkdown(MarkdownRenderer())
    para = "Some prose sentence that goes on for a while, with `code` and **bold**.\n\n"
    text = ""
    rendered_chars = []
    orig = inc.renderer.render

    def counting(t: str, off: int = 0) -> tuple[str, list[str]]:
        rendered_chars.append(len(t))
        return orig(t, off)

    inc.renderer.render = counting  # type: ignore[method-assign]
    for _ in range(300):
        text += para
        inc.update(text)
    assert max(rendered_chars) <= 2 * len(para)  # never re-renders the long finished prefix
    assert len(inc.blocks_html) >= 298


def test_non_append_edit_resets() -> None:
    inc = IncrementalMarkdown(MarkdownRenderer())
    inc.update("alpha\n\nbeta\n\ngamma")
    u = inc.update("completely different\n\ntext")
    assert u.reset and "completely different" in "".join(u.new_blocks) + u.tail


def test_streaming_tail_closes_dangling_bold_and_code() -> None:
    from app.core.markdown import close_open_inline

    assert close_open_inline("Some **bol") == "Some **bol**"
    assert close_open_inline("run `pip inst") == "run `pip inst`"
    assert close_open_inline("done **bold** text") == "done **bold** text"
    assert close_open_inline("```python\nx = '**'") == "```python\nx = '**'"  # literal inside a fence
    inc = IncrementalMarkdown(MarkdownRenderer())
    assert "<strong>bol</strong>" in inc.update("Some **bol").tail
    assert "<strong>" not in inc.update("Some **bol", final=True).new_blocks[0]  # the final text is as written
