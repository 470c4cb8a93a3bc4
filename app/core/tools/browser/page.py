"""A web page as the model reads it: HTML as text with `【id†text】` link markers, wrapped into numbered lines."""

from __future__ import annotations

import functools
import re
import textwrap
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin, urlparse

from app.core.tools.page_style import drop_hidden

WRAP_WIDTH = 80


@dataclass
class Page:
    """A page on the browser's stack: wrapped text lines and the links found in it."""

    url: str
    title: str
    text: str
    links: dict[str, str] = field(default_factory=dict)  # link id → absolute URL
    snippets: dict[str, int] | None = None  # find results: link id → line of the match
    is_search: bool = False

    @functools.cached_property
    def lines(self) -> list[str]:
        return wrap_lines(self.text)


# --- HTML → text with link markers -----------------------------------------------------------------
_SKIP_TAGS = frozenset(
    {
        "script",
        "style",
        "noscript",
        "template",
        "svg",
        "math",
        "iframe",
        "object",
        "embed",
        "canvas",
        "head",
        "select",
        "option",
        "textarea",
        "input",
        "video",
        "audio",
        "map",
    }
)
_BLOCK_TAGS = frozenset(
    {
        "p",
        "div",
        "section",
        "article",
        "header",
        "footer",
        "nav",
        "main",
        "aside",
        "ul",
        "ol",
        "li",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "pre",
        "blockquote",
        "table",
        "thead",
        "tbody",
        "tfoot",
        "tr",
        "hr",
        "dl",
        "dt",
        "dd",
        "figure",
        "figcaption",
        "form",
        "fieldset",
        "address",
        "details",
        "summary",
        "body",
        "html",
        "caption",
    }
)
_PARA, _LINE, _KEEP_SPACE = "\x00P", "\x00L", "\x01"
_SPECIALS = str.maketrans({"【": "〖", "】": "〗", "\u200b": ""})


def domain_of(url: str) -> str:
    netloc = urlparse(url).netloc
    return netloc or urlparse("http://" + url).netloc


def _text_of(el: Any) -> str:
    return " ".join(" ".join(el.itertext()).split())


def html_to_text(html: str, url: str) -> tuple[str, str, dict[str, str]]:
    """(title, text, links) of an HTML page: readable text with `【id†text】` link markers."""
    import lxml.html

    html = html.translate(_SPECIALS)
    try:
        root = lxml.html.document_fromstring(html)
    except (ValueError, Exception):  # noqa: BLE001 - lxml raises ParserError for empty/odd documents
        return "", "", {}
    title_el = root.find(".//title")
    title = " ".join((title_el.text_content() if title_el is not None else "").split())
    hidden = drop_hidden(root)  # reads the page's <style> sheets, so before they are dropped below
    for el in list(root.iter()):
        if isinstance(el.tag, str) and el.tag in _SKIP_TAGS and el.getparent() is not None:
            el.drop_tree()  # keeps the tail text
    here = domain_of(url)
    links: dict[str, str] = {}
    by_url: dict[str, str] = {}
    images = 0
    for el in list(root.iter("a", "img")):
        if el.tag == "img":
            alt = " ".join((el.get("alt") or el.get("title") or "").split())
            marker = f"[Image {images}: {alt}]" if alt else f"[Image {images}]"
            images += 1
            _replace(el, marker)
            continue
        href = (el.get("href") or "").strip()
        text = _text_of(el).replace("†", "‡")
        if not href or href.startswith(("mailto:", "javascript:", "tel:", "data:")):
            continue
        if href.startswith("#") or not text:
            _replace(el, text)
            continue
        target = urljoin(url, href) if url else href
        if urlparse(target).scheme not in ("http", "https"):
            _replace(el, text)
            continue
        link_id = by_url.get(target)
        if link_id is None:
            link_id = by_url[target] = str(len(links))
            links[link_id] = target
        there = domain_of(target)
        _replace(el, f"【{link_id}†{text}】" if there == here else f"【{link_id}†{text}†{there}】")
    body = root.find("body")
    out: list[str] = []
    _render(body if body is not None else root, out, False)
    text = _finish_text("".join(out))
    if hidden:
        what = "passage" if hidden == 1 else "passages"
        text += f"\n\n[Harmonica left out {hidden} {what} of this page that readers cannot see.]"
    return title, text, links


def _replace(el: Any, text: str) -> None:
    tail = el.tail or ""
    parent = el.getparent()
    if parent is None:
        return
    prev = el.getprevious()
    if prev is not None:
        prev.tail = (prev.tail or "") + text + tail
    else:
        parent.text = (parent.text or "") + text + tail
    parent.remove(el)


def _pre_text(text: str) -> str:
    return text.replace(" ", _KEEP_SPACE).replace("\t", _KEEP_SPACE * 4).replace("\n", _LINE)


def _render(el: Any, out: list[str], pre: bool) -> None:
    tag = el.tag if isinstance(el.tag, str) else ""
    if not tag:
        return  # comments and processing instructions (their tail is written by the parent)
    block = tag in _BLOCK_TAGS
    inpre = pre or tag == "pre"
    if block:
        out.append(_PARA if tag not in ("li", "tr", "dd", "dt") else _LINE)
    if tag == "br":
        out.append(_LINE)
    elif tag == "hr":
        out.append("---")
    elif len(tag) == 2 and tag[0] == "h" and tag[1] in "123456":
        out.append("#" * int(tag[1]) + " ")
    elif tag == "li":
        out.append("* ")
    elif tag in ("td", "th") and el.getprevious() is not None:
        out.append(" | ")
    if el.text:
        out.append(_pre_text(el.text) if inpre else el.text)
    for child in el:
        _render(child, out, inpre)
        if child.tail:
            out.append(_pre_text(child.tail) if inpre else child.tail)
    if block:
        out.append(_PARA if tag not in ("li", "tr", "dd", "dt") else _LINE)


def _finish_text(raw: str) -> str:
    text = re.sub(r"\s+", " ", raw)
    text = re.sub(r" *(\x00[PL]) *", r"\1", text)
    text = re.sub(r"(\x00[PL])+", lambda m: "\n\n" if _PARA in m.group(0) else "\n", text)
    text = text.replace(_KEEP_SPACE, " ")
    lines = [line.rstrip() for line in text.split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip("\n")


def wrap_lines(text: str, width: int = WRAP_WIDTH) -> list[str]:
    """Lines of at most `width` characters (empty lines kept); line numbers refer to these."""
    out: list[str] = []
    for line in text.split("\n"):
        if not line:
            out.append("")
            continue
        for piece in _pieces(line, 12 * width):
            out.extend(textwrap.wrap(piece, width=width, replace_whitespace=False, drop_whitespace=False) or [""])
    return out


def _pieces(line: str, size: int) -> list[str]:
    """A very long line cut into pieces of at most `size` characters, at a space where there is one:
    textwrap slows down sharply on a megabyte-long line (a hostile page's), and a normal line is
    never this long, so ordinary pages wrap exactly as before."""
    if len(line) <= size:
        return [line]
    pieces: list[str] = []
    start = 0
    while len(line) - start > size:
        cut = line.rfind(" ", start + size // 2, start + size)
        end = cut + 1 if cut >= 0 else start + size
        pieces.append(line[start:end])
        start = end
    pieces.append(line[start:])
    return pieces


_LINK_RE = re.compile(r"【\d+†(?P<content>[^†】]+)(?:†[^†】]+)?】")


def strip_links(text: str) -> str:
    return _LINK_RE.sub(lambda m: m.group("content"), text)
