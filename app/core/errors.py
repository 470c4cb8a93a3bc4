"""The one base of Harmonica's own errors, whose messages are sentences a person can act on."""

from __future__ import annotations


class HarmonicaError(Exception):
    """Base of every error Harmonica raises on purpose; its message is shown to the user as it is."""
