"""Child process for the full-disk crash test: commits messages, streams an answer, goes on once the disk is full, until killed.

Usage: python -m tests.core.store_full_child DB_PATH
Reports on stdout (one line each, flushed): STREAMING stream_id saved_tail_len (the tail is saved),
then, after the parent fills the disk and writes FULL on stdin: READONLY (the store refused a write
and the child keeps streaming into memory).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from app.core.store import Store, StreamSaver


def main(argv: list[str]) -> int:
    store, _ = Store.open_app(Path(argv[1]))
    conv = store.create_conversation()
    for role, text in (("user", "first question"), ("assistant", "first answer"), ("user", "second question")):
        store.add_message(conv.id, role, text)
    mid = store.begin_stream(conv.id)
    saver = StreamSaver(store, mid, interval=0.0)
    content = "".join(f"w{i} " for i in range(50))
    assert saver.flush() or saver.feed(content)
    print(f"STREAMING {mid} {len(content)}", flush=True)
    sys.stdin.readline()  # FULL: the parent filled the disk
    told = False
    for i in range(100_000):  # until SIGKILL
        content += f"more{i} " * 500
        saver.feed(content)
        if store.read_only and not told:
            print("READONLY", flush=True)
            told = True
        elif i == 200 and not told:
            print("STILL-WRITABLE", flush=True)
        time.sleep(0.01)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
