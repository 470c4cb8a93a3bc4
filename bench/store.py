"""Benchmark: open a 1,000-message conversation and full-text search 10,000 conversations in the store.

Builds (once, cached under bench/out/) a store of 10,000 conversations of 10 messages each with
Zipf-distributed words, user/assistant turns with reasoning and some tool calls, plus one
conversation of 1,000 messages with branches. Then measures, in fresh connections:

- open: Store.open on the big file (migrations check, crash recovery scan);
- show a conversation: active_path_with_branches (rows + ‹ i/n › positions) for the 1,000-message
  conversation, first call on a fresh connection and warm repeats; render_messages on top;
- search: Store.search for several queries (common/rare words, prefix, phrase, two words), the
  first call on a fresh connection and warm repeats: median and worst;
- streaming: update_stream of a growing 8 KB answer, and add_message.

    python bench/store.py [--conversations 10000] [--runs 7] [--rebuild] [--no-record]
"""

from __future__ import annotations

import argparse
import itertools
import platform
import random
import re
import sqlite3
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.core.store import (  # noqa: E402
    RANKED_SEARCH_MAX_MATCHES,
    ConversationSettings,
    MessageRow,
    Store,
    build_fts_query,
    render_messages,
)

RESULTS = ROOT / "bench" / "RESULTS.md"
SECTION = "Conversation store"
OUT = ROOT / "bench" / "out"

_SYLLABLES = ["ka", "lo", "mi", "ren", "to", "sa", "vel", "ni", "po", "ter", "an", "dor", "shi", "lu", "mar", "qen"]
# Real words planted at known frequencies, so queries hit a predictable number of messages.
PLANTED = {"python": 0.02, "sourdough": 0.002, "kubernetes": 0.0005, "zanzibar": 0.00005}


COMMON = ["the", "and", "model", "answer", "because", "memory", "context", "token"]


def make_vocab(rng: random.Random, n: int = 20000) -> list[str]:
    """The common English words first (most frequent under Zipf), then invented words."""
    words: set[str] = set(COMMON)
    while len(words) < n:
        words.add("".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(1, 4))))
    return COMMON + sorted(words - set(COMMON), key=lambda w: (len(w), w))


class TextGen:
    def __init__(self, seed: int = 1) -> None:
        self.rng = random.Random(seed)
        self.vocab = make_vocab(self.rng)
        # Zipf; cumulative weights once, or choices() re-sums 20,000 weights on every call.
        self.cum_weights = list(itertools.accumulate(1.0 / (i + 1) for i in range(len(self.vocab))))

    def text(self, n_words: int) -> str:
        words = self.rng.choices(self.vocab, cum_weights=self.cum_weights, k=n_words)
        for word, p in PLANTED.items():
            if self.rng.random() < p * n_words / 10:
                words[self.rng.randrange(n_words)] = word
        out = " ".join(words)
        return out[0].upper() + out[1:] + "."


