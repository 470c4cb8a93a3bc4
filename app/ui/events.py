"""Signals that say what changed about the conversations, so the widgets that show them refresh themselves."""

from __future__ import annotations

from PySide6.QtCore import QObject, Signal


class ConversationEvents(QObject):
    """One instance per window; controllers emit, views listen.

    list_changed: a conversation was added, renamed, deleted, restored, imported or got a message
    (the sidebar reloads its list). session_changed: another conversation or branch is open (the
    chat is rebuilt from the store). state_changed: the open chat's title or settings, the model,
    or what is busy changed (the header, the page and the composer follow).
    """

    list_changed = Signal()
    session_changed = Signal()
    state_changed = Signal()
