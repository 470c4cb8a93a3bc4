"""The Help menu's commands (keyboard shortcuts, the log folder, diagnostics for a bug report, About) and the unexpected-error dialog."""

from __future__ import annotations

import sys
import traceback

from PySide6 import __version__ as PYSIDE_VERSION
from PySide6.QtCore import Qt, QUrl, qVersion
from PySide6.QtGui import QAction, QDesktopServices, QGuiApplication, QKeySequence
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QHeaderView,
    QLabel,
    QMessageBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app import __version__ as APP_VERSION
from app.core import logs
from app.core.runtime import Runtime


def show_log_folder() -> bool:
    """Open the log folder in the file manager; False when the desktop could not open it."""
    return QDesktopServices.openUrl(QUrl.fromLocalFile(str(logs.log_dir())))


def diagnostic_facts(runtime: Runtime) -> list[tuple[str, str]]:
    """What this copy of Harmonica runs on and with: never conversation text."""
    facts = [("Qt", f"{qVersion()} (PySide6 {PYSIDE_VERSION})")]
    llama = sys.modules.get("llama_cpp")  # only when already loaded: importing it here would take seconds
    if llama is not None:
        try:
            info = llama.llama_print_system_info()
            facts.append(
                ("llama.cpp", info.decode("utf-8", "replace").strip() if isinstance(info, bytes) else str(info))
            )
        except Exception as exc:  # noqa: BLE001 - diagnostics must not fail on a broken build
            facts.append(("llama.cpp", f"system info unavailable ({exc})"))
    profile = runtime.profile
    if profile is not None:
        facts.append(("Backends found", ", ".join(profile.backends or []) or "none"))
    info = runtime.model_info
    facts.append(("Model", f"{info.name} ({info.path})" if info is not None else "none loaded"))
    plan = runtime.active_plan
    if plan is not None:
        facts.append(("Backend", str(plan.backend)))
        facts.append(("Load plan", plan.summary() + "".join(f"\n- {r}" for r in plan.reasons)))
    elif info is not None:
        facts.append(("Load plan", "explicit settings (the hardware panel's Advanced section, or a test)"))
    facts.append(("API server", "on" if runtime.settings.server.enabled else "off"))
    facts.append(("Offline mode", "on" if runtime.offline else "off"))
    return facts


def copy_diagnostics(runtime: Runtime) -> str:
    """Put the diagnostics report on the clipboard and return it."""
    text = logs.diagnostics(diagnostic_facts(runtime))
    QGuiApplication.clipboard().setText(text)
    return text


def error_dialog(parent: QWidget, exc: BaseException, tb_text: str | None = None) -> None:
    """Tell the user about an unexpected error, with the traceback under Details."""
    text = tb_text or getattr(exc, "__traceback_text__", None) or "".join(traceback.format_exception(exc))
    box = QMessageBox(
        QMessageBox.Icon.Critical,
        "Something went wrong",
        f"Harmonica hit an unexpected error and recovered:\n\n{type(exc).__name__}: {exc}",
        parent=parent,
    )
    box.setDetailedText(text)
    box.exec()


def about(parent: QWidget) -> None:
    QMessageBox.about(
        parent,
        "About Harmonica",
        f"<b>Harmonica {APP_VERSION}</b><br>Private, offline chat with OpenAI's open-weight gpt-oss models.",
    )


# Keys that are not menu commands: the composer, the chat, messages and lists.
OTHER_KEYS: tuple[tuple[str, str, str], ...] = (
    ("Composer", "Enter", "Send the message"),
    ("Composer", "Shift+Enter", "New line"),
    ("Composer", "Up", "In an empty composer: edit your last message"),
    ("Composer", "Left / Right", "On the effort slider: less or more reasoning effort"),
    ("Everywhere", "Tab / Shift+Tab", "Next or previous control, messages' Copy, Edit and Regenerate included"),
    ("Everywhere", "Space", "Press the focused button"),
    ("Messages", "Tab", "Inside an answer: its links and the code blocks' Copy; Enter follows one"),
    ("Editing a message", "Ctrl+Enter", "Send the edited message"),
    ("Editing a message", "Esc", "Cancel the edit"),
    ("Conversations", "Up / Down", "Choose a chat in the list"),
    ("Conversations", "F2", "Rename the chosen chat"),
    ("Conversations", "Delete", "Delete the chosen chat"),
)


def shortcut_rows(window: QWidget) -> list[tuple[str, str, str]]:
    """(where, keys, what) for every command of `window` that has a shortcut, then the other keys."""
    from app.ui.actions import ACTIONS

    built: dict[str, QAction] = getattr(window, "menu_actions", {})
    rows = []
    for spec in ACTIONS:
        action = built.get(spec.id)
        if action is None or action.shortcut().isEmpty():
            continue
        where = (spec.menu or "Chat").replace("&", "")
        keys = action.shortcut().toString(QKeySequence.SequenceFormat.NativeText)
        rows.append((where, keys, spec.text.replace("&", "").rstrip("…")))
    return rows + list(OTHER_KEYS)


def show_shortcuts(window: QWidget) -> QDialog:
    """Help → Keyboard shortcuts (F1): every key, generated from the declared actions; one window, reused."""
    dlg = window.findChild(QDialog, "ShortcutsDialog")
    if dlg is None:
        dlg = QDialog(window, objectName="ShortcutsDialog")
        dlg.setWindowTitle("Keyboard shortcuts")
        lay = QVBoxLayout(dlg)
        intro = QLabel(
            "Everything in Harmonica works from the keyboard. Menus open with Alt and the underlined letter."
        )
        intro.setWordWrap(True)
        lay.addWidget(intro)
        rows = shortcut_rows(window)
        table = QTableWidget(len(rows), 3, objectName="ShortcutsTable")
        table.setAccessibleName("Keyboard shortcuts")
        table.setHorizontalHeaderLabels(["Where", "Keys", "What it does"])
        table.verticalHeader().hide()
        table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        table.setSelectionBehavior(QTableWidget.SelectionBehavior.SelectRows)
        table.setWordWrap(True)
        for r, row in enumerate(rows):
            for c, text in enumerate(row):
                item = QTableWidgetItem(text)
                item.setFlags(Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable)
                table.setItem(r, c, item)
        header = table.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(2, QHeaderView.ResizeMode.Stretch)
        lay.addWidget(table, 1)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(dlg.close)
        lay.addWidget(buttons)
        from app.ui.window_state import fit_to_screen

        fit_to_screen(dlg, (640, 560))
    dlg.show()
    dlg.raise_()
    dlg.activateWindow()
    return dlg
