"""Citations in the model's final answer (`【3†L9-L11】`) turned into links to the cited pages."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from app.core.tools.browser.page import domain_of

_CITATION_RE = re.compile(r"【(?P<cursor>\d+)†(?P<ref>[^†】]*)(?:†[^†】]*)?】")
_HEADER_RE = re.compile(r"^\[(?P<cursor>\d+)\] .*\((?P<url>https?://[^\s]+)\)\s*$")


def cursor_urls_from_results(results: Iterable[str]) -> dict[int, str]:
    """Cursor → URL from stored browser tool results (their first line is `[cursor] Title (url)`),
    so citations in a reopened conversation still link to the right pages."""
    found: dict[int, str] = {}
    for text in results:
        first = (text or "").split("\n", 1)[0]
        m = _HEADER_RE.match(first)
        if m:
            url = m.group("url")
            if "/find?pattern=" in url:
                url = url.split("/find?pattern=", 1)[0]
            found[int(m.group("cursor"))] = url
    return found


def link_citations(text: str, cursor_urls: Mapping[int, str]) -> str:
    """Rewrite `【3†L9-L11】` citations as markdown links to the cited page (before rendering markdown).

    Citations of unknown cursors are kept as they are; the line range goes into the link's title.
    """
    if "【" not in text:
        return text

    def repl(m: re.Match[str]) -> str:
        url = cursor_urls.get(int(m.group("cursor")))
        if not url:
            return m.group(0)
        label = domain_of(url).removeprefix("www.") or "source"
        ref = m.group("ref").strip()
        title = f' "{ref}"' if re.fullmatch(r"L\d+(?:-L\d+)?", ref) else ""
        safe_url = url.replace(" ", "%20").replace(")", "%29").replace("(", "%28")
        return f" ([{label}]({safe_url}{title}))"

    out = _CITATION_RE.sub(repl, text)
    return re.sub(r"  +\(\[", " ([", out).replace("\n ([", "\n([")
