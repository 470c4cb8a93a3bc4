"""Salvage of a damaged database: move it aside, read what is readable, restore it into a fresh store."""

from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any, Final

from app.core.store.base import StoreBase
from app.core.store.schema import SQLITE_HEADER

_SALVAGE_TABLES: Final = ("conversations", "messages", "settings", "presets")

# A salvaged table: its column names and the rows that could be read.
Salvaged = dict[str, tuple[list[str], list[tuple[Any, ...]]]]


def move_aside(path: Path) -> Path:
    """Rename a damaged database (and its -wal/-shm files) to a timestamped backup; returns the backup."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    backup = path.with_name(f"{path.stem}.corrupt-{stamp}{path.suffix}")
    n = 1
    while backup.exists():
        backup = path.with_name(f"{path.stem}.corrupt-{stamp}-{n}{path.suffix}")
        n += 1
    os.replace(path, backup)
    for suffix in ("-wal", "-shm"):
        side = Path(f"{path}{suffix}")
        if side.exists():
            os.replace(side, Path(f"{backup}{suffix}"))
    return backup


def salvage(backup: Path) -> Salvaged:
    """Read what can be read from each known table of a damaged file (working on a scratch copy)."""
    out: Salvaged = {}
    with tempfile.TemporaryDirectory(prefix="harmonica-salvage-") as tmp:
        scratch = Path(tmp) / "salvage.sqlite3"
        try:
            shutil.copyfile(backup, scratch)
            if Path(f"{backup}-wal").exists():
                shutil.copyfile(f"{backup}-wal", f"{scratch}-wal")
            else:
                _fit_header_to_file(scratch)
            db = sqlite3.connect(scratch, isolation_level=None)
            # Skip schema entries that fail to parse (as the sqlite3 shell's .recover does).
            db.execute("PRAGMA writable_schema = ON")
        except (OSError, sqlite3.Error):
            return out
        try:
            for table in _SALVAGE_TABLES:
                try:
                    cols = [r[1] for r in db.execute(f"PRAGMA table_info({table})")]
                except sqlite3.DatabaseError:
                    continue
                if cols:
                    out[table] = (cols, _read_table(db, table, cols))
        finally:
            db.close()
    return out


def _fit_header_to_file(path: Path) -> None:
    """A truncated file's header still counts the lost pages, and SQLite then refuses the whole
    schema; make the header count only the pages that are really there (scratch copy only)."""
    size = path.stat().st_size
    with path.open("r+b") as f:
        head = f.read(100)
        if len(head) < 100 or not head.startswith(SQLITE_HEADER):
            return
        page_size = int.from_bytes(head[16:18], "big")
        page_size = 65536 if page_size == 1 else page_size
        if page_size < 512:
            return
        if int.from_bytes(head[28:32], "big") > size // page_size:
            f.seek(28)
            f.write((size // page_size).to_bytes(4, "big"))


def _read_table(db: sqlite3.Connection, table: str, cols: list[str]) -> list[tuple[Any, ...]]:
    """Rows in key order. A batch that hits a damaged page is retried smaller, down to one row;
    a row that cannot be read is jumped over in growing steps until reading works again."""
    key = "rowid" if table == "settings" else "id"
    select = f"SELECT {', '.join(cols)}, {key} FROM {table} WHERE {key} > ? ORDER BY {key} LIMIT ?"
    rows: list[tuple[Any, ...]] = []
    last: int = -(2**62)
    size, step, failures = 256, 1, 0
    while failures < 200:
        try:
            batch = db.execute(select, (last, size)).fetchall()
        except sqlite3.DatabaseError:
            if size > 1:
                size = max(1, size // 8)
                continue
            failures += 1
            last = max(last, 0) + step
            step *= 2
            if last >= 2**62:
                break
            continue
        if not batch:
            break
        rows += [r[:-1] for r in batch]
        last = int(batch[-1][-1])
        step, size = 1, min(256, size * 2)
    return rows


def restore_salvage(store: StoreBase, salvaged: Salvaged) -> tuple[int, int]:
    """Insert the salvaged rows into a fresh store and tie up what the damage cut; returns (conversations, messages)."""
    db = store.db
    counts = {"conversations": 0, "messages": 0}
    with store._lock:
        db.execute("PRAGMA foreign_keys = OFF")
        try:
            with store.transaction():
                for table in _SALVAGE_TABLES:
                    if table not in salvaged:
                        continue
                    cols, rows = salvaged[table]
                    current = [r[1] for r in db.execute(f"PRAGMA table_info({table})")]
                    use = [c for c in cols if c in current]
                    idx = [cols.index(c) for c in use]
                    sql = f"INSERT OR IGNORE INTO {table} ({', '.join(use)}) VALUES ({', '.join('?' * len(use))})"
                    for row in rows:
                        try:
                            cur = db.execute(sql, [row[i] for i in idx])
                        except sqlite3.Error:
                            continue  # a row damaged beyond use (e.g. NOT NULL lost)
                        if table in counts:
                            counts[table] += cur.rowcount
                # Tie up what the damage cut: orphans go, lost parents make roots, pointers are fixed.
                db.execute("UPDATE conversations SET uid = lower(hex(randomblob(16))) WHERE uid IS NULL")
                db.execute("DELETE FROM messages WHERE conversation_id NOT IN (SELECT id FROM conversations)")
                db.execute(
                    "UPDATE messages SET parent_id = NULL WHERE parent_id IS NOT NULL AND parent_id NOT IN (SELECT id FROM messages)"
                )
                db.execute("UPDATE messages SET status = 'interrupted' WHERE status = 'streaming'")
                db.execute(
                    "UPDATE conversations SET active_leaf_id = NULL WHERE active_leaf_id NOT IN (SELECT id FROM messages)"
                )
                db.execute("INSERT INTO messages_fts(messages_fts) VALUES ('rebuild')")
        finally:
            db.execute("PRAGMA foreign_keys = ON")
        counts["messages"] = int(db.execute("SELECT count(*) FROM messages").fetchone()[0])
        counts["conversations"] = int(db.execute("SELECT count(*) FROM conversations").fetchone()[0])
    return counts["conversations"], counts["messages"]
