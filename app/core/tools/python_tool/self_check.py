"""The live self-check: real targets for a throwaway kernel to attack, and the report of what held."""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from app.core.tools.python_tool.kernel import PythonKernel
from app.core.tools.python_tool.limits import SandboxLayers, SandboxLimits
from app.core.tools.python_tool.report import SandboxReport, build_report


class SelfCheckTargets:
    """Real things for the live self-check to attack, made by the app, torn down afterwards.

    Listening UNIX sockets where a desktop session keeps them (/tmp like ssh-agent and X11,
    $XDG_RUNTIME_DIR like D-Bus, PulseAudio and Wayland, an abstract socket like X11's), marker files
    in /tmp, /dev/shm and $XDG_RUNTIME_DIR, a file in the app's own folder in your home, a folder
    anyone may write to, a TCP listener on 127.0.0.1, and this process to signal. Permissions are
    wide open, so only the sandbox (never file permissions) can be what blocks an attempt. The real
    session sockets named in the environment (SSH_AUTH_SOCK, DBUS_SESSION_BUS_ADDRESS, X11, Wayland,
    docker) are only looked at (lstat), never connected to.
    """

    def __init__(self, private_dir: Path | None = None) -> None:
        self.private_dir = private_dir  # where the "your files" probe goes (default: the app's cache folder)
        self.targets: dict[str, list[Any]] = {"unix": [], "see": [], "read": [], "write": [], "tcp": [], "signal": []}
        self._sockets: list[socket.socket] = []
        self._files: list[Path] = []
        self._dirs: list[Path] = []

    def __enter__(self) -> dict[str, list[Any]]:
        tag = secrets.token_hex(6)
        base = Path(tempfile.mkdtemp(prefix="harmonica-selfcheck-"))
        self._dirs.append(base)
        os.chmod(base, 0o755)
        t = self.targets
        if hasattr(socket, "AF_UNIX"):
            self._unix(base / "agent.sock", "a UNIX socket in /tmp (where ssh-agent and X11 keep theirs)")
            runtime = os.environ.get("XDG_RUNTIME_DIR", "")
            if runtime and os.path.isdir(runtime) and os.access(runtime, os.W_OK):
                self._unix(
                    Path(runtime) / f"harmonica-selfcheck-{tag}.sock",
                    "a UNIX socket in $XDG_RUNTIME_DIR (where D-Bus, PulseAudio and Wayland keep theirs)",
                )
                self._marker(Path(runtime) / f"harmonica-selfcheck-{tag}", "a file in your $XDG_RUNTIME_DIR")
            if sys.platform.startswith("linux"):
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.bind(f"\0harmonica-selfcheck-{tag}")
                s.listen(8)
                self._sockets.append(s)
                t["unix"].append(
                    ["an abstract UNIX socket (like X11's @/tmp/.X11-unix/X0)", f"@harmonica-selfcheck-{tag}"]
                )
        self._marker(base / "marker", "a file in your /tmp")
        if os.path.isdir("/dev/shm"):
            self._marker(Path(f"/dev/shm/harmonica-selfcheck-{tag}"), "a file in your /dev/shm")
        for label, path in self._session_paths():
            t["see"].append([label, path])
        if self.private_dir is None:
            from app.core import paths

            self.private_dir = paths.cache_dir()
        secret = self.private_dir / f"selfcheck-{tag}.txt"
        secret.write_text("harmonica self-check\n", encoding="utf-8")
        os.chmod(secret, 0o644)
        self._files.append(secret)
        t["read"].append(["a file in Harmonica's own folder in your home", str(secret)])
        writable = base / "writable"
        writable.mkdir()
        os.chmod(writable, 0o777)
        t["write"].append(["creating a file in a folder outside the scratch folder", str(writable)])
        server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        self._sockets.append(server)
        t["tcp"].append(["a TCP connection to a server on 127.0.0.1", "127.0.0.1", server.getsockname()[1]])
        t["signal"].append(["signalling Harmonica itself", os.getpid()])
        return t

    def _unix(self, path: Path, label: str) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(str(path))
        s.listen(8)
        os.chmod(path, 0o777)
        self._sockets.append(s)
        self._files.append(path)
        self.targets["unix"].append([label, str(path)])

    def _marker(self, path: Path, label: str) -> None:
        path.write_text("harmonica self-check\n", encoding="utf-8")
        os.chmod(path, 0o644)
        self._files.append(path)
        self.targets["see"].append([label, str(path)])

    @staticmethod
    def _session_paths() -> list[tuple[str, str]]:
        """The session's real sockets and folders that exist here (only looked at, never connected to)."""
        found: list[tuple[str, str]] = []
        bus = os.environ.get("DBUS_SESSION_BUS_ADDRESS", "")
        candidates = [
            ("your ssh-agent socket", os.environ.get("SSH_AUTH_SOCK", "")),
            ("your D-Bus session bus", bus.split("path=", 1)[1].split(",", 1)[0] if "path=" in bus else ""),
            ("your $XDG_RUNTIME_DIR", os.environ.get("XDG_RUNTIME_DIR", "")),
            ("the X11 sockets folder", "/tmp/.X11-unix"),
            ("the docker socket", "/var/run/docker.sock"),
        ]
        runtime, wayland = os.environ.get("XDG_RUNTIME_DIR", ""), os.environ.get("WAYLAND_DISPLAY", "")
        if runtime and wayland:
            candidates.append(("your Wayland socket", os.path.join(runtime, wayland)))
        for label, path in candidates:
            if path and os.path.isabs(path) and os.path.lexists(path):
                found.append((label, path))
        return found

    def __exit__(self, *exc: object) -> None:
        for s in self._sockets:
            s.close()
        for f in self._files:
            try:
                f.unlink()
            except OSError:
                pass
        for d in self._dirs:
            shutil.rmtree(d, ignore_errors=True)


_probe_lock = threading.Lock()
_probe_cache: dict[tuple[SandboxLimits, SandboxLayers], SandboxReport] = {}


def probe_sandbox(
    limits: SandboxLimits | None = None,
    layers: SandboxLayers | None = None,
    scratch: Path | None = None,
    *,
    fresh: bool = False,
    private_dir: Path | None = None,
) -> SandboxReport:
    """Start a throwaway kernel, make it attempt the escapes of SelfCheckTargets, and report what
    held (cached per process unless `fresh`)."""
    key = (limits or SandboxLimits(), layers or SandboxLayers())
    with _probe_lock:
        if key in _probe_cache and not fresh:
            return _probe_cache[key]
        folder = scratch or Path(tempfile.mkdtemp(prefix="harmonica-probe-"))
        k = PythonKernel(folder, *key)
        try:
            started = k.start()
            with SelfCheckTargets(private_dir) as targets:
                checks = k.self_check(targets)
            report = build_report(started.layers, key[0], checks, time.time())
        finally:
            k.close()
            if scratch is None:
                shutil.rmtree(folder, ignore_errors=True)
        _probe_cache[key] = report
        return report
