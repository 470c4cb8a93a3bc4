"""Markdown → Qt-rich-text HTML for model answers: safe, highlighted, and incremental while streaming."""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from markdown_it import MarkdownIt
from markdown_it.token import Token
from mdit_py_plugins.tasklists import tasklists_plugin
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import get_lexer_by_name
from pygments.util import ClassNotFound

# Links the view may open; everything else is shown as plain text (markdown-it already drops
# javascript:, vbscript:, file: and data: URLs, this is the second fence).
SAFE_LINK_SCHEMES = ("http://", "https://", "mailto:")


@dataclass(frozen=True)
class Theme:
    """Colours for rich text; Qt rich text has no CSS classes, so everything is inlined."""

    dark: bool
    text: str
    muted: str
    link: str
    code_bg: str
    code_header_bg: str
    code_border: str
    inline_code_bg: str
    table_border: str
    table_header_bg: str
    quote_border: str
    pygments_style: str


LIGHT = Theme(
    dark=False,
    text="#1f2328",
    muted="#656d76",
    link="#0969da",
    code_bg="#f6f8fa",
    code_header_bg="#eaeef2",
    code_border="#d0d7de",
    inline_code_bg="#eff1f3",
    table_border="#d0d7de",
    table_header_bg="#f6f8fa",
    quote_border="#d0d7de",
    pygments_style="default",
)
DARK = Theme(
    dark=True,
    text="#e6edf3",
    muted="#9198a1",
    link="#4493f8",
    code_bg="#161b22",
    code_header_bg="#21262d",
    code_border="#30363d",
    inline_code_bg="#2d333b",
    table_border="#3d444d",
    table_header_bg="#1c2128",
    quote_border="#3d444d",
    pygments_style="github-dark",
)

MONO = "'JetBrains Mono','Cascadia Code','SF Mono',Menlo,Consolas,'DejaVu Sans Mono',monospace"


def _rule(method: Any) -> Any:
    """markdown-it binds rules to its renderer; wrap our bound methods to keep their own self."""

    def rule(_renderer: Any, tokens: Sequence[Token], idx: int, options: Any, env: Any) -> str:
        return str(method(tokens, idx, options, env))

    return rule


@lru_cache(maxsize=128)
def _lexer(lang: str) -> Any:
    """Lexer lookup walks pygments' registry (and imports a module the first time): cache it."""
    try:
        return get_lexer_by_name(lang, stripnl=False, ensurenl=False)
    except ClassNotFound:
        return None


# Languages models write most; warm_up() imports their lexers so the first code block of a
# session does not stall the UI for the ~100 ms a pygments lexer module takes to import.
COMMON_LANGUAGES = (
    "python",
    "bash",
    "sh",
    "javascript",
    "typescript",
    "json",
    "c",
    "cpp",
    "rust",
    "go",
    "java",
    "html",
    "css",
    "sql",
    "yaml",
    "toml",
)


def warm_up(theme: Theme | None = None) -> None:
    """Import the common lexers and build the renderer once (call from a background thread)."""
    renderer = MarkdownRenderer(theme or LIGHT)
    for lang in COMMON_LANGUAGES:
        renderer.render(f"```{lang}\nx = 1\n```\n| a |\n|---|\n| b |\n")


def _pygments_style(name: str) -> str:
    from pygments.styles import get_all_styles

    return name if name in set(get_all_styles()) else ("monokai" if "dark" in name else "default")


MAX_TABLE_DEPTH = 5  # Qt's layout time grows steeply with nested tables (quotes and code blocks are tables)
MAX_CELLS = 400
_TABLE_TAG_RE = re.compile(r"<(/?)table\b")


def too_complex(html_text: str) -> bool:
    """Whether Qt would take too long to lay out this HTML (deep table nesting, too many cells)."""
    if html_text.count("<td") + html_text.count("<th") > MAX_CELLS:
        return True
    depth = deepest = 0
    for m in _TABLE_TAG_RE.finditer(html_text):
        depth += -1 if m.group(1) else 1
        deepest = max(deepest, depth)
    return deepest > MAX_TABLE_DEPTH


def plain_html(text: str) -> str:
    """`text` as escaped plain paragraphs: the fallback for markdown too complex to lay out."""
    body = html.escape(text, quote=False).replace("\n", "<br>")
    return f'<p style="line-height:135%; margin-top:0px; margin-bottom:10px; white-space:pre-wrap;">{body}</p>\n'


