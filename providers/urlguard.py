"""The guard for every outbound URL Beacon posts to (chat webhooks, customer webhooks):
http or https only, and only to public addresses.

Two checks, because a name can resolve one way when the URL is accepted and another when
it is used (DNS rebinding):

- `check_url(url)` when a URL is accepted and again before each send: the scheme, the
  host, an IP literal in any spelling, and every address the name resolves to;
- `GuardedHTTPAdapter` on the sending `requests.Session`: the address a connection
  actually reached (`getpeername()`), checked before a byte of the request is written.

BEACON_ALLOW_PRIVATE_TARGETS=true lets both reach loopback and private networks (local
development, tests); the scheme and host checks stay.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from urllib.parse import urlsplit

import requests
from django.conf import settings
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

ALLOWED_SCHEMES = ("http", "https")
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# IPv6 prefixes that carry an IPv4 address in their last 32 bits, which a gateway then
# reaches: NAT64's well-known prefix (RFC 6052) and IPv4-compatible addresses.
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")


class UnsafeTarget(ValueError):
    """An outbound URL Beacon refuses to reach."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


def private_targets_allowed() -> bool:
    return bool(getattr(settings, "BEACON_ALLOW_PRIVATE_TARGETS", False))


def is_public_address(address: IPAddress) -> bool:
    """Whether an address is on the public internet: not loopback, private, link-local,
    multicast, reserved, unspecified or shared, nor an IPv6 form of such an IPv4 address."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            return all(is_public_address(inner) for inner in embedded)
    return address.is_global and not (
        address.is_multicast
        or address.is_reserved
        or address.is_unspecified
        or address.is_loopback
        or address.is_link_local
        or address.is_private
    )


def _embedded_ipv4(address: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address] | None:
    if address.ipv4_mapped is not None:
        return [address.ipv4_mapped]
    if address.sixtofour is not None:
        return [address.sixtofour]
    if address.teredo is not None:
        return list(address.teredo)
    if address in _NAT64 or (address in _IPV4_COMPATIBLE and int(address) > 1):
        return [ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)]
    return None


def parse_ip_literal(host: str) -> IPAddress | None:
    """The address a host names literally, however spelled, or None for a name.

    Besides the usual forms this reads what inet_aton (and so curl, browsers and most
    HTTP clients) reads: `2130706433`, `0x7f000001`, `0177.0.0.1`, `127.1`. A host that
    looks numeric but is no valid address is refused rather than treated as a name."""
    host = host.strip("[]")
    if "%" in host:  # an IPv6 zone id (fe80::1%eth0, or %25 in a URL)
        host = host.split("%", 1)[0]
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if ":" in host:
        raise UnsafeTarget(f"{host!r} is not a valid IPv6 address.")
    labels = host.rstrip(".").split(".")
    if not labels[-1] or not _is_number(labels[-1]):
        return None  # a name: its last label is not a number
    if len(labels) > 4 or not all(_is_number(label) for label in labels):
        raise UnsafeTarget(f"{host!r} is not a valid IPv4 address.")
    numbers = [_number(label) for label in labels]
    *head, tail = numbers
    if any(part > 255 for part in head) or tail >= 256 ** (5 - len(numbers)):
        raise UnsafeTarget(f"{host!r} is not a valid IPv4 address.")
    value = tail
    for index, part in enumerate(head):
        value |= part << (8 * (3 - index))
    return ipaddress.IPv4Address(value)


def _is_number(label: str) -> bool:
    lowered = label.lower()
    if lowered.startswith("0x"):
        return all(c in "0123456789abcdef" for c in lowered[2:])
    return lowered.isdigit() and lowered.isascii()


def _number(label: str) -> int:
    lowered = label.lower()
    if lowered.startswith("0x"):
        return int(lowered[2:] or "0", 16)
    if len(lowered) > 1 and lowered.startswith("0"):
        if any(c in "89" for c in lowered):
            raise UnsafeTarget(f"{label!r} is not an octal number.")
        return int(lowered, 8)
    return int(lowered)


def check_url(url: str) -> None:
    """Raise UnsafeTarget unless `url` is an http(s) URL whose host is, and resolves only
    to, public addresses (with private targets allowed: any host)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UnsafeTarget(f"Not a valid URL: {exc}.") from None
    if parts.scheme.lower() not in ALLOWED_SCHEMES:
        raise UnsafeTarget("Only http and https URLs are allowed.")
    host = parts.hostname
    if not host:
        raise UnsafeTarget("The URL has no host.")
    address = parse_ip_literal(host)
    if private_targets_allowed():
        return
    if address is not None:
        if not is_public_address(address):
            raise UnsafeTarget(f"{address} is not a public address.")
        return
    port = port or (443 if parts.scheme.lower() == "https" else 80)
    for resolved in _resolve(host, port):
        if not is_public_address(resolved):
            raise UnsafeTarget(f"{host} resolves to {resolved}, which is not a public address.")


