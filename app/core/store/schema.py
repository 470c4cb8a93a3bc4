"""The database schema: versioned migrations, column lists, row decoding, and the checks made when a file is opened."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

from app.core.store.convert import stats_to_dict, tool_call_to_dict
from app.core.store.rows import ConversationRow, ConversationSettings, MessageRow, StoreCorruptError, StoreError

# Below this size a full quick_check on open costs a few tens of ms; above it only the cheap
# header/size checks run at open, and damage is caught when a damaged page is read.
_QUICK_CHECK_MAX_BYTES: Final = 64 * 1024 * 1024
SQLITE_HEADER: Final = b"SQLite format 3\x00"
_SQLITE_CORRUPT: Final = 11
_SQLITE_NOTADB: Final = 26


def _run_script(db: sqlite3.Connection, script: str) -> None:
    """Run SQL statements one by one: ``executescript`` would COMMIT the migration's transaction."""
    buffer = ""
    for line in script.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            db.execute(buffer)
            buffer = ""
    if buffer.strip():
        raise ValueError(f"incomplete SQL statement in migration: {buffer.strip()[:80]}")


def _migrate_0_to_1(db: sqlite3.Connection) -> None:
    """The first release's schema: conversations, a message tree, key/value settings."""
    _run_script(
        db,
        """
        CREATE TABLE conversations (
            id INTEGER PRIMARY KEY,
            title TEXT NOT NULL DEFAULT '',
            created REAL NOT NULL,
            updated REAL NOT NULL,
            settings TEXT NOT NULL DEFAULT '{}'
        );
        CREATE TABLE messages (
            id INTEGER PRIMARY KEY,
            conversation_id INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
            parent_id INTEGER REFERENCES messages(id) ON DELETE CASCADE,
            role TEXT NOT NULL,
            content TEXT NOT NULL DEFAULT '',
            thinking TEXT NOT NULL DEFAULT '',
            created REAL NOT NULL
        );
        CREATE INDEX messages_conversation ON messages(conversation_id);
        CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        """,
    )


def _migrate_1_to_2(db: sqlite3.Connection) -> None:
    """Tool calls, stats, streaming status, active branch, soft delete, presets, full-text search."""
    for ddl in (
        "ALTER TABLE conversations ADD COLUMN uid TEXT",
        "ALTER TABLE conversations ADD COLUMN title_source TEXT NOT NULL DEFAULT 'auto'",
        "ALTER TABLE conversations ADD COLUMN active_leaf_id INTEGER REFERENCES messages(id) ON DELETE SET NULL",
        "ALTER TABLE conversations ADD COLUMN deleted_at REAL",
        "ALTER TABLE messages ADD COLUMN tool_calls TEXT NOT NULL DEFAULT '[]'",
        "ALTER TABLE messages ADD COLUMN tool_name TEXT",
        "ALTER TABLE messages ADD COLUMN tool_call_id TEXT",
        "ALTER TABLE messages ADD COLUMN effort TEXT",
        "ALTER TABLE messages ADD COLUMN stats TEXT NOT NULL DEFAULT '{}'",
        "ALTER TABLE messages ADD COLUMN model TEXT",
        "ALTER TABLE messages ADD COLUMN status TEXT NOT NULL DEFAULT 'complete'",
        "ALTER TABLE messages ADD COLUMN updated REAL NOT NULL DEFAULT 0",
        "ALTER TABLE messages ADD COLUMN visited REAL NOT NULL DEFAULT 0",
        "ALTER TABLE messages ADD COLUMN extra TEXT NOT NULL DEFAULT '{}'",
    ):
        db.execute(ddl)
    _run_script(
        db,
        """
        UPDATE conversations SET uid = lower(hex(randomblob(16))) WHERE uid IS NULL;
        CREATE UNIQUE INDEX conversations_uid ON conversations(uid);
        CREATE INDEX conversations_live_updated ON conversations(updated DESC, id DESC) WHERE deleted_at IS NULL;
        CREATE INDEX conversations_deleted ON conversations(deleted_at) WHERE deleted_at IS NOT NULL;
        UPDATE messages SET updated = created, visited = created;
        UPDATE messages SET role = 'tool' WHERE role NOT IN ('system', 'developer', 'user', 'assistant', 'tool');
        CREATE INDEX messages_parent ON messages(parent_id);
        CREATE INDEX messages_unfinished ON messages(status) WHERE status != 'complete';
        -- v1 had no notion of an active branch: the newest leaf is the best guess.
        UPDATE conversations SET active_leaf_id = (
            SELECT m.id FROM messages m
            WHERE m.conversation_id = conversations.id
              AND NOT EXISTS (SELECT 1 FROM messages c WHERE c.parent_id = m.id)
            ORDER BY m.created DESC, m.id DESC LIMIT 1);
        CREATE TABLE presets (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            settings TEXT NOT NULL DEFAULT '{}',
            created REAL NOT NULL,
            updated REAL NOT NULL
        );
        -- External-content index over messages. Streaming rows are left out so that saving the
        -- tail every half second never rewrites index entries; they are indexed when finished.
        CREATE VIRTUAL TABLE messages_fts USING fts5(
            content, thinking,
            content='messages', content_rowid='id',
            tokenize='unicode61 remove_diacritics 2', prefix='2 3'
        );
        INSERT INTO messages_fts(messages_fts, rank) VALUES ('rank', 'bm25(1.0, 0.4)');
        INSERT INTO messages_fts(rowid, content, thinking)
            SELECT id, content, thinking FROM messages WHERE status != 'streaming';
        CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages WHEN new.status != 'streaming' BEGIN
            INSERT INTO messages_fts(rowid, content, thinking) VALUES (new.id, new.content, new.thinking);
        END;
        CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages WHEN old.status != 'streaming' BEGIN
            INSERT INTO messages_fts(messages_fts, rowid, content, thinking)
                VALUES ('delete', old.id, old.content, old.thinking);
        END;
        CREATE TRIGGER messages_fts_update AFTER UPDATE OF content, thinking, status ON messages
        WHEN old.status != 'streaming' OR new.status != 'streaming' BEGIN
            INSERT INTO messages_fts(messages_fts, rowid, content, thinking)
                SELECT 'delete', old.id, old.content, old.thinking WHERE old.status != 'streaming';
            INSERT INTO messages_fts(rowid, content, thinking)
                SELECT new.id, new.content, new.thinking WHERE new.status != 'streaming';
        END;
        """,
    )


