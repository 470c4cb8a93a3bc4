"""Tool settings (which tools are on, approvals, limits, the browser's search endpoint) in a JSON file."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.core import paths
from app.core.fsutil import atomic_write

log = logging.getLogger(__name__)

SETTINGS_FILE = "tools.json"
SCHEMA_VERSION = 1
DEFAULT_SEARCH_ENDPOINT = "http://127.0.0.1:8888/search"


@dataclass
class ToolSettings:
    """What the user chose on the Tools page. Unknown keys in the file are ignored, missing ones defaulted."""

    enabled: dict[str, bool] = field(default_factory=dict)  # tool name → on/off (absent: the tool's default)
    approval: dict[str, str] = field(default_factory=dict)  # tool name → "ask" | "auto" (absent: the default)
    # User tools the user trusts to run without asking: name → sha256 of the file they trusted. A
    # changed file (or another file defining the same name) is not trusted: it asks again.
    trusted: dict[str, str] = field(default_factory=dict)
    python_enabled: bool = True
    browser_enabled: bool = False  # off by default: it reaches the internet
    search_endpoint: str = DEFAULT_SEARCH_ENDPOINT  # a SearXNG instance's /search (JSON format)
    round_limit: int = 10  # tool calls per answer before the loop stops
    python_timeout_s: float = 120.0  # the harmony python section promises 120 s
    python_memory_mb: int = 2048
    python_cpu_s: float = 120.0
    tool_timeout_s: float = 30.0  # function tools
    browser_timeout_s: float = 20.0
    version: int = SCHEMA_VERSION

    def is_enabled(self, name: str, default: bool = True) -> bool:
        if name == "python":
            return self.python_enabled
        if name == "browser":
            return self.browser_enabled
        return self.enabled.get(name, default)

    def set_enabled(self, name: str, on: bool) -> None:
        if name == "python":
            self.python_enabled = on
        elif name == "browser":
            self.browser_enabled = on
        else:
            self.enabled[name] = on

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> ToolSettings:
        out = cls()
        if not isinstance(data, dict):
            return out
        for f in dataclasses.fields(cls):
            if f.name not in data or f.name == "version":
                continue
            value = data[f.name]
            default = getattr(out, f.name)
            if isinstance(default, dict):
                if isinstance(value, dict) and f.name == "trusted":
                    setattr(out, f.name, {str(k): v for k, v in value.items() if _is_sha256(v)})
                elif isinstance(value, dict):
                    setattr(
                        out,
                        f.name,
                        {
                            str(k): v
                            for k, v in value.items()
                            if isinstance(v, bool) or (f.name == "approval" and v in ("ask", "auto"))
                        },
                    )
            elif isinstance(default, bool):
                if isinstance(value, bool):
                    setattr(out, f.name, value)
            elif isinstance(default, (int, float)) and isinstance(value, (int, float)) and not isinstance(value, bool):
                if value > 0:
                    setattr(out, f.name, type(default)(value))
            elif isinstance(default, str) and isinstance(value, str):
                setattr(out, f.name, value)
        return out


def _is_sha256(value: Any) -> bool:
    return isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)


def settings_path() -> Path:
    return paths.config_dir() / SETTINGS_FILE


def load_settings(path: Path | None = None) -> ToolSettings:
    """Read the settings; a missing file gives defaults, a damaged one is kept aside as `.bad`."""
    p = path or settings_path()
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        return ToolSettings()
    except OSError as exc:
        log.warning("could not read %s: %s", p, exc)
        return ToolSettings()
    try:
        return ToolSettings.from_dict(json.loads(text))
    except ValueError:
        try:
            os.replace(p, p.with_suffix(p.suffix + ".bad"))
        except OSError:
            pass
        log.warning("%s was damaged; it was moved aside and defaults are used", p)
        return ToolSettings()


def save_settings(settings: ToolSettings, path: Path | None = None) -> None:
    """Write atomically (a crash mid-write leaves the old file, never half a file)."""
    atomic_write(path or settings_path(), json.dumps(settings.to_dict(), indent=2, ensure_ascii=False))


__all__ = ["DEFAULT_SEARCH_ENDPOINT", "ToolSettings", "load_settings", "save_settings", "settings_path"]
