"""`python -m app`: arguments, demo screenshot mode, and the never-crash exception hooks."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

from PySide6.QtGui import QImage
from PySide6.QtWidgets import QApplication

from app.__main__ import _parse, install_exception_hooks, main
from app.core.runtime import Runtime
from app.ui import style
from app.ui.main_window import MainWindow


def test_parse_arguments() -> None:
    a = _parse(["--model", "/m/x.gguf", "--theme", "dark"])
    assert a.model == "/m/x.gguf" and a.theme == "dark" and not a.demo
    assert _parse([]).theme is None  # the theme last chosen (View → Theme), "system" at first


def test_demo_mode_renders_and_saves_screenshot(qtbot, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import app.ui.demo as demo

    png = tmp_path / "shot.png"
    made: list[object] = []
    real_start = demo.start_demo
    monkeypatch.setattr(demo, "start_demo", lambda: made.append(real_start()) or made[-1])
    # A real app.exec()/quit() would leave Qt's "quit now" flag set for the rest of the test
    # session; run the event loop through qtbot instead.
    monkeypatch.setattr(QApplication, "exec", lambda self: qtbot.waitUntil(png.exists, timeout=10000) or 0)
    monkeypatch.setattr(QApplication, "quit", staticmethod(lambda: None))
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)
    monkeypatch.setattr(threading, "excepthook", threading.excepthook)
    monkeypatch.setattr(style, "_current", style.current())
    qapp = QApplication.instance()
    palette, font = qapp.palette(), qapp.font()  # type: ignore[union-attr]
    try:
        assert main(["--demo", "--theme", "dark", "--screenshot", str(png)]) == 0
    finally:
        qapp.setStyleSheet("")  # type: ignore[union-attr]
        qapp.setPalette(palette)  # type: ignore[union-attr]
        qapp.setFont(font)  # type: ignore[union-attr]
        for w in made:
            qtbot.addWidget(w)
    img = QImage(str(png))
    assert img.width() > 600 and img.height() > 400
    # dark theme: the window background is dark
    assert img.pixelColor(5, img.height() // 2).lightness() < 60


def test_unhandled_exceptions_become_a_dialog_and_are_logged(qtbot, monkeypatch, caplog) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)
    monkeypatch.setattr(threading, "excepthook", threading.excepthook)
    w = MainWindow(Runtime(engine_factory=lambda: None))  # type: ignore[arg-type, return-value]
    qtbot.addWidget(w)
    shown: list[tuple[BaseException, str]] = []
    monkeypatch.setattr(w, "show_exception", lambda exc, text=None: shown.append((exc, text or "")))
    install_exception_hooks(w)
    try:
        raise ValueError("from the UI thread")
    except ValueError:
        sys.excepthook(*sys.exc_info())  # type: ignore[arg-type]
    t = threading.Thread(target=lambda: (_ for _ in ()).throw(KeyError("from a thread")))
    t.start()
    t.join()
    qtbot.waitUntil(lambda: len(shown) == 2, timeout=2000)
    assert isinstance(shown[0][0], ValueError) and "from the UI thread" in shown[0][1]
    assert isinstance(shown[1][0], KeyError) and "Traceback" in shown[1][1]
    logged = [r for r in caplog.records if r.getMessage() == "Uncaught exception"]
    assert len(logged) == 2 and logged[0].exc_info is not None and logged[1].exc_info[0] is KeyError


def test_show_exception_dialog_does_not_stack(qtbot, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from PySide6.QtWidgets import QMessageBox

    w = MainWindow(Runtime(engine_factory=lambda: None))  # type: ignore[arg-type, return-value]
    qtbot.addWidget(w)
    opened: list[str] = []

    def fake_exec(box: QMessageBox) -> int:
        opened.append(box.detailedText())
        w.show_exception(RuntimeError("second, while the first is open"))
        return 0

    monkeypatch.setattr(QMessageBox, "exec", fake_exec)
    w.show_exception(RuntimeError("first"))
    assert len(opened) == 1 and "RuntimeError" in opened[0]