class MarkdownRenderer:
    """Renders one markdown text (or block) to HTML that QTextDocument understands.

    Code blocks become a two-row table (language + `copy:N` link, then the highlighted code);
    `N` counts from `code_offset`, and the code strings are returned so the view can copy them.
    """

    def __init__(self, theme: Theme = LIGHT) -> None:
        self.theme = theme
        self._formatter = HtmlFormatter(noclasses=True, nowrap=True, style=_pygments_style(theme.pygments_style))
        md = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})
        md.enable(["table", "strikethrough"])
        md.use(tasklists_plugin)
        md.add_render_rule("fence", _rule(self._render_fence))
        md.add_render_rule("code_block", _rule(self._render_fence))
        md.add_render_rule("code_inline", _rule(self._render_code_inline))
        md.add_render_rule("image", _rule(self._render_image))
        md.add_render_rule("link_open", _rule(self._render_link_open))
        md.add_render_rule("table_open", _rule(self._render_table_open))
        md.add_render_rule("th_open", _rule(self._render_cell_open))
        md.add_render_rule("td_open", _rule(self._render_cell_open))
        md.add_render_rule("blockquote_open", _rule(self._render_blockquote_open))
        md.add_render_rule("paragraph_open", _rule(self._render_paragraph_open))
        md.add_render_rule("html_inline", _rule(self._render_raw_html))
        md.add_render_rule("html_block", _rule(self._render_raw_html))
        md.add_render_rule("blockquote_close", lambda *a: "</td></tr></table>\n")
        self._md = md
        self._code: list[str] = []
        self._code_offset = 0

    # --- public ----------------------------------------------------------------------------------
    def render(self, text: str, code_offset: int = 0) -> tuple[str, list[str]]:
        """HTML for `text` and the code blocks in it (their Copy links are copy:code_offset+i).

        Markdown whose HTML would be too costly for Qt to lay out (tables nested deeper than
        MAX_TABLE_DEPTH, more than MAX_CELLS cells) is shown as plain text instead."""
        self._code = []
        self._code_offset = code_offset
        out = self._md.render(text)
        if too_complex(out):
            self._code = []
            return plain_html(text), self._code
        return out, self._code

    # --- render rules (bound methods: markdown-it calls them with tokens, idx, options, env) ------
    def _render_fence(self, tokens: Sequence[Token], idx: int, _o: Any, _e: Any) -> str:
        tok = tokens[idx]
        code = tok.content
        if code.endswith("\n"):
            code = code[:-1]
        lang = tok.info.strip().split(maxsplit=1)[0] if tok.info.strip() else ""
        index = self._code_offset + len(self._code)
        self._code.append(code)
        return self.code_block_html(code, lang, index)

    def code_block_html(self, code: str, lang: str, index: int) -> str:
        t = self.theme
        body = self._highlight(code, lang)
        label = html.escape(lang) if lang else "code"
        return (
            f'<table width="100%" cellspacing="0" cellpadding="0" border="1" '
            f'style="border-style:solid; border-color:{t.code_border}; border-collapse:collapse; margin-top:6px; margin-bottom:10px;">'
            f'<tr><td bgcolor="{t.code_header_bg}" style="padding:4px 10px;">'
            f'<table width="100%" cellspacing="0" cellpadding="0" border="0"><tr>'
            f'<td><span style="color:{t.muted}; font-size:small;">{label}</span></td>'
            f'<td align="right"><a href="copy:{index}" style="color:{t.link}; text-decoration:none; font-size:small;">Copy</a></td>'
            f"</tr></table></td></tr>"
            f'<tr><td bgcolor="{t.code_bg}" style="padding:8px 10px;">'
            f'<pre style="font-family:{MONO}; margin:0; white-space:pre-wrap;">{body}</pre>'
            f"</td></tr></table>\n"
        )

    def _highlight(self, code: str, lang: str) -> str:
        if lang:
            lexer = _lexer(lang.lower())
            if lexer is not None:
                out = highlight(code, lexer, self._formatter)
                return out[:-1] if out.endswith("\n") and not code.endswith("\n") else out
        return html.escape(code, quote=False)

    def _render_code_inline(self, tokens: Sequence[Token], idx: int, _o: Any, _e: Any) -> str:
        t = self.theme
        return (
            f'<code style="font-family:{MONO}; background-color:{t.inline_code_bg};">'
            f"{html.escape(tokens[idx].content, quote=False)}</code>"
        )

    def _render_image(self, tokens: Sequence[Token], idx: int, _o: Any, _e: Any) -> str:
        # Never load images: a model-chosen URL could be local (file:) or a tracking pixel.
        tok = tokens[idx]
        alt = html.escape(tok.content or "image", quote=False)
        src = str(tok.attrs.get("src", ""))
        if src.lower().startswith(SAFE_LINK_SCHEMES):
            return f'<a href="{html.escape(src)}" style="color:{self.theme.link};">[image: {alt}]</a>'
        return f"[image: {alt}]"

    def _render_link_open(self, tokens: Sequence[Token], idx: int, options: Any, env: Any) -> str:
        tok = tokens[idx]
        href = str(tok.attrs.get("href", ""))
        if not href.lower().startswith(SAFE_LINK_SCHEMES):
            tok.attrs.pop("href", None)  # keep the text, drop the target
        tok.attrSet("style", f"color:{self.theme.link};")
        if "title" in tok.attrs:
            tok.attrs.pop("title")
        return str(self._md.renderer.renderToken(tokens, idx, options, env))  # type: ignore[attr-defined]

    def _render_paragraph_open(self, tokens: Sequence[Token], idx: int, _o: Any, _e: Any) -> str:
        if tokens[idx].hidden:  # tight list items have hidden paragraphs: no tag at all
            return ""
        return '<p style="line-height:135%; margin-top:0px; margin-bottom:10px;">'

    def _render_raw_html(self, tokens: Sequence[Token], idx: int, _o: Any, _e: Any) -> str:
        content = tokens[idx].content
        if content.startswith('<input class="task-list-item-checkbox"'):
            return "\u2611" if "checked" in content else "\u2610"
        return html.escape(content, quote=False)  # html=False already; never pass raw HTML through

    def _render_table_open(self, _t: Sequence[Token], _i: int, _o: Any, _e: Any) -> str:
        return (
            f'<table border="1" cellspacing="0" cellpadding="6" '
            f'style="border-style:solid; border-color:{self.theme.table_border}; border-collapse:collapse; '
            f'margin-top:6px; margin-bottom:12px;">\n'
        )

    def _render_cell_open(self, tokens: Sequence[Token], idx: int, _o: Any, _e: Any) -> str:
        tok = tokens[idx]
        tag = tok.tag
        style = str(tok.attrs.get("style", ""))
        align = ""
        m = re.search(r"text-align:(left|right|center)", style)
        if m:
            align = f' align="{m.group(1)}"'
        bg = f' bgcolor="{self.theme.table_header_bg}"' if tag == "th" else ""
        return f"<{tag}{align}{bg}>"

    def _render_blockquote_open(self, _t: Sequence[Token], _i: int, _o: Any, _e: Any) -> str:
        # Qt draws no left border on <blockquote>; a two-cell table gives the familiar bar.
        t = self.theme
        return (
            f'<table cellspacing="0" cellpadding="0" border="0" style="margin-top:4px; margin-bottom:8px;"><tr>'
            f'<td width="3" bgcolor="{t.quote_border}"></td>'
            f'<td style="padding-left:10px; color:{t.muted};">'
        )


