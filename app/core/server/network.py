"""The server's network side: binding the port with plain-language errors, loopback checks, and LAN discovery."""

from __future__ import annotations

import errno
import functools
import ipaddress
import os
import socket
from typing import Final
from urllib.parse import urlsplit

from app.core.server.errors import ServerError

_LOOPBACK_HOSTS: Final = {"localhost", "127.0.0.1", "::1", "[::1]"}


def host_of(value: str) -> str:
    """The host part of a Host header or Origin URL, lower-case, IPv6 in brackets kept."""
    if "://" in value:
        host = urlsplit(value).hostname or ""
        return host.lower()
    value = value.strip().lower()
    if value.startswith("["):
        return value[: value.find("]") + 1] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


def is_loopback_name(host: str) -> bool:
    if host in _LOOPBACK_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def is_ip_literal(host: str) -> bool:
    """An IPv4 or IPv6 address (brackets allowed), not a name: a Host like this cannot be rebound."""
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


@functools.lru_cache(maxsize=1)
def local_names() -> frozenset[str]:
    """This computer's own host names (as other devices may address it), lower-case."""
    # gethostname only: getfqdn may wait on a DNS server, and the names it adds are rarely used.
    names: set[str] = set()
    try:
        name = socket.gethostname().strip().lower().rstrip(".")
    except OSError:
        name = ""
    if name:
        short = name.split(".")[0]
        names.update({name, short, short + ".local"})
    return frozenset(names - {"localhost", ""})


def bind(host: str, port: int) -> socket.socket:
    """A listening, non-blocking socket; ServerError says in words why it could not be had."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        if os.name != "nt":  # on Windows SO_REUSEADDR would let two servers share a port
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        if exc.errno in (errno.EADDRINUSE, getattr(errno, "WSAEADDRINUSE", -1)):
            raise ServerError(f"Port {port} is already in use by another program. Choose another port.") from None
        if exc.errno in (errno.EACCES, getattr(errno, "WSAEACCES", -1)):
            raise ServerError(
                f"Harmonica may not listen on port {port} (ports below 1024 need administrator rights). Choose another port."
            ) from None
        raise ServerError(f"Cannot listen on {host}:{port}: {exc.strerror or exc}.") from None
    return sock


def lan_addresses() -> list[str]:
    """This machine's IPv4 addresses that other devices on the network might reach."""
    out: list[str] = []
    try:
        import psutil

        for addrs in psutil.net_if_addrs().values():
            for a in addrs:
                if (
                    a.family == socket.AF_INET
                    and not a.address.startswith("127.")
                    and not a.address.startswith("169.254.")
                ):
                    out.append(a.address)
    except Exception:  # noqa: BLE001 - only a hint for the UI
        pass
    return sorted(set(out))
