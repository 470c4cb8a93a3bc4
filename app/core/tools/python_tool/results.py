"""One cell's result as the app keeps it, and how a kernel's answer is checked into it."""

from __future__ import annotations

import base64
import binascii
import os
from dataclasses import dataclass, field
from typing import Any

from app.core.tools.safe_files import image_data_uri
from app.core.tools.sandbox_kernel import MAX_ERROR_CHARS, MAX_IMAGES


@dataclass
class ExecResult:
    """One run of a cell. `images` are data: URIs of checked image bytes (never host paths)."""

    output: str = ""
    error: str | None = None
    images: list[str] = field(default_factory=list)
    image_names: list[str] = field(default_factory=list)
    truncated_bytes: int = 0
    timed_out: bool = False
    interrupted: bool = False  # stopped by KeyboardInterrupt: the state is kept
    restarted: bool = False  # the interpreter had to be killed: the state is lost
    cpu_exceeded: bool = False
    duration_s: float = 0.0
    note: str | None = None

    @property
    def is_error(self) -> bool:
        return self.error is not None or self.timed_out or self.restarted or self.cpu_exceeded

    def model_text(self) -> str:
        """What the model reads back (the python tool message)."""
        parts: list[str] = []
        if self.output:
            parts.append(self.output.rstrip("\n"))
        if self.truncated_bytes:
            parts.append(f"[… output truncated: {self.truncated_bytes:,} more bytes were not shown]")
        if self.error:
            parts.append(self.error.rstrip("\n"))
        if self.note:
            parts.append(self.note)
        for name in self.image_names:
            parts.append(f"[image saved: {name} (shown to the user)]")
        return "\n".join(parts) if parts else "(no output)"


def take_result(result: ExecResult, msg: dict[str, Any]) -> None:
    """Copy a result into `result`, checking every field again (the supervisor already did)."""
    error = msg.get("error")
    result.error = error[:MAX_ERROR_CHARS] if isinstance(error, str) else None
    dropped = msg.get("dropped_bytes")
    if isinstance(dropped, int) and not isinstance(dropped, bool) and dropped > 0:
        result.truncated_bytes += dropped
    result.interrupted = msg.get("interrupted") is True
    result.cpu_exceeded = msg.get("cpu_exceeded") is True
    images = msg.get("images")
    for img in images[:MAX_IMAGES] if isinstance(images, list) else []:
        if not isinstance(img, dict) or not isinstance(img.get("data"), str):
            continue
        try:
            data = base64.b64decode(img["data"], validate=True)
        except (binascii.Error, ValueError):
            continue
        uri = image_data_uri(data)
        if uri is None:
            continue
        name = img.get("name")
        result.images.append(uri)
        result.image_names.append(os.path.basename(name) if isinstance(name, str) and name else "image")
    notes = [n for n in msg.get("notes") or [] if isinstance(n, str)] if isinstance(msg.get("notes"), list) else []
    if notes:
        extra = "\n".join(n[:500] for n in notes[:10])
        result.note = f"{result.note}\n{extra}" if result.note else extra