# --- Bounds for what is rendered rich ---------------------------------------------------------------
# Qt lays rich text out on the UI thread, and its cost grows fast with nesting (each quote level
# and code block is a table) and with table cells: a 1,000 × 20 table took 7.7 s and 20 nested
# quotes 17 s. One block is laid out at once, so what a block may hold is bounded; many blocks
# are spread over several turns of the event loop (MarkdownView). The whole text stays one click
# away ("Show all", a paged plain-text view) and is never lost or changed.
DISPLAY_CHARS = 60_000  # characters of one message shown as rich text
DISPLAY_BLOCKS = 400  # blank-line separated blocks (Qt relays the whole answer out as it grows)
DISPLAY_BLOCK_LINES = 400  # lines of one block (a block is laid out at once)
DISPLAY_TOTAL_CELLS = 600  # table cells of the whole answer
DISPLAY_FENCES = 80  # code blocks (each is two tables for Qt)
DISPLAY_LINE_CHARS = 5_000  # of any one line (a 1 MB single line is cut here)
DISPLAY_TABLE_CELLS = 200  # cells of any one table (one table is laid out at once: ~0.2 ms a cell)
DISPLAY_QUOTE_DEPTH = 3  # `>` levels
DISPLAY_INDENT = 24  # leading spaces (about 10 levels of nested lists)
_QUOTES_RE = re.compile(r"^((?: {0,3}> ?){" + str(DISPLAY_QUOTE_DEPTH) + r"})(?: {0,3}> ?)+")
_QUOTE_PREFIX_RE = re.compile(r"^(?: {0,3}> ?)*")
_TABLE_ROW_RE = re.compile(r"^\s{0,3}(?:>\s?)*\|")


