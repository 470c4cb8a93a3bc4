"""Harmonica's domain layer: pure Python, never imports Qt (tests/core/test_no_qt.py enforces it)."""
