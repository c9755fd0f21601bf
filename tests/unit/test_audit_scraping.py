"""The enumeration detector with known answers: a crawler walking ids up (or down) among
random organic traffic is found with its ids, times and rate, whatever its speed; the
demo's random traffic and a walk that pauses too long are not."""

from __future__ import annotations

import numpy as np

from audit.scraping import enumerations


def organic(n: int, users: int, seconds: float, seed: int = 1) -> list[tuple[int, int]]:
    rng = np.random.default_rng(seed)
    times = np.sort(rng.uniform(0, seconds * 1000, n)).astype(int)
    return list(zip(times.tolist(), rng.integers(0, users, n).tolist(), strict=True))


def crawl(first: int, count: int, start_ms: int, every_ms: int, step: int = 1) -> list[tuple[int, int]]:
    return [(start_ms + i * every_ms, first + step * i) for i in range(count)]


def test_a_crawler_among_organic_traffic_is_found_with_its_ids_and_rate() -> None:
    requests = sorted(organic(20_000, 2_000, 600) + crawl(0, 250, 60_000, 200))
    (run,) = enumerations(requests)
    # organic requests for ids just past the walk's end may lengthen it by a step or two
    # (and its end time with them, which lowers the rate a little: 5/s walked)
    assert run.first == 0 and 249 <= run.last <= 253 and 250 <= run.requests <= 254
    assert run.start_ms == 60_000 and 3.0 < run.rate_per_s <= 5.0 + 1e-9


def test_a_walk_down_and_a_slow_walk_are_found_too() -> None:
    down = enumerations(sorted(organic(5_000, 2_000, 600) + crawl(900, 40, 0, 10_000, step=-1)))
    assert [(r.first, r.last) for r in down] == [(900, 861)]
    slow = enumerations(crawl(5, 35, 0, 50_000))  # one request every 50 s: still a walk
    assert [(r.first, r.last, r.requests) for r in slow] == [(5, 39, 35)]


def test_dense_random_traffic_and_an_interrupted_walk_are_not() -> None:
    # the demo's traffic: about 2,000 requests a minute on 2,000 users (p ~ 0.6 a step)
    assert enumerations(organic(20_000, 2_000, 600)) == []
    interrupted = crawl(0, 20, 0, 1_000) + crawl(20, 20, 20_000 + 61_000, 1_000)
    assert enumerations(interrupted) == []
    assert enumerations([]) == []
