"""The app's typed settings: one dataclass per area, versioned, stored in the conversation store's settings table.

Each area is one JSON object under the key ``settings.<area>``; ``settings.version`` says which
layout the table has. `Settings.read` upgrades older layouts first (version 0 is what Harmonica
stored before typed settings: the keys ``last_model``, ``load_wishes`` and ``api_server``), so
people keep what they chose. A stored value of the wrong type or out of range falls back to its
default with a note in the log; keys this version does not know are kept when an area is saved,
so a newer Harmonica's settings survive a round trip through this one.

Per-tool choices (which tools are on, approvals, limits) stay in ``tools.json``, owned by
app/core/tools/settings.py; the per-conversation settings stay with each conversation.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from app.core.store import EFFORTS

log = logging.getLogger(__name__)

SETTINGS_VERSION = 1
VERSION_KEY = "settings.version"
THEMES = ("system", "light", "dark")


class SettingsBackend(Protocol):
    """Where settings are kept: key → JSON value (the Store implements it)."""

    def get_setting(self, key: str, default: Any = None) -> Any: ...
    def set_setting(self, key: str, value: Any) -> None: ...
    def delete_setting(self, key: str) -> None: ...


# --- the areas ------------------------------------------------------------------------------------
@dataclass
class WindowSettings:
    """The window's look."""

    theme: str = "system"  # "system" follows the desktop (live); the --theme option overrides it for one run
    sidebar_visible: bool = True
    # Where each window was: name → {"x", "y", "w", "h", "maximized"} (app/ui/window_state.py checks
    # it against the screens there are when it is restored).
    geometries: dict[str, Any] = field(default_factory=dict)


@dataclass
class ChatDefaults:
    """How new chats start and what happens after an answer."""

    # The one default of the reasoning effort: new chats start with it, and moving the composer's
    # slider sets both it and the open chat's own effort (its ConversationSettings).
    reasoning_effort: str = "medium"
    auto_title: bool = True  # the model writes a short title after the first answer


@dataclass
class LoadPrefs:
    """Which model loads, and the user's overrides of the planner (the hardware panel's Advanced)."""

    last_model: str | None = None
    autoload: bool = True  # load last_model at start
    # planner.Wishes fields the user set; absent means "the planner decides".
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass
class ApiServerPrefs:
    """The local OpenAI-compatible server."""

    enabled: bool = False  # on at start, as the user left it
    port: int | None = None  # None: the server's default port; 0: any free port
    api_key: str = ""
    allow_network: bool = False
    web_search: bool = False  # API clients' web_search tools may use the browser


@dataclass
class ToolPrefs:
    """Whether the model is offered tools at all (per-tool choices live in tools.json)."""

    enabled: bool = True


@dataclass
class LoggingPrefs:
    """The log file (app/core/logs.py)."""

    debug: bool = False  # more detail, conversation text included


@dataclass
class ConnectionPrefs:
    """Models served elsewhere and GPUs pooled over the LAN (app/core/remote/connections.py reads them).

    Keys are never here: they live in the OS keyring.
    """

    servers: dict[str, Any] = field(default_factory=dict)  # id → {"name", "url", "kind", "model"}
    workers: dict[str, Any] = field(default_factory=dict)  # id → {"host", "port", "name", "enabled"}
    allowed_ranges: str = ""  # offline mode still reaches these LAN ranges ("192.168.1.0/24, …")
    active: str | None = None  # the server whose model ran last


AREAS: dict[str, type] = {
    "window": WindowSettings,
    "chat": ChatDefaults,
    "load": LoadPrefs,
    "server": ApiServerPrefs,
    "tools": ToolPrefs,
    "logging": LoggingPrefs,
    "connections": ConnectionPrefs,
}

# Checks beyond the field's type: (area, field) → predicate on the value.
_VALID: dict[tuple[str, str], Callable[[Any], bool]] = {
    ("window", "theme"): lambda v: v in THEMES,
    ("window", "geometries"): lambda v: all(isinstance(k, str) and isinstance(g, dict) for k, g in v.items()),
    ("chat", "reasoning_effort"): lambda v: v in EFFORTS,
    ("server", "port"): lambda v: v is None or 0 <= v <= 65535,
    ("load", "last_model"): lambda v: v is None or bool(v.strip()),
    ("load", "overrides"): lambda v: all(isinstance(k, str) for k in v),
    ("connections", "servers"): lambda v: all(isinstance(k, str) and isinstance(x, dict) for k, x in v.items()),
    ("connections", "workers"): lambda v: all(isinstance(k, str) and isinstance(x, dict) for k, x in v.items()),
}


