"""The store's foundation: one connection, one re-entrant lock, nested transactions, and the guard of public calls."""

from __future__ import annotations

import functools
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Concatenate, ParamSpec, TypeVar

from app.core.store.rows import StoreCorruptError, StoreError
from app.core.store.schema import is_corruption

_S = TypeVar("_S", bound="StoreBase")
_P = ParamSpec("_P")
_R = TypeVar("_R")


def guarded(method: Callable[Concatenate[_S, _P], _R]) -> Callable[Concatenate[_S, _P], _R]:
    """Run a public method under the store's lock; turn SQLite corruption into StoreCorruptError."""

    @functools.wraps(method)
    def wrapper(self: _S, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        with self._lock:
            if self._db is None:
                raise StoreError("The conversation store is closed.")
            try:
                return method(self, *args, **kwargs)
            except sqlite3.DatabaseError as exc:
                if is_corruption(exc):
                    raise StoreCorruptError(self.path, str(exc)) from exc
                raise

    return wrapper


class StoreBase:
    """The connection every part of the store shares. Thread-safe: one lock serialises all calls."""

    def __init__(self, db: sqlite3.Connection, path: Path, interrupted_on_open: list[int]) -> None:
        self._db: sqlite3.Connection | None = db
        self.path = path
        self._lock = threading.RLock()
        self._tx_depth = 0
        # Rows that were "streaming" when the store was opened: the previous run died mid-answer.
        self.interrupted_on_open: tuple[int, ...] = tuple(interrupted_on_open)

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                try:
                    self._db.execute("PRAGMA optimize")
                except sqlite3.DatabaseError:
                    pass
                self._db.close()
                self._db = None

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise StoreError("The conversation store is closed.")
        return self._db

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Group writes into one atomic commit; nests (inner blocks join the outer transaction)."""
        with self._lock:
            db = self.db
            if self._tx_depth == 0:
                db.execute("BEGIN IMMEDIATE")
            self._tx_depth += 1
            try:
                yield
            except BaseException:
                self._tx_depth -= 1
                if self._tx_depth == 0:
                    db.execute("ROLLBACK")
                raise
            else:
                self._tx_depth -= 1
                if self._tx_depth == 0:
                    db.execute("COMMIT")
