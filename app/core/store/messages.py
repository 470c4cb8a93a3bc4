"""Messages in their tree: add, read, update and delete messages, walk the tree, insert a whole conversation (import)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from app.core.store.base import guarded, writes
from app.core.store.conversations import ConversationsMixin
from app.core.store.convert import auto_title, message_fields, stats_to_dict
from app.core.store.health import RowRef
from app.core.store.rows import (
    ACTIVE,
    ROLES,
    STATUSES,
    TITLE_SOURCES,
    ConversationSettings,
    MessageRow,
    StoreError,
    _Active,
)
from app.core.store.schema import (
    INSERT_MESSAGE,
    MESSAGE_COLUMNS,
    calls_json,
    decode_message,
    dumps,
    message_updates,
    set_clause,
)


class MessagesMixin(ConversationsMixin):
    """Message rows of the store and the tree they form through ``parent_id``."""

    @writes
    def add_message(
        self,
        conversation_id: int,
        role: str,
        content: str = "",
        *,
        parent_id: int | RowRef | _Active | None = ACTIVE,
        thinking: str = "",
        tool_calls: Sequence[Any] = (),
        tool_name: str | None = None,
        tool_call_id: str | None = None,
        effort: str | None = None,
        stats: Any = None,
        model: str | None = None,
        status: str = "complete",
        extra: Mapping[str, Any] | None = None,
        make_active: bool = True,
        created: float | None = None,
    ) -> MessageRow:
        """Insert and commit one message (by default under the active leaf, becoming the new leaf).

        `parent_id` may be a RowRef of a message kept for later (written before this one).
        """
        if role not in ROLES:
            raise StoreError(f"Unknown message role {role!r}; expected one of {', '.join(ROLES)}.")
        if status not in STATUSES:
            raise StoreError(f"Unknown message status {status!r}; expected one of {', '.join(STATUSES)}.")
        now = time.time() if created is None else created
        with self.transaction():
            conv = self.get_conversation(conversation_id)
            parent = conv.active_leaf_id if isinstance(parent_id, _Active) else self.resolve(parent_id)
            if parent is not None:
                prow = self.db.execute("SELECT conversation_id FROM messages WHERE id = ?", (parent,)).fetchone()
                if prow is None or prow[0] != conversation_id:
                    raise StoreError(f"Message {parent} is not in conversation {conversation_id}.")
            cur = self.db.execute(
                INSERT_MESSAGE,
                (
                    conversation_id,
                    parent,
                    role,
                    content,
                    thinking,
                    calls_json(tool_calls),
                    tool_name,
                    tool_call_id,
                    effort,
                    dumps(stats_to_dict(stats)),
                    model,
                    status,
                    now,
                    now,
                    now,
                    dumps(dict(extra or {})),
                ),
            )
            mid = int(cur.lastrowid or 0)
            sets = "updated = ?"
            params: list[Any] = [now]
            if make_active:
                sets += ", active_leaf_id = ?"
                params.append(mid)
            if role == "user" and conv.title_source == "auto" and not conv.title:
                sets += ", title = ?"
                params.append(auto_title(content))
            self.db.execute(f"UPDATE conversations SET {sets} WHERE id = ?", (*params, conversation_id))
        return self.get_message(mid)

    @writes
    def add_message_from(
        self, conversation_id: int, message: Any, *, parent_id: int | _Active | None = ACTIVE
    ) -> MessageRow:
        """Commit a finished message taken from any object with message fields (e.g. chat.Message)."""
        return self.add_message(conversation_id, parent_id=parent_id, **message_fields(message))

    @guarded
    def get_message(self, message_id: int) -> MessageRow:
        row = self.db.execute(f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE id = ?", (message_id,)).fetchone()
        if row is None:
            raise StoreError(f"Message {message_id} does not exist.")
        return decode_message(row)

    @writes
    def update_message(
        self,
        message_id: int,
        *,
        content: str | None = None,
        thinking: str | None = None,
        stats: Any = None,
        extra: Mapping[str, Any] | None = None,
    ) -> MessageRow:
        """Change a message in place (no branch). Use ``edit_user_message`` for edit-and-resend."""
        cols = {"updated": time.time(), **message_updates(content=content, thinking=thinking, stats=stats, extra=extra)}
        sets, params = set_clause(cols)
        cur = self.db.execute(f"UPDATE messages SET {sets} WHERE id = ?", (*params, message_id))
        if cur.rowcount == 0:
            raise StoreError(f"Message {message_id} does not exist.")
        return self.get_message(message_id)

    @guarded
    def conversation_messages(self, conversation_id: int) -> list[MessageRow]:
        """Every message of the conversation (all branches), in insertion order."""
        rows = self.db.execute(
            f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation_id = ? ORDER BY id", (conversation_id,)
        ).fetchall()
        return [decode_message(r) for r in rows]

    @guarded
    def children(self, message_id: int) -> list[MessageRow]:
        rows = self.db.execute(
            f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE parent_id = ? ORDER BY created, id", (message_id,)
        ).fetchall()
        return [decode_message(r) for r in rows]

    @writes
    def delete_message(self, message_id: int, *, with_replies: bool = False) -> None:
        """Delete one message. Its replies move up to its parent, unless ``with_replies`` deletes them too."""
        msg = self.get_message(message_id)
        with self.transaction():
            conv = self.get_conversation(msg.conversation_id)
            leaf = conv.active_leaf_id
            on_path = leaf is not None and message_id in self._ancestor_ids(leaf)
            if with_replies:
                self.db.execute("DELETE FROM messages WHERE id = ?", (message_id,))  # cascades down the subtree
            else:
                self.db.execute("UPDATE messages SET parent_id = ? WHERE parent_id = ?", (msg.parent_id, message_id))
                self.db.execute("DELETE FROM messages WHERE id = ?", (message_id,))
            if on_path and (with_replies or leaf == message_id):
                new_leaf = self._best_leaf(msg.parent_id, msg.conversation_id)
                self.db.execute(
                    "UPDATE conversations SET active_leaf_id = ? WHERE id = ?", (new_leaf, msg.conversation_id)
                )
            self.db.execute("UPDATE conversations SET updated = ? WHERE id = ?", (time.time(), msg.conversation_id))

    # ---- the tree ----

    def _ancestor_ids(self, message_id: int) -> list[int]:
        rows = self.db.execute(
            "WITH RECURSIVE up(id, parent_id) AS ("
            " SELECT id, parent_id FROM messages WHERE id = ?"
            " UNION ALL SELECT m.id, m.parent_id FROM messages m JOIN up ON m.id = up.parent_id)"
            " SELECT id FROM up",
            (message_id,),
        ).fetchall()
        return [r[0] for r in rows]

    def _best_leaf(self, root_id: int | None, conversation_id: int) -> int | None:
        """The most recently active leaf under ``root_id`` (the whole conversation when None)."""
        if root_id is None:
            row = self.db.execute(
                "SELECT m.id FROM messages m WHERE m.conversation_id = ?"
                " AND NOT EXISTS (SELECT 1 FROM messages c WHERE c.parent_id = m.id)"
                " ORDER BY m.visited DESC, m.id DESC LIMIT 1",
                (conversation_id,),
            ).fetchone()
        else:
            row = self.db.execute(
                "WITH RECURSIVE down(id) AS (SELECT ? UNION ALL"
                " SELECT m.id FROM messages m JOIN down ON m.parent_id = down.id)"
                " SELECT m.id FROM down JOIN messages m ON m.id = down.id"
                " WHERE NOT EXISTS (SELECT 1 FROM messages c WHERE c.parent_id = m.id)"
                " ORDER BY m.visited DESC, m.id DESC LIMIT 1",
                (root_id,),
            ).fetchone()
        return None if row is None else int(row[0])

    @guarded
    def path_to(self, message_id: int) -> list[MessageRow]:
        """Messages from the root down to ``message_id``."""
        rows = self.db.execute(
            "WITH RECURSIVE up(id, parent_id, depth) AS ("
            " SELECT id, parent_id, 0 FROM messages WHERE id = ?"
            " UNION ALL SELECT m.id, m.parent_id, up.depth + 1 FROM messages m JOIN up ON m.id = up.parent_id)"
            f" SELECT {', '.join('m.' + c.strip() for c in MESSAGE_COLUMNS.split(','))}"
            " FROM up JOIN messages m ON m.id = up.id ORDER BY up.depth DESC",
            (message_id,),
        ).fetchall()
        return [decode_message(r) for r in rows]

    # ---- bulk insert (import, recovery) ----

    @writes
    def insert_conversation_tree(
        self,
        *,
        uid: str | None,
        title: str,
        title_source: str,
        created: float,
        updated: float,
        settings: ConversationSettings,
        messages: Sequence[MessageRow],
        active_leaf_id: int | None,
        deleted_at: float | None = None,
    ) -> int:
        """Insert a whole conversation whose messages use their own ids (remapped here).

        ``messages`` must list parents before children. An existing ``uid`` gets a fresh one (the
        import is a copy). Rows left "streaming" become "interrupted". Returns the new id.
        """
        with self.transaction():
            if not uid or self.db.execute("SELECT 1 FROM conversations WHERE uid = ?", (uid,)).fetchone():
                uid = uuid.uuid4().hex
            cur = self.db.execute(
                "INSERT INTO conversations (uid, title, title_source, created, updated, settings, deleted_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    uid,
                    title,
                    title_source if title_source in TITLE_SOURCES else "auto",
                    created,
                    updated,
                    dumps(settings.to_dict()),
                    deleted_at,
                ),
            )
            cid = int(cur.lastrowid or 0)
            new_ids: dict[int, int] = {}
            for m in messages:
                parent = new_ids.get(m.parent_id) if m.parent_id is not None else None
                status = "interrupted" if m.status == "streaming" else m.status
                cur = self.db.execute(
                    INSERT_MESSAGE,
                    (
                        cid,
                        parent,
                        m.role if m.role in ROLES else "tool",
                        m.content,
                        m.thinking,
                        calls_json(m.tool_calls),
                        m.tool_name,
                        m.tool_call_id,
                        m.effort,
                        dumps(m.stats),
                        m.model,
                        status if status in STATUSES else "complete",
                        m.created,
                        m.updated or m.created,
                        m.visited or m.created,
                        dumps(m.extra),
                    ),
                )
                new_ids[m.id] = int(cur.lastrowid or 0)
            leaf = new_ids.get(active_leaf_id) if active_leaf_id is not None else None
            if leaf is None:
                leaf = self._best_leaf(None, cid)
            self.db.execute("UPDATE conversations SET active_leaf_id = ? WHERE id = ?", (leaf, cid))
        return cid
