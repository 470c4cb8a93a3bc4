"""Demo mode (`python -m app --demo`): a scripted model and a sample conversation, for screenshots."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from app.core.chat import Conversation, Message
from app.core.engine import GenerationStats
from app.core.scripted_engine import ScriptedEngine

if TYPE_CHECKING:
    from app.ui.main_window import MainWindow

DEMO_QUESTION = "How do I read a large CSV file in Python without running out of memory?"

DEMO_REASONING = (
    "The user wants to process a big CSV without loading it all at once. Options: the csv module "
    "streams rows; pandas can read in chunks with chunksize; polars has a lazy scan. I should show a "
    "short pandas example with chunks and compare the approaches in a small table."
)

DEMO_ANSWER = """Read it **in chunks** so only a slice of the file is in memory at any time. With pandas:

```python
import pandas as pd

totals = {}
for chunk in pd.read_csv("sales.csv", chunksize=100_000):
    for region, amount in chunk.groupby("region")["amount"].sum().items():
        totals[region] = totals.get(region, 0) + amount

print(sorted(totals.items(), key=lambda kv: -kv[1])[:5])
```

Each `chunk` is an ordinary DataFrame of 100,000 rows, so memory use stays flat however big the file is.

| Approach | Memory | Best for |
|:--|:--|:--|
| `csv` module | one row | simple row-by-row work |
| pandas `chunksize` | one chunk | aggregations with pandas |
| polars `scan_csv` | streaming | fast queries on huge files |

Tip: pass `usecols=[...]` and `dtype={...}` to skip columns you don't need and halve memory again."""


def demo_script(prompt: str) -> str:
    """The scripted model's answer to any new message (it reasons, then answers)."""
    effort = "high" if "Reasoning: high" in prompt else "low" if "Reasoning: low" in prompt else "medium"
    return (
        "<|channel|>analysis<|message|>This is the demo model, replaying a script at "
        f"{effort} effort. A real gpt-oss model would reason about the question here.<|end|>"
        "<|start|>assistant<|channel|>final<|message|>This is **demo mode**: answers are scripted. "
        "Open a real gpt-oss model with *File → Open model…* to chat for real.\n\n"
        "```bash\nharmonica --model ~/models/gpt-oss-20b-mxfp4.gguf\n```<|return|>"
    )


def demo_conversation() -> Conversation:
    conv = Conversation()
    conv.add_user(DEMO_QUESTION)
    conv.add(
        Message(
            role="assistant",
            content=DEMO_ANSWER,
            thinking=DEMO_REASONING,
            effort="medium",
            model="gpt-oss-20b",
            thinking_s=3.4,
            stop_reason="return",
            stats=GenerationStats(
                prompt_tokens=142,
                generated_tokens=312,
                ttft_s=0.21,
                total_s=4.9,
                tokens_per_s=64.3,
                stop_reason="return",
            ),
        )
    )
    return conv


DEMO_HISTORY = (
    ("Explain mixture-of-experts routing", 0.2),
    ("Regex for ISO 8601 dates", 0.6),
    ("Plan a 3-day trip to Lisbon", 1.1),
    ("Why is my Rust borrow checker angry?", 2.5),
    ("Sourdough starter schedule", 4.0),
    ("Summarise the attention paper", 9.0),
    ("Birthday poem for Ana", 21.0),
)


def _add_history(store: object) -> None:
    """A few older chats, so the sidebar looks like a sidebar in use."""
    import time

    now = time.time()
    for title, days in DEMO_HISTORY:
        when = now - days * 86400
        row = store.create_conversation(title, created=when)  # type: ignore[attr-defined]
        store.add_message(row.id, "user", title, created=when)  # type: ignore[attr-defined]
        store.add_message(row.id, "assistant", "…", created=when + 5)  # type: ignore[attr-defined]
        store.db.execute("UPDATE conversations SET updated = ? WHERE id = ?", (when + 5, row.id))  # type: ignore[attr-defined]


def start_demo() -> MainWindow:
    import tempfile

    from app.core.runtime import Runtime
    from app.core.store import Store
    from app.ui.main_window import MainWindow

    engine = ScriptedEngine(demo_script, delay_s=0.03, name="gpt-oss-20b")
    engine.load("scripted:gpt-oss-20b")
    # A throwaway store: the demo must not add its sample chat to the user's history.
    store = Store.open(Path(tempfile.mkdtemp(prefix="harmonica-demo-")) / "demo.sqlite3")
    _add_history(store)
    window = MainWindow(Runtime(store=store, engine_factory=lambda: engine))
    window.adopt_engine(engine)
    window.set_conversation(demo_conversation())
    window.status_speed.setText("64.3 tok/s")
    window.status_context.setText(f"Context 454 / {engine.n_ctx:,}")
    return window


DEMO_ANSWER_2 = """Stream it. The standard library's `csv` module reads one row at a time:

```python
import csv
from collections import Counter

totals = Counter()
with open("sales.csv", newline="") as f:
    for row in csv.DictReader(f):
        totals[row["region"]] += float(row["amount"])
print(totals.most_common(5))
```

Memory stays at one row however large the file is. For faster columnar work, use pandas with
`chunksize=` or polars' lazy `scan_csv`."""


def demo_scene(window: object, scene: str) -> None:
    """Arrange the demo window for a screenshot: "chat" (default) or "search" (history, a search
    with hits and an answer with two versions)."""
    if scene != "search":
        return
    w = window  # a MainWindow
    store = w.runtime.store  # type: ignore[attr-defined]
    path = w.session.view()  # type: ignore[attr-defined]
    answer = path[-1][0]
    store.add_message(
        answer.conversation_id,
        "assistant",
        DEMO_ANSWER_2,
        parent_id=answer.parent_id,
        effort="low",
        model="gpt-oss-20b",
        thinking="The csv module streams rows; that is the simplest answer.",
        stats={"prompt_tokens": 142, "generated_tokens": 171, "tokens_per_s": 66.0},
        extra={"stop_reason": "return", "thinking_s": 0.8},
    )
    w.events.session_changed.emit()  # type: ignore[attr-defined]
    w.sidebar.search.setText("csv")  # type: ignore[attr-defined]
    w.sidebar.run_search()  # type: ignore[attr-defined]


def save_screenshot(window: object, path: str | Path) -> None:
    from PySide6.QtWidgets import QWidget

    assert isinstance(window, QWidget)
    window.grab().save(str(path))
