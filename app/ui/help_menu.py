"""The Help menu's commands (the log folder, diagnostics for a bug report, About) and the unexpected-error dialog."""

from __future__ import annotations

import sys
import traceback

from PySide6 import __version__ as PYSIDE_VERSION
from PySide6.QtCore import QUrl, qVersion
from PySide6.QtGui import QDesktopServices, QGuiApplication
from PySide6.QtWidgets import QMessageBox, QWidget

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
