"""Full-text search: safe FTS5 queries from what the user typed, ranked or newest-first hits, snippets and highlights."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from typing import Any, Final

from app.core.store.base import guarded
from app.core.store.messages import MessagesMixin
from app.core.store.rows import DEFAULT_TITLE, SearchHit

# Search snippets wrap hits in these control characters; they never occur in typed text, so the
# UI can escape the snippet first and then turn them into <b>…</b> (see snippet_to_html).
HIGHLIGHT_START: Final = "\x02"
HIGHLIGHT_END: Final = "\x03"
SNIPPET_ELLIPSIS: Final = "…"
# Up to this many matching messages, search ranks by relevance (bm25); beyond it, newest first.
RANKED_SEARCH_MAX_MATCHES: Final = 5000


def build_fts_query(text: str) -> str:
    """Turn what the user typed into a safe FTS5 query: every word must appear; the last is a prefix.

    "quoted phrases" stay phrases. FTS5 operators typed by the user are treated as words, so no
    input can produce a syntax error.
    """
    parts: list[str] = []
    pos = 0
    for m in re.finditer(r'"([^"]*)"', text):
        parts += _words(text[pos : m.start()])
        phrase = " ".join(_tokens(m.group(1)))
        if phrase:
            parts.append(f'"{phrase}"')
        pos = m.end()
    parts += _words(text[pos:])
    # Still typing the last word (no space or closing quote after it): match it as a prefix;
    # not a single letter, which would match nearly everything and say nothing.
    if parts and re.search(r"\w\w$", text):
        parts[-1] += "*"
    return " ".join(parts)


def _tokens(text: str) -> list[str]:
    return re.findall(r"\w+", text.replace('"', " "))


def _words(text: str) -> list[str]:
    return [f'"{w}"' for w in _tokens(text)]


# Tokens as FTS5's unicode61 tokenizer sees them: runs of letters/digits ("_" separates).
_TOKEN_RE: Final = re.compile(r"[^\W_]+")


def _fold(word: str) -> str:
    """Case- and accent-fold like unicode61 with remove_diacritics 2 ("Zürich" → "zurich")."""
    decomposed = unicodedata.normalize("NFKD", word)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch)).casefold()


def query_terms(text: str) -> list[tuple[str, bool]]:
    """The folded words of a search (as build_fts_query reads it), each with "is a prefix"."""
    fts = build_fts_query(text)
    terms: list[tuple[str, bool]] = []
    for m in re.finditer(r'"([^"]*)"(\*?)', fts):
        words = _TOKEN_RE.findall(m.group(1))
        for i, w in enumerate(words):
            terms.append((_fold(w), bool(m.group(2)) and i == len(words) - 1))
    return terms


def _hit_spans(
    text: str, terms: Sequence[tuple[str, bool]]
) -> tuple[list[tuple[int, int]], list[tuple[int, int, int]]]:
    """All tokens of ``text`` (start, end) and the hits among them (token index, start, end)."""
    tokens: list[tuple[int, int]] = []
    hits: list[tuple[int, int, int]] = []
    for m in _TOKEN_RE.finditer(text):
        word = _fold(m.group())
        tokens.append((m.start(), m.end()))
        if any(word == t or (prefix and word.startswith(t)) for t, prefix in terms):
            hits.append((len(tokens) - 1, m.start(), m.end()))
    return tokens, hits


def _mark(text: str, spans: Sequence[tuple[int, int, int]], start: int, end: int) -> str:
    out, pos = [], start
    for _, a, b in spans:
        if a < start or b > end:
            continue
        out += [text[pos:a], HIGHLIGHT_START, text[a:b], HIGHLIGHT_END]
        pos = b
    out.append(text[pos:end])
    return "".join(out)


def highlight_text(text: str, query: str) -> str:
    """``text`` with every word of the search ``query`` marked (HIGHLIGHT_START/END)."""
    terms = query_terms(query)
    if not terms:
        return text
    _, hits = _hit_spans(text, terms)
    return _mark(text, hits, 0, len(text))


def make_snippet(text: str, query: str | Sequence[tuple[str, bool]], max_tokens: int = 16) -> tuple[int, str]:
    """The best window of about ``max_tokens`` words around the hits, marked; with its score.

    The score counts distinct query words in the window first, then hits: the window that shows
    most of what was searched for wins. (0, "") when nothing matches.
    """
    terms = query_terms(query) if isinstance(query, str) else list(query)
    tokens, hits = _hit_spans(text, terms)
    if not hits:
        return 0, ""
    best: tuple[int, int, int] | None = None  # (distinct, count, -first_token)
    best_start = 0
    for h, _, _ in hits:
        start = max(0, min(h - 3, len(tokens) - max_tokens))
        inside = [(i, a, b) for i, a, b in hits if start <= i < start + max_tokens]
        distinct = len({_fold(text[a:b]) for _, a, b in inside})
        key = (distinct, len(inside), -start)
        if best is None or key > best:
            best, best_start = key, start
    assert best is not None
    last = min(len(tokens), best_start + max_tokens) - 1
    a = 0 if best_start == 0 else tokens[best_start][0]
    b = len(text) if last == len(tokens) - 1 else tokens[last][1]
    body = _mark(text, hits, a, b).strip()
    prefix = SNIPPET_ELLIPSIS if best_start > 0 else ""
    suffix = SNIPPET_ELLIPSIS if last < len(tokens) - 1 else ""
    return best[0] * 1000 + best[1], prefix + body + suffix


def snippet_parts(snippet: str) -> list[tuple[str, bool]]:
    """Split a marked snippet into (text, highlighted) parts."""
    out: list[tuple[str, bool]] = []
    for i, chunk in enumerate(re.split(f"[{HIGHLIGHT_START}{HIGHLIGHT_END}]", snippet)):
        if chunk:
            out.append((chunk, i % 2 == 1))
    return out


def snippet_to_html(snippet: str) -> str:
    """HTML-escape a snippet and turn its hit markers into <b>…</b>."""
    import html

    return "".join(f"<b>{html.escape(t)}</b>" if hit else html.escape(t) for t, hit in snippet_parts(snippet))


def snippet_to_markdown(snippet: str) -> str:
    """A snippet with hits as **bold** markdown."""
    return "".join(f"**{t}**" if hit else t for t, hit in snippet_parts(snippet))


# --- the store's search ------------------------------------------------------------------------------


class SearchMixin(MessagesMixin):
    """Search over the store's messages."""

    @guarded
    def search(
        self, text: str, limit: int = 50, *, conversation_id: int | None = None, one_per_conversation: bool = False
    ) -> list[SearchHit]:
        """Full-text search over message content and reasoning, best matches first.

        ``text`` is what the user typed (see build_fts_query). Deleted conversations are excluded.
        When more than RANKED_SEARCH_MAX_MATCHES messages match, hits come newest first
        (``hit.ranked`` is False) so a very common word still answers in milliseconds. With
        ``conversation_id``: find in that conversation, hits in conversation order.
        """
        query = build_fts_query(text)
        if not query or limit <= 0:
            return []
        terms = query_terms(text)
        if conversation_id is not None:
            # Find-in-conversation: one FTS pass bounded to the conversation's id range (a
            # per-row MATCH lookup would redo prefix expansion for every row), then its rows.
            lo, hi = self.db.execute(
                "SELECT min(id), max(id) FROM messages WHERE conversation_id = ?", (conversation_id,)
            ).fetchone()
            if lo is None:
                return []
            rows = self.db.execute(
                "WITH f AS MATERIALIZED (SELECT rowid AS id FROM messages_fts WHERE messages_fts MATCH ?"
                " AND rowid BETWEEN ? AND ?) "
                "SELECT m.id, m.conversation_id, c.title, m.role, 0.0, m.created, NULL, m.content, m.thinking "
                "FROM f JOIN messages m ON m.id = f.id JOIN conversations c ON c.id = m.conversation_id "
                "WHERE m.conversation_id = ? ORDER BY m.id LIMIT ?",
                (query, lo, hi, conversation_id, limit),
            ).fetchall()
            return [self._hit(r, terms, ranked=False) for r in rows]
        # bm25 costs a pass over every matching row (~4 µs each), so beyond
        # RANKED_SEARCH_MAX_MATCHES matches the newest matches come first instead; FTS5 walks
        # rowids newest-first and stops at the LIMIT. Probing for the N-th match is cheap.
        many = (
            self.db.execute(
                "SELECT rowid FROM messages_fts WHERE messages_fts MATCH ? ORDER BY rowid DESC LIMIT 1 OFFSET ?",
                (query, RANKED_SEARCH_MAX_MATCHES - 1),
            ).fetchone()
            is not None
        )
        rank, order, outer = ("0.0", "rowid DESC", "f.rowid DESC") if many else ("rank", "rank", "f.score")
        # Deleted conversations (and repeats, for one_per_conversation) are dropped after the
        # FTS query; ask for more rows when too few remain.
        fetch = limit * 4 if one_per_conversation else limit + 8
        while True:
            rows = self.db.execute(
                "SELECT f.rowid, m.conversation_id, c.title, m.role, f.score, m.created, c.deleted_at FROM "
                f"(SELECT rowid, {rank} AS score FROM messages_fts WHERE messages_fts MATCH ? ORDER BY {order} LIMIT ?) "
                "AS f JOIN messages m ON m.id = f.rowid JOIN conversations c ON c.id = m.conversation_id "
                f"ORDER BY {outer}",
                (query, fetch),
            ).fetchall()
            chosen: list[Sequence[Any]] = []
            seen: set[int] = set()
            for r in rows:
                if r[6] is not None or (one_per_conversation and r[1] in seen):
                    continue
                seen.add(r[1])
                chosen.append(r)
                if len(chosen) >= limit:
                    break
            if len(chosen) >= limit or len(rows) < fetch:
                break
            fetch *= 4
        # Texts only for the hits shown (the rows above may be many times more).
        marks = ",".join("?" * len(chosen))
        texts = (
            {
                r[0]: (r[1], r[2])
                for r in self.db.execute(
                    f"SELECT id, content, thinking FROM messages WHERE id IN ({marks})", [r[0] for r in chosen]
                )
            }
            if chosen
            else {}
        )
        return [self._hit((*r, *texts.get(r[0], ("", ""))), terms, ranked=not many) for r in chosen]

    @staticmethod
    def _hit(r: Sequence[Any], terms: Sequence[tuple[str, bool]], ranked: bool) -> SearchHit:
        # Snippets are made here rather than with FTS5's snippet(): that needs one MATCH lookup
        # per row, and each lookup re-expands a prefix term (hundreds of ms for common words).
        content_score, content_snip = make_snippet(r[7] or "", terms)
        thinking_score, thinking_snip = make_snippet(r[8] or "", terms)
        snippet = content_snip if content_score >= thinking_score else thinking_snip
        return SearchHit(
            r[0],
            r[1],
            r[2] or DEFAULT_TITLE,
            r[3],
            snippet,
            float(r[4]),
            r[5],
            ranked,
            in_reasoning=content_score < thinking_score,
        )

    @guarded
    def highlight(self, message_id: int, text: str) -> tuple[str, str]:
        """The whole content and thinking of a message with every word of the search marked."""
        msg = self.get_message(message_id)
        return highlight_text(msg.content, text), highlight_text(msg.thinking, text)
