"""Typed settings: defaults, round trips, the upgrade from the loose keys of version 0, bad values."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from app.core.settings import SETTINGS_VERSION, VERSION_KEY, ApiServerPrefs, Settings, upgrade
from app.core.store import Store


class Memory:
    """A settings backend in a dict (what the store keeps, without SQLite)."""

    def __init__(self, data: dict[str, Any] | None = None) -> None:
        self.data = dict(data or {})

    def get_setting(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    def set_setting(self, key: str, value: Any) -> None:
        self.data[key] = value

    def delete_setting(self, key: str) -> None:
        self.data.pop(key, None)


def test_defaults_without_a_backend_match_what_the_app_did_before() -> None:
    s = Settings.read(None)
    assert s.chat.reasoning_effort == "medium" and s.chat.auto_title
    assert s.load.last_model is None and s.load.autoload and s.load.overrides == {}
    assert s.server == ApiServerPrefs(enabled=False, port=None, api_key="", allow_network=False)
    assert s.tools.enabled and not s.logging.debug
    assert s.window.theme == "system" and s.window.sidebar_visible
    s.save()  # no backend: nothing to do, no error


def test_a_fresh_store_is_stamped_and_round_trips(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "c.sqlite3")
    s = Settings.read(store)
    assert store.get_setting(VERSION_KEY) == SETTINGS_VERSION
    s.chat.reasoning_effort = "high"
    s.server.port = 0
    s.load.overrides = {"n_gpu_layers": 10, "flash_attn": False}
    s.save("chat", "server", "load")
    back = Settings.read(store)
    assert back.chat.reasoning_effort == "high" and back.server.port == 0
    assert back.load.overrides == {"n_gpu_layers": 10, "flash_attn": False}
    with pytest.raises(KeyError):
        s.save("nonsense")
    store.close()


def test_version_0_keys_are_upgraded_and_nothing_is_lost(tmp_path: Path) -> None:
    """What a user of the previous release has in the table, written the way that release wrote it."""
    store = Store.open(tmp_path / "c.sqlite3")
    store.set_setting("last_model", "/models/gpt-oss-20b-mxfp4.gguf")
    store.set_setting("load_wishes", {"n_ctx": 16384, "n_cpu_moe": 12})
    store.set_setting("api_server", {"port": 9001, "api_key": "sk-harmonica-x", "allow_network": True, "enabled": True})
    store.set_setting("unrelated", 5)  # someone else's key stays
    s = Settings.read(store)
    assert s.load.last_model == "/models/gpt-oss-20b-mxfp4.gguf"
    assert s.load.overrides == {"n_ctx": 16384, "n_cpu_moe": 12}
    assert s.server == ApiServerPrefs(enabled=True, port=9001, api_key="sk-harmonica-x", allow_network=True)
    stored = store.all_settings()
    assert stored[VERSION_KEY] == SETTINGS_VERSION and stored["unrelated"] == 5
    assert not {"last_model", "load_wishes", "api_server"} & set(stored)  # one source of truth
    assert Settings.read(store) == s  # a second start reads the same
    store.close()


def test_bad_stored_values_fall_back_to_defaults_with_a_note(caplog: pytest.LogCaptureFixture) -> None:
    backend = Memory(
        {
            VERSION_KEY: SETTINGS_VERSION,
            "settings.chat": {"reasoning_effort": "extreme", "auto_title": "yes"},
            "settings.server": {"port": 70000, "api_key": 5, "enabled": True},
            "settings.window": ["not", "an", "object"],
            "settings.load": {"last_model": "   ", "overrides": {"n_ctx": 4096}, "autoload": False},
        }
    )
    with caplog.at_level(logging.WARNING, logger="app.core.settings"):
        s = Settings.read(backend)
    assert s.chat.reasoning_effort == "medium" and s.chat.auto_title is True
    assert s.server.port is None and s.server.api_key == "" and s.server.enabled is True  # the good value stays
    assert s.window.theme == "system" and s.load.last_model is None
    assert s.load.overrides == {"n_ctx": 4096} and s.load.autoload is False
    notes = caplog.text
    for what in ("chat.reasoning_effort", "chat.auto_title", "server.port", "server.api_key", "window settings"):
        assert what in notes


def test_unknown_keys_of_a_newer_version_survive_a_save() -> None:
    backend = Memory({VERSION_KEY: SETTINGS_VERSION + 3, "settings.chat": {"reasoning_effort": "low", "future": 1}})
    s = Settings.read(backend)
    assert s.chat.reasoning_effort == "low"
    s.chat.auto_title = False
    s.save("chat")
    assert backend.data["settings.chat"] == {"reasoning_effort": "low", "future": 1, "auto_title": False}
    assert backend.data[VERSION_KEY] == SETTINGS_VERSION + 3  # not downgraded


def test_a_damaged_version_is_replaced() -> None:
    backend = Memory({VERSION_KEY: "one"})
    assert upgrade(backend) == SETTINGS_VERSION and backend.data[VERSION_KEY] == SETTINGS_VERSION
