"""The per-address rate limit of /recommend (floods): token buckets, pure, injected clock.

A client is an address: the TCP peer (``REMOTE_ADDR``), or, when the peer is one of the
``MOVIEREC_SERVE_TRUSTED_PROXIES``, the right-most address of ``X-Forwarded-For`` that is
not itself a trusted proxy (``client_address``; each proxy appends the peer it saw, so
what lies left of the last untrusted hop is the client's own claim and is ignored).
Without trusted proxies (the default) the header is never read: a client could forge it.

Each address gets a token bucket (``ClientLimiter``): ``burst`` tokens, refilled at
``rate_per_s``; a request takes one, and a request that finds none is refused with the
seconds until the next token (the 429's ``Retry-After``, RFC 6585 sec. 4). Addresses of
the exempt networks (loopback by default: the local simulator, load tests and benchmarks)
never are. The buckets live in an LRU-bounded dict (``max_clients`` addresses); an
evicted address starts again with a full bucket, which only matters to a flood from more
addresses than that, which no per-address limit stops anyway.

Per worker: under gunicorn each worker process keeps its own buckets, so the service
builds them with the rate and burst divided by the worker count (``per_worker``). A
client whose connections the kernel spreads evenly over the workers is limited at the
configured rate; one whose requests all land on one worker at 1/workers of it. The
defaults (1,000 requests/s, burst 2,000) are so far above the whole course site's traffic
that the approximation never decides an answer that matters (docs/security.md).

Thread-safe (gthread workers): one lock around a dict lookup and a few float operations.
"""

from __future__ import annotations

import ipaddress
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

MAX_CLIENTS = 10_000
"""Addresses a worker keeps buckets for (LRU); about 100 bytes each."""


def parse_networks(text: str) -> tuple[Network, ...]:
    """Comma-separated CIDRs (host bits allowed); ``ValueError`` on a bad one."""
    return tuple(ipaddress.ip_network(p.strip(), strict=False) for p in text.split(",") if p.strip())


def parse_address(text: str) -> Address | None:
    """An IP address, IPv4-mapped IPv6 taken as the IPv4 it maps; None if ``text`` is none."""
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped
    return address


def in_networks(address: Address | None, networks: Iterable[Network]) -> bool:
    return address is not None and any(address in n for n in networks)


def client_address(remote_addr: str | None, forwarded_for: str | None,
                   trusted: tuple[Network, ...] = ()) -> str:
    """The client a request counts against (see the module docstring): the peer as the
    server wrote it when no proxy is trusted or none forwarded (no parsing: the common
    case costs nothing), else the address found, normalised (``::ffff:10.0.0.1`` is
    ``10.0.0.1``)."""
    peer = remote_addr or ""
    if not (trusted and forwarded_for):
        return peer
    current = parse_address(peer)
    if current is None:  # not an address at all (a Unix socket)
        return peer
    for hop in reversed(forwarded_for.split(",")):
        if not in_networks(current, trusted):
            break
        address = parse_address(hop)
        if address is None:  # garbled: nothing left of it can be trusted either
            break
        current = address
    return str(current)


class _Bucket:
    __slots__ = ("stamp", "tokens")

    def __init__(self, tokens: float, stamp: float) -> None:
        self.tokens, self.stamp = tokens, stamp


_EXEMPT = _Bucket(math.inf, 0.0)


class ClientLimiter:
    """Token buckets per client address (see the module docstring).

    - ``rate_per_s``: tokens added per second, > 0; ``burst``: the bucket's size, >= 1.
    - ``exempt``: networks never limited; ``max_clients``: addresses kept (LRU).
    - ``clock``: monotonic seconds (injected for tests).
    """

    def __init__(self, rate_per_s: float, burst: float, *, exempt: Iterable[Network] = (),
                 max_clients: int = MAX_CLIENTS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not rate_per_s > 0:
            raise ValueError(f"rate_per_s must be > 0, got {rate_per_s}")
        if not burst >= 1:
            raise ValueError(f"burst must be >= 1, got {burst}")
        if max_clients < 1:
            raise ValueError(f"max_clients must be >= 1, got {max_clients}")
        self.rate, self.burst = float(rate_per_s), float(burst)
        self.exempt = tuple(exempt)
        self.max_clients = max_clients
        self._clock = clock
        self._lock = threading.Lock()
        self._clients: OrderedDict[str, _Bucket] = OrderedDict()

    @classmethod
    def per_worker(cls, rate_per_s: float, burst: float, workers: int, *,
                   exempt: Iterable[Network] = ()) -> ClientLimiter:
        """One worker's share of a service-wide limit: rate and burst divided by
        ``workers`` (the burst at least 1)."""
        return cls(rate_per_s / workers, max(1.0, burst / workers), exempt=exempt)

    def __len__(self) -> int:
        return len(self._clients)

    def check(self, client: str) -> int:
        """Take a token for ``client``: 0 when the request may pass, else the whole seconds
        (>= 1) until the bucket holds a token again."""
        with self._lock:
            bucket = self._clients.get(client)
            if bucket is None:
                exempt = in_networks(parse_address(client), self.exempt)
                bucket = _EXEMPT if exempt else _Bucket(self.burst, self._clock())
                self._clients[client] = bucket
                if len(self._clients) > self.max_clients:
                    self._clients.popitem(last=False)
            else:
                self._clients.move_to_end(client)
            if bucket is _EXEMPT:
                return 0
            now = self._clock()
            tokens = min(self.burst, bucket.tokens + (now - bucket.stamp) * self.rate)
            bucket.stamp = now
            if tokens >= 1.0:
                bucket.tokens = tokens - 1.0
                return 0
            bucket.tokens = tokens
            return max(1, math.ceil((1.0 - tokens) / self.rate))
