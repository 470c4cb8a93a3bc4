"""The engine's error: a failure the user can act on, in words written for people."""

from __future__ import annotations

from app.core.errors import HarmonicaError


class EngineError(HarmonicaError):
    """A failure the user can act on; the message is written for people, not developers."""
