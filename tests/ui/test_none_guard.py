"""The guard against Qt bindings that leak references to None (PySide6 6.12.0 on Python 3.11)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path


def test_many_void_qt_calls_do_not_abort_the_interpreter() -> None:
    # A long chat session makes millions of void Qt calls; without the guard a leaking binding
    # aborts Python with "none_dealloc" once None's reference count reaches zero.
    code = textwrap.dedent(
        """
        import os, sys
        os.environ["QT_QPA_PLATFORM"] = "offscreen"
        import app.ui
        from PySide6.QtGui import QTextCursor, QTextDocument
        doc = QTextDocument()
        c = QTextCursor(doc)
        for _ in range(300_000):
            c.setPosition(0)
        print("ok", app.ui.NONE_REFCOUNT_GUARDED)
        """
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.startswith("ok")


def test_many_signal_emits_do_not_abort_the_interpreter() -> None:
    # Each streamed token is one emit from a worker thread; PySide6 6.12.0's emit() returns True
    # without a reference, so a long answer used to abort Python with "bool_dealloc".
    code = textwrap.dedent(
        """
        import os, sys
        os.environ["QT_QPA_PLATFORM"] = "offscreen"
        import app.ui
        from PySide6.QtWidgets import QApplication
        from app.ui.workers import GeneratorWorker, start_worker
        qapp = QApplication([])
        got = []
        def gen(cancel):
            yield from range(50_000)
        w = GeneratorWorker(gen)
        w.yielded.connect(got.append)
        start_worker(w)
        assert w.wait(60)
        qapp.processEvents()
        print("ok", len(got), app.ui.TRUE_REFCOUNT_GUARDED)
        """
    )
    r = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=str(Path(__file__).parents[2])
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.startswith("ok 50000")