def build(path: Path, conversations: int) -> None:
    gen = TextGen()
    t0 = time.perf_counter()
    store = Store.open(path)
    base = time.time() - conversations * 60
    with store.transaction():
        for c in range(conversations):
            created = base + c * 60
            msgs: list[MessageRow] = []
            for j in range(10):
                role = "user" if j % 2 == 0 else "assistant"
                tool = role == "assistant" and j == 1 and c % 7 == 0
                msgs.append(
                    MessageRow(
                        id=j + 1,
                        conversation_id=0,
                        parent_id=j or None,
                        role=role,
                        content=""
                        if tool
                        else gen.text(gen.rng.randint(8, 30) if role == "user" else gen.rng.randint(60, 160)),
                        thinking=gen.text(gen.rng.randint(20, 60)) if role == "assistant" else "",
                        tool_calls=[{"recipient": "functions.search", "arguments": '{"q": "x"}'}] if tool else [],
                        effort="medium" if role == "assistant" else None,
                        stats={"generated_tokens": 120, "tokens_per_s": 40.0} if role == "assistant" else {},
                        model="gpt-oss-20b" if role == "assistant" else None,
                        created=created + j,
                        updated=created + j,
                    )
                )
            store.insert_conversation_tree(
                uid=None,
                title=msgs[0].content[:50],
                title_source="auto",
                created=created,
                updated=created + 10,
                settings=ConversationSettings(),
                messages=msgs,
                active_leaf_id=10,
            )
    # The long conversation: 1,000 messages, a regenerated answer every 50 turns (branches).
    long = store.create_conversation("Long conversation (1,000 messages)")
    parent = None
    count = 0
    with store.transaction():
        while count < 1000:
            u = store.add_message(long.id, "user", gen.text(gen.rng.randint(8, 30)), parent_id=parent)
            count += 1
            if count % 100 == 0:  # an old alternative answer beside the one that continues
                store.add_message(long.id, "assistant", gen.text(80), parent_id=u.id, thinking=gen.text(30))
                count += 1
            a = store.add_message(
                long.id,
                "assistant",
                gen.text(gen.rng.randint(60, 160)),
                parent_id=u.id,
                thinking=gen.text(gen.rng.randint(20, 60)),
                effort="high",
                model="gpt-oss-20b",
                stats={"generated_tokens": 200},
            )
            count += 1
            parent = a.id
    store.set_setting("bench_long_conversation", long.id)
    store.close()
    print(f"built {path} ({path.stat().st_size / 2**20:.0f} MiB) in {time.perf_counter() - t0:.1f} s", flush=True)


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1000


QUERIES = [
    ("python", "common planted word (~1 in 6 messages)"),
    ("sourdough", "medium-rare word"),
    ("zanzibar", "rare word"),
    ("the model", "two very common words"),
    ("kube", "prefix while typing"),
    ('"the answer"', "phrase"),
    ("memory context token", "three common words"),
]


