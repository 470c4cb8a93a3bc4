"""The saved connections: OpenAI-compatible servers and llama.cpp RPC GPU workers (typed settings), and their keys (OS keyring).

Servers and workers live in the settings area ``connections`` (app/core/settings.py). A key never
goes to the settings database: it is stored in the operating system's keyring through
`keyring` (Windows Credential Manager, macOS Keychain, the Secret Service of GNOME/KDE). Where no
keyring backend exists (a headless Linux box, a minimal desktop), the key is kept in memory for
this run only and the user is told so: they enter it again after a restart, and nothing readable
is left on disk.
"""

from __future__ import annotations

import logging
import re
import secrets
import threading
from dataclasses import dataclass
from typing import Any

from app.core.errors import HarmonicaError
from app.core.remote.dialects import KINDS
from app.core.remote.http import normalise_base_url
from app.core.remote.netpolicy import IPNetwork, parse_ranges

log = logging.getLogger(__name__)

KEYRING_SERVICE = "Harmonica"
_HOST_RE = re.compile(r"^[A-Za-z0-9.\-:\[\]]{1,253}$")


class ConnectionSetupError(HarmonicaError):
    """A connection cannot be saved as given; the message says what to change."""


@dataclass(frozen=True)
class ServerConnection:
    """An OpenAI-compatible server the user added."""

    id: str
    name: str
    url: str
    kind: str = ""  # "" : detect at connect time
    model: str = ""  # the model last chosen on it

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "url": self.url, "kind": self.kind, "model": self.model}


@dataclass(frozen=True)
class GpuWorker:
    """A machine running llama.cpp's rpc-server whose devices can hold part of a model."""

    id: str
    host: str
    port: int
    name: str = ""
    enabled: bool = True

    @property
    def endpoint(self) -> str:
        host = f"[{self.host}]" if ":" in self.host and not self.host.startswith("[") else self.host
        return f"{host}:{self.port}"

    @property
    def label(self) -> str:
        return self.name or self.endpoint

    def to_json(self) -> dict[str, Any]:
        return {"host": self.host, "port": self.port, "name": self.name, "enabled": self.enabled}


def parse_endpoint(text: str) -> tuple[str, int]:
    """host:port of an rpc-server ("192.168.1.20:50052", "gpu-box:50052", "[fe80::1]:50052")."""
    t = text.strip()
    m = re.fullmatch(r"\[(?P<h6>[0-9A-Fa-f:.%]+)\]:(?P<p6>\d+)|(?P<h>[^:\s]+):(?P<p>\d+)", t)
    if m is None:
        raise ConnectionSetupError(f"“{text}” is not host:port; write it like 192.168.1.20:50052.")
    host = m.group("h6") or m.group("h")
    port = int(m.group("p6") or m.group("p"))
    if not 0 < port < 65536:
        raise ConnectionSetupError(f"{port} is not a port number (1–65535).")
    if not _HOST_RE.match(host):
        raise ConnectionSetupError(f"“{host}” is not a host name or address.")
    return host, port


class KeyStore:
    """Keys of connections: the OS keyring when there is one, else this run's memory only."""

    def __init__(self, backend: Any = None) -> None:
        self._memory: dict[str, str] = {}
        self._lock = threading.Lock()
        self._backend = backend if backend is not None else _system_keyring()

    @property
    def persistent(self) -> bool:
        """Whether keys survive a restart (a keyring backend is available)."""
        return self._backend is not None

    def describe(self) -> str:
        """One sentence for the connection dialog."""
        if self._backend is not None:
            return (
                f"Keys are kept in your system's keyring ({_backend_name(self._backend)}), never in Harmonica's files."
            )
        return (
            "No system keyring was found, so keys are kept only while Harmonica runs (you enter them again after a "
            "restart); Harmonica never writes them to disk."
        )

    def set(self, connection_id: str, key: str) -> bool:
        """Keep `key` for a connection (empty: forget it); returns whether it was stored persistently."""
        user = f"connection:{connection_id}"
        with self._lock:
            if not key:
                self._memory.pop(connection_id, None)
                if self._backend is not None:
                    try:
                        self._backend.delete_password(KEYRING_SERVICE, user)
                    except Exception:  # noqa: BLE001 - nothing stored, or the keyring is locked
                        pass
                return self._backend is not None
            if self._backend is not None:
                try:
                    self._backend.set_password(KEYRING_SERVICE, user, key)
                    self._memory.pop(connection_id, None)
                    return True
                except Exception as exc:  # noqa: BLE001 - locked or refused: keep it for this run
                    log.warning(
                        "the system keyring refused a connection key (%s); it is kept for this run only",
                        type(exc).__name__,
                    )
            self._memory[connection_id] = key
            return False

    def get(self, connection_id: str) -> str:
        with self._lock:
            if connection_id in self._memory:
                return self._memory[connection_id]
            if self._backend is None:
                return ""
            try:
                return str(self._backend.get_password(KEYRING_SERVICE, f"connection:{connection_id}") or "")
            except Exception as exc:  # noqa: BLE001
                log.warning("the system keyring could not be read (%s)", type(exc).__name__)
                return ""


