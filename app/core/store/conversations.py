"""Conversations: create, list newest first, rename and auto-titles, soft delete/restore/purge, per-conversation settings."""

from __future__ import annotations

import dataclasses
import time
import uuid
from typing import Any

from app.core.store.base import StoreBase, guarded, writes
from app.core.store.convert import auto_title, clean_generated_title
from app.core.store.rows import ConversationRow, ConversationSettings, StoreError
from app.core.store.schema import CONVERSATION_COLUMNS, decode_conversation, dumps


class ConversationsMixin(StoreBase):
    """Conversation rows of the store."""

    @writes
    def create_conversation(
        self, title: str = "", settings: ConversationSettings | None = None, *, created: float | None = None
    ) -> ConversationRow:
        now = time.time() if created is None else created
        source = "user" if title.strip() else "auto"
        cur = self.db.execute(
            "INSERT INTO conversations (uid, title, title_source, created, updated, settings) VALUES (?, ?, ?, ?, ?, ?)",
            (uuid.uuid4().hex, title.strip(), source, now, now, dumps((settings or ConversationSettings()).to_dict())),
        )
        return self.get_conversation(int(cur.lastrowid or 0))

    @guarded
    def get_conversation(self, conversation_id: int) -> ConversationRow:
        row = self.db.execute(
            f"SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE id = ?", (conversation_id,)
        ).fetchone()
        if row is None:
            raise StoreError(f"Conversation {conversation_id} does not exist.")
        conv = decode_conversation(row)
        kept_settings = self._soft_conversation_settings.get(conversation_id)
        kept_leaf = self._soft_leaves.get(conversation_id)
        if kept_settings is not None or kept_leaf is not None:  # changed while the store could not write
            conv = dataclasses.replace(
                conv,
                settings=kept_settings if kept_settings is not None else conv.settings,
                active_leaf_id=kept_leaf[0] if kept_leaf is not None else conv.active_leaf_id,
            )
        return conv

    @guarded
    def list_conversations(
        self, limit: int = 50, before: tuple[float, int] | None = None, *, deleted: bool = False
    ) -> list[ConversationRow]:
        """Newest first (by last activity). Page with ``before=(row.updated, row.id)`` of the last row."""
        where = "deleted_at IS NOT NULL" if deleted else "deleted_at IS NULL"
        params: list[Any] = []
        if before is not None:
            where += " AND (updated < ? OR (updated = ? AND id < ?))"
            params += [before[0], before[0], before[1]]
        rows = self.db.execute(
            f"SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE {where} ORDER BY updated DESC, id DESC LIMIT ?",
            (*params, limit),
        ).fetchall()
        return [decode_conversation(r) for r in rows]

    @guarded
    def count_conversations(self, *, deleted: bool = False) -> int:
        where = "deleted_at IS NOT NULL" if deleted else "deleted_at IS NULL"
        return int(self.db.execute(f"SELECT count(*) FROM conversations WHERE {where}").fetchone()[0])

    @writes
    def rename_conversation(self, conversation_id: int, title: str) -> None:
        """A user rename; an empty title returns to the automatic one."""
        title = " ".join(title.split())
        # bump=False: renaming is not activity, the conversation keeps its place in the list.
        if title:
            self._update_conv(conversation_id, "title = ?, title_source = 'user'", (title,), bump=False)
        else:
            first = self.db.execute(
                "SELECT content FROM messages WHERE conversation_id = ? AND role = 'user' ORDER BY id LIMIT 1",
                (conversation_id,),
            ).fetchone()
            self._update_conv(
                conversation_id,
                "title = ?, title_source = 'auto'",
                (auto_title(first[0]) if first else "",),
                bump=False,
            )

    @writes
    def set_generated_title(self, conversation_id: int, title: str) -> bool:
        """Hook for a model-written title. Never overrides a user's rename; returns whether it was set."""
        clean = clean_generated_title(title)
        if not clean:
            return False
        cur = self.db.execute(
            "UPDATE conversations SET title = ?, title_source = 'model' WHERE id = ? AND title_source != 'user'",
            (clean, conversation_id),
        )
        return cur.rowcount > 0

    @writes
    def delete_conversation(self, conversation_id: int) -> None:
        """Soft delete: hidden from lists and search until ``restore_conversation`` or a purge."""
        self._update_conv(conversation_id, "deleted_at = ?", (time.time(),), bump=False)

    @writes
    def restore_conversation(self, conversation_id: int) -> None:
        """Undo a delete."""
        self._update_conv(conversation_id, "deleted_at = NULL", (), bump=False)

    @writes
    def purge_deleted(self, older_than_s: float = 0.0) -> int:
        """Permanently remove conversations deleted more than ``older_than_s`` seconds ago."""
        cutoff = time.time() - older_than_s
        with self.transaction():
            ids = [
                r[0]
                for r in self.db.execute(
                    "SELECT id FROM conversations WHERE deleted_at IS NOT NULL AND deleted_at <= ?", (cutoff,)
                )
            ]
            for cid in ids:
                self._hard_delete(cid)
        return len(ids)

    @writes
    def purge_conversation(self, conversation_id: int) -> None:
        with self.transaction():
            self._hard_delete(conversation_id)

    def _hard_delete(self, conversation_id: int) -> None:
        # Clear the leaf pointer first, so deleting its message needs no ON DELETE SET NULL step.
        self.db.execute("UPDATE conversations SET active_leaf_id = NULL WHERE id = ?", (conversation_id,))
        self.db.execute("DELETE FROM messages WHERE conversation_id = ?", (conversation_id,))
        self.db.execute("DELETE FROM conversations WHERE id = ?", (conversation_id,))

    @guarded
    def conversation_settings(self, conversation_id: int) -> ConversationSettings:
        return self.get_conversation(conversation_id).settings

    @guarded
    def set_conversation_settings(self, conversation_id: int, settings: ConversationSettings) -> None:
        """A soft write: while the store cannot write, the settings are kept in memory until it can."""
        self.get_conversation(conversation_id)  # a missing conversation is an error now, not at recovery

        def keep() -> None:
            self._soft_conversation_settings[conversation_id] = settings

        self._soft_write(lambda: self._write_conversation_settings(conversation_id, settings), keep)

    def _write_conversation_settings(self, conversation_id: int, settings: Any) -> None:
        self._update_conv(conversation_id, "settings = ?", (dumps(settings.to_dict()),), bump=False)

    def _update_conv(self, conversation_id: int, assignments: str, params: tuple[Any, ...], bump: bool = True) -> None:
        if bump:
            assignments += ", updated = ?"
            params = (*params, time.time())
        cur = self.db.execute(f"UPDATE conversations SET {assignments} WHERE id = ?", (*params, conversation_id))
        if cur.rowcount == 0:
            raise StoreError(f"Conversation {conversation_id} does not exist.")