@dataclass
class Settings:
    """All app settings; `runtime.settings` is the one instance, `save(area)` writes an area back."""

    window: WindowSettings = field(default_factory=WindowSettings)
    chat: ChatDefaults = field(default_factory=ChatDefaults)
    load: LoadPrefs = field(default_factory=LoadPrefs)
    server: ApiServerPrefs = field(default_factory=ApiServerPrefs)
    tools: ToolPrefs = field(default_factory=ToolPrefs)
    logging: LoggingPrefs = field(default_factory=LoggingPrefs)
    connections: ConnectionPrefs = field(default_factory=ConnectionPrefs)
    backend: SettingsBackend | None = field(default=None, repr=False, compare=False)

    @classmethod
    def read(cls, backend: SettingsBackend | None) -> Settings:
        """Read every area from `backend` (upgrading an older layout first); None gives defaults."""
        out = cls(backend=backend)
        if backend is None:
            return out
        upgrade(backend)
        for name, kind in AREAS.items():
            setattr(out, name, _parse_area(name, kind, backend.get_setting(f"settings.{name}")))
        return out

    def save(self, *areas: str) -> None:
        """Write `areas` (all when none are named) to the backend, keeping keys this version does not know."""
        if self.backend is None:
            return
        for name in areas or tuple(AREAS):
            if name not in AREAS:
                raise KeyError(f"unknown settings area {name!r}")
            stored = self.backend.get_setting(f"settings.{name}")
            data = dict(stored) if isinstance(stored, Mapping) else {}
            data.update(dataclasses.asdict(getattr(self, name)))
            self.backend.set_setting(f"settings.{name}", data)


# --- reading values -------------------------------------------------------------------------------
def _parse_area(name: str, kind: type, raw: Any) -> Any:
    area = kind()
    if raw is None:
        return area
    if not isinstance(raw, Mapping):
        log.warning("settings: the stored %s settings are not an object; defaults are used", name)
        return area
    hints = typing.get_type_hints(kind)
    for f in dataclasses.fields(area):
        if f.name not in raw:
            continue
        value = raw[f.name]
        ok, coerced = _coerce(hints[f.name], value)
        check = _VALID.get((name, f.name))
        if ok and (check is None or check(coerced)):
            setattr(area, f.name, coerced)
        else:
            log.warning(
                "settings: %s.%s = %r is not valid; the default %r is used", name, f.name, value, getattr(area, f.name)
            )
    return area


def _coerce(hint: Any, value: Any) -> tuple[bool, Any]:
    """(True, value as `hint`) when `value` fits the annotation, else (False, None)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        for arm in typing.get_args(hint):
            ok, v = _coerce(arm, value)
            if ok:
                return True, v
        return False, None
    if hint is type(None):
        return value is None, None
    if hint is bool:
        return isinstance(value, bool), value
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        return ok, float(value) if ok else None
    if hint is str:
        return isinstance(value, str), value
    if origin is dict or hint is dict:
        return isinstance(value, Mapping), dict(value) if isinstance(value, Mapping) else None
    raise TypeError(f"settings cannot hold a {hint!r}")  # a programming error in an area's fields


# --- upgrades -------------------------------------------------------------------------------------
def _from_v0(backend: SettingsBackend) -> None:
    """Version 0 → 1: the loose keys Harmonica stored before typed settings become areas."""
    load: dict[str, Any] = {}
    last = backend.get_setting("last_model")
    if last is not None:
        load["last_model"] = last
    wishes = backend.get_setting("load_wishes")
    if wishes is not None:
        load["overrides"] = wishes
    if load:
        backend.set_setting("settings.load", load)
    server = backend.get_setting("api_server")
    if server is not None:
        keep = ("enabled", "port", "api_key", "allow_network")
        backend.set_setting(
            "settings.server", {k: server[k] for k in keep if k in server} if isinstance(server, Mapping) else server
        )
    for key in ("last_model", "load_wishes", "api_server"):
        backend.delete_setting(key)


# version → the step that brings a table of that version to the next one
UPGRADES: dict[int, Callable[[SettingsBackend], None]] = {0: _from_v0}


def upgrade(backend: SettingsBackend) -> int:
    """Bring the stored layout up to SETTINGS_VERSION; returns the version found."""
    found = backend.get_setting(VERSION_KEY, 0)
    if not isinstance(found, int) or isinstance(found, bool) or found < 0:
        log.warning("settings: the stored version %r is not valid; reading the current layout", found)
        backend.set_setting(VERSION_KEY, SETTINGS_VERSION)
        return SETTINGS_VERSION
    if found > SETTINGS_VERSION:
        log.info("settings: version %d is newer than this Harmonica's %d; known keys are read", found, SETTINGS_VERSION)
        return found
    version = found
    while version < SETTINGS_VERSION:
        UPGRADES[version](backend)
        version += 1
        log.info("settings: upgraded to version %d", version)
    if version != found or backend.get_setting(VERSION_KEY) is None:
        backend.set_setting(VERSION_KEY, version)
    return found
