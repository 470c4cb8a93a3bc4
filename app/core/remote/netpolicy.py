"""Which hosts a connection may reach: everything when online; in offline mode only loopback and the LAN ranges the user allowed."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable, Sequence
from urllib.parse import urlsplit

from app.core.errors import HarmonicaError

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# What "the LAN" means when the user allows it with one click: the private ranges of RFC 1918,
# IPv6 unique-local and link-local addresses. Never the whole internet.
PRIVATE_RANGES = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7", "fe80::/10")

Resolver = Callable[[str], list[str]]


class NetworkPolicyError(HarmonicaError):
    """A connection is not allowed by the privacy settings (offline mode); the message says how to allow it."""


def parse_ranges(text: str | Iterable[str]) -> list[IPNetwork]:
    """CIDR ranges from a comma/space separated string or a list; raises ValueError naming a bad one."""
    items = text.replace(",", " ").split() if isinstance(text, str) else [str(t).strip() for t in text]
    out: list[IPNetwork] = []
    for item in items:
        if not item:
            continue
        try:
            out.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(f"“{item}” is not an address range; write it like 192.168.1.0/24.") from None
    return out


def system_resolver(host: str) -> list[str]:
    """Every address `host` resolves to (empty when it does not resolve)."""
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return []
    return sorted({str(info[4][0]) for info in infos})


def _address(text: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(text.strip("[]").split("%", 1)[0])
    except ValueError:
        return None


def is_loopback_host(host: str, resolve: Resolver = system_resolver) -> bool:
    """Whether every address of `host` is this computer (127.0.0.0/8, ::1)."""
    addr = _address(host)
    if addr is not None:
        return addr.is_loopback
    if host.lower() == "localhost":
        return True
    addrs = [a for a in (_address(x) for x in resolve(host)) if a is not None]
    return bool(addrs) and all(a.is_loopback for a in addrs)


def check_host(
    host: str,
    *,
    offline: bool,
    allowed: Sequence[IPNetwork] = (),
    what: str = "This connection",
    resolve: Resolver = system_resolver,
) -> None:
    """Raise NetworkPolicyError when offline mode forbids reaching `host`.

    Offline, a host is allowed when it is loopback or when every address it resolves to lies in
    an allowed range: a name that resolves to one allowed and one public address is refused (a
    DNS answer must not be able to take a chat off the LAN).
    """
    if not offline:
        return
    if is_loopback_host(host, resolve):
        return
    addr = _address(host)
    addrs = [addr] if addr is not None else [a for a in (_address(x) for x in resolve(host)) if a is not None]
    if addrs and allowed and all(any(a in net for net in allowed if a.version == net.version) for a in addrs):
        return
    hint = (
        "Add its address range under Connections → Manage… → Offline mode"
        if not allowed
        else "Its address is outside the ranges you allowed; add it under Connections → Manage… → Offline mode"
    )
    raise NetworkPolicyError(
        f"{what} goes to {host}, and Harmonica is in offline mode, which allows only this computer and the "
        f"local network ranges you chose. {hint}, or turn offline mode off."
    )


def check_url(
    url: str,
    *,
    offline: bool,
    allowed: Sequence[IPNetwork] = (),
    what: str = "This connection",
    resolve: Resolver = system_resolver,
) -> None:
    """check_host for the host of `url`."""
    host = urlsplit(url).hostname or ""
    check_host(host, offline=offline, allowed=allowed, what=what, resolve=resolve)


def is_lan_or_loopback(host: str, resolve: Resolver = system_resolver) -> bool:
    """Whether `host` stays on this computer or a private network (to say "on your LAN" in the UI)."""
    addr = _address(host)
    addrs = [addr] if addr is not None else [a for a in (_address(x) for x in resolve(host)) if a is not None]
    return bool(addrs) and all(a.is_loopback or a.is_private or a.is_link_local for a in addrs)
