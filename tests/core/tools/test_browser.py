"""The browser tool against a loopback web server and a loopback SearXNG-style search endpoint."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from app.core.tools.browser import (
    BrowserSession,
    cursor_urls_from_results,
    html_to_text,
    link_citations,
    wrap_lines,
)
from app.core.tools.netguard import NetworkPolicy
from tests.fixtures.web_server import WebServer, web_server


@pytest.fixture
def server() -> Iterator[WebServer]:
    with web_server() as srv:
        yield srv


@pytest.fixture
def browser(server: WebServer) -> Iterator[BrowserSession]:
    b = BrowserSession(server.url + "/search", policy=NetworkPolicy.exempting(server.url))
    yield b
    b.close()


def test_search_shows_results_in_the_trained_format(browser: BrowserSession, server: WebServer) -> None:
    out = browser.search("harmonica history", topn=5)
    host = server.url.removeprefix("http://")
    assert out.startswith(
        "[0] harmonica history\n**viewing lines [0 - 5] of 5**\n\nL0: \nL1: URL: \nL2: # Search Results\n"
    )
    assert f"L4: * 【0†Harmonica Facts†{host}】 All about harmonica history." in out
    assert f"L5: * 【1†History of the harmonica†{host}】 Invented in 1821." in out
    assert "ftp://" not in out  # only web results
    assert server.queries == ["harmonica history"]


def test_open_link_find_and_scroll(browser: BrowserSession, server: WebServer) -> None:
    browser.search("harmonica")
    page = browser.open(id=0)
    lines = page.split("\n")
    assert lines[0] == f"[1] Harmonica Facts ({server.url}/article)"
    assert lines[1].startswith("**viewing lines [0 - ") and lines[2] == ""
    assert f"L1: URL: {server.url}/article" in page
    assert "L4: # The harmonica" in page
    assert "【1†short history】" in page and "【2†Wikipedia†en.wikipedia.org】" in page
    assert "* Diatonic harmonicas have ten holes." in page and "Type | Holes" in page
    assert '    return "blues"' in page  # <pre> keeps its indentation
    assert "[Image 0: A blues harp]" in page and "〖 and 〗" in page
    assert "tracking" not in page and "color: red" not in page and "secret hidden text" not in page
    assert all(len(line.split(": ", 1)[-1]) <= 80 for line in lines[3:])

    found = browser.find("REED")
    assert found.startswith(
        f"[2] Find results for text: `REED` in `Harmonica Facts` ({server.url}/article/find?pattern=REED)"
    )
    assert "# 【0†match at L6】" in found and "# 【1†match at L26】" in found
    jumped = browser.open(id=1)  # a find result opens the page near the match
    assert (
        jumped.startswith("[3] Harmonica Facts") and "viewing lines [22 - " in jumped and "L26: The word reed" in jumped
    )

    scrolled = browser.open(cursor=1, loc=13, num_lines=2)
    assert "**viewing lines [13 - 14] of" in scrolled and scrolled.count("\nL") == 2

    history = browser.open(id=1, cursor=1)
    assert history.startswith(f"[5] History ({server.url}/history)") and "Buschmann" in history
    assert browser.cursor_urls() == {
        1: f"{server.url}/article",
        2: f"{server.url}/article",
        3: f"{server.url}/article",
        4: f"{server.url}/article",
        5: f"{server.url}/history",
    }


def test_open_url_plain_text_and_redirect(browser: BrowserSession, server: WebServer) -> None:
    out = browser.open(id=f"{server.url}/plain")
    assert out.startswith("[0] 127.0.0.1:") and "L2: line one" in out
    out = browser.open(id=f"{server.url}/redirect")
    assert f"({server.url}/history)" in out.split("\n")[0]
    src = browser.open(view_source=True)
    assert "<h2>History</h2>" in src


@pytest.mark.parametrize(
    ("function", "args", "message"),
    [
        ("open", {"id": 7}, "no pages are open yet"),
        ("find", {"pattern": "x"}, "no pages are open yet"),
        ("open", {"id": "file:///etc/passwd"}, "only http and https"),
        ("open", {"id": "javascript:alert(1)"}, "only http and https"),
        ("search", {"query": ""}, "non-empty string"),
        ("search", {"q": "x"}, "unknown argument(s) q"),
        ("click", {}, "no function `click`"),
    ],
)
def test_errors_are_readable(browser: BrowserSession, function: str, args: dict, message: str) -> None:
    out = browser.call(function, args)
    assert out.is_error and message in out.content


def test_more_errors(browser: BrowserSession, server: WebServer) -> None:
    browser.search("harmonica")
    assert "invalid link id `9`" in browser.call("open", {"id": 9}).content
    assert "cursor 5 is out of range" in browser.call("open", {"cursor": 5}).content
    assert "find cannot run on a search results page" in browser.call("find", {"pattern": "a"}).content
    assert "HTTP 404" in browser.call("open", {"id": f"{server.url}/missing"}).content
    assert "image/png" in browser.call("open", {"id": f"{server.url}/binary"}).content
    assert "invalid location `999`" in browser.call("open", {"id": 0, "loc": 999}).content
    assert browser.call("search", {"query": "x", "top_n": 1}).content.count("* 【") == 1


def test_private_addresses_are_refused_by_default(server: WebServer) -> None:
    b = BrowserSession(server.url + "/search")  # the configured search endpoint may be local
    try:
        assert not b.call("search", {"query": "x"}).is_error
        out = b.call("open", {"id": 0})
        assert out.is_error and "never the local network" in out.content
    finally:
        b.close()


def test_search_endpoint_problems() -> None:
    b = BrowserSession("http://127.0.0.1:9/search", timeout_s=2)
    try:
        assert "could not be reached" in b.call("search", {"query": "x"}).content
    finally:
        b.close()
    b = BrowserSession("")
    assert "no search endpoint is configured" in b.call("search", {"query": "x"}).content


def test_searxng_json_format_hint(server: WebServer) -> None:
    import httpx

    from app.core.tools.browser import BrowserError, searxng_search

    server.search_json = False
    with httpx.Client() as c, pytest.raises(BrowserError, match="enable the json format"):
        searxng_search(c, server.url + "/search", "x", 3, 5)


def test_html_to_text_links_relative_and_same_site() -> None:
    title, text, links = html_to_text(
        '<html><head><title> T </title></head><body><p>See <a href="/a">A</a>, <a href="/a">A again</a>, '
        '<a href="https://other.org/x">other</a> and <a href="mailto:x@y">mail</a>.</p></body></html>',
        "https://site.com/page",
    )
    assert title == "T" and links == {"0": "https://site.com/a", "1": "https://other.org/x"}
    assert text == "See 【0†A】, 【0†A again】, 【1†other†other.org】 and mail."


def test_wrap_lines_keeps_empty_lines() -> None:
    assert wrap_lines("a\n\n" + "word " * 30) == ["a", "", *wrap_lines("word " * 30)]
    assert all(len(x) <= 80 for x in wrap_lines("word " * 30))


def test_citations_become_links(browser: BrowserSession, server: WebServer) -> None:
    browser.search("harmonica")
    r1 = browser.open(id=0)
    text = "Diatonic harmonicas have ten holes【1†L13】, invented in 1821【7†L2-L3】."
    linked = link_citations(text, browser.cursor_urls())
    assert linked == (
        f"Diatonic harmonicas have ten holes ([127.0.0.1:{server.url.rsplit(':', 1)[1]}]"
        f'({server.url}/article "L13")), invented in 1821【7†L2-L3】.'
    )
    # a reopened chat rebuilds the cursors from its stored browser results
    assert cursor_urls_from_results(["[0] harmonica\n**viewing", r1]) == {1: f"{server.url}/article"}
    assert link_citations("no citations", {}) == "no citations"
