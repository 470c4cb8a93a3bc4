"""The window's View and Help commands: the conversation list, the theme (applied live), logging, diagnostics, About, keyboard shortcuts."""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import QObject
from PySide6.QtWidgets import QApplication, QMainWindow, QWidget

from app.core import logs
from app.core.runtime import Runtime
from app.ui import help_menu, style
from app.ui.notice import NoticeChannel
from app.ui.window_state import NarrowSidebar

NARROW_WINDOW_PX = 720  # below this the conversation list gives its room to the chat (until asked for)


class ViewCommands(QObject):
    """What View and Help do, for `window` (`window.view`); `changed()` is called when a checkable
    command's state changed, so the menus can follow (the window re-reads them)."""

    def __init__(
        self,
        window: QMainWindow,
        runtime: Runtime,
        sidebar: QWidget,
        notices: NoticeChannel,
        changed: Callable[[], None],
    ) -> None:
        super().__init__(window)
        self.window = window
        self.runtime = runtime
        self.sidebar = sidebar
        self.notices = notices
        self.changed = changed
        sidebar.setVisible(runtime.settings.window.sidebar_visible)
        self.narrow = NarrowSidebar(window, sidebar, lambda: runtime.settings.window.sidebar_visible, NARROW_WINDOW_PX)

    # --- the conversation list ----------------------------------------------------------------------
    @property
    def sidebar_visible(self) -> bool:
        return self.runtime.settings.window.sidebar_visible

    def set_sidebar_visible(self, on: bool) -> None:
        self.narrow.user_toggled()
        self.sidebar.setVisible(on)
        self.runtime.settings.window.sidebar_visible = on
        self.runtime.settings.save("window")
        self.changed()

    def toggle_sidebar(self) -> None:
        self.set_sidebar_visible(not self.sidebar.isVisible())

    def focus_search(self) -> None:
        """Chat → Search conversations: the list appears if hidden, its search box takes the keyboard."""
        if not self.sidebar.isVisible():
            self.set_sidebar_visible(True)
        search = self.sidebar.search  # type: ignore[attr-defined]
        search.setFocus()
        search.selectAll()

    # --- theme --------------------------------------------------------------------------------------
    def theme_is(self, name: str) -> bool:
        return self.runtime.settings.window.theme == name

    def set_theme(self, name: str) -> None:
        """Use and remember a theme ("system", "light", "dark"); every window restyles at once."""
        self.runtime.settings.window.theme = name
        self.runtime.settings.save("window")
        app = QApplication.instance()
        if isinstance(app, QApplication):
            style.apply(app, style.dark_for(name))
        self.changed()

    # --- help ---------------------------------------------------------------------------------------
    @property
    def debug_logging(self) -> bool:
        return self.runtime.settings.logging.debug

    def set_debug_logging(self, on: bool) -> None:
        self.runtime.settings.logging.debug = on
        self.runtime.settings.save("logging")
        logs.set_debug(on)

    def show_log_folder(self) -> None:
        if not help_menu.show_log_folder():
            self.notices.error(f"The log folder could not be opened. It is {logs.log_dir()}.")

    def copy_diagnostics(self) -> None:
        help_menu.copy_diagnostics(self.runtime)
        self.window.statusBar().showMessage("Diagnostics copied to the clipboard (no conversation text).", 4000)

    def about(self) -> None:
        help_menu.about(self.window)

    def show_shortcuts(self) -> QWidget:
        return help_menu.show_shortcuts(self.window)