# MIGRATIONS[i] takes a database at schema version i to version i + 1. A fresh database runs them
# all, so the upgrade path is exercised on every install, not only on upgrades.
MIGRATIONS: Final[list[Callable[[sqlite3.Connection], None]]] = [_migrate_0_to_1, _migrate_1_to_2]
SCHEMA_VERSION: Final = len(MIGRATIONS)

MESSAGE_COLUMNS: Final = (
    "id, conversation_id, parent_id, role, content, thinking, tool_calls, tool_name, tool_call_id, "
    "effort, stats, model, status, created, updated, visited, extra"
)
INSERT_MESSAGE: Final = (
    "INSERT INTO messages (conversation_id, parent_id, role, content, thinking, tool_calls, tool_name, "
    "tool_call_id, effort, stats, model, status, created, updated, visited, extra) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
CONVERSATION_COLUMNS: Final = "id, uid, title, title_source, created, updated, settings, active_leaf_id, deleted_at"


def loads(text: str | None, default: Any) -> Any:
    if not text:
        return default
    try:
        value = json.loads(text)
    except ValueError:
        return default
    return value if isinstance(value, type(default)) else default


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def calls_json(calls: Iterable[Any]) -> str:
    return dumps([tool_call_to_dict(c) for c in calls])


def message_updates(
    *,
    content: str | None = None,
    thinking: str | None = None,
    tool_calls: Iterable[Any] | None = None,
    stats: Any = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Column → stored value for the message fields given; None leaves a column as it is."""
    cols: dict[str, Any] = {}
    if content is not None:
        cols["content"] = content
    if thinking is not None:
        cols["thinking"] = thinking
    if tool_calls is not None:
        cols["tool_calls"] = calls_json(tool_calls)
    if stats is not None:
        cols["stats"] = dumps(stats_to_dict(stats))
    if extra is not None:
        cols["extra"] = dumps(dict(extra))
    return cols


def set_clause(cols: Mapping[str, Any]) -> tuple[str, list[Any]]:
    """The "a = ?, b = ?" of an UPDATE of these columns, and its parameters (column names are ours, never input)."""
    return ", ".join(f"{c} = ?" for c in cols), list(cols.values())


def decode_message(r: Sequence[Any]) -> MessageRow:
    return MessageRow(
        id=r[0],
        conversation_id=r[1],
        parent_id=r[2],
        role=r[3],
        content=r[4] or "",
        thinking=r[5] or "",
        tool_calls=loads(r[6], []),
        tool_name=r[7],
        tool_call_id=r[8],
        effort=r[9],
        stats=loads(r[10], {}),
        model=r[11],
        status=r[12],
        created=r[13],
        updated=r[14],
        visited=r[15],
        extra=loads(r[16], {}),
    )


def decode_conversation(r: Sequence[Any]) -> ConversationRow:
    return ConversationRow(
        id=r[0],
        uid=r[1],
        title=r[2],
        title_source=r[3],
        created=r[4],
        updated=r[5],
        settings=ConversationSettings.from_dict(loads(r[6], {})),
        active_leaf_id=r[7],
        deleted_at=r[8],
    )


def is_corruption(exc: BaseException) -> bool:
    if not isinstance(exc, sqlite3.DatabaseError):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None and (code & 0xFF) in (_SQLITE_CORRUPT, _SQLITE_NOTADB):
        return True
    text = str(exc).lower()
    return "malformed" in text or "not a database" in text


def check_header(path: Path) -> None:
    """Fail fast and clearly on a file that is not SQLite at all (or lost its first page)."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return
    if size == 0:
        return  # SQLite treats an empty file as a new database
    with path.open("rb") as f:
        head = f.read(100)
    if len(head) < 100 or not head.startswith(SQLITE_HEADER):
        raise StoreCorruptError(path, "not a SQLite database: the file header is wrong")


def _connection_settings(db: sqlite3.Connection) -> None:
    db.execute("PRAGMA busy_timeout = 10000")
    db.execute("PRAGMA foreign_keys = ON")
    db.execute("PRAGMA temp_store = MEMORY")
    db.execute("PRAGMA cache_size = -16000")  # 16 MB page cache: a big search stays in memory


def schema_version(db: sqlite3.Connection, path: Path) -> int:
    """The file's schema version; StoreError when a newer Harmonica wrote it."""
    version = int(db.execute("PRAGMA user_version").fetchone()[0])
    latest = len(MIGRATIONS)
    if version > latest:
        raise StoreError(
            f"The conversation database {path} was written by a newer Harmonica (schema {version}, this version "
            f"understands up to {latest}). Update Harmonica to open it."
        )
    return version


def prepare_view(db: sqlite3.Connection, path: Path) -> bool:
    """Set up a read-only connection; returns whether its schema is current (else it needs a migrated copy)."""
    _connection_settings(db)
    return schema_version(db, path) == len(MIGRATIONS)


def prepare(db: sqlite3.Connection, path: Path, *, memory: bool = False) -> list[int]:
    """Set up a writable connection, migrate, and mark answers a dead process left "streaming" as interrupted.

    `memory`: an in-memory database (a temporary store), which has no write-ahead log.
    """
    db.execute("PRAGMA busy_timeout = 10000")
    if not memory:
        mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StoreError(f"The conversation database {path} cannot use write-ahead logging (journal mode {mode}).")
        db.execute("PRAGMA synchronous = NORMAL")
    _connection_settings(db)
    version = schema_version(db, path)
    latest = len(MIGRATIONS)
    if version > 0 and not memory:
        _check_integrity(db, path)
    for target in range(version, latest):
        db.execute("BEGIN IMMEDIATE")
        try:
            MIGRATIONS[target](db)
            db.execute(f"PRAGMA user_version = {target + 1}")
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:  # SQLite ends it itself after a full disk or an I/O error
                db.execute("ROLLBACK")
            raise
    rows = db.execute("UPDATE messages SET status = 'interrupted' WHERE status = 'streaming' RETURNING id").fetchall()
    return sorted(r[0] for r in rows)


def _check_integrity(db: sqlite3.Connection, path: Path) -> None:
    size = path.stat().st_size if path.exists() else 0
    wal = Path(f"{path}-wal")
    page_size = int(db.execute("PRAGMA page_size").fetchone()[0])
    page_count = int(db.execute("PRAGMA page_count").fetchone()[0])
    # Without a WAL the file must hold every page the header counts; a shorter file was truncated.
    if (not wal.exists() or wal.stat().st_size == 0) and size < page_size * page_count:
        raise StoreCorruptError(path, f"the file is truncated: {size} bytes, expected {page_size * page_count}")
    if size <= _QUICK_CHECK_MAX_BYTES:
        result = [r[0] for r in db.execute("PRAGMA quick_check(5)")]
        if result != ["ok"]:
            raise StoreCorruptError(path, "; ".join(str(r) for r in result))