@dataclass(frozen=True)
class DisplayText:
    """What of a message is rendered rich (`text`), and what was left for "Show all"."""

    text: str
    cut: bool  # some of the message is not in `text`
    total_chars: int


def bound_for_display(text: str) -> DisplayText:
    """The part of `text` that renders quickly, with markers where something was left out.

    Stable while a message streams: once a bound is reached, more text never changes what is
    already shown, so incremental rendering keeps working. See DisplayBounds for streaming use.
    """
    return DisplayBounds().bound(text)


class DisplayBounds:
    """bound_for_display for a growing text: each call resumes after the last complete line it
    saw, so streaming a long answer costs O(new text) per update, not O(answer)."""

    def __init__(self) -> None:
        self._text = ""
        self._state: dict[str, Any] = self._fresh()
        self._out: list[str] = []  # shown lines; only the part after the checkpoint is redone
        self._result = DisplayText("", False, 0)

    @staticmethod
    def _fresh() -> dict[str, Any]:
        return {
            "pos": 0,
            "out_len": 0,
            "used": 0,
            "cut": False,
            "rows": 0,
            "columns": 0,
            "cells": 0,
            "blocks": 0,
            "block_lines": 0,
            "fences": 0,
            "skipping_rows": False,
            "fence": None,
            "done": False,
        }

    def bound(self, text: str) -> DisplayText:
        if text == self._text:
            return self._result
        if not text.startswith(self._text):
            self._state, self._out = self._fresh(), []
        self._text = text
        if self._state["done"]:  # a bound was reached: what is shown no longer changes
            self._result = DisplayText(self._result.text, True, len(text))
            return self._result
        st = dict(self._state)
        out = self._out
        del out[st["out_len"] :]  # the lines after the checkpoint are read again
        n = len(text)
        pos = st["pos"]
        while pos < n:
            nl = text.find("\n", pos, pos + DISPLAY_LINE_CHARS + 1)
            if nl >= 0:
                # Everything before this complete line is settled: resume here next time.
                self._state = dict(st, pos=pos, out_len=len(out))
            end = nl if nl >= 0 else min(n, pos + DISPLAY_LINE_CHARS + 1)
            line = text[pos:end]
            if len(line) > DISPLAY_LINE_CHARS:
                line = _cut_line(line[:DISPLAY_LINE_CHARS], st["fence"] is not None)
                st["cut"] = True
                nl = text.find("\n", end)  # skip the rest of that line
                end = nl if nl >= 0 else n
            pos = end + 1 if end < n else n
            shown, more = self._line(st, line, out)
            if not more:
                st["cut"], st["done"] = True, True
                break
            if shown is not None:
                out.append(shown + ("\n" if nl >= 0 or end < n else ""))
                st["used"] += len(shown) + 1
        if st["done"]:
            self._state = dict(st, out_len=len(out))
        shown_text = "".join(out)
        if st["fence"] is not None and st["cut"]:
            shown_text = shown_text.rstrip("\n") + "\n" + st["fence"] + "\n"  # close a code block that was cut
        self._result = DisplayText(shown_text, bool(st["cut"]), n)
        return self._result

    @staticmethod
    def _line(st: dict[str, Any], line: str, out: list[str]) -> tuple[str | None, bool]:
        """(the line as shown, or None to leave it out; whether more lines may follow)."""
        if st["fence"] is None:  # a code block's lines are one text for Qt, not blocks
            if not line.strip():
                st["block_lines"] = 0
            else:
                if not st["block_lines"]:
                    # A quoted block is nested tables for Qt: it weighs more the deeper it is.
                    match = _QUOTE_PREFIX_RE.match(line)
                    depth = len(match.group(0).replace(" ", "")) if match else 0
                    st["blocks"] += 1 + 3 * min(depth, DISPLAY_QUOTE_DEPTH)
                st["block_lines"] += 1
        if st["blocks"] > DISPLAY_BLOCKS or st["block_lines"] > DISPLAY_BLOCK_LINES or st["fences"] > DISPLAY_FENCES:
            return None, False
        if st["fence"] is None:
            m = _FENCE_RE.match(line)
            if m and not (m.group(1)[0] == "`" and "`" in m.group(2)):
                st["fence"] = m.group(1)
                st["fences"] += 1
            else:
                quoted = _QUOTES_RE.sub(r"\1", line)
                if quoted != line:
                    line, st["cut"] = quoted, True
                stripped = line.lstrip(" ")
                if len(line) - len(stripped) > DISPLAY_INDENT:
                    line, st["cut"] = " " * DISPLAY_INDENT + stripped, True
                if _TABLE_ROW_RE.match(line):
                    st["rows"] += 1
                    if st["rows"] == 1:
                        st["columns"] = max(1, line.count("|") - 1)
                    # Header and delimiter rows, then as many rows as the cell budgets allow.
                    st["cells"] += st["columns"]
                    if (
                        st["rows"] > 2 + max(5, DISPLAY_TABLE_CELLS // st["columns"])
                        or st["cells"] > DISPLAY_TOTAL_CELLS
                    ):
                        if not st["skipping_rows"]:
                            out.append("\n*(More rows of this table are in “Show all”.)*\n")
                            st["skipping_rows"] = st["cut"] = True
                        return None, True
                else:
                    st["rows"] = 0
                    st["skipping_rows"] = False
        elif _fence_close(line, st["fence"]):
            st["fence"] = None
        if st["used"] + len(line) + 1 > DISPLAY_CHARS:
            return None, False
        return line, True


def _cut_line(line: str, in_code: bool) -> str:
    """A line cut for display: at a space if there is one near the end, with an ellipsis; an odd
    number of backticks is closed so the cut does not turn the rest into code."""
    space = line.rfind(" ", len(line) - 200)
    if space > 0:
        line = line[:space]
    line += " …"
    if not in_code and line.count("`") % 2:
        line += "`"
    return line


# --- Streaming ------------------------------------------------------------------------------------
_FENCE_RE = re.compile(r"^ {0,3}(`{3,}|~{3,})(.*)$")
_LIST_RE = re.compile(r"^ {0,3}([-+*]|\d{1,9}[.)])(\s|$)")


def _fence_close(line: str, fence: str) -> bool:
    m = _FENCE_RE.match(line)
    return bool(m and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence) and not m.group(2).strip())


