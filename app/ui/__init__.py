"""Harmonica's Qt layer: widgets that show core state and forward user intent."""

from __future__ import annotations

import ctypes
import sys


def _guard_none_refcount() -> bool:
    """Work around bindings that return None from void methods without a new reference.

    PySide6 6.12.0 on Python 3.11 does this: every call to a void Qt method (insertText,
    processEvents, setPosition, …) takes one reference from None, and after some tens of thousands
    of calls Python aborts with "none_dealloc: deallocating None". Python 3.12+ made None immortal,
    so only older interpreters are hit. When a probe shows the leak, None's reference count is
    raised far beyond anything an app session can use up. Returns True when the guard was applied.
    """
    if sys.version_info >= (3, 12) or sys.implementation.name != "cpython":
        return False
    from PySide6.QtCore import QObject

    probe = QObject()
    before = sys.getrefcount(None)
    for _ in range(64):
        probe.setObjectName("probe")  # a void method
    if before - sys.getrefcount(None) < 32:
        return False
    ctypes.c_ssize_t.from_address(id(None)).value += 1 << 50  # ob_refcnt is the first field
    return True


def _guard_true_refcount() -> bool:
    """The same guard for True: PySide6 6.12.0's Signal.emit() returns True without a new reference.

    Every emit from Python (each token a worker streams is one) takes a reference from True, and
    after a few thousand Python aborts with "bool_dealloc: deallocating True or False". Probed like
    None above; returns True when the guard was applied.
    """
    if sys.version_info >= (3, 12) or sys.implementation.name != "cpython":
        return False
    from PySide6.QtCore import QObject, Signal

    class _Probe(QObject):
        ping = Signal(int)

    probe = _Probe()
    before = sys.getrefcount(True)
    for _ in range(64):
        probe.ping.emit(1)  # no receivers: nothing else touches True
    if before - sys.getrefcount(True) < 32:
        return False
    ctypes.c_ssize_t.from_address(id(True)).value += 1 << 50
    return True


NONE_REFCOUNT_GUARDED = _guard_none_refcount()
TRUE_REFCOUNT_GUARDED = _guard_true_refcount()
