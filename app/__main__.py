"""`python -m app` / the `harmonica` gui-script: start the chat window."""

from __future__ import annotations

import argparse
import logging
import sys
import threading
import traceback
from collections.abc import Sequence
from types import TracebackType
from typing import Any


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="harmonica", description="Private, offline chat with gpt-oss models.")
    p.add_argument("--model", metavar="PATH", help="load this GGUF model file at start")
    p.add_argument("--demo", action="store_true", help=argparse.SUPPRESS)  # scripted model + sample chat (screenshots)
    p.add_argument("--theme", choices=("light", "dark", "system"), help="colour theme (default: the one last chosen)")
    p.add_argument("--screenshot", metavar="PNG", help=argparse.SUPPRESS)  # with --demo: save the window and quit
    p.add_argument("--demo-scene", default="chat", help=argparse.SUPPRESS)  # with --demo: chat | search
    # Installed-app check (packaging/linux/check_bundle.sh): load MODEL, answer one grammar-forced
    # turn through the real engine, print a JSON report, exit 0 only if it passed. No window.
    p.add_argument("--self-test", metavar="MODEL", help=argparse.SUPPRESS)
    p.add_argument("--self-test-batch", type=int, default=512, help=argparse.SUPPRESS)  # prompt batch size
    # With a random-weight test model: force the self-test's harmony grammar on every answer in the window.
    p.add_argument("--test-grammar", action="store_true", help=argparse.SUPPRESS)
    return p.parse_args(list(argv) if argv is not None else None)


def install_exception_hooks(window: Any) -> None:
    """Unhandled exceptions (UI thread or any other) → an error dialog; never a crash to desktop."""
    from PySide6.QtCore import QObject, Signal

    class _Relay(QObject):
        raised = Signal(object, str)

    relay = _Relay()
    relay.raised.connect(lambda exc, text: window.show_exception(exc, text))
    window._exception_relay = relay  # keep it alive with the window

    def hook(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
        text = "".join(traceback.format_exception(exc_type, exc, tb))
        sys.stderr.write(text)
        if issubclass(exc_type, KeyboardInterrupt):
            from PySide6.QtWidgets import QApplication

            QApplication.quit()
            return
        logging.getLogger("app").critical("Uncaught exception", exc_info=(exc_type, exc, tb))
        try:
            exc.__harmonica_logged__ = True  # type: ignore[attr-defined]  # show_exception need not log it again
        except AttributeError:
            pass
        relay.raised.emit(exc, text)  # queued to the UI thread when raised elsewhere

    def thread_hook(args: threading.ExceptHookArgs) -> None:
        if args.exc_value is not None:
            hook(args.exc_type, args.exc_value, args.exc_traceback)

    sys.excepthook = hook
    threading.excepthook = thread_hook


def main(argv: Sequence[str] | None = None) -> int:
    raw = list(argv) if argv is not None else sys.argv[1:]
    if raw[:1] == ["--run-python"]:
        # The frozen app is also the interpreter of its own child processes (app/core/child.py).
        from app.core.child import run_child_python

        return run_child_python(raw[1:])
    args = _parse(argv)
    if args.self_test:
        from app.core import selftest

        return selftest.main(args.self_test, n_batch=args.self_test_batch)
    from app.core import logs

    logs.configure()  # first: whatever goes wrong from here on is written down
    try:
        return _run_window(args)
    finally:
        logs.shutdown()


def _run_window(args: argparse.Namespace) -> int:
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication

    from app.core import logs
    from app.core.runtime import Runtime
    from app.ui import style
    from app.ui.main_window import MainWindow

    QApplication.setApplicationName("Harmonica")
    QApplication.setOrganizationName("Harmonica")
    QApplication.setDesktopFileName("harmonica")
    app = QApplication.instance() or QApplication(sys.argv[:1])
    runtime = None if args.demo else Runtime()  # the demo makes its own, over a throwaway store
    if runtime is not None:
        logs.set_debug(runtime.settings.logging.debug)
    theme = args.theme or (runtime.settings.window.theme if runtime is not None else "system")
    style.apply(app, style.dark_for(theme))  # type: ignore[arg-type]
    # "Like the system" follows the desktop's light/dark switch while Harmonica runs.
    style.follow_desktop(app, lambda: runtime.settings.window.theme if runtime is not None else theme)  # type: ignore[arg-type]

    if args.demo:
        from app.ui.demo import demo_scene, start_demo

        window = start_demo()
        demo_scene(window, args.demo_scene)
    else:
        window = MainWindow(runtime)
        if args.test_grammar:
            from app.core.selftest import GRAMMAR

            window.answers.grammar = GRAMMAR
    install_exception_hooks(window)
    window.show()
    if args.model and not args.demo:
        QTimer.singleShot(0, lambda: window.open_model(args.model))
    if args.screenshot:
        from app.ui.demo import save_screenshot

        def shoot() -> None:
            save_screenshot(window, args.screenshot)
            app.quit()

        QTimer.singleShot(1500, shoot)
    code = int(app.exec())
    from app.ui.workers import stop_all

    stop_all()
    return code


if __name__ == "__main__":
    sys.exit(main())
