"""Branches: the active path of a conversation, sibling positions (‹ i/n ›), switching branches, edit and regenerate."""

from __future__ import annotations

import time
from collections.abc import Sequence

from app.core.store.base import guarded, writes
from app.core.store.messages import MessagesMixin
from app.core.store.rows import BranchInfo, MessageRow, StoreError


class BranchesMixin(MessagesMixin):
    """Navigation between the branches of a conversation's message tree."""

    @guarded
    def active_path(self, conversation_id: int) -> list[MessageRow]:
        """The visible conversation: root → active leaf."""
        conv = self.get_conversation(conversation_id)
        leaf = conv.active_leaf_id
        if leaf is None:
            leaf = self._best_leaf(None, conversation_id)
            if leaf is None:
                return []
            chosen = leaf

            def remember() -> None:
                self.db.execute("UPDATE conversations SET active_leaf_id = ? WHERE id = ?", (chosen, conversation_id))

            self._soft_write(remember, lambda: None)  # not kept when it fails: it is worked out again next time
        return self.path_to(leaf)

    @guarded
    def branch_info(self, conversation_id: int, message_ids: Sequence[int]) -> dict[int, BranchInfo]:
        """Sibling position of each given message (one query for the whole conversation)."""
        groups: dict[int | None, list[int]] = {}
        for mid, parent in self.db.execute(
            "SELECT id, parent_id FROM messages WHERE conversation_id = ? ORDER BY created, id", (conversation_id,)
        ):
            groups.setdefault(parent, []).append(mid)
        parent_of = {mid: parent for parent, ids in groups.items() for mid in ids}
        out: dict[int, BranchInfo] = {}
        for mid in message_ids:
            if mid in parent_of:
                sibs = tuple(groups[parent_of[mid]])
                out[mid] = BranchInfo(sibs, sibs.index(mid))
        return out

    @guarded
    def active_path_with_branches(self, conversation_id: int) -> list[tuple[MessageRow, BranchInfo]]:
        """What the chat view needs to show a conversation: each message with its ‹ i/n › position."""
        path = self.active_path(conversation_id)
        info = self.branch_info(conversation_id, [m.id for m in path])
        return [(m, info[m.id]) for m in path]

    @guarded
    def siblings(self, message_id: int) -> BranchInfo:
        msg = self.get_message(message_id)
        if msg.parent_id is None:
            rows = self.db.execute(
                "SELECT id FROM messages WHERE conversation_id = ? AND parent_id IS NULL ORDER BY created, id",
                (msg.conversation_id,),
            ).fetchall()
        else:
            rows = self.db.execute(
                "SELECT id FROM messages WHERE parent_id = ? ORDER BY created, id", (msg.parent_id,)
            ).fetchall()
        ids = tuple(r[0] for r in rows)
        return BranchInfo(ids, ids.index(message_id))

    @guarded
    def set_active_leaf(self, conversation_id: int, message_id: int) -> None:
        msg = self.get_message(message_id)
        if msg.conversation_id != conversation_id:
            raise StoreError(f"Message {message_id} is not in conversation {conversation_id}.")
        now = time.time()

        def keep() -> None:
            self._soft_leaves[conversation_id] = (message_id, now)

        # A soft write: reading a chat (switching branches) works while the store cannot write.
        self._soft_write(lambda: self._write_leaf(conversation_id, message_id, now), keep)
        if not self.read_only:
            self._soft_leaves.pop(conversation_id, None)

    def _write_leaf(self, conversation_id: int, leaf: int, visited: float) -> None:
        with self.transaction():
            self.db.execute("UPDATE messages SET visited = ? WHERE id = ?", (visited, leaf))
            self.db.execute("UPDATE conversations SET active_leaf_id = ? WHERE id = ?", (leaf, conversation_id))

    @guarded
    def switch_branch(self, message_id: int) -> list[MessageRow]:
        """Show the branch through ``message_id`` (where the user last was in it); returns the new path."""
        msg = self.get_message(message_id)
        leaf = self._best_leaf(message_id, msg.conversation_id)
        assert leaf is not None  # message_id itself is in its own subtree
        self.set_active_leaf(msg.conversation_id, leaf)
        return self.path_to(leaf)

    @guarded
    def navigate_sibling(self, message_id: int, delta: int) -> list[MessageRow]:
        """‹ / › : move ``delta`` siblings from ``message_id`` (clamped); returns the new active path."""
        info = self.siblings(message_id)
        target = info.sibling_ids[min(max(info.index + delta, 0), info.count - 1)]
        return self.switch_branch(target)

    @writes
    def edit_user_message(self, message_id: int, new_content: str) -> MessageRow:
        """Edit-and-resend: a new user message beside the old one (a branch), made active.

        The caller then generates the answer under the returned message.
        """
        old = self.get_message(message_id)
        if old.role != "user":
            raise StoreError("Only user messages can be edited and resent.")
        return self.add_message(
            old.conversation_id, "user", new_content, parent_id=old.parent_id, extra={"edited_from": old.id}
        )

    @guarded
    def regenerate_parent(self, message_id: int) -> int | None:
        """Where a regenerated answer goes: under the user message that started this answer's turn.

        A turn may span tool calls and tool results; regenerating redoes the whole turn, so the
        new answer is a sibling of the turn's first assistant message.
        """
        for msg in reversed(self.path_to(message_id)):
            if msg.role in ("user", "system", "developer"):
                return msg.id
        return None
