"""The Store itself: opening (creating, migrating, checking) a database file, recovery, and the parts put together."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any, Final

from app.core.store.base import guarded
from app.core.store.branches import BranchesMixin
from app.core.store.prefs import PrefsMixin
from app.core.store.recovery import move_aside, restore_salvage, salvage
from app.core.store.rows import DB_FILENAME, RecoveryReport, StoreCorruptError, StoreError
from app.core.store.schema import check_header, is_corruption, prepare
from app.core.store.search import SearchMixin
from app.core.store.streaming import StreamingMixin

# Conversations deleted longer ago than this are purged when the store opens.
DEFAULT_PURGE_AFTER_S: Final = 30 * 24 * 3600.0


def default_store_path() -> Path:
    """The database file in the app's data folder (HARMONICA_HOME when set)."""
    from app.core.paths import data_dir

    return data_dir() / DB_FILENAME


class Store(BranchesMixin, StreamingMixin, SearchMixin, PrefsMixin):
    """Conversations, message trees, settings and presets in one SQLite file. Thread-safe (one lock).

    Each job lives in its own module (conversations, messages, branches, streaming, search,
    prefs); this class puts them together and opens the file.
    """

    @classmethod
    def open(cls, path: str | Path | None = None, *, purge_after_s: float | None = DEFAULT_PURGE_AFTER_S) -> Store:
        """Open (creating or migrating) the store. Raises StoreCorruptError for a damaged file."""
        p = Path(path) if path is not None else default_store_path()
        p.parent.mkdir(parents=True, exist_ok=True)
        check_header(p)
        try:
            db = sqlite3.connect(p, isolation_level=None, check_same_thread=False, timeout=10.0)
        except sqlite3.DatabaseError as exc:
            if is_corruption(exc):
                raise StoreCorruptError(p, str(exc)) from exc
            raise StoreError(f"Cannot open the conversation database {p}: {exc}") from exc
        try:
            interrupted = prepare(db, p)
        except sqlite3.DatabaseError as exc:
            db.close()
            if is_corruption(exc):
                raise StoreCorruptError(p, str(exc)) from exc
            raise StoreError(f"Cannot open the conversation database {p}: {exc}") from exc
        except BaseException:
            db.close()
            raise
        store = cls(db, p, interrupted)
        if purge_after_s is not None:
            store.purge_deleted(older_than_s=purge_after_s)
        return store

    @classmethod
    def open_or_recover(cls, path: str | Path | None = None, **kwargs: Any) -> tuple[Store, RecoveryReport | None]:
        """Open the store; if the file is damaged, move it aside, salvage what is readable, start fresh.

        The app always gets a working store; a RecoveryReport (with a message for the user) says
        when recovery happened.
        """
        p = Path(path) if path is not None else default_store_path()
        try:
            return cls.open(p, **kwargs), None
        except StoreCorruptError as exc:
            return recover_corrupt(p, exc.detail, **kwargs)

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @guarded
    def stats(self) -> dict[str, int]:
        """Row counts, for diagnostics and the recovery report."""
        return {
            "conversations": int(self.db.execute("SELECT count(*) FROM conversations").fetchone()[0]),
            "messages": int(self.db.execute("SELECT count(*) FROM messages").fetchone()[0]),
            "presets": int(self.db.execute("SELECT count(*) FROM presets").fetchone()[0]),
        }


def recover_corrupt(path: Path, error: str = "damaged", **open_kwargs: Any) -> tuple[Store, RecoveryReport]:
    """Move a damaged database aside (timestamped backup), salvage readable rows into a fresh store."""
    backup = move_aside(path)
    salvaged = salvage(backup)
    store = Store.open(path, **open_kwargs)
    conversations, messages = restore_salvage(store, salvaged)
    return store, RecoveryReport(backup, conversations, messages, error)
