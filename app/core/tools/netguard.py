"""Where the browser tool may connect: public internet addresses only, checked on the address actually dialled.

Why this shape (and not "resolve, check, then let httpx connect"): a name may resolve to a public
address when checked and to 127.0.0.1 a moment later when the HTTP library resolves it again (DNS
rebinding). Here the check lives inside the connection itself: httpx's connection pool is given a
network backend that resolves the host once, refuses the connection if any address is not public,
and dials exactly the vetted address. TLS still runs against the host name (SNI and certificate
check), and the Host header is untouched, because httpcore only asks the backend for a TCP stream.

Every hop of a redirect chain opens its connection through the same backend, so redirects are
checked the same way. Sockets are tracked so that Stop can shut them down from another thread.

The test suite reaches its loopback web server through `NetworkPolicy(exempt=...)`: an explicit
list of exact (address, port) pairs. The app never builds a policy with exemptions
(tests/core/tools/test_browser_attacks.py checks the app's source for it).
"""

from __future__ import annotations

import ipaddress
import re
import socket
import threading
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpcore
import httpx

from app.core.errors import HarmonicaError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[..., list[Any]]  # socket.getaddrinfo's signature

# Not reachable on the public internet, or meaning "this machine / this network" (RFC 6890 and
# the IANA special-purpose registries). `is_global` is checked too; the lists keep the answer the
# same on every Python version, whose `is_private` tables changed between releases.
_BLOCKED_V4 = tuple(
    ipaddress.IPv4Network(n)
    for n in (
        "0.0.0.0/8",  # "this network"; 0.0.0.0 reaches the local machine on Linux and macOS
        "10.0.0.0/8",
        "100.64.0.0/10",  # carrier-grade NAT (CGNAT)
        "127.0.0.0/8",
        "169.254.0.0/16",  # link-local, cloud metadata services (169.254.169.254)
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.0.2.0/24",
        "192.88.99.0/24",  # 6to4 relay anycast
        "192.168.0.0/16",
        "198.18.0.0/15",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, and 255.255.255.255 broadcast
    )
)
_BLOCKED_V6 = tuple(
    ipaddress.IPv6Network(n)
    for n in (
        "::/96",  # unspecified, loopback and the deprecated IPv4-compatible form ::a.b.c.d
        "64:ff9b:1::/48",  # local-use NAT64
        "100::/64",  # discard-only
        "2001::/23",  # IETF protocol assignments (Teredo 2001::/32 included)
        "2001:db8::/32",  # documentation
        "fc00::/7",  # unique local (ULA)
        "fe80::/10",  # link-local
        "fec0::/10",  # site-local (deprecated, still routed locally by some systems)
        "ff00::/8",  # multicast
    )
)
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_SIX_TO_FOUR = ipaddress.IPv6Network("2002::/16")
# Host spellings that inet_aton reads as an IPv4 address: 2130706433, 0x7f.1, 0177.0.0.1, 127.1.
_NUMERIC_HOST = re.compile(r"^(?:0x[0-9a-f]*|[0-9]+)(?:\.(?:0x[0-9a-f]*|[0-9]+)){0,3}\.?$", re.IGNORECASE)


_ONLY_PUBLIC = "; the browser only opens public web pages, never the local network"


class NetworkRefused(HarmonicaError):
    """The browser refused to connect; the message says why, for the model and the user."""


class Stopped(HarmonicaError):
    """The user pressed Stop while a request was in flight."""


