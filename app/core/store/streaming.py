"""Streaming answers: a row marked "streaming", its tail saved as tokens arrive, finished, or continued after a crash."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from app.core.store.base import guarded, writes
from app.core.store.convert import message_fields
from app.core.store.health import RowRef, StoreUnavailableError
from app.core.store.messages import MessagesMixin
from app.core.store.rows import ACTIVE, MessageRow, StoreError, _Active
from app.core.store.schema import MESSAGE_COLUMNS, decode_message, message_updates, set_clause


class StreamingMixin(MessagesMixin):
    """The life of a generated answer in the store."""

    @writes
    def begin_stream(
        self,
        conversation_id: int,
        *,
        parent_id: int | RowRef | _Active | None = ACTIVE,
        role: str = "assistant",
        effort: str | None = None,
        model: str | None = None,
    ) -> int:
        """Start an answer: an empty message marked "streaming", made the active leaf. Returns its id."""
        return self.add_message(
            conversation_id, role, parent_id=parent_id, effort=effort, model=model, status="streaming"
        ).id

    @writes
    def update_stream(self, message_id: int, content: str, thinking: str = "") -> None:
        """Save the streaming tail (one small committed UPDATE; cheap enough for every 0.5 s)."""
        cur = self.db.execute(
            "UPDATE messages SET content = ?, thinking = ?, updated = ? WHERE id = ? AND status = 'streaming'",
            (content, thinking, time.time(), message_id),
        )
        if cur.rowcount == 0:
            raise StoreError(f"Message {message_id} is not streaming.")

    @writes
    def finish_stream(
        self,
        message_id: int,
        *,
        content: str | None = None,
        thinking: str | None = None,
        tool_calls: Sequence[Any] | None = None,
        stats: Any = None,
        status: str = "complete",
        extra: Mapping[str, Any] | None = None,
    ) -> MessageRow:
        """Commit the finished message (status "complete", or "interrupted"/"error" when cut short)."""
        if status not in ("complete", "interrupted", "error"):
            raise StoreError(f"A finished message cannot have status {status!r}.")
        now = time.time()
        cols: dict[str, Any] = {"status": status, "updated": now}
        cols |= message_updates(content=content, thinking=thinking, tool_calls=tool_calls, stats=stats, extra=extra)
        sets, params = set_clause(cols)
        with self.transaction():
            cur = self.db.execute(f"UPDATE messages SET {sets} WHERE id = ?", (*params, message_id))
            if cur.rowcount == 0:
                raise StoreError(f"Message {message_id} does not exist.")
            self.db.execute(
                "UPDATE conversations SET updated = ? WHERE id = (SELECT conversation_id FROM messages WHERE id = ?)",
                (now, message_id),
            )
        return self.get_message(message_id)

    @writes
    def finish_stream_from(self, message_id: int, message: Any, *, status: str = "complete") -> MessageRow:
        """``finish_stream`` with everything taken from a finished message object (e.g. chat.Message)."""
        f = message_fields(message)
        return self.finish_stream(
            message_id,
            content=f["content"],
            thinking=f["thinking"],
            tool_calls=f["tool_calls"],
            stats=f["stats"],
            status=status,
            extra=f["extra"],
        )

    @writes
    def resume_stream(self, message_id: int) -> MessageRow:
        """Continue an interrupted answer: it becomes "streaming" again; returns it with its partial text."""
        cur = self.db.execute(
            "UPDATE messages SET status = 'streaming', updated = ? WHERE id = ? AND status IN ('interrupted', 'error')",
            (time.time(), message_id),
        )
        if cur.rowcount == 0:
            raise StoreError(f"Message {message_id} is not an interrupted answer.")
        return self.get_message(message_id)

    @guarded
    def interrupted_messages(self, conversation_id: int | None = None) -> list[MessageRow]:
        """Answers cut short (by a crash, or stopped); the UI offers Continue and Regenerate on them."""
        sql = f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE status = 'interrupted'"
        params: tuple[Any, ...] = ()
        if conversation_id is not None:
            sql += " AND conversation_id = ?"
            params = (conversation_id,)
        return [decode_message(r) for r in self.db.execute(sql + " ORDER BY id", params)]


class StreamSaver:
    """Saves a streaming message's tail at most every ``interval`` seconds as text arrives.

    Call ``feed`` with the whole text so far after each token; it writes when the interval has
    passed. ``flush`` writes whatever is newer than the last save.
    """

    def __init__(
        self, store: StreamingMixin, message_id: int, interval: float = 0.5, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.store = store
        self.message_id = message_id
        self.interval = interval
        self._clock = clock
        self._last_save = clock()
        self._saved: tuple[str, str] = ("", "")
        self._pending: tuple[str, str] = ("", "")

    def feed(self, content: str, thinking: str = "") -> bool:
        """Record the current text; returns True when this call saved it."""
        self._pending = (content, thinking)
        if self._clock() - self._last_save >= self.interval:
            return self.flush()
        return False

    def flush(self) -> bool:
        """Write the newest text if it is not saved yet. While the store cannot write, nothing is
        written and False returned: the answer goes on, and is saved whole when it finishes."""
        if self._pending == self._saved:
            self._last_save = self._clock()
            return False
        self._last_save = self._clock()
        try:
            self.store.update_stream(self.message_id, *self._pending)
        except StoreUnavailableError:
            return False
        self._saved = self._pending
        return True
