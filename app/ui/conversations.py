"""What the user does to conversations (not to the live answer): open, new, rename, delete with Undo, branches,
settings, copy, export and import, and the offer to continue an answer a crash cut off."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, QTimer, Signal
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import QDialog, QFileDialog, QMessageBox, QWidget

from app.core.chat import Conversation
from app.core.plain_errors import describe_error
from app.core.runtime import Runtime
from app.core.store import StoreError
from app.ui.chat_controller import ChatController
from app.ui.chat_view import ChatView
from app.ui.conversation_settings import ConversationSettingsDialog
from app.ui.events import ConversationEvents
from app.ui.message_widget import AssistantMessageWidget, UserMessageWidget
from app.ui.notice import NoticeChannel
from app.ui.sidebar import Sidebar


class ConversationActions(QObject):
    """The window's conversation commands; `status(text, ms)` is a short status-bar message."""

    status = Signal(str, int)

    def __init__(
        self,
        runtime: Runtime,
        answers: ChatController,
        sidebar: Sidebar,
        chat: ChatView,
        notices: NoticeChannel,
        events: ConversationEvents,
        window: QWidget,
    ) -> None:
        super().__init__(window)
        self.runtime = runtime
        self.store = runtime.store
        self.answers = answers
        self.sidebar = sidebar
        self.chat = chat
        self.notices = notices
        self.events = events
        self.window = window
        sidebar.new_chat_requested.connect(self.new_chat)
        sidebar.conversation_selected.connect(self.open_conversation)
        sidebar.hit_selected.connect(self.open_hit)
        sidebar.rename_requested.connect(self.rename_conversation)
        sidebar.delete_requested.connect(self.delete_conversation)
        sidebar.export_requested.connect(lambda cid: self.choose_export("md", cid))
        chat.message_action.connect(self.on_message_action)
        chat.edit_submitted.connect(answers.edit_and_resend)

    @property
    def session_id(self) -> int | None:
        return self.answers.session.conversation_id

    # --- opening ----------------------------------------------------------------------------------
    def new_chat(self) -> None:
        self.answers.new_chat_requested()

    def open_conversation(self, conversation_id: int) -> bool:
        if conversation_id == self.session_id:
            return True
        if self.answers.busy("switching conversations"):
            self.sidebar.set_current(self.session_id)
            return False
        try:
            session = self.runtime.new_session(conversation_id)
        except StoreError as exc:
            self.notices.error(str(exc), exc)
            return False
        self.notices.clear()
        self.answers.set_session(session)
        return True

    def set_conversation(self, conversation: Conversation) -> None:
        """Show an in-memory conversation by storing it as a new chat (demo mode, imports of old data)."""
        if self.answers.busy("switching conversations"):
            return
        session = self.runtime.new_session()
        for m in conversation.messages:
            self.store.add_message_from(session.ensure(), m)
        self.events.list_changed.emit()
        self.answers.set_session(session)

    def open_hit(self, conversation_id: int, message_id: int) -> None:
        """A search hit: open its conversation on the branch that holds it and show the message."""
        if self.answers.busy("switching conversations"):
            return
        try:
            self.store.switch_branch(message_id)
        except StoreError as exc:
            self.notices.error(str(exc), exc)
            return
        if conversation_id == self.session_id:
            self.events.session_changed.emit()
        else:
            self.open_conversation(conversation_id)
        self.chat.scroll_to_row(message_id)

    def offer_interrupted(self) -> None:
        """After a crash: open the conversation whose answer was cut off, and say what happened."""
        ids = self.store.interrupted_on_open
        if not ids:
            return
        try:
            row = self.store.get_message(ids[-1])
        except StoreError:
            return
        self.open_conversation(row.conversation_id)
        self.notices.info(
            "Harmonica closed while an answer was being written. The partial answer is kept and marked "
            "“interrupted”: Continue it, or Regenerate it."
        )

    # --- renaming and deleting --------------------------------------------------------------------
    def rename_conversation(self, conversation_id: int, title: str) -> None:
        try:
            self.store.rename_conversation(conversation_id, title)
        except StoreError as exc:
            self.notices.error(str(exc), exc)
        self.events.list_changed.emit()
        self.events.state_changed.emit()

    def rename_current(self) -> None:
        if self.session_id:
            self.sidebar.start_rename(self.session_id)

    def delete_current(self) -> None:
        if self.session_id:
            self.delete_conversation(self.session_id)

    def delete_conversation(self, conversation_id: int) -> None:
        """Soft delete with Undo (the store purges deleted chats after 30 days)."""
        if conversation_id == self.session_id and self.answers.busy("deleting this chat"):
            return
        try:
            title = self.store.get_conversation(conversation_id).display_title
            self.store.delete_conversation(conversation_id)
        except StoreError as exc:
            self.notices.error(str(exc), exc)
            return
        if conversation_id == self.session_id:
            self.answers.set_session(self.runtime.new_session())
        # The chat's tool files go when the deletion is final, once Undo is no longer offered.
        self.runtime.conversation_deleted(conversation_id)
        QTimer.singleShot(self.runtime.tool_files.grace_ms, self.runtime.tool_files.finalize)
        self.events.list_changed.emit()
        self.notices.info(
            f"Deleted “{title}”.",
            [("Undo", lambda: self.undo_delete(conversation_id))],
            timeout_ms=12000,
            log_text=f"Deleted conversation {conversation_id}.",
        )

    def undo_delete(self, conversation_id: int) -> None:
        self.runtime.conversation_restored(conversation_id)
        self.store.restore_conversation(conversation_id)
        self.events.list_changed.emit()
        self.open_conversation(conversation_id)

    # --- settings ---------------------------------------------------------------------------------
    def edit_settings(self) -> None:
        dlg = ConversationSettingsDialog(self.answers.session.settings, self.store, self.runtime.n_ctx, self.window)
        if dlg.exec() == QDialog.DialogCode.Accepted:
            self.answers.apply_settings(dlg.settings())

    # --- messages ---------------------------------------------------------------------------------
    def on_message_action(self, name: str, row_id: int) -> None:
        if name in ("copy", "copy_text"):
            self.copy_message(row_id, plain=name == "copy_text")
        elif name == "regenerate":
            self.answers.regenerate(row_id)
        elif name == "continue":
            self.answers.continue_answer(row_id)
        elif name == "delete":
            self.delete_message(row_id)
        elif name in ("prev", "next"):
            self.navigate_branch(row_id, -1 if name == "prev" else 1)

    # --- the latest messages, from the keyboard (Chat menu) -------------------------------------------
    def _latest(self, kind: type) -> Any:
        return next(
            (w for w in reversed(self.chat.widgets) if isinstance(w, kind) and getattr(w, "row_id", None) is not None),
            None,
        )

    @property
    def has_answer(self) -> bool:
        return self._latest(AssistantMessageWidget) is not None

    @property
    def can_regenerate(self) -> bool:
        return self.has_answer and not self.answers.generating and self.runtime.model_loaded

    @property
    def can_edit(self) -> bool:
        return self._latest(UserMessageWidget) is not None and not self.answers.generating

    def copy_last_answer(self) -> str | None:
        w = self._latest(AssistantMessageWidget)
        return self.copy_message(w.row_id) if w is not None else None

    def regenerate_last(self) -> bool:
        w = self._latest(AssistantMessageWidget)
        return w is not None and self.answers.regenerate(w.row_id)

    def edit_last_message(self) -> bool:
        """Open the latest user message for editing, in view, with the keyboard in its editor."""
        w = self._latest(UserMessageWidget)
        if w is None or self.answers.generating:
            return False
        w.start_edit()
        self.chat.show_widget(w)
        return True

    def copy_message(self, row_id: int, *, plain: bool = False) -> str:
        from app.core import export

        row = self.store.get_message(row_id)
        if row.role != "assistant":
            text = row.content
        elif plain:
            text = export.markdown_to_text(row.content)
        else:
            text = export.message_markdown(row)
        QGuiApplication.clipboard().setText(text)
        self.status.emit("Copied.", 2000)
        return text

    def navigate_branch(self, row_id: int, delta: int) -> None:
        if self.answers.busy("switching to another version"):
            return
        self.answers.session.navigate(row_id, delta)
        self.events.session_changed.emit()

    def confirm(self, title: str, text: str, ok: str) -> bool:
        box = QMessageBox(QMessageBox.Icon.Question, title, text, parent=self.window)
        yes = box.addButton(ok, QMessageBox.ButtonRole.DestructiveRole)
        box.addButton(QMessageBox.StandardButton.Cancel)
        box.exec()
        return box.clickedButton() is yes

    def delete_message(self, row_id: int) -> None:
        if self.answers.busy("deleting a message"):
            return
        if not self.confirm("Delete message", "Delete this message? Replies to it are kept.", "Delete"):
            return
        try:
            self.answers.session.delete(row_id)
        except StoreError as exc:
            self.notices.error(str(exc), exc)
            return
        self.events.session_changed.emit()
        self.events.list_changed.emit()

    # --- export and import ------------------------------------------------------------------------
    def choose_export(self, fmt: str, conversation_id: int | None = None) -> None:
        cid = conversation_id or self.session_id
        if cid is None:
            self.notices.error("There is nothing to export yet: this chat has no messages.")
            return
        title = self.store.get_conversation(cid).display_title
        suffix, filt = (".json", "JSON (*.json)") if fmt == "json" else (".md", "Markdown (*.md)")
        name = "".join(ch if ch.isalnum() or ch in " -_" else "_" for ch in title).strip() or "conversation"
        path, _ = QFileDialog.getSaveFileName(self.window, "Export chat", str(Path.home() / f"{name}{suffix}"), filt)
        if path:
            self.export_conversation(path, fmt, cid)

    def export_conversation(self, path: str | Path, fmt: str, conversation_id: int | None = None) -> bool:
        from app.core import export

        cid = conversation_id or self.session_id
        if cid is None:
            return False
        try:
            if fmt == "json":
                export.write_json(self.store, path, [cid])
            else:
                export.export_markdown(self.store, cid, include_reasoning=fmt == "md-reasoning", path=path)
        except (OSError, StoreError) as exc:
            self.notices.error(f"The chat could not be exported: {describe_error(exc)}.", exc)
            return False
        self.notices.info(f"Exported to {path}.", timeout_ms=8000)
        return True

    def choose_export_all(self) -> None:
        path, _ = QFileDialog.getSaveFileName(
            self.window, "Export all conversations", str(Path.home() / "harmonica-conversations.json"), "JSON (*.json)"
        )
        if not path:
            return
        from app.core import export

        try:
            export.write_json(self.store, path)
        except (OSError, StoreError) as exc:
            self.notices.error(f"The conversations could not be exported: {describe_error(exc)}.", exc)
            return
        self.notices.info(f"Exported {self.store.count_conversations()} conversations to {path}.", timeout_ms=8000)

    def choose_import(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self.window, "Import conversations", str(Path.home()), "Harmonica export (*.json);;All files (*)"
        )
        if path:
            self.import_conversations(path)

    def import_conversations(self, path: str | Path) -> list[int]:
        from app.core import export

        try:
            ids = export.import_json(self.store, path)
        except (export.ImportFormatError, OSError, StoreError) as exc:
            self.notices.error(f"Nothing was imported: {describe_error(exc)}", exc)
            return []
        self.events.list_changed.emit()
        if ids and not self.answers.generating:
            self.open_conversation(ids[0])
        self.notices.info(f"Imported {len(ids)} conversation{'s' if len(ids) != 1 else ''}.", timeout_ms=8000)
        return ids
