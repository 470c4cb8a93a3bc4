"""The Store itself: opening (creating, migrating, checking) a database file, recovery, and the parts put together.

``Store.open_app`` is how the app opens the user's file whatever state its disk is in: it never
raises for a problem of the disk or the path. It takes the instance lock, opens the file for
writing (salvaging a damaged one), and when that cannot be done it falls back to a read-only view
of the file (another Harmonica has it, a read-only disk, no permission, a full disk) or to a
temporary store in memory (the path is a folder, its folder cannot be made, the file cannot be
read). ``store.problem`` then says why, in words for the user, and ``store.retry()`` tries the real
file again.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote

from app.core.store import health
from app.core.store.base import guarded
from app.core.store.branches import BranchesMixin
from app.core.store.health import StoreProblem, StoreUnavailableError
from app.core.store.instance import InstanceLock, InstanceLocked
from app.core.store.prefs import PrefsMixin
from app.core.store.recovery import move_aside, restore_salvage, salvage
from app.core.store.rows import DB_FILENAME, RecoveryReport, StoreCorruptError, StoreError
from app.core.store.schema import check_header, is_corruption, prepare, prepare_view
from app.core.store.search import SearchMixin
from app.core.store.streaming import StreamingMixin

log = logging.getLogger(__name__)

# Conversations deleted longer ago than this are purged when the store opens.
DEFAULT_PURGE_AFTER_S: Final = 30 * 24 * 3600.0


def default_store_path() -> Path:
    """The database file in the app's data folder (HARMONICA_HOME when set)."""
    from app.core.paths import data_dir

    return data_dir(ensure=False) / DB_FILENAME


def _connect(target: str | Path, *, uri: bool = False) -> sqlite3.Connection:
    return sqlite3.connect(target, isolation_level=None, check_same_thread=False, timeout=10.0, uri=uri)