def _resolve(host: str, port: int) -> list[IPAddress]:
    try:
        answers = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        # A name that does not resolve now reaches nothing: the connection check refuses
        # it if it later resolves somewhere private.
        return []
    return [ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0]) for *_, sockaddr in answers]


def check_peer(sock: socket.socket) -> None:
    """Raise UnsafeTarget (and close the socket) unless it is connected to a public address."""
    if private_targets_allowed():
        return
    try:
        peer = ipaddress.ip_address(str(sock.getpeername()[0]).split("%", 1)[0])
    except (OSError, ValueError):
        sock.close()
        raise UnsafeTarget("The connection's peer address is unknown.") from None
    if not is_public_address(peer):
        sock.close()
        raise UnsafeTarget(f"The connection reached {peer}, which is not a public address.")


class _GuardedHTTPConnection(HTTPConnection):
    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()
        check_peer(sock)
        return sock


class _GuardedHTTPSConnection(HTTPSConnection):
    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()
        check_peer(sock)
        return sock


class _GuardedHTTPConnectionPool(HTTPConnectionPool):
    ConnectionCls = _GuardedHTTPConnection


class _GuardedHTTPSConnectionPool(HTTPSConnectionPool):
    ConnectionCls = _GuardedHTTPSConnection


class GuardedHTTPAdapter(HTTPAdapter):
    """A transport adapter whose every new connection must reach a public address."""

    def init_poolmanager(self, *args, **kwargs):
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {
            "http": _GuardedHTTPConnectionPool,
            "https": _GuardedHTTPSConnectionPool,
        }

    def proxy_manager_for(self, proxy, **proxy_kwargs):  # pragma: no cover - guarded sessions take no proxy
        raise UnsafeTarget("Outbound URLs are not sent through a proxy.")


# The most of an answer's body a guarded session reads: receivers are not ours.
MAX_RESPONSE_BYTES = 64 * 1024


class GuardedSession(requests.Session):
    """A `requests.Session` for outbound URLs, which are someone else's:

    - every new connection must reach a public address (GuardedHTTPAdapter);
    - no proxies or .netrc from the environment (a proxy would hide the address reached);
    - redirects are never followed, nor prepared: even with allow_redirects=False requests
      reads a 3xx's whole body to prepare the next request, and with max_redirects=0 raises
      TooManyRedirects instead of handing the 3xx back. Here a 3xx is an answer like any;
    - at most MAX_RESPONSE_BYTES of a body is read, within the request's timeout, so an
      endless or slow body cannot hold a worker's memory or the worker.
    """

    def __init__(self):
        super().__init__()
        self.trust_env = False
        self.max_redirects = 0
        adapter = GuardedHTTPAdapter()
        self.mount("http://", adapter)
        self.mount("https://", adapter)

    def resolve_redirects(self, *args, **kwargs):
        return iter(())

    def request(self, method, url, **kwargs):
        kwargs["allow_redirects"] = False
        kwargs["stream"] = True
        response = super().request(method, url, **kwargs)
        timeout = kwargs.get("timeout")
        seconds = timeout[-1] if isinstance(timeout, tuple) else timeout
        read_bounded(response, float(seconds) if seconds else 30.0)
        return response


def read_bounded(response: requests.Response, seconds: float) -> None:
    """Read at most MAX_RESPONSE_BYTES of the answer's body, for at most `seconds` in all,
    then let the connection go (back to the pool when the body was read to its end)."""
    chunks, size = [], 0
    deadline = time.monotonic() + seconds
    try:
        for chunk in response.iter_content(8192):
            chunks.append(chunk)
            size += len(chunk)
            if size >= MAX_RESPONSE_BYTES or time.monotonic() > deadline:
                break
    finally:
        response.close()
    response._content = b"".join(chunks)[:MAX_RESPONSE_BYTES]


def guarded_session() -> GuardedSession:
    return GuardedSession()