def find_block_boundaries(text: str, start: int = 0) -> list[int]:
    """Offsets ≥ start where a new top-level markdown block begins after a finished one.

    A boundary is the first line after a blank line, outside fenced code, that is not indented
    (an indented line may continue a list item) and does not continue a list that the current
    block is part of (splitting a list would restart its numbering). `start` must itself be a
    block start (0 or an earlier boundary). Cost is O(len(text) - start).
    """
    out: list[int] = []
    fence: str | None = None
    blank_before = False
    block_is_list = False
    block_first = True
    pos = start
    n = len(text)
    while pos < n:
        nl = text.find("\n", pos)
        if nl < 0:
            break  # the last line is unfinished: it can't start a block we are sure about
        line = text[pos:nl]
        if fence is not None:
            if _fence_close(line, fence):
                fence = None
            blank_before = False
        elif not line.strip():
            blank_before = True
        else:
            is_list = bool(_LIST_RE.match(line))
            indented = line[:1] in (" ", "\t")
            if blank_before and pos > start and not indented and not (is_list and block_is_list):
                out.append(pos)
                block_first = True
            if block_first:
                block_is_list = is_list
                block_first = False
            m = _FENCE_RE.match(line)
            if m and not (m.group(1)[0] == "`" and "`" in m.group(2)):
                fence = m.group(1)
            blank_before = False
        pos = nl + 1
    return out


