"""One conversation's browser: SearXNG search, and open and find over a stack of pages fetched via the network guard."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote, unquote, urljoin, urlparse

import httpx

from app.core.errors import HarmonicaError
from app.core.tools.base import ToolOutcome
from app.core.tools.browser.page import _SPECIALS, Page, domain_of, html_to_text, strip_links
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

USER_AGENT = "Mozilla/5.0 (compatible; Harmonica/0.1; +local gpt-oss browser tool)"
MAX_PAGE_BYTES = 5 * 1024 * 1024  # decoded: a compressed page is cut here too, after decompression
MAX_REDIRECTS = 10
STOP_POLL_S = 0.05  # how often a waiting tool call looks at the Stop button
VIEW_CHARS = 4000  # about 1,000 tokens, the reference tool's view
MAX_FIND_RESULTS = 50
FIND_SHOW_LINES = 4
BROWSER_FUNCTIONS = ("search", "open", "find")
_T = TypeVar("_T")


class BrowserError(HarmonicaError):
    """A browsing step failed; the message is for the model."""


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
