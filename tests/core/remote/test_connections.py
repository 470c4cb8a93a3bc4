"""Saved connections: settings round trip, keys in the keyring (never in the settings database), no-keyring fallback, endpoints."""

from __future__ import annotations

import json
import logging
import sqlite3
from pathlib import Path

import pytest

from app.core.remote.connections import Connections, ConnectionSetupError, KeyStore, parse_endpoint
from app.core.remote.http import RemoteError
from app.core.remote.netpolicy import NetworkPolicyError, check_host, parse_ranges
from app.core.settings import Settings
from app.core.store import Store
from tests.core.remote.test_harmonica_peer import MemoryKeyring


class LockedKeyring(MemoryKeyring):
    def set_password(self, service: str, user: str, password: str) -> None:
        raise RuntimeError("locked")


def _settings(tmp_path: Path) -> tuple[Store, Settings]:
    store = Store.open(tmp_path / "c.sqlite3")
    return store, Settings.read(store)


def test_servers_and_workers_round_trip_and_keys_stay_out_of_the_database(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    store, settings = _settings(tmp_path)
    ring = MemoryKeyring()
    conns = Connections(settings, KeyStore(ring))
    s = conns.save_server(
        "studio-pc", "studio-pc:8000/v1/", key="sk-very-secret", kind="vllm", model="openai/gpt-oss-120b"
    )
    w = conns.add_worker("192.168.1.20:50052", "gpu-box")
    assert s.url == "http://studio-pc:8000/v1" and w.endpoint == "192.168.1.20:50052"
    store.close()
    raw = sqlite3.connect(tmp_path / "c.sqlite3").execute("select group_concat(value) from settings").fetchone()[0]
    assert "sk-very-secret" not in raw and "studio-pc" in raw
    assert "sk-very-secret" not in caplog.text
    store2 = Store.open(tmp_path / "c.sqlite3")
    again = Connections(Settings.read(store2), KeyStore(ring))
    assert again.servers() == [s] and again.workers() == [w]
    assert again.key(s.id) == "sk-very-secret"
    assert ring.items == {("Harmonica", f"connection:{s.id}"): "sk-very-secret"}
    again.remove_server(s.id)
    assert ring.items == {} and again.servers() == []
    store2.close()


def test_without_a_keyring_keys_live_for_this_run_only(tmp_path: Path) -> None:
    store, settings = _settings(tmp_path)
    keys = KeyStore(None)
    assert not keys.persistent and "only while Harmonica runs" in keys.describe()
    conns = Connections(settings, keys)
    s = conns.save_server("box", "http://10.0.0.5:11434", key="sk-mem")
    assert conns.key(s.id) == "sk-mem"
    assert Connections(settings, KeyStore(None)).key(s.id) == ""  # a new run has forgotten it
    assert json.dumps(store.get_setting("settings.connections")).find("sk-mem") < 0
    store.close()


def test_a_locked_keyring_falls_back_to_memory(tmp_path: Path) -> None:
    store, _ = _settings(tmp_path)
    keys = KeyStore(LockedKeyring())
    assert keys.set("x", "sk-1") is False and keys.get("x") == "sk-1"
    store.close()


def test_the_system_keyring_here_is_detected_honestly() -> None:
    keys = KeyStore()
    assert isinstance(keys.persistent, bool) and keys.describe()


@pytest.mark.parametrize("url", ["", "ftp://x", "http://user:pw@host/v1", "http://host:99999"])
def test_bad_urls_are_refused(tmp_path: Path, url: str) -> None:
    store, settings = _settings(tmp_path)
    with pytest.raises(RemoteError):
        Connections(settings, KeyStore(None)).save_server("x", url)
    store.close()


@pytest.mark.parametrize(
    ("text", "want"),
    [("1.2.3.4:50052", ("1.2.3.4", 50052)), ("gpu-box:1", ("gpu-box", 1)), ("[fe80::1]:5", ("fe80::1", 5))],
)
def test_endpoints(text: str, want: tuple[str, int]) -> None:
    assert parse_endpoint(text) == want


@pytest.mark.parametrize("text", ["nohost", "a:b", "h:0", "h:70000", "a b:1"])
def test_bad_endpoints(text: str) -> None:
    with pytest.raises(ConnectionSetupError):
        parse_endpoint(text)


def test_network_policy() -> None:
    lan = parse_ranges("192.168.1.0/24, fd00::/8")
    resolve = {"studio": ["192.168.1.5"], "sneaky": ["192.168.1.5", "93.184.216.34"]}.get
    check_host("studio", offline=True, allowed=lan, resolve=lambda h: resolve(h) or [])
    check_host("anything", offline=False)
    check_host("localhost", offline=True)
    with pytest.raises(NetworkPolicyError):
        check_host("sneaky", offline=True, allowed=lan, resolve=lambda h: resolve(h) or [])
    with pytest.raises(NetworkPolicyError):
        check_host("192.168.2.1", offline=True, allowed=lan)
    with pytest.raises(ValueError, match="not an address range"):
        parse_ranges("192.168.1.0/33")
