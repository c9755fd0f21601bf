"""Training's exclusion of campaign accounts over Arrow tables as the event store gives
them: the campaign's accounts lose every row (their filler ratings and watches too),
everyone else keeps theirs, and the summary says what was left out."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa

from recommender.training.shilling_filter import exclude_campaigns, first_times

T0 = datetime(2025, 3, 1)
rng = np.random.default_rng(3)


def table(rows: list[tuple[int, str, str, float, int | None]]) -> pa.Table:
    """(user, kind, movie, seconds after T0, stars or None) rows as the store's columns."""
    users, kinds, movies, secs, stars = zip(*rows, strict=True)
    return pa.table({
        "time": pa.array([T0 + timedelta(seconds=s) for s in secs], pa.timestamp("ms")),
        "kind": pa.array(kinds).dictionary_encode(),
        "user_id": pa.array(users, pa.int64()),
        "movie_id": pa.array(movies).dictionary_encode(),
        "minute": pa.array([0 if k == "watch" else None for k in kinds], pa.int16()),
        "rating": pa.array(stars, pa.int8()),
    })


def test_campaign_accounts_lose_every_row_and_the_summary_says_so() -> None:
    day = 86_400.0
    rows = [(int(u), "rate", f"m{int(rng.integers(0, 50))}", float(rng.uniform(0, 20 * day)),
             int(rng.integers(1, 6))) for u in rng.integers(0, 500, size=5_000)]
    rows += [(int(u), "watch", "m1", float(rng.uniform(0, 20 * day)), None)
             for u in rng.integers(0, 500, size=500)]
    attackers = list(range(9_000, 9_020))
    for u in attackers:
        t = 10 * day + float(rng.uniform(0, 3_600))
        rows += [(u, "rate", "obscure", t, 5), (u, "rate", "m2", t + 60, 3),
                 (u, "watch", "m3", t + 120, None)]
    events = table(rows)
    accounts = table([(u, "account", "", 10 * day - 60, None) for u in attackers]
                     ).select(["time", "user_id"])
    # naive site times read as UTC seconds, the clock every event time here shares
    signed_up = T0 + timedelta(seconds=10 * day - 60)
    assert first_times(accounts)[9_000] == signed_up.replace(tzinfo=UTC).timestamp()
    kept, found, summary = exclude_campaigns(events, accounts, scale_max=5)
    assert found.accounts == frozenset(attackers)
    assert summary["targets"] == ["obscure"] and summary["excluded_accounts"] == 20
    assert summary["excluded_rows"] == 60 and kept.num_rows == events.num_rows - 60
    assert not set(kept["user_id"].to_pylist()) & set(attackers)


def test_with_no_campaign_nothing_is_removed() -> None:
    rows = [(int(u), "rate", f"m{int(rng.integers(0, 50))}", float(rng.uniform(0, 86_400 * 5)),
             int(rng.integers(1, 6))) for u in rng.integers(0, 300, size=2_000)]
    events = table(rows)
    kept, found, summary = exclude_campaigns(events, None, scale_max=5)
    assert kept.num_rows == events.num_rows and found.campaigns == []
    assert summary["excluded_accounts"] == 0 and summary["targets"] == []
