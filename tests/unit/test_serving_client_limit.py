"""The per-address rate limit's pure core: token buckets (burst, refill, Retry-After),
exempt networks, the LRU bound, and which address X-Forwarded-For may name."""

from __future__ import annotations

import pytest

from recommender.serving.client_limit import ClientLimiter, client_address, parse_networks

LOOPBACK = parse_networks("127.0.0.0/8,::1/128")
STRANGER, OTHER = "203.0.113.9", "198.51.100.4"


class Clock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


def passed(limiter: ClientLimiter, client: str, n: int) -> int:
    return sum(limiter.check(client) == 0 for _ in range(n))


def test_a_fresh_client_gets_its_burst_then_waits() -> None:
    clock = Clock()
    limiter = ClientLimiter(1.0, 5, clock=clock)
    assert passed(limiter, STRANGER, 5) == 5
    assert limiter.check(STRANGER) == 1  # one token a second: retry after 1 s
    assert passed(limiter, OTHER, 5) == 5  # another address has its own bucket


def test_tokens_refill_at_the_rate_and_never_past_the_burst() -> None:
    clock = Clock()
    limiter = ClientLimiter(4.0, 3, clock=clock)
    assert passed(limiter, STRANGER, 10) == 3
    clock.now += 0.5  # two tokens
    assert passed(limiter, STRANGER, 10) == 2
    clock.now += 3600.0  # an hour idle: a full bucket, not 14,400 tokens
    assert passed(limiter, STRANGER, 100) == 3


def test_retry_after_is_the_whole_seconds_until_the_next_token() -> None:
    clock = Clock()
    limiter = ClientLimiter(0.1, 1, clock=clock)  # one token every 10 s
    assert limiter.check(STRANGER) == 0
    assert limiter.check(STRANGER) == 10
    clock.now += 7.5
    assert limiter.check(STRANGER) == 3  # 2.5 s left, rounded up
    clock.now += 2.5
    assert limiter.check(STRANGER) == 0


@pytest.mark.parametrize("client", ["127.0.0.1", "127.9.9.9", "::1", "::ffff:127.0.0.1"])
def test_exempt_networks_are_never_limited(client: str) -> None:
    limiter = ClientLimiter(1.0, 1, exempt=LOOPBACK, clock=Clock())
    assert passed(limiter, client, 1000) == 1000
    assert passed(limiter, STRANGER, 3) == 1


def test_the_buckets_are_bounded_least_recently_used_first() -> None:
    clock = Clock()
    limiter = ClientLimiter(1.0, 2, max_clients=2, clock=clock)
    assert passed(limiter, "10.0.0.1", 3) == 2
    assert passed(limiter, "10.0.0.2", 1) == 1
    assert limiter.check("10.0.0.1") == 1  # still known: still empty (and now most recent)
    assert passed(limiter, "10.0.0.3", 1) == 1  # evicts 10.0.0.2, the least recent
    assert len(limiter) == 2
    assert limiter.check("10.0.0.1") == 1
    assert passed(limiter, "10.0.0.2", 3) == 2  # forgotten: a full bucket again


def test_one_worker_takes_its_share_of_the_service_wide_limit() -> None:
    limiter = ClientLimiter.per_worker(1000.0, 2000, 4, exempt=LOOPBACK)
    assert (limiter.rate, limiter.burst, limiter.exempt) == (250.0, 500.0, LOOPBACK)
    assert ClientLimiter.per_worker(1.0, 1, 8).burst == 1.0


@pytest.mark.parametrize(("rate", "burst"), [(0.0, 1), (-1.0, 1), (1.0, 0.5)])
def test_nonsense_limits_are_refused(rate: float, burst: float) -> None:
    with pytest.raises(ValueError):
        ClientLimiter(rate, burst)


PROXIES = parse_networks("10.0.0.0/8")


@pytest.mark.parametrize(("peer", "forwarded", "trusted", "client"), [
    # no trusted proxy: the header is never read, whoever sends it
    ("203.0.113.9", "198.51.100.4", (), "203.0.113.9"),
    ("10.0.0.5", "198.51.100.4", (), "10.0.0.5"),
    # the peer is a trusted proxy: the address it appended
    ("10.0.0.5", "198.51.100.4", PROXIES, "198.51.100.4"),
    # what the client wrote itself, left of that, is ignored
    ("10.0.0.5", "1.2.3.4, 10.0.0.1, 198.51.100.4", PROXIES, "198.51.100.4"),
    # two trusted proxies in a row
    ("10.0.0.5", "198.51.100.4, 10.0.0.7", PROXIES, "198.51.100.4"),
    # an untrusted peer cannot name another client
    ("203.0.113.9", "198.51.100.4", PROXIES, "203.0.113.9"),
    # a garbled hop: the last trusted address stands
    ("10.0.0.5", "198.51.100.4, junk", PROXIES, "10.0.0.5"),
    # no header: the peer as the server wrote it; a forwarded address is normalised
    ("10.0.0.5", None, PROXIES, "10.0.0.5"),
    ("::ffff:203.0.113.9", None, (), "::ffff:203.0.113.9"),
    ("10.0.0.5", " ::ffff:198.51.100.4 ", PROXIES, "198.51.100.4"),
    ("::ffff:10.0.0.5", "198.51.100.4", PROXIES, "198.51.100.4"),
    # not an address at all (a Unix socket): taken as it is
    ("", "198.51.100.4", PROXIES, ""),
])
def test_the_client_is_the_peer_or_what_a_trusted_proxy_says(peer, forwarded, trusted, client) -> None:
    assert client_address(peer, forwarded, trusted) == client
