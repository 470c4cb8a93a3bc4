"""The builtin `browser` tool (search, open, find) in the display format gpt-oss was trained on, and citation links.

A page is shown as `[cursor] Title (url)`, a `**viewing lines [a - b] of N**` scrollbar and
numbered lines `L0: ...`; links are `【id†text】` (same site) or `【id†text†domain】`, so the model can
`open(id)` them and cite `【cursor†Lx-Ly】` in its answer. Search goes to a SearXNG JSON endpoint.
"""

from __future__ import annotations

import functools
import re
import textwrap
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import quote, unquote, urljoin, urlparse

import httpx

from app.core.errors import HarmonicaError
from app.core.tools.base import ToolOutcome
from app.core.tools.netguard import (
    DECODABLE,
    BodyRefused,
    GuardedClient,
    NetworkPolicy,
    NetworkRefused,
    Stopped,
    read_capped,
    refusal,
)
from app.core.tools.page_style import drop_hidden

USER_AGENT = "Mozilla/5.0 (compatible; Harmonica/0.1; +local gpt-oss browser tool)"
MAX_PAGE_BYTES = 5 * 1024 * 1024  # decoded: a compressed page is cut here too, after decompression
MAX_REDIRECTS = 10
STOP_POLL_S = 0.05  # how often a waiting tool call looks at the Stop button
WRAP_WIDTH = 80
VIEW_CHARS = 4000  # about 1,000 tokens, the reference tool's view
MAX_FIND_RESULTS = 50
FIND_SHOW_LINES = 4
BROWSER_FUNCTIONS = ("search", "open", "find")
_T = TypeVar("_T")


class BrowserError(HarmonicaError):
    """A browsing step failed; the message is for the model."""


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


# --- search backend --------------------------------------------------------------------------------
@dataclass(frozen=True)
class SearchHit:
    title: str
    url: str
    snippet: str = ""


def searxng_search(client: httpx.Client, endpoint: str, query: str, topn: int, timeout_s: float) -> list[SearchHit]:
    """Results from a SearXNG instance's JSON API (`/search?q=...&format=json`)."""
    if not endpoint.strip():
        raise BrowserError("no search endpoint is configured (Settings → Tools → Browser)")
    try:
        resp = client.get(endpoint, params={"q": query, "format": "json"}, timeout=timeout_s)
    except httpx.HTTPError as exc:
        raise BrowserError(f"the search service at {endpoint} could not be reached: {exc}") from None
    if resp.status_code != 200:
        hint = " (enable the json format in the SearXNG settings)" if resp.status_code == 403 else ""
        raise BrowserError(f"the search service answered HTTP {resp.status_code}{hint}")
    try:
        data = resp.json()
    except ValueError:
        raise BrowserError("the search service did not answer with JSON") from None
    hits: list[SearchHit] = []
    for item in data.get("results", []) if isinstance(data, dict) else []:
        if not isinstance(item, Mapping):
            continue
        url = str(item.get("url") or "")
        if not url.startswith(("http://", "https://")):
            continue
        title = " ".join(str(item.get("title") or url).split()).translate(_SPECIALS).replace("†", "‡")
        snippet = " ".join(str(item.get("content") or "").split()).translate(_SPECIALS)
        hits.append(SearchHit(title, url, snippet))
        if len(hits) >= topn:
            break
    return hits


