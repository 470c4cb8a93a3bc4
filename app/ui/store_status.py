"""The conversation store's trouble on screen: a lasting notice with Try again, a status-bar mark, retries on a timer.

When the database cannot be written (a full or read-only disk, another Harmonica, a folder in the
way; see app/core/store/health.py) the store is read-only or temporary and says why. This shows it
until it is over: one notice bar that cannot be dismissed (writes the user tries meanwhile bring it
back instead of an error per click), a mark in the status bar, and a retry every few seconds as
well as on Try again. When the store can write again the kept answers are saved by the store, the
chat is shown from the store, and a short notice says so.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from PySide6.QtCore import QObject, QTimer, Signal
from PySide6.QtWidgets import QLabel, QStatusBar

from app.core.runtime import Runtime
from app.core.store import StoreProblem, StoreUnavailableError
from app.ui.chat_controller import ChatController
from app.ui.events import ConversationEvents
from app.ui.notice import Notice, NoticeChannel

log = logging.getLogger(__name__)

# How often the store is tried again on its own while it cannot write.
RETRY_INTERVAL_MS = 10_000
SLOT = "store"


class _Bridge(QObject):
    """The store tells its listeners on whichever thread noticed the change; this brings it to the UI."""

    changed = Signal(object)


class StoreStatus(QObject):
    """Shows the store's problem (slot "store" of the notice channel), retries, and tidies up on recovery."""

    recovered = Signal()

    def __init__(
        self,
        runtime: Runtime,
        notices: NoticeChannel,
        events: ConversationEvents,
        answers: ChatController,
        status_bar: QStatusBar | None = None,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self.runtime = runtime
        self.notices = notices
        self.events = events
        self.answers = answers
        self.timer = QTimer(self)
        self.timer.setInterval(RETRY_INTERVAL_MS)
        self.timer.timeout.connect(self.retry)
        self.indicator = QLabel("", objectName="StatusStore")
        self.indicator.hide()
        if status_bar is not None:
            status_bar.addPermanentWidget(self.indicator)
        self._bridge = _Bridge(self)
        self._bridge.changed.connect(self._on_changed)
        self._shown = ""  # the text of the notice on screen
        self.close_anyway = False  # the user chose to close although something is not saved
        runtime.store.add_listener(self._bridge.changed.emit)
        notices.unavailable.connect(self.refused)

    def start(self) -> None:
        """Show a problem the store already had when it was opened (once the window's bars are wired)."""
        if self.runtime.store.problem is not None:
            self._on_changed(self.runtime.store.problem)

    @property
    def problem(self) -> StoreProblem | None:
        return self.runtime.store.problem

    def close(self) -> None:
        self.timer.stop()
        self.runtime.store.remove_listener(self._bridge.changed.emit)

    # --- showing -------------------------------------------------------------------------------------
    def notice_text(self) -> str:
        problem = self.problem
        if problem is None:
            return ""
        kept = self.runtime.store.pending
        if not kept:
            return problem.message
        parts = "" if len(kept) == 1 else f" ({len(kept)} parts)"
        return f"{problem.message} Waiting to be saved: the last answer{parts}."

    def show(self) -> None:
        """Post the lasting notice for the current problem (again: it may have been answered)."""
        problem = self.problem
        if problem is None:
            return
        self._shown = self.notice_text()
        self.notices.post(
            Notice(
                self._shown,
                "error",
                (("Try again", self.try_again),),
                headline=problem.headline,
                slot=SLOT,
            )
        )

    def _on_changed(self, problem: StoreProblem | None) -> None:
        if problem is None:
            self._on_recovered()
            return
        self.indicator.setText("Not saving" if problem.temporary else "Read-only")
        self.indicator.setToolTip(problem.message)
        self.indicator.show()
        if self.notice_text() != self._shown:  # a new problem, or one more message kept
            self.show()
        if not self.timer.isActive():
            self.timer.start()

    def refused(self, exc: StoreUnavailableError) -> None:
        """A write the user asked for was refused: show the lasting notice again, not an error of its own."""
        log.info("Refused while the store cannot write: %s", exc.problem.kind)
        if self.problem is None:  # it recovered in between: the next attempt will work
            self.notices.info("Saving works again: please try once more.", timeout_ms=6000)
            return
        self.show()

    # --- closing ------------------------------------------------------------------------------------
    def unsaved_on_close(self) -> str:
        """What closing now would lose (after one more try to save it), in words; "" when nothing.

        The window then keeps running and offers "Close anyway" (no modal dialog: nothing blocks)."""
        store = self.runtime.store
        if self.close_anyway or not self._would_lose():
            return ""
        self.retry()
        if not self._would_lose():
            return ""
        if store.pending:
            return "The last answer is not saved yet: closing Harmonica now loses it."
        count = store.count_conversations()
        return (
            f"The {count} conversation{'s' if count != 1 else ''} of this session "
            f"{'are' if count != 1 else 'is'} not saved anywhere: closing Harmonica now loses "
            f"{'them' if count != 1 else 'it'}."
        )

    def _would_lose(self) -> bool:
        store = self.runtime.store
        if store.problem is None:
            return False
        return bool(store.pending) or (store.temporary and store.count_conversations() > 0)

    def refuse_close(self, text: str, close: Callable[[], object]) -> None:
        def anyway() -> None:
            self.close_anyway = True
            close()

        self.notices.post(
            Notice(
                f"{text} Free up what the notice above asks for and click Try again, or close anyway.",
                "error",
                (("Close anyway", anyway),),
                headline="Not saved yet",
            )
        )

    # --- trying again --------------------------------------------------------------------------------
    def try_again(self) -> None:
        """The notice's Try again."""
        self.retry()

    def retry(self) -> bool:
        """Try the store again (Try again, the timer); returns whether it can write now."""
        store = self.runtime.store
        if store.problem is None:
            return True
        was = store.problem
        if store.retry():
            return True  # the listener hears None and tidies up
        if self.sender() is not self.timer or store.problem != was:
            self.show()  # answered: say that it is still so (the words may have changed: free space)
        return False

    def _on_recovered(self) -> None:
        self.timer.stop()
        self.indicator.hide()
        self._shown = ""
        self.notices.clear(SLOT)
        store = self.runtime.store
        moved = store.carried_over
        open_id = self.answers.session.conversation_id
        if moved and open_id in moved and not self.answers.generating:
            self.answers.set_session(self.runtime.new_session(moved[open_id]))
        else:
            self.answers.refresh_when_idle()  # kept answers are rows now: show them from the store
        self.events.list_changed.emit()
        if moved:
            count = len(moved)
            text = (
                f"Saving works again. {count} conversation{'s' if count != 1 else ''} from this session "
                f"{'were' if count != 1 else 'was'} saved in {store.path}."
            )
        else:
            text = "Saving works again: everything kept in memory is saved."
        self.notices.info(text, timeout_ms=10000)
        self.recovered.emit()
