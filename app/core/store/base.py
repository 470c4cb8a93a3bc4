"""The store's foundation: one connection, one re-entrant lock, nested transactions, the guards of public calls,
and the read-only state the store falls into when its disk cannot be written (with the writes it keeps for later)."""

from __future__ import annotations

import functools
import logging
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

from app.core.store.health import PendingWrite, RowRef, StoreProblem, StoreUnavailableError, classify
from app.core.store.rows import StoreCorruptError, StoreError
from app.core.store.schema import is_corruption

log = logging.getLogger(__name__)

_S = TypeVar("_S", bound="StoreBase")
_P = ParamSpec("_P")
_R = TypeVar("_R")

# A listener hears the store's problem whenever it changes (None: it can write again) and when a
# write is kept for later. Called on the thread that noticed, under the store's lock: listeners
# only hand the news on.
Listener = Callable[[StoreProblem | None], None]


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


def writes(method: Callable[Concatenate[_S, _P], _R]) -> Callable[Concatenate[_S, _P], _R]:
    """``guarded`` for a method that changes the database.

    While the store is read-only the call is refused at once (StoreUnavailableError, no SQL run, so
    nothing is half-written and nothing slow happens per click). A write that fails because of the
    disk (full, I/O error, read-only, locked) makes the store read-only and raises the same error.
    """

    @functools.wraps(method)
    def wrapper(self: _S, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        with self._lock:
            if self._db is None:
                raise StoreError("The conversation store is closed.")
            if self.read_only and not self._replaying:
                assert self.problem is not None
                raise StoreUnavailableError(self.problem)
            try:
                return method(self, *args, **kwargs)
            except sqlite3.DatabaseError as exc:
                raise self._write_failed(exc) from exc

    return wrapper


class StoreBase:
    """The connection every part of the store shares. Thread-safe: one lock serialises all calls."""

    def __init__(
        self,
        db: sqlite3.Connection,
        path: Path,
        interrupted_on_open: list[int],
        problem: StoreProblem | None = None,
    ) -> None:
        self._db: sqlite3.Connection | None = db
        self.path = path
        self._lock = threading.RLock()
        self._tx_depth = 0
        # Rows that were "streaming" when the store was opened: the previous run died mid-answer.
        self.interrupted_on_open: tuple[int, ...] = tuple(interrupted_on_open)
        # Why the database cannot be written now (None: it can). See health.py.
        self.problem: StoreProblem | None = problem
        self._listeners: list[Listener] = []
        self._pending: list[PendingWrite] = []
        # Small writes that never fail for the caller: app settings, a chat's settings, the branch
        # shown. While read-only they are kept here (and read back from here), written on recovery.
        self._soft_settings: dict[str, Any] = {}
        self._soft_conversation_settings: dict[int, Any] = {}
        self._soft_leaves: dict[int, tuple[int, float]] = {}
        self._replaying = False  # retry() is writing what was kept: its writes pass the refusal

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                if not self.read_only:
                    try:
                        self._db.execute("PRAGMA optimize")
                    except sqlite3.DatabaseError:
                        pass
                self._db.close()
                self._db = None
            self._close_extra()

    def _close_extra(self) -> None:
        """What a subclass holds beside the connection (the instance lock)."""

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise StoreError("The conversation store is closed.")
        return self._db

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Group writes into one atomic commit; nests (inner blocks join the outer transaction).

        Refused at once while the store is read-only; a BEGIN or COMMIT that fails because of the
        disk makes it read-only (StoreUnavailableError), like any other write.
        """
        with self._lock:
            db = self.db
            if self._tx_depth == 0:
                if self.read_only and not self._replaying:
                    raise self.refusal()
                try:
                    db.execute("BEGIN IMMEDIATE")
                except sqlite3.DatabaseError as exc:
                    raise self._write_failed(exc) from exc
            self._tx_depth += 1
            try:
                yield
            except BaseException:
                self._tx_depth -= 1
                if self._tx_depth == 0:
                    _rollback(db)
                raise
            else:
                self._tx_depth -= 1
                if self._tx_depth == 0:
                    try:
                        db.execute("COMMIT")
                    except sqlite3.DatabaseError as exc:
                        _rollback(db)  # a failed COMMIT (disk full) may leave the transaction open
                        raise self._write_failed(exc) from exc

    # --- the read-only state ----------------------------------------------------------------------
    @property
    def read_only(self) -> bool:
        """Writes are refused now (reading, searching and the soft writes keep working)."""
        return self.problem is not None and not self.problem.temporary

    @property
    def temporary(self) -> bool:
        """This session's conversations live in a temporary store (the real file cannot be used)."""
        return self.problem is not None and self.problem.temporary

    @property
    def pending(self) -> tuple[str, ...]:
        """What is kept in memory until it can be written (one entry per write: "an answer", …)."""
        with self._lock:
            return tuple(p.what for p in self._pending)

    def add_listener(self, listener: Listener) -> None:
        with self._lock:
            self._listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    def refusal(self) -> StoreUnavailableError:
        """The error a refused write raises (for callers that refuse before they reach the store)."""
        assert self.problem is not None
        return StoreUnavailableError(self.problem)

    def _set_problem(self, problem: StoreProblem | None) -> None:
        with self._lock:
            before = self.problem
            self.problem = problem
            if problem is not None and (before is None or before.kind != problem.kind):
                log.error("The conversation store cannot write (%s): %s", problem.kind, problem.detail)
            elif problem is None and before is not None:
                log.info("The conversation store can write again")
            if (before is None) != (problem is None) or (before and problem and before.kind != problem.kind):
                self._tell(problem)

    def _tell(self, problem: StoreProblem | None) -> None:
        for listener in list(self._listeners):
            try:
                listener(problem)
            except Exception:  # a listener's bug must not break a write path
                log.exception("A store listener failed")

    def _write_failed(self, exc: sqlite3.DatabaseError) -> BaseException:
        """The error to raise for a write that SQLite refused; disk trouble makes the store read-only."""
        if is_corruption(exc):
            return StoreCorruptError(self.path, str(exc))
        problem = classify(exc, self.path)
        if problem is None:
            return exc  # not about the disk: a bug, raised as it is
        self._set_problem(problem)
        return StoreUnavailableError(problem)

    def _soft_write(self, write: Callable[[], None], keep: Callable[[], None]) -> None:
        """A write the caller never sees fail: done now if possible, else kept (`keep`) until recovery."""
        with self._lock:
            if self.read_only:
                keep()
                return
            try:
                write()
            except sqlite3.DatabaseError as exc:
                error = self._write_failed(exc)
                if not isinstance(error, StoreUnavailableError):
                    raise error from exc
                keep()

    # --- writes kept for later --------------------------------------------------------------------
    def defer(self, what: str, run: Callable[[], None]) -> None:
        """Keep a write that failed (or was refused) to replay it when the store can write again.

        `run` is called under the store's lock, in the order deferred, once the disk can take
        writes; it may use ``resolve`` on RowRefs of writes deferred before it.
        """
        with self._lock:
            self._pending.append(PendingWrite(what, run))
            log.warning("Kept in memory until it can be saved: %s", what)
            self._tell(self.problem)  # what is kept is part of what the user is told

    @staticmethod
    def resolve(ref: int | RowRef | None) -> int | None:
        """The row id behind `ref`; StoreError when the row it stands for is not written yet."""
        if isinstance(ref, RowRef):
            if ref.id is None:
                raise StoreError("A message this one follows is not saved yet.")
            return ref.id
        return ref

    def retry(self) -> bool:
        """Try to write again: reopen the real file when it could not be used, else write what was
        kept. Returns whether the store can write now (then listeners hear None)."""
        with self._lock:
            if self._db is None or self.problem is None:
                return self._db is not None
            if not self._reconnect():
                return False
            try:
                self._flush_kept()
            except StoreUnavailableError:
                return False
            self._set_problem(None)
            return True

    def _reconnect(self) -> bool:
        """Make the connection a writable one to the real file; the base keeps the one it has."""
        return True

    def _flush_kept(self) -> None:
        """Write the soft writes and the deferred writes, in order; stop at the first that fails.

        The problem stays set meanwhile, so callers on other threads are still refused; only the
        replay passes the guards (``_replaying``).
        """
        db = self.db
        try:
            db.execute("BEGIN IMMEDIATE")
            # A real write of one page: proves the disk takes writes before anything is replayed.
            version = int(db.execute("PRAGMA user_version").fetchone()[0])
            db.execute(f"PRAGMA user_version = {version}")
            db.execute("COMMIT")
        except sqlite3.DatabaseError as exc:
            _rollback(db)
            self._still_failing(exc)
        self._replaying = True
        try:
            for key, value in list(self._soft_settings.items()):
                self._write_setting(key, value)
                del self._soft_settings[key]
            for cid, settings in list(self._soft_conversation_settings.items()):
                self._write_conversation_settings(cid, settings)
                del self._soft_conversation_settings[cid]
            for cid, (leaf, visited) in list(self._soft_leaves.items()):
                self._write_leaf(cid, leaf, visited)
                del self._soft_leaves[cid]
            while self._pending:
                head = self._pending[0]
                try:
                    head.run()
                except StoreUnavailableError:
                    raise
                except StoreError as exc:
                    # What it belongs to is gone (or it was never valid): dropped, and said in the log.
                    log.error("A kept write could not be saved and is dropped: %s (%s)", head.what, exc)
                self._pending.pop(0)
        except sqlite3.DatabaseError as exc:
            self._still_failing(exc)
        finally:
            self._replaying = False

    def _still_failing(self, exc: sqlite3.DatabaseError) -> None:
        error = self._write_failed(exc)
        if isinstance(error, StoreUnavailableError):
            raise error from exc
        raise error

    # Overridden by the mixins that own these tables (prefs, conversations, branches).
    def _write_setting(self, key: str, value: Any) -> None:
        raise NotImplementedError

    def _write_conversation_settings(self, conversation_id: int, settings: Any) -> None:
        raise NotImplementedError

    def _write_leaf(self, conversation_id: int, leaf: int, visited: float) -> None:
        raise NotImplementedError


def _rollback(db: sqlite3.Connection) -> None:
    """Roll back if a transaction is still open: SQLite ends one itself after a full disk or I/O error."""
    if db.in_transaction:
        try:
            db.execute("ROLLBACK")
        except sqlite3.DatabaseError:
            log.warning("Rolling back a failed transaction failed too", exc_info=True)