def record(text: str, section: str = SECTION) -> None:
    """Replace (or append) only this section of bench/RESULTS.md; other scripts own the others."""
    old = RESULTS.read_text("utf-8") if RESULTS.exists() else "# Benchmark results\n"
    pattern = re.compile(rf"^## {re.escape(section)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(old):
        new = pattern.sub(lambda _: text, old, count=1)
    else:
        new = old.rstrip("\n") + "\n\n" + text
    RESULTS.write_text(new, "utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=10000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--rebuild", action="store_true")
    parser.add_argument("--no-record", action="store_true", help="print only; do not update bench/RESULTS.md")
    args = parser.parse_args(argv)

    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"store-{args.conversations}.sqlite3"
    if args.rebuild or not path.exists():
        for p in OUT.glob(f"{path.name}*"):
            p.unlink()
        build(path, args.conversations)

    open_ms = [timed(lambda: Store.open(path).close()) for _ in range(3)]
    store = Store.open(path)
    stats = store.stats()
    long_id = int(store.get_setting("bench_long_conversation"))
    store.close()

    # Showing the long conversation: first call on a fresh connection, then warm repeats.
    first_show, warm_show, render_ms = [], [], []
    for _ in range(args.runs):
        s = Store.open(path)
        first_show.append(timed(lambda: s.active_path_with_branches(long_id)))
        warm_show.append(timed(lambda: s.active_path_with_branches(long_id)))
        path_rows = [m for m, _ in s.active_path_with_branches(long_id)]
        render_ms.append(timed(lambda: render_messages(path_rows)))
        s.close()
    shown = len(path_rows)

    # Searching.
    search_rows = []
    all_warm: list[float] = []
    for query, what in QUERIES:
        s = Store.open(path)
        first = timed(lambda: s.search(query))
        warm = [timed(lambda: s.search(query)) for _ in range(args.runs)]
        grouped = statistics.median(timed(lambda: s.search(query, one_per_conversation=True)) for _ in range(3))
        n_hits = s.db.execute(
            "SELECT count(*) FROM messages_fts WHERE messages_fts MATCH ?",
            (build_fts_query(query),),
        ).fetchone()[0]
        s.close()
        all_warm += warm
        search_rows.append((query, what, n_hits, first, statistics.median(warm), max(warm), grouped))

    # Find in the long conversation (a common word).
    s = Store.open(path)
    find_ms = [timed(lambda: s.search("the model", conversation_id=long_id)) for _ in range(args.runs)]
    s.close()

    # Streaming writes.
    s = Store.open(path)
    conv = s.create_conversation("bench stream")
    mid = s.begin_stream(conv.id)
    text = "word " * 1600
    upd = [timed(lambda i=i: s.update_stream(mid, text[: 100 + i * 80], "thinking " * 100)) for i in range(100)]
    s.finish_stream(mid)
    add = [timed(lambda: s.add_message(conv.id, "user", "a short message to commit")) for _ in range(100)]
    s.purge_conversation(conv.id)
    quick_check_ms = timed(lambda: s.db.execute("PRAGMA quick_check").fetchall())
    s.close()

    size_mib = path.stat().st_size / 2**20
    cpu = platform.processor() or platform.machine()
    lines = [
        f"## {SECTION}",
        "",
        f"`python bench/store.py` on {platform.system()} {cpu}, Python {platform.python_version()}, "
        f"SQLite {sqlite3.sqlite_version}; {time.strftime('%Y-%m-%d')}. Store: {stats['conversations']:,} "
        f"conversations, {stats['messages']:,} messages, {size_mib:.0f} MiB (WAL, synchronous=NORMAL, FTS5 over "
        f"content + reasoning). Runs: {args.runs}; a shared 2-core VM, so worst cases include neighbours' load.",
        "",
        "| what | target | first call (fresh connection) | median warm | worst warm |",
        "|---|---:|---:|---:|---:|",
        f"| show a {shown:,}-message conversation (`active_path_with_branches`: rows + ‹ i/n ›) | < 300 ms "
        f"| {statistics.median(first_show):.1f} ms (worst {max(first_show):.1f}) | {statistics.median(warm_show):.1f} ms "
        f"| {max(warm_show):.1f} ms |",
        f"| `render_messages` of that path (for the prompt) | | | {statistics.median(render_ms):.2f} ms | {max(render_ms):.2f} ms |",
        f"| open the store (`Store.open`, {size_mib:.0f} MiB file) | | {open_ms[0]:.1f} ms | {statistics.median(open_ms):.1f} ms | {max(open_ms):.1f} ms |",
        "",
        f"Search (`Store.search`, 50 best hits with highlighted snippets, over {stats['conversations']:,} conversations; "
        "target < 100 ms per search):",
        "",
        "| query | kind | matching messages | first call | median warm | worst warm | one hit per conversation (median) |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for query, what, n_hits, first, med, worst, grouped in search_rows:
        lines.append(
            f"| `{query}` | {what} | {n_hits:,} | {first:.1f} ms | {med:.1f} ms | {worst:.1f} ms | {grouped:.1f} ms |"
        )
    lines += [
        f"| `the model` in the {shown:,}-message conversation | find in conversation | | | "
        f"{statistics.median(find_ms):.1f} ms | {max(find_ms):.1f} ms | |",
        "",
        f"Above {RANKED_SEARCH_MAX_MATCHES:,} matching messages, hits come newest first instead of by bm25 "
        "(bm25 visits every match: ~350 ms for 68,000 matches here).",
        "",
        f"All searches: median {statistics.median(all_warm):.1f} ms, worst {max(all_warm):.1f} ms (warm); "
        f"worst first call {max(r[3] for r in search_rows):.1f} ms.",
        "",
        f"Streaming tail save (`update_stream`, answer growing to 8 KB): median {statistics.median(upd) * 1000:.0f} µs, "
        f"worst {max(upd):.2f} ms. Committing a message (`add_message`): median {statistics.median(add) * 1000:.0f} µs. "
        f"`PRAGMA quick_check` on this file: {quick_check_ms:.0f} ms (run at open only below 64 MiB).",
        "",
    ]
    text_out = "\n".join(lines)
    print(text_out)
    if not args.no_record:
        record(text_out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