def _system_keyring() -> Any:
    """The keyring backend, or None when `keyring` is missing or has no usable backend."""
    try:
        import keyring
        from keyring.backends import fail
    except Exception:  # noqa: BLE001 - keyring not installed or broken
        return None
    try:
        backend = keyring.get_keyring()
    except Exception:  # noqa: BLE001
        return None
    if isinstance(backend, fail.Keyring) or getattr(backend, "priority", 1) <= 0:
        return None
    try:
        from keyring.backends import chainer

        if isinstance(backend, chainer.ChainerBackend) and not backend.backends:
            return None
    except Exception:  # noqa: BLE001
        pass
    return backend


def _backend_name(backend: Any) -> str:
    return str(getattr(backend, "name", None) or type(backend).__name__)


class Connections:
    """The user's servers and GPU workers, read from and written to the ``connections`` settings area."""

    def __init__(self, settings: Any, keys: KeyStore | None = None) -> None:
        self._settings = settings
        self.keys = keys or KeyStore()

    @property
    def _area(self) -> Any:
        return self._settings.connections

    def _save(self) -> None:
        self._settings.save("connections")

    # --- servers -------------------------------------------------------------------------------------
    def servers(self) -> list[ServerConnection]:
        out: list[ServerConnection] = []
        for cid, raw in self._area.servers.items():
            if not isinstance(raw, dict) or not isinstance(raw.get("url"), str):
                continue
            out.append(
                ServerConnection(
                    str(cid),
                    str(raw.get("name") or raw["url"]),
                    raw["url"],
                    str(raw.get("kind") or ""),
                    str(raw.get("model") or ""),
                )
            )
        return out

    def server(self, connection_id: str) -> ServerConnection:
        for s in self.servers():
            if s.id == connection_id:
                return s
        raise ConnectionSetupError("That connection no longer exists; add it again under Connections → Add server….")

    def save_server(
        self,
        name: str,
        url: str,
        *,
        key: str | None = None,
        kind: str = "",
        model: str = "",
        connection_id: str | None = None,
    ) -> ServerConnection:
        """Add (or, with `connection_id`, change) a server; `key` None keeps the stored key."""
        clean = normalise_base_url(url)
        if kind and kind not in KINDS:
            raise ConnectionSetupError(f"Unknown kind of server “{kind}”.")
        name = " ".join(name.split())[:60] or clean.split("://", 1)[1].split("/", 1)[0]
        cid = connection_id or "s" + secrets.token_hex(4)
        conn = ServerConnection(cid, name, clean, kind, model)
        self._area.servers[cid] = conn.to_json()
        self._save()
        if key is not None:
            self.keys.set(cid, key.strip())
        return conn

    def choose_model(self, connection_id: str, model: str) -> None:
        raw = self._area.servers.get(connection_id)
        if isinstance(raw, dict):
            raw["model"] = model
            self._save()

    def remove_server(self, connection_id: str) -> None:
        self._area.servers.pop(connection_id, None)
        if self._area.active == connection_id:
            self._area.active = None
        self._save()
        self.keys.set(connection_id, "")

    def key(self, connection_id: str) -> str:
        return self.keys.get(connection_id)

    # --- GPU workers ---------------------------------------------------------------------------------
    def workers(self, *, enabled_only: bool = False) -> list[GpuWorker]:
        out: list[GpuWorker] = []
        for wid, raw in self._area.workers.items():
            if (
                not isinstance(raw, dict)
                or not isinstance(raw.get("host"), str)
                or not isinstance(raw.get("port"), int)
            ):
                continue
            w = GpuWorker(
                str(wid), raw["host"], raw["port"], str(raw.get("name") or ""), bool(raw.get("enabled", True))
            )
            if w.enabled or not enabled_only:
                out.append(w)
        return out

    def add_worker(self, endpoint: str, name: str = "") -> GpuWorker:
        host, port = parse_endpoint(endpoint)
        for w in self.workers():
            if (w.host, w.port) == (host, port):
                raise ConnectionSetupError(f"{w.endpoint} is already a GPU worker.")
        wid = "w" + secrets.token_hex(4)
        worker = GpuWorker(wid, host, port, " ".join(name.split())[:60])
        self._area.workers[wid] = worker.to_json()
        self._save()
        return worker

    def set_worker_enabled(self, worker_id: str, on: bool) -> None:
        raw = self._area.workers.get(worker_id)
        if isinstance(raw, dict):
            raw["enabled"] = bool(on)
            self._save()

    def remove_worker(self, worker_id: str) -> None:
        self._area.workers.pop(worker_id, None)
        self._save()

    # --- offline mode --------------------------------------------------------------------------------
    def allowed_ranges(self) -> list[IPNetwork]:
        try:
            return parse_ranges(self._area.allowed_ranges)
        except ValueError:
            log.warning("settings: the allowed address ranges cannot be read; none are allowed")
            return []

    def set_allowed_ranges(self, text: str) -> None:
        """Raises ConnectionSetupError naming a range that cannot be read."""
        try:
            nets = parse_ranges(text)
        except ValueError as exc:
            raise ConnectionSetupError(str(exc)) from None
        self._area.allowed_ranges = ", ".join(str(n) for n in nets)
        self._save()
