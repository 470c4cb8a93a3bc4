"""The builtin `browser` tool (search, open, find) in the display format gpt-oss was trained on, and citation links.

A page is shown as `[cursor] Title (url)`, a `**viewing lines [a - b] of N**` scrollbar and
numbered lines `L0: ...`; links are `【id†text】` (same site) or `【id†text†domain】`, so the model can
`open(id)` them and cite `【cursor†Lx-Ly】` in its answer. Search goes to a SearXNG JSON endpoint.
"""

from app.core.tools.browser.citations import cursor_urls_from_results, link_citations
from app.core.tools.browser.page import Page, domain_of, html_to_text, strip_links, wrap_lines
from app.core.tools.browser.session import (
    BROWSER_FUNCTIONS,
    MAX_PAGE_BYTES,
    BrowserError,
    BrowserSession,
    SearchHit,
    searxng_search,
)

__all__ = [
    "BROWSER_FUNCTIONS",
    "MAX_PAGE_BYTES",
    "BrowserError",
    "BrowserSession",
    "Page",
    "SearchHit",
    "cursor_urls_from_results",
    "domain_of",
    "html_to_text",
    "link_citations",
    "searxng_search",
    "strip_links",
    "wrap_lines",
]
