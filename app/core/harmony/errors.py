"""The error raised when a prompt cannot be rendered."""

from __future__ import annotations

from app.core.errors import HarmonicaError


class HarmonyError(HarmonicaError):
    """A prompt could not be rendered; the message says why in plain words."""
