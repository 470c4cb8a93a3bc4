"""Child process for the store crash test: commits messages, then streams an answer until killed.

Usage: python -m tests.core.store_crash_child DB_PATH SAVE_INTERVAL_S
Reports on stdout (one line each, flushed): COMMITTED conv_id id,id,id / STREAM id /
TOKEN wall_time content_len (after each token) / SAVED wall_time content_len (after each save).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from app.core.store import Store, StreamSaver


def main(argv: list[str]) -> int:
    path, interval = Path(argv[1]), float(argv[2])
    store = Store.open(path)
    conv = store.create_conversation()
    ids = [
        store.add_message(conv.id, "user", "first question").id,
        store.add_message(conv.id, "assistant", "first answer", thinking="first thought").id,
        store.add_message(conv.id, "user", "second question").id,
    ]
    print(f"COMMITTED {conv.id} {','.join(map(str, ids))}", flush=True)
    mid = store.begin_stream(conv.id, effort="medium", model="crash-test")
    print(f"STREAM {mid}", flush=True)
    saver = StreamSaver(store, mid, interval=interval)
    content = ""
    i = 0
    while True:  # until SIGKILL
        content += f"w{i} "
        i += 1
        print(f"TOKEN {time.time():.6f} {len(content)}", flush=True)
        if saver.feed(content, f"thinking {len(content)}"):
            print(f"SAVED {time.time():.6f} {len(content)}", flush=True)
        time.sleep(0.01)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