class Store(BranchesMixin, StreamingMixin, SearchMixin, PrefsMixin):
    """Conversations, message trees, settings and presets in one SQLite file. Thread-safe (one lock).

    Each job lives in its own module (conversations, messages, branches, streaming, search,
    prefs); this class puts them together and opens the file.
    """

    # The instance lock (held for the app's store), and whether the connection is a stand-in for
    # the real writable file (a read-only view, or a temporary store) that retry() replaces.
    _instance_lock: InstanceLock | None = None
    _stand_in: bool = False
    # Conversations copied from a temporary store into the real file by the last retry: old id → new id.
    carried_over: dict[int, int]

    @classmethod
    def open(
        cls,
        path: str | Path | None = None,
        *,
        purge_after_s: float | None = DEFAULT_PURGE_AFTER_S,
        lock: bool = False,
    ) -> Store:
        """Open (creating or migrating) the store. Raises StoreCorruptError for a damaged file.

        `lock` takes the instance lock first (StoreUnavailableError when another Harmonica holds it).
        """
        p = Path(path) if path is not None else default_store_path()
        p.parent.mkdir(parents=True, exist_ok=True)
        if p.is_dir():
            raise StoreUnavailableError(health.not_a_file(p))
        instance = InstanceLock(p) if lock else None
        if instance is not None:
            try:
                instance.acquire()
            except InstanceLocked as exc:
                raise StoreUnavailableError(health.in_use(p, str(exc))) from exc
        try:
            store = cls._open_file(p, purge_after_s)
        except BaseException:
            if instance is not None:
                instance.release()
            raise
        store._instance_lock = instance
        return store

    @classmethod
    def _open_file(cls, p: Path, purge_after_s: float | None) -> Store:
        check_header(p)
        try:
            db = _connect(p)
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
        store.carried_over = {}
        if purge_after_s is not None:
            try:
                store.purge_deleted(older_than_s=purge_after_s)
            except StoreUnavailableError:
                pass  # a full disk at start: purging waits for the next start; the store says why
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

    @classmethod
    def open_app(
        cls, path: str | Path | None = None, *, purge_after_s: float | None = DEFAULT_PURGE_AFTER_S
    ) -> tuple[Store, RecoveryReport | None]:
        """The app's store: the user's file, locked for this instance, recovered when damaged; never
        fails for the disk or the path. When the file cannot be written, `store.problem` says why and
        the store is a read-only view of it, or a temporary store in memory."""
        p = Path(path) if path is not None else default_store_path()
        try:
            return cls.open_or_recover(p, purge_after_s=purge_after_s, lock=True)
        except StoreUnavailableError as exc:
            problem = exc.problem
        except (StoreError, OSError) as exc:
            problem = cls._problem_opening(p, exc)
        log.error("The conversation database cannot be opened for writing: %s", problem.detail or problem.kind)
        if problem.temporary:
            return cls.open_temporary(p, problem), None
        return cls.open_view(p, problem), None

    @staticmethod
    def _problem_opening(p: Path, exc: BaseException) -> StoreProblem:
        if isinstance(exc, OSError) and not p.parent.is_dir():
            return health.no_folder(p, exc)
        if isinstance(exc, OSError) and exc.filename is not None and Path(exc.filename) == Path(f"{p}.lock"):
            return health.read_only(p, str(exc))  # the lock file cannot be made: the folder is not writable
        return health.from_open_error(p, exc)

    @classmethod
    def open_temporary(cls, path: Path, problem: StoreProblem) -> Store:
        """An empty store in memory standing in for `path` this session (`problem` says why)."""
        db = _connect(":memory:")
        prepare(db, path, memory=True)
        store = cls(db, path, [], problem)
        store.carried_over = {}
        store._stand_in = True
        return store

    @classmethod
    def open_view(cls, path: Path, problem: StoreProblem) -> Store:
        """A read-only view of `path` (`problem` says why it cannot be written); a temporary store
        when the file cannot even be read."""
        try:
            db = cls._read_only_connection(path)
        except (StoreError, OSError, sqlite3.Error) as exc:
            log.error("The conversation database cannot be read either", exc_info=exc)
            return cls.open_temporary(path, _unviewable(path, problem, exc))
        store = cls(db, path, [], problem)
        store.carried_over = {}
        store._stand_in = True
        return store

    @staticmethod
    def _read_only_connection(path: Path) -> sqlite3.Connection:
        check_header(path)
        if not path.exists():
            raise FileNotFoundError(2, "No such file", str(path))
        url = "file:" + quote(str(path.resolve()))
        db: sqlite3.Connection | None = None
        for query in ("?mode=ro", "?immutable=1"):  # immutable: a read-only disk without the -shm file
            try:
                db = _connect(url + query, uri=True)
                current = prepare_view(db, path)
                break
            except sqlite3.DatabaseError as exc:
                if db is not None:
                    db.close()
                    db = None
                if is_corruption(exc):
                    raise StoreCorruptError(path, str(exc)) from exc
                last: sqlite3.Error = exc
        if db is None:
            raise last
        if not current:  # an older schema: migrate a copy in memory (the file itself is not written)
            mem = _connect(":memory:")
            db.backup(mem)
            db.close()
            prepare(mem, path, memory=True)
            db = mem
        return db

    # --- trying the real file again ---------------------------------------------------------------
    def _reconnect(self) -> bool:
        """When this store stands in for the real file, open the real one for writing and take its
        connection; a temporary store's conversations are copied into it."""
        if not self._stand_in:
            return True
        try:
            real = type(self).open_or_recover(self.path, lock=True)[0]
        except StoreUnavailableError as exc:
            self._set_problem(exc.problem)
            return False
        except (StoreError, OSError) as exc:
            self._set_problem(self._problem_opening(self.path, exc))
            return False
        moved: dict[int, int] = {}
        if self.temporary:
            moved = _copy_conversations(self, real)
        old = self._db
        self._db, real._db = real._db, None
        self._instance_lock, real._instance_lock = real._instance_lock, None
        self.interrupted_on_open = real.interrupted_on_open
        self._stand_in = False
        self.carried_over = moved
        if old is not None:
            old.close()
        log.info("The conversation database %s is writable again", self.path)
        return True

    def _close_extra(self) -> None:
        if self._instance_lock is not None:
            self._instance_lock.release()
            self._instance_lock = None

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


def _unviewable(path: Path, problem: StoreProblem, exc: BaseException) -> StoreProblem:
    """Why not even a read-only view of `path` can be shown (the problem of the temporary store instead)."""
    if isinstance(exc, StoreCorruptError):
        return health.unusable(path, f"it is damaged, and it cannot be repaired while it cannot be written: {exc}")
    if not path.exists():
        return health.session_only(problem, path)  # nothing to show yet: the same words, and "this session only"
    viewed = health.from_open_error(path, exc)
    return viewed if viewed.temporary else health.unusable(path, str(exc))


def _copy_conversations(source: Store, target: Store) -> dict[int, int]:
    """Copy every conversation of `source` into `target` (ids change); returns old id → new id."""
    moved: dict[int, int] = {}
    for row in source.db.execute("SELECT id FROM conversations ORDER BY id").fetchall():
        conv = source.get_conversation(int(row[0]))
        moved[conv.id] = target.insert_conversation_tree(
            uid=conv.uid,
            title=conv.title,
            title_source=conv.title_source,
            created=conv.created,
            updated=conv.updated,
            settings=conv.settings,
            messages=source.conversation_messages(conv.id),
            active_leaf_id=conv.active_leaf_id,
            deleted_at=conv.deleted_at,
        )
    return moved


def recover_corrupt(path: Path, error: str = "damaged", **open_kwargs: Any) -> tuple[Store, RecoveryReport]:
    """Move a damaged database aside (timestamped backup), salvage readable rows into a fresh store."""
    backup = move_aside(path)
    salvaged = salvage(backup)
    store = Store.open(path, **open_kwargs)
    conversations, messages = restore_salvage(store, salvaged)
    return store, RecoveryReport(backup, conversations, messages, error)