def address_problem(ip: IPAddress) -> str | None:
    """Why the browser may not connect to `ip`, or None for a public internet address."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id:
            return "an IPv6 address with a zone (a local link)"
        embedded = ip.ipv4_mapped
        if embedded is None and ip in _NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is None and ip in _SIX_TO_FOUR:
            embedded = ip.sixtofour
        if embedded is not None:
            inner = address_problem(embedded)
            return f"{inner} (inside the IPv6 address {ip})" if inner else None
        if any(ip in net for net in _BLOCKED_V6) or not ip.is_global:
            return "a local, private or reserved IPv6 address"
        return None
    if any(ip in net for net in _BLOCKED_V4) or not ip.is_global:
        if ip.is_loopback or ip in _BLOCKED_V4[0]:
            return "this computer's own address"
        if ip.is_multicast or ip.is_reserved:
            return "a multicast, broadcast or reserved address"
        return "a local or private network address"
    return None


def literal_address(host: str) -> IPAddress | None:
    """`host` as an IP address if it is one in any spelling a resolver accepts, else None."""
    text = host.strip().strip("[]")
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        pass
    if "%" in text:  # fe80::1%eth0: a zone id names a local interface
        try:
            return ipaddress.IPv6Address(text)  # Python 3.9+ keeps the scope id
        except ValueError:
            return None
    if _NUMERIC_HOST.match(text):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(text.rstrip(".")))
        except OSError:
            return None
    return None


@dataclass(frozen=True)
class NetworkPolicy:
    """Which addresses the browser may dial: public ones, plus exact `exempt` (address, port) pairs.

    `exempt` exists for the test suite's loopback servers; the app never sets it.
    """

    exempt: frozenset[tuple[str, int]] = frozenset()
    resolver: Resolver | None = None  # socket.getaddrinfo unless a test injects one

    @classmethod
    def exempting(cls, *urls: str) -> NetworkPolicy:
        """A policy that also lets the given loopback test servers (http://127.0.0.1:PORT) through."""
        pairs = set()
        for url in urls:
            parsed = httpx.URL(url)
            pairs.add((str(literal_address(parsed.host) or parsed.host), int(parsed.port or 80)))
        return cls(exempt=frozenset(pairs))

    def vet(self, host: str, port: int) -> list[IPAddress]:
        """Resolve `host` once and return its addresses, or raise NetworkRefused if any is not public."""
        literal = literal_address(host)
        if literal is not None:
            addresses = [literal]
        else:
            name = host.lower().rstrip(".")
            if name == "localhost" or name.endswith(".localhost"):
                raise NetworkRefused(f"{host} is this computer{_ONLY_PUBLIC}")
            if not name or len(name) > 253:
                raise NetworkRefused(f"{host[:80]!r} is not a valid host name")
            resolve = self.resolver or socket.getaddrinfo
            try:
                infos = resolve(host, port, type=socket.SOCK_STREAM)
            except (socket.gaierror, UnicodeError, OSError) as exc:
                raise NetworkRefused(f"the name {host} could not be resolved ({exc})") from None
            addresses = []
            for info in infos:
                try:
                    ip = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
                except ValueError:
                    continue
                if info[4][0] and "%" in str(info[4][0]):
                    ip = ipaddress.IPv6Address(str(info[4][0]))
                if ip not in addresses:
                    addresses.append(ip)
            if not addresses:
                raise NetworkRefused(f"the name {host} has no address")
        for ip in addresses:
            problem = address_problem(ip)
            if problem is not None and (str(ip), port) not in self.exempt:
                shown = host if literal is None else str(ip)
                via = f" ({host} resolves to {ip})" if literal is None else ""
                raise NetworkRefused(f"{shown} is {problem}{via}{_ONLY_PUBLIC}")
        return addresses


# --- the connection pool's network backend ---------------------------------------------------------
@dataclass
class _Sockets:
    """Live sockets of one browser session, so Stop can shut them down from another thread."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    live: set[Any] = field(default_factory=set)
    stopped: threading.Event = field(default_factory=threading.Event)

    def add(self, stream: Any) -> None:
        with self.lock:
            self.live.add(stream)
        if self.stopped.is_set():
            self.abort()

    def discard(self, stream: Any) -> None:
        with self.lock:
            self.live.discard(stream)

    def abort(self) -> None:
        with self.lock:
            streams = list(self.live)
        for stream in streams:
            sock = stream.get_extra_info("socket")
            try:
                if sock is not None:
                    sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _TrackedStream(httpcore.NetworkStream):
    def __init__(self, inner: httpcore.NetworkStream, sockets: _Sockets) -> None:
        self._inner = inner
        self._sockets = sockets
        sockets.add(self)

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        if self._sockets.stopped.is_set():
            raise httpcore.ReadError("stopped")
        return self._inner.read(max_bytes, timeout)

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if self._sockets.stopped.is_set():
            raise httpcore.WriteError("stopped")
        self._inner.write(buffer, timeout)

    def close(self) -> None:
        self._sockets.discard(self)
        self._inner.close()

    def start_tls(
        self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        # TLS wraps the socket in a new object: track that one instead of the plain one.
        self._sockets.discard(self)
        return _TrackedStream(self._inner.start_tls(ssl_context, server_hostname, timeout), self._sockets)

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _GuardedBackend(httpcore.NetworkBackend):
    """Resolves and vets the host, then dials the vetted address itself (no second lookup)."""

    def __init__(self, policy: NetworkPolicy, sockets: _Sockets) -> None:
        self._policy = policy
        self._sockets = sockets
        self._inner = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        if self._sockets.stopped.is_set():
            raise httpcore.ConnectError("stopped")
        try:
            addresses = self._policy.vet(host, port)
        except NetworkRefused as exc:
            raise _Refused(str(exc)) from None
        error: Exception | None = None
        for ip in addresses:
            try:
                stream = self._inner.connect_tcp(str(ip), port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                error = exc
                continue
            return _TrackedStream(stream, self._sockets)
        assert error is not None
        raise error

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.NetworkStream:
        raise _Refused(f"a local socket was asked for{_ONLY_PUBLIC}")

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


class _Refused(httpcore.ConnectError):
    """NetworkRefused travelling through httpcore/httpx (which wrap connect errors)."""


def refusal(exc: BaseException) -> NetworkRefused | None:
    """The NetworkRefused behind an httpx error raised by a guarded client, if that is what it was."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, _Refused):
            return NetworkRefused(str(seen))
        seen = seen.__cause__ or seen.__context__
    return None


class GuardedTransport(httpx.HTTPTransport):
    """httpx's transport with the vetting backend underneath (no proxies: they would dial for us)."""

    def __init__(self, policy: NetworkPolicy, sockets: _Sockets) -> None:
        super().__init__(trust_env=False)
        ssl_context = httpx.create_ssl_context()
        self._pool = httpcore.ConnectionPool(
            ssl_context=ssl_context,
            max_connections=10,
            max_keepalive_connections=5,
            keepalive_expiry=5.0,
            network_backend=_GuardedBackend(policy, sockets),
        )


class GuardedClient:
    """An httpx client that can only reach public addresses, and that Stop can interrupt."""

    def __init__(self, policy: NetworkPolicy | None = None, *, headers: dict[str, str] | None = None) -> None:
        self.policy = policy or NetworkPolicy()
        self._sockets = _Sockets()
        self.client = httpx.Client(
            transport=GuardedTransport(self.policy, self._sockets),
            follow_redirects=False,  # every hop goes through BrowserSession, which checks its scheme
            trust_env=False,
            headers=headers,
        )

    def stop(self) -> None:
        """Shut down every connection now (another thread's blocked read returns at once)."""
        self._sockets.stopped.set()
        self._sockets.abort()

    def resume(self) -> None:
        self._sockets.stopped.clear()

    def close(self) -> None:
        self.client.close()


# --- bounded decoding of compressed bodies ---------------------------------------------------------
DECODABLE = ("gzip", "deflate")  # what we ask for; br and zstd are refused, not decoded unbounded
_STEP = 64 * 1024


class BodyRefused(HarmonicaError):
    """A body the browser will not read (an encoding it does not decode, too many layers)."""


class _Deflate:
    """zlib-wrapped or raw deflate, as servers send both under `deflate`."""

    def __init__(self) -> None:
        self._obj: Any = zlib.decompressobj()
        self._first = True

    def decompress(self, data: bytes, limit: int) -> bytes:
        if self._first:
            self._first = False
            try:
                probe = zlib.decompressobj()
                out = probe.decompress(data, limit)
                self._obj = probe
                return out
            except zlib.error:
                self._obj = zlib.decompressobj(-zlib.MAX_WBITS)
        return bytes(self._obj.decompress(data, limit))

    @property
    def unconsumed_tail(self) -> bytes:
        return bytes(self._obj.unconsumed_tail)

    @property
    def eof(self) -> bool:
        return bool(self._obj.eof)


def _decoder(name: str) -> Any:
    if name in ("gzip", "x-gzip"):
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if name == "deflate":
        return _Deflate()
    raise BodyRefused(
        f"the server sent the page compressed with `{name}`, which the browser does not decode "
        "(it asks for gzip or deflate only)"
    )


class _Full(Exception):
    pass


def read_capped(raw: Iterator[bytes], content_encoding: str, cap: int) -> tuple[bytes, bool]:
    """The decoded body, at most `cap` bytes, and whether it was cut off there.

    Each compression layer is decompressed in 64 KB steps and its output handed on at once, so a
    gzip bomb (or gzip inside gzip) never holds more than a few steps in memory, and decoding stops
    as soon as `cap` decoded bytes exist: work and memory are bounded by the cap, not by the bomb.
    """
    names = [n.strip().lower() for n in content_encoding.split(",") if n.strip()]
    names = [n for n in names if n != "identity"]
    if len(names) > 3:
        raise BodyRefused(f"the server wrapped the page in {len(names)} layers of compression; refused")
    layers = [_decoder(n) for n in reversed(names)]
    out: list[bytes] = []
    size = 0
    work = 0

    def feed(index: int, data: bytes) -> None:
        nonlocal size, work
        if index == len(layers):
            room = cap - size
            out.append(data[:room])
            size += min(len(data), room)
            if len(data) > room:
                raise _Full
            return
        layer = layers[index]
        buf = data
        while not layer.eof:
            piece = layer.decompress(buf, _STEP)
            buf = layer.unconsumed_tail
            work += len(piece)
            if work > 4 * cap + 16 * _STEP:  # inner layers that expand without end
                raise _Full
            if piece:
                feed(index + 1, piece)
            if not buf and len(piece) < _STEP:
                break  # input used up and nothing left pending (a full step may have more)

    raw_seen = 0
    try:
        for chunk in raw:
            raw_seen += len(chunk)
            feed(0, chunk)
            if raw_seen > 2 * cap:
                raise _Full
    except _Full:
        return b"".join(out), True
    except zlib.error as exc:
        raise BodyRefused(f"the page's {names[-1] if names else ''} compression is damaged ({exc})") from None
    return b"".join(out), False


__all__ = [
    "DECODABLE",
    "BodyRefused",
    "GuardedClient",
    "NetworkPolicy",
    "NetworkRefused",
    "Stopped",
    "address_problem",
    "literal_address",
    "read_capped",
    "refusal",
]
