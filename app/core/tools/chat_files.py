"""Each chat's tool files (its python scratch folder and kernel) live and die with the chat.

Scratch folders are named after the conversation's random `uid`, never its row id: SQLite hands a
purged chat's id to the next new chat, which would otherwise open the old chat's files (and, while
the app runs, its kernel with the old variables). An imported chat brings its own uid, so a uid
that is not plain hex is hashed into a name: it can never point outside the scratch root.

Deleting a chat in the sidebar is soft (Undo). `ChatToolFiles.deleted` keeps the chat's tool
session aside; `restored` gives it back; `finalize` closes its kernel and deletes its folder once
the deletion is final (the Undo grace has passed, or the app closes). `sweep`, at start, deletes
what a crash left: folders of chats that are deleted or gone, and moves folders from before this
naming (named by row id) to their chat's uid, or deletes them when they cannot be the chat's own.

The window holds one ChatToolFiles (see the "tool-files hook" lines in app/ui/main_window.py).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.core import paths

log = logging.getLogger(__name__)

UNDO_GRACE_S = 13.0  # the sidebar's Undo notice shows for 12 s
_UID = re.compile(r"[0-9a-f]{32}")
_HASHED = re.compile(r"u[0-9a-f]{32}")
_LEGACY = re.compile(r"[0-9]{1,18}")


def scratch_name(uid: str) -> str:
    """The folder name for a conversation uid: the uid itself when it is plain hex, else a hash of it."""
    if _UID.fullmatch(uid):
        return uid
    return "u" + hashlib.sha256(uid.encode("utf-8", "surrogatepass")).hexdigest()[:32]


@dataclass
class _Pending:
    conversation_id: int
    folder: Path
    session: Any  # ToolSession | None
    due: float  # time.monotonic() when the deletion becomes final


class ChatToolFiles:
    """Where each chat's tool files are, and their deletion when the chat's deletion is final."""

    def __init__(self, store: Any, root: Path | None = None, *, grace_s: float = UNDO_GRACE_S) -> None:
        self.store = store
        self._root = root
        self.grace_s = grace_s
        self._pending: dict[int, _Pending] = {}
        self._lock = threading.Lock()

    @property
    def root(self) -> Path:
        return self._root if self._root is not None else paths.scratch_root()

    @property
    def grace_ms(self) -> int:
        """When to call `finalize` after a deletion (a little after the grace, so it is due)."""
        return int(self.grace_s * 1000) + 250

    def scratch(self, conversation_id: int) -> Path:
        """The scratch folder of a conversation (not created here)."""
        return self.root / scratch_name(self.store.get_conversation(conversation_id).uid)

    # --- deleting ---------------------------------------------------------------------------------
    def deleted(self, conversation_id: int, session: Any = None) -> None:
        """The chat was (soft) deleted; keep its files and session until the deletion is final."""
        try:
            folder = self.scratch(conversation_id)
        except Exception:  # noqa: BLE001 - a store problem: nothing to remember, the sweep cleans up
            folder = None
        with self._lock:
            if folder is None:
                if session is not None:
                    session.close()
                return
            self._pending[conversation_id] = _Pending(conversation_id, folder, session, time.monotonic() + self.grace_s)

    def restored(self, conversation_id: int) -> Any:
        """Undo: the chat keeps its files; returns its tool session (None if it had none)."""
        with self._lock:
            p = self._pending.pop(conversation_id, None)
        return p.session if p is not None else None

    def finalize(self, *, everything: bool = False) -> list[Path]:
        """Delete the tool files of chats whose deletion is final (all pending ones with `everything`)."""
        now = time.monotonic()
        with self._lock:
            due = [p for p in self._pending.values() if everything or p.due <= now]
            for p in due:
                del self._pending[p.conversation_id]
        removed = []
        for p in due:
            if self._still_live(p.conversation_id):
                # Restored some other way: its files stay, its session is closed (a fresh one starts).
                if p.session is not None:
                    p.session.close()
                continue
            if p.session is not None:
                p.session.close()  # ends the kernel before its folder goes
            if self._remove(p.folder):
                removed.append(p.folder)
        return removed

    def _still_live(self, conversation_id: int) -> bool:
        try:
            return self.store.get_conversation(conversation_id).deleted_at is None
        except Exception:  # noqa: BLE001 - gone (purged) or unreadable: not live
            return False

    def _remove(self, folder: Path) -> bool:
        """Delete a scratch folder (never following a link out of it)."""
        root = self.root
        if folder.parent != root or folder.is_symlink():
            if folder.is_symlink():
                folder.unlink(missing_ok=True)
            return False
        if not folder.exists():
            return False
        shutil.rmtree(folder, ignore_errors=True)
        return not folder.exists()

    # --- at start -----------------------------------------------------------------------------------
    def sweep(self) -> list[Path]:
        """Delete the folders of chats deleted before a crash (or gone), and name old folders by uid."""
        root = self.root
        try:
            entries = list(os.scandir(root))
        except OSError:
            return []
        live: dict[str, Any] = {}
        by_id: dict[int, Any] = {}
        before = None
        while page := self.store.list_conversations(limit=500, before=before):
            for c in page:
                live[scratch_name(c.uid)] = c
                by_id[c.id] = c
            before = (page[-1].updated, page[-1].id)
        removed: list[Path] = []
        for entry in entries:
            name, path = entry.name, Path(entry.path)
            if name in live:
                continue
            if _UID.fullmatch(name) or _HASHED.fullmatch(name):
                if self._remove(path):
                    removed.append(path)
            elif _LEGACY.fullmatch(name):
                conv = by_id.get(int(name))
                target = root / scratch_name(conv.uid) if conv is not None else None
                if (
                    conv is not None
                    and target is not None
                    and not target.exists()
                    and not path.is_symlink()
                    and _oldest_mtime(path) >= conv.created - 60
                ):
                    os.replace(path, target)  # this chat's own folder, from before uid names
                elif self._remove(path):
                    removed.append(path)  # a deleted chat's, or an earlier chat's that had this id
        if removed:
            log.info("removed the tool files of %d deleted chats", len(removed))
        return removed


def _oldest_mtime(folder: Path) -> float:
    """The oldest modification time in a folder (a chat's own files are all newer than the chat)."""
    oldest = time.time()
    for root, dirs, files in os.walk(folder):
        for name in [*dirs, *files]:
            try:
                oldest = min(oldest, os.lstat(os.path.join(root, name)).st_mtime)
            except OSError:
                continue
    return oldest


__all__ = ["UNDO_GRACE_S", "ChatToolFiles", "scratch_name"]
