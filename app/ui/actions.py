"""Every menu command and window shortcut, declared as data in one place and built into menus by one function.

To add a command: add an ActionSpec below naming a method of the window or of one of its parts
(`handler`, e.g. "conversations.choose_import"). The handler
gets the spec's `value` when it has one (actions that pick one of several, like the theme),
else a checkable action's new state, else nothing. `enabled_when`/`checked_when` name a window
attribute or method returning bool (called with `value` when there is one), re-read by
`update_actions` whenever the window refreshes. Checkable actions of one submenu exclude each other.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from PySide6.QtGui import QAction, QActionGroup, QKeySequence
from PySide6.QtWidgets import QMainWindow, QMenu

Shortcut = str | QKeySequence.StandardKey | None


@dataclass(frozen=True)
class ActionSpec:
    id: str
    text: str
    menu: str | None  # "&File", … ; None: a window-wide shortcut that is in no menu
    handler: str  # name of the window method it calls
    shortcut: Shortcut = None
    tip: str = ""
    enabled_when: str | None = None
    checkable: bool = False
    checked_when: str | None = None
    separator_before: bool = False
    submenu: str | None = None  # text of a submenu of `menu` that holds it
    value: str | None = None


_K = QKeySequence.StandardKey
ACTIONS: tuple[ActionSpec, ...] = (
    # File
    ActionSpec("open_model", "&Open model…", "&File", "choose_model", _K.Open, enabled_when="can_open_model"),
    ActionSpec(
        "models",
        "&Models…",
        "&File",
        "panels.show_models",
        "Ctrl+Shift+M",
        "Download gpt-oss, manage and choose model files",
    ),
    ActionSpec("hardware", "&Hardware and load settings…", "&File", "show_hardware"),
    ActionSpec("new_chat", "&New chat", "&File", "conversations.new_chat", _K.New),
    ActionSpec("import", "&Import conversations…", "&File", "conversations.choose_import", separator_before=True),
    ActionSpec("export_all", "Export &all conversations…", "&File", "conversations.choose_export_all"),
    ActionSpec("quit", "&Quit", "&File", "close", _K.Quit, separator_before=True),
    # Chat
    ActionSpec("chat_settings", "Chat &settings…", "&Chat", "conversations.edit_settings", "Ctrl+,"),
    ActionSpec("search", "&Search conversations", "&Chat", "view.focus_search", _K.Find),
    ActionSpec(
        "copy_last",
        "&Copy last answer",
        "&Chat",
        "conversations.copy_last_answer",
        "Ctrl+Shift+C",
        "Copy the latest answer as Markdown",
        enabled_when="conversations.has_answer",
        separator_before=True,
    ),
    ActionSpec(
        "regenerate_last",
        "Re&generate last answer",
        "&Chat",
        "conversations.regenerate_last",
        "Ctrl+Shift+R",
        "Write the latest answer again (the old one stays as another version)",
        enabled_when="conversations.can_regenerate",
    ),
    ActionSpec(
        "edit_last",
        "&Edit last message…",
        "&Chat",
        "conversations.edit_last_message",
        "Ctrl+Shift+E",
        "Edit your latest message and send it again (Up in an empty composer does the same)",
        enabled_when="conversations.can_edit",
    ),
    ActionSpec("rename", "&Rename chat", "&Chat", "conversations.rename_current", separator_before=True),
    ActionSpec("delete", "&Delete chat", "&Chat", "conversations.delete_current"),
    # Tools
    ActionSpec("tools", "&Tools the model can use…", "&Tools", "panels.show_tools"),
    ActionSpec(
        "lab",
        "&Effort lab…",
        "&Tools",
        "panels.show_lab",
        "Ctrl+L",
        "Compare low, medium and high reasoning effort on your own prompts",
    ),
    ActionSpec(
        "server",
        "Local &API server…",
        "&Tools",
        "show_server",
        tip="Serve the loaded model to your own scripts through the OpenAI API",
    ),
    # Connections: models on other computers, GPU workers (app/ui/connections_dialog.py)
    ActionSpec(
        "add_server",
        "Add &server…",
        "&Connections",
        "panels.add_server",
        tip="Run gpt-oss on another computer: vLLM, llama.cpp's server, Ollama, LM Studio or another Harmonica",
    ),
    ActionSpec(
        "add_worker",
        "Add &GPU worker…",
        "&Connections",
        "panels.add_worker",
        tip="Let a model span the GPUs of other computers (llama.cpp rpc-server; trusted networks only)",
    ),
    ActionSpec("manage_connections", "&Manage…", "&Connections", "panels.manage_connections", separator_before=True),
    # View
    ActionSpec(
        "sidebar",
        "Show &conversations",
        "&View",
        "view.set_sidebar_visible",
        "Ctrl+B",
        checkable=True,
        checked_when="view.sidebar_visible",
    ),
    *(
        ActionSpec(
            f"theme_{name}",
            label,
            "&View",
            "view.set_theme",
            checkable=True,
            checked_when="view.theme_is",
            separator_before=True,
            submenu="&Theme",
            value=name,
        )
        for name, label in (("system", "Like the &system"), ("light", "&Light"), ("dark", "&Dark"))
    ),
    # Help
    ActionSpec(
        "shortcuts",
        "&Keyboard shortcuts",
        "&Help",
        "view.show_shortcuts",
        QKeySequence.StandardKey.HelpContents,
        "Every key Harmonica knows",
    ),
    ActionSpec(
        "log_folder",
        "Show &log folder",
        "&Help",
        "view.show_log_folder",
        tip="Open the folder of Harmonica's log",
        separator_before=True,
    ),
    ActionSpec(
        "diagnostics",
        "&Copy diagnostics",
        "&Help",
        "view.copy_diagnostics",
        tip="Versions, backend, load plan and the last errors, for a bug report (no conversation text)",
    ),
    ActionSpec(
        "debug_logging",
        "&Debug logging (includes conversation text)",
        "&Help",
        "view.set_debug_logging",
        checkable=True,
        checked_when="view.debug_logging",
    ),
    ActionSpec("about", "&About Harmonica", "&Help", "view.about", separator_before=True),
    # Window-wide shortcuts
    ActionSpec("stop", "Stop generating", None, "answers.stop", "Esc"),
)


def resolve(window: Any, path: str) -> Any:
    """`path` ("answers.stop") looked up on the window, one attribute at a time."""
    obj = window
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def _read(window: Any, name: str, value: str | None) -> bool:
    attr = resolve(window, name)
    if value is not None:
        return bool(attr(value))
    return bool(attr() if callable(attr) else attr)


def _connect(action: QAction, spec: ActionSpec, handler: Callable[..., Any]) -> None:
    if spec.value is not None:
        action.triggered.connect(lambda _=False, h=handler, v=spec.value: h(v))
    elif spec.checkable:
        action.triggered.connect(lambda on, h=handler: h(on))
    else:
        action.triggered.connect(lambda _=False, h=handler: h())


def build_actions(window: QMainWindow, specs: tuple[ActionSpec, ...] = ACTIONS) -> dict[str, QAction]:
    """Create the actions of `specs` on `window`, put them into its menu bar, return them by id."""
    actions: dict[str, QAction] = {}
    menus: dict[str, QMenu] = {}
    submenus: dict[tuple[str, str], tuple[QMenu, QActionGroup]] = {}
    for spec in specs:
        action = QAction(spec.text, window)
        action.setCheckable(spec.checkable)
        if spec.shortcut is not None:
            action.setShortcut(QKeySequence(spec.shortcut))
        if spec.tip:
            action.setToolTip(spec.tip)
        _connect(action, spec, resolve(window, spec.handler))
        actions[spec.id] = action
        if spec.menu is None:
            window.addAction(action)  # a shortcut of the whole window
            continue
        top = menus.get(spec.menu)
        if top is None:
            top = menus[spec.menu] = window.menuBar().addMenu(spec.menu)
        if spec.submenu is None:
            if spec.separator_before:
                top.addSeparator()
            top.addAction(action)
            continue
        key = (spec.menu, spec.submenu)
        if key not in submenus:
            if spec.separator_before:
                top.addSeparator()
            submenus[key] = (top.addMenu(spec.submenu), QActionGroup(window))
        menu, group = submenus[key]
        if spec.checkable:
            group.addAction(action)
        menu.addAction(action)
    update_actions(window, actions, specs)
    return actions


def update_actions(window: Any, actions: dict[str, QAction], specs: tuple[ActionSpec, ...] = ACTIONS) -> None:
    """Re-read every `enabled_when` and `checked_when` (called when the window's state changes)."""
    for spec in specs:
        action = actions.get(spec.id)
        if action is None:
            continue
        if spec.enabled_when is not None:
            action.setEnabled(_read(window, spec.enabled_when, spec.value))
        if spec.checked_when is not None:
            action.blockSignals(True)
            action.setChecked(_read(window, spec.checked_when, spec.value))
            action.blockSignals(False)