# --- the session -----------------------------------------------------------------------------------
class BrowserSession:
    """One conversation's browser: a stack of pages (the cursor is the index), search, open, find.

    Pages are fetched through a GuardedClient (app.core.tools.netguard): public addresses only,
    vetted on the address actually dialled, every redirect hop included. The search endpoint is
    the user's own setting (often a SearXNG on this computer), so it is reached with a plain
    client (`client`); the links it returns are opened through the guard like any other.
    """

    def __init__(
        self,
        search_endpoint: str,
        *,
        client: httpx.Client | None = None,
        timeout_s: float = 20.0,
        view_chars: int = VIEW_CHARS,
        max_search_results: int = 20,
        policy: NetworkPolicy | None = None,
    ) -> None:
        self.search_endpoint = search_endpoint
        self.timeout_s = timeout_s
        self.view_chars = view_chars
        self.max_search_results = max_search_results
        self.policy = policy or NetworkPolicy()
        self._client = client or httpx.Client(follow_redirects=True, headers={"User-Agent": USER_AGENT})
        self._own_client = client is None
        self._pages_client = self._new_pages_client()
        self._cancel: threading.Event | None = None
        self.pages: list[Page] = []
        self._cache: dict[str, Page] = {}

    def _new_pages_client(self) -> GuardedClient:
        return GuardedClient(self.policy, headers={"User-Agent": USER_AGENT, "Accept-Encoding": ", ".join(DECODABLE)})

    def close(self) -> None:
        if self._own_client:
            self._client.close()
        self._pages_client.close()

    @property
    def current_cursor(self) -> int:
        return len(self.pages) - 1

    def cursor_urls(self) -> dict[int, str]:
        return {
            i: p.url.split("/find?pattern=", 1)[0] if p.snippets is not None else p.url
            for i, p in enumerate(self.pages)
            if p.url
        }

    def page(self, cursor: int = -1) -> Page:
        if not self.pages:
            raise BrowserError("no pages are open yet; use search or open a URL first")
        if cursor == -1 or cursor == self.current_cursor:
            return self.pages[-1]
        if not isinstance(cursor, int) or isinstance(cursor, bool):
            raise BrowserError(f"`cursor` must be a number, not {type(cursor).__name__}")
        if not 0 <= cursor < len(self.pages):
            raise BrowserError(f"cursor {cursor} is out of range; valid cursors are 0 to {self.current_cursor}")
        return self.pages[cursor]

    # --- the three functions -------------------------------------------------------------------
    def search(self, query: str, topn: int = 10, source: str | None = None) -> str:
        if not isinstance(query, str) or not query.strip():
            raise BrowserError("`query` must be a non-empty string")
        n = max(1, min(int(topn) if isinstance(topn, (int, float)) else 10, self.max_search_results))
        client = self._client
        hits = self._interruptible(
            lambda: searxng_search(client, self.search_endpoint, query.strip(), n, self.timeout_s), None
        )
        lines = ["", "URL: ", "# Search Results", ""]
        links: dict[str, str] = {}
        for i, hit in enumerate(hits):
            links[str(i)] = hit.url
            lines.append(f"* 【{i}†{hit.title}†{domain_of(hit.url)}】" + (f" {hit.snippet}" if hit.snippet else ""))
        if not hits:
            lines.append(f"No results for `{query.strip()}`.")
        page = Page(url="", title=query.strip(), text="\n".join(lines), links=links, is_search=True)
        self.pages.append(page)
        return self._show(loc=0)

    def open(
        self,
        id: int | str = -1,
        cursor: int = -1,
        loc: int = -1,
        num_lines: int = -1,
        view_source: bool = False,
        source: str | None = None,
    ) -> str:
        snippet_line: int | None = None
        if isinstance(id, str) and not id.strip().lstrip("-").isdigit():
            page = self._fetch(id.strip(), view_source, refresh=True)
        else:
            link_id = int(id) if isinstance(id, str) else id
            if not isinstance(link_id, int) or isinstance(link_id, bool):
                raise BrowserError("`id` must be a link number or a URL")
            current = self.page(cursor)
            if link_id >= 0:
                url = current.links.get(str(link_id))
                if url is None:
                    raise BrowserError(
                        f"invalid link id `{link_id}`"
                        + (
                            f"; this page has links 0 to {len(current.links) - 1}"
                            if current.links
                            else "; this page has no links"
                        )
                    )
                if current.snippets is not None:
                    snippet_line = current.snippets.get(str(link_id))
                page = self._fetch(url, view_source, refresh=False)
            elif view_source:
                page = self._fetch(current.url, True, refresh=False)
            else:
                page = current  # scroll within the page
        self.pages.append(page)
        if not isinstance(loc, int) or isinstance(loc, bool) or loc < 0:
            loc = max(0, snippet_line - 4) if snippet_line is not None and snippet_line > 4 else 0
        return self._show(loc=loc, num_lines=num_lines if isinstance(num_lines, int) else -1)

    def find(self, pattern: str, cursor: int = -1) -> str:
        if not isinstance(pattern, str) or not pattern:
            raise BrowserError("`pattern` must be a non-empty string")
        page = self.page(cursor)
        if page.snippets is not None or page.is_search:
            raise BrowserError("find cannot run on a search results page or a find results page; open a page first")
        lines = strip_links("\n".join(page.lines)).split("\n")
        needle = pattern.lower()
        chunks: list[str] = []
        snippets: dict[str, int] = {}
        i = 0
        while i < len(lines) and len(chunks) < MAX_FIND_RESULTS:
            if needle not in lines[i].lower():
                i += 1
                continue
            n = len(chunks)
            chunks.append(f"# 【{n}†match at L{i}】\n" + "\n".join(lines[i : i + FIND_SHOW_LINES]))
            snippets[str(n)] = i
            i += FIND_SHOW_LINES
        text = "\n\n".join(chunks) if chunks else f"No `find` results for pattern: `{pattern}`"
        result = Page(
            url=f"{page.url}/find?pattern={quote(pattern)}",
            title=f"Find results for text: `{pattern}` in `{page.title}`",
            text=text,
            links=dict.fromkeys(snippets, page.url),
            snippets=snippets,
        )
        self.pages.append(result)
        return self._show(loc=0)

    # --- helpers -------------------------------------------------------------------------------
    def _show(self, loc: int = 0, num_lines: int = -1) -> str:
        page = self.pages[-1]
        lines = page.lines
        total = len(lines)
        if loc >= total:
            self.pages.pop()
            raise BrowserError(f"invalid location `{loc}`: this page's last line is {total - 1}")
        if num_lines is not None and num_lines > 0:
            end = min(total, loc + num_lines)
        else:
            end, used = loc, 0
            while end < total and (used == 0 or used + len(lines[end]) + 8 <= self.view_chars):
                used += len(lines[end]) + 8
                end += 1
        body = "\n".join(f"L{i}: {lines[i]}" for i in range(loc, end))
        header = page.title
        if page.url:
            shown = unquote(page.url)
            header += f" ({shown if len(shown) <= 1024 else shown[:1021] + '...'})"
        return f"[{self.current_cursor}] {header}\n**viewing lines [{loc} - {end - 1}] of {total - 1}**\n\n{body}"

    @staticmethod
    def _check_url(url: str) -> None:
        parsed = urlparse(url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise BrowserError(f"only http and https web addresses can be opened, not {url[:200]!r}")
        try:
            httpx.URL(url)
        except (httpx.InvalidURL, ValueError):
            raise BrowserError(f"{url[:200]!r} is not a valid web address") from None

    def _interruptible(self, work: Callable[[], _T], pages: GuardedClient | None) -> _T:
        """Run `work` on a helper thread while this one watches Stop: Stop returns at once (within
        STOP_POLL_S) and shuts the helper's connections down, even mid-DNS-lookup or mid-read."""
        cancel = self._cancel
        box: dict[str, Any] = {}

        def target() -> None:
            try:
                box["value"] = work()
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
                box["error"] = exc

        helper = threading.Thread(target=target, name="browser-request", daemon=True)
        helper.start()
        # Backstop for a lookup that never returns (the requests themselves have httpx timeouts).
        deadline = time.monotonic() + 2 * self.timeout_s + 5
        while helper.is_alive():
            helper.join(STOP_POLL_S)
            stopped = cancel is not None and cancel.is_set()
            if helper.is_alive() and (stopped or time.monotonic() > deadline):
                if pages is not None:
                    # This client's connections die now; the next request gets a fresh one.
                    pages.stop()
                    self._pages_client = self._new_pages_client()
                if stopped:
                    raise Stopped("the user stopped this request")
                raise BrowserError(f"the request took longer than {2 * self.timeout_s + 5:.0f} s and was abandoned")
        if "error" in box:
            raise box["error"]
        return box["value"]  # type: ignore[no-any-return]

    def _fetch(self, url: str, view_source: bool, refresh: bool) -> Page:
        key = ("view-source:" if view_source else "") + url
        if not refresh and key in self._cache:
            return self._cache[key]
        self._check_url(url)
        pages = self._pages_client
        page = self._interruptible(lambda: self._download(pages, url, view_source), pages)
        self._cache[key] = page
        return page

    def _download(self, pages: GuardedClient, url: str, view_source: bool) -> Page:
        """GET `url` following redirects one hop at a time; each hop's connection is vetted by the guard."""
        current = url
        for _hop in range(MAX_REDIRECTS + 1):
            self._check_url(current)
            try:
                with pages.client.stream("GET", current, timeout=self.timeout_s) as resp:
                    if resp.is_redirect:
                        location = resp.headers.get("location", "").strip()
                        if not location:
                            raise BrowserError(f"`{current[:300]}` redirects nowhere (HTTP {resp.status_code})")
                        current = urljoin(current, location)
                        continue
                    if resp.status_code >= 400:
                        raise BrowserError(f"error fetching `{url[:300]}`: HTTP {resp.status_code}")
                    ctype = resp.headers.get("content-type", "").split(";")[0].strip().lower()
                    raw, truncated = read_capped(
                        resp.iter_raw(), resp.headers.get("content-encoding", ""), MAX_PAGE_BYTES
                    )
                    encoding = resp.charset_encoding or "utf-8"
            except (NetworkRefused, BodyRefused) as exc:
                raise BrowserError(str(exc)) from None
            except httpx.HTTPError as exc:
                refused = refusal(exc)
                if refused is not None:
                    raise BrowserError(str(refused)) from None
                if "Invalid URL in location header" in str(exc):
                    raise BrowserError(
                        f"`{current[:300]}` redirects to an address that is not a valid web address"
                    ) from None
                raise BrowserError(f"error fetching `{url[:300]}`: {exc}") from None
            return self._page(current, raw, ctype, encoding, view_source, truncated)
        raise BrowserError(f"`{url[:300]}` redirects more than {MAX_REDIRECTS} times; not followed")

    @staticmethod
    def _page(final_url: str, raw: bytes, ctype: str, encoding: str, view_source: bool, truncated: bool) -> Page:
        try:
            text = raw.decode(encoding, errors="replace")
        except LookupError:  # a charset name Python does not know
            text = raw.decode("utf-8", errors="replace")
        cut = f"\n\n[The page is longer than {MAX_PAGE_BYTES // (1024 * 1024)} MB; the rest was not read.]"
        if view_source:
            page = Page(url=final_url, title=f"Source of {final_url}", text=text.translate(_SPECIALS))
        elif ctype in ("text/html", "application/xhtml+xml") or (not ctype and "<html" in text[:2000].lower()):
            title, body, links = html_to_text(text, final_url)
            page = Page(
                url=final_url, title=title or domain_of(final_url), text=f"\nURL: {final_url}\n{body}", links=links
            )
        elif ctype.startswith("text/") or ctype in ("application/json", "application/xml", "application/javascript"):
            page = Page(
                url=final_url, title=domain_of(final_url), text=f"\nURL: {final_url}\n" + text.translate(_SPECIALS)
            )
        else:
            raise BrowserError(f"`{final_url[:300]}` is {ctype or 'binary content'}, which cannot be shown as text")
        if truncated:
            page.text += cut
        return page

    def call(self, function: str, arguments: Any, *, cancel: threading.Event | None = None) -> ToolOutcome:
        """Run browser.`function` with the model's arguments; errors become text the model reads.

        Setting `cancel` (the chat's Stop) ends a request in flight within STOP_POLL_S."""
        self._cancel = cancel
        try:
            return self._call(function, arguments)
        except Stopped:
            return ToolOutcome("Error: the user stopped this request.", is_error=True, status="cancelled")
        finally:
            self._cancel = None

    def _call(self, function: str, arguments: Any) -> ToolOutcome:
        if function not in BROWSER_FUNCTIONS:
            return ToolOutcome(
                f"Error: the browser has no function `{function}`; use search, open or find.", is_error=True
            )
        if arguments is None or arguments == "":
            arguments = {}
        if not isinstance(arguments, dict):
            return ToolOutcome("Error: the arguments must be a JSON object.", is_error=True)
        allowed = {
            "search": ("query", "topn", "top_n", "source"),
            "open": ("id", "cursor", "loc", "num_lines", "view_source", "source"),
            "find": ("pattern", "cursor"),
        }[function]
        unknown = [k for k in arguments if k not in allowed]
        if unknown:
            return ToolOutcome(
                f"Error: unknown argument(s) {', '.join(unknown)} for browser.{function} "
                f"(accepted: {', '.join(a for a in allowed if a != 'top_n')}).",
                is_error=True,
            )
        args = dict(arguments)
        if "top_n" in args:
            args.setdefault("topn", args.pop("top_n"))
        try:
            if function == "search":
                return ToolOutcome(self.search(**args))
            if function == "open":
                return ToolOutcome(self.open(**args))
            return ToolOutcome(self.find(**args))
        except BrowserError as exc:
            return ToolOutcome(f"Error: {exc}", is_error=True)
        except TypeError as exc:
            return ToolOutcome(f"Error: bad arguments for browser.{function}: {exc}", is_error=True)


# --- citations in the final answer -----------------------------------------------------------------
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


__all__ = [
    "BROWSER_FUNCTIONS",
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