def close_open_inline(tail: str) -> str:
    """While streaming, close a dangling `**` or backtick so "**bol" shows as bold, not as stars.

    Only for the growing tail, and never inside an open code fence (where the text is literal).
    """
    fence: str | None = None
    for line in tail.split("\n"):
        m = _FENCE_RE.match(line)
        if fence is None and m:
            fence = m.group(1)
        elif fence is not None and _fence_close(line, fence):
            fence = None
    if fence is not None:
        return tail
    last = tail.rstrip()
    para = last[last.rfind("\n\n") + 1 :]
    if para.count("`") % 2:
        return last + "`"
    if para.count("**") % 2 and not para.endswith("**"):
        return last + "**"
    return tail


@dataclass
class Update:
    """What changed since the last update: append `new_blocks`, then replace the tail with `tail`."""

    new_blocks: list[str]
    tail: str
    reset: bool = False  # True: the text was not an extension; clear and show new_blocks + tail
    pending: bool = False  # more finished blocks wait: call update again (the tail is not shown yet)


@dataclass
class IncrementalMarkdown:
    """Keeps the HTML of finished blocks so each update costs O(tail), not O(text)."""

    renderer: MarkdownRenderer
    text: str = ""
    stable: int = 0  # end offset of the finished blocks
    blocks_html: list[str] = field(default_factory=list)
    stable_code: list[str] = field(default_factory=list)
    tail_code: list[str] = field(default_factory=list)
    _queued: list[int] = field(default_factory=list)  # block ends found but not rendered yet
    _queued_final: bool = False

    @property
    def code_blocks(self) -> list[str]:
        return self.stable_code + self.tail_code

    def update(
        self, text: str, *, final: bool = False, max_blocks: int | None = None, max_chars: int | None = None
    ) -> Update:
        """Advance to `text`; with final=True the whole remainder counts as finished.

        With `max_blocks` / `max_chars`, at most that many finished blocks (at least one) or
        characters of them are rendered; `pending` then says more wait, so a caller can spread a
        long answer over several turns of its event loop."""
        reset = not text.startswith(self.text[: self.stable]) or len(text) < self.stable
        if reset:
            self.stable = 0
            self.blocks_html = []
            self.stable_code = []
        if not reset and self._queued and final == self._queued_final and text == self.text:
            bounds = self._queued  # the same text as last time: the boundaries still waiting
        else:
            bounds = find_block_boundaries(text, self.stable)
            if final and self.stable < len(text):
                bounds.append(len(text))
        self.text = text
        new: list[str] = []
        take = bounds[:max_blocks] if max_blocks is not None else bounds
        if max_chars is not None and take:
            limit = self.stable + max_chars
            take = take[: max(1, next((i for i, b in enumerate(take) if b > limit), len(take)))]
        self._queued, self._queued_final = bounds[len(take) :], final
        pending = bool(self._queued)
        for b in take:
            block_html, code = self.renderer.render(text[self.stable : b], len(self.stable_code))
            self.stable_code.extend(code)
            self.blocks_html.append(block_html)
            new.append(block_html)
            self.stable = b
        tail_text = text[self.stable :]
        if pending:
            tail_html, self.tail_code = "", []
        elif tail_text.strip():
            shown = tail_text if final else close_open_inline(tail_text)
            tail_html, self.tail_code = self.renderer.render(shown, len(self.stable_code))
        else:
            tail_html, self.tail_code = "", []
        if reset:
            return Update(list(self.blocks_html), tail_html, reset=True, pending=pending)
        return Update(new, tail_html, pending=pending)

    def html(self) -> str:
        """The full HTML of the current text (finished blocks + tail)."""
        tail = self.text[self.stable :]
        tail_html = self.renderer.render(tail, len(self.stable_code))[0] if tail.strip() else ""
        return "".join(self.blocks_html) + tail_html


_shared: dict[tuple[int, Theme], MarkdownRenderer] = {}


def shared_renderer(theme: Theme = LIGHT) -> MarkdownRenderer:
    """One renderer per theme and thread: building one (markdown-it rules, a pygments formatter)
    costs milliseconds, and a long conversation shows dozens of answers. A renderer keeps state
    only during render(), so sharing it within a thread is safe."""
    import threading

    key = (threading.get_ident(), theme)
    renderer = _shared.get(key)
    if renderer is None:
        renderer = _shared[key] = MarkdownRenderer(theme)
    return renderer


def render_markdown(text: str, theme: Theme = LIGHT) -> tuple[str, list[str]]:
    """One-shot render of a whole text: (html, code blocks)."""
    return shared_renderer(theme).render(text)
