"""Injection: each fault is what its ground truth says, and a correct parser sees it."""

from __future__ import annotations

import io
import json
from collections import Counter
from datetime import datetime

import numpy as np
import pytest

from movierec.wire import Account, LineParser, Rate, Reason, Rejection, Watch
from simulator.history import HistoryGenerator
from simulator.inject import MUTATIONS, InjectionPlan, Injector, mutate, shilling_lines
from simulator.world import World, WorldSpec

START = datetime(2025, 3, 1)
WATCH = b"2025-03-01T10:00:00,42,GET /data/m/the+matrix+1999/12.mpg"
RATE = b"2025-03-01T10:00:00,42,GET /rate/the+matrix+1999=4"
ACCOUNT = b"2025-03-01T10:00:00,42,GET /create_account"


@pytest.fixture(scope="module")
def world() -> World:
    return World.build(WorldSpec(seed=2, n_users=2_000, n_movies=400))


@pytest.mark.parametrize("name", sorted(MUTATIONS))
@pytest.mark.parametrize("line", [WATCH, RATE, ACCOUNT], ids=["watch", "rate", "account"])
@pytest.mark.parametrize("scale", [5, 10])
def test_every_mutation_gets_the_reason_it_declares(name: str, line: bytes, scale: int) -> None:
    parser = LineParser(rating_scale=scale)
    assert not isinstance(parser.parse(line), Rejection)
    for seed in range(25):
        bad, reason = mutate(line, name, np.random.default_rng(seed), scale)
        got = parser.parse(bad)
        assert isinstance(got, Rejection), (name, bad)
        assert got.reason is reason, (name, bad, got)


def _run(world: World, plan: InjectionPlan, days: float = 0.3, **gen: object):
    truth = io.StringIO()
    generator = HistoryGenerator(world, start=START, days=days, seed=4, **gen)
    organic = [item for batch in generator.events() for item in generator.timed(batch)]
    injector = Injector(plan, truth, START)
    out = list(injector.run(iter(organic)))
    records = [json.loads(line) for line in truth.getvalue().splitlines()]
    return organic, out, records, injector, generator


def test_malformed_lines_match_their_ground_truth(world: World) -> None:
    organic, out, records, injector, _ = _run(world, InjectionPlan(malformed=0.05, seed=1))
    parser = LineParser()
    malformed = [r for r in records if r["kind"] == "malformed"]
    assert len(out) == len(organic) and len(malformed) == injector.counts["malformed"] > 50
    for record in malformed:
        got = parser.parse(out[record["seq"]][0])
        assert isinstance(got, Rejection) and got.reason.value == record["reason"]
    rejected = sum(isinstance(parser.parse(line), Rejection) for line, _ in out)
    assert rejected == len(malformed)  # and nothing else is broken
    assert len({r["mutation"] for r in malformed}) == len(MUTATIONS)


def test_malformed_lines_keep_their_reason_under_a_schema_change(world: World) -> None:
    _, out, records, _, _ = _run(world, InjectionPlan(malformed=0.05, schema_change_at_h=1.0, seed=5))
    parser = LineParser()
    malformed = [r for r in records if r["kind"] == "malformed"]
    assert len(malformed) > 50
    for record in malformed:
        assert parser.parse(out[record["seq"]][0]).reason.value == record["reason"]


def test_plan_validation() -> None:
    for bad in ("malformed=-0.1", "duplicate=2", "malformed=0.6,reorder=0.6", "window=1",
                "active=1", "parse=1", "shilling_accounts=-3"):
        with pytest.raises(ValueError):
            InjectionPlan.parse(bad)


def test_duplicates_and_reordering_keep_every_line(world: World) -> None:
    organic, out, records, injector, _ = _run(world, InjectionPlan(duplicate=0.03, reorder=0.03,
                                                                    window=10, seed=2))
    extra = Counter(out) - Counter((line, key) for _, line, key in organic)
    assert sum(extra.values()) == injector.counts["duplicate"] > 0  # only the duplicates are new
    assert Counter((line, key) for _, line, key in organic) - Counter(out) == Counter()
    for record in records:
        assert out[record["seq"]][0].decode() == record["line"]
    times = [LineParser().parse(line).time for line, _ in out]
    late = sum(a > b for a, b in zip(times, times[1:], strict=False))
    assert 0 < late <= injector.counts["reorder"] + injector.counts["duplicate"]


def test_schema_change_turns_timestamps_into_epoch_millis(world: World) -> None:
    organic, out, records, _, _ = _run(world, InjectionPlan(schema_change_at_h=5.0))
    parser = LineParser()
    after = sum(t >= 5 * 3600 for t, _, _ in organic)
    reasons = Counter(r.reason for r in map(parser.parse, (line for line, _ in out))
                      if isinstance(r, Rejection))
    assert reasons == {Reason.BAD_TIMESTAMP: after} and after > 0
    assert [r["kind"] for r in records] == ["schema_change"]


def test_shilling_campaign_lifts_an_obscure_movie(world: World) -> None:
    plan = InjectionPlan(shilling_accounts=40, shilling_at_h=2.0, seed=3)
    target, lines = shilling_lines(world.catalog.ids, world.catalog.appeal, plan, START, 10_000_000)
    parser = LineParser()
    events = [parser.parse(line) for _, line, _ in lines]
    assert [t for t, _, _ in lines] == sorted(t for t, _, _ in lines)
    assert all(isinstance(e, Account | Rate) and e.user_id >= 10_000_000 for e in events)
    assert sum(isinstance(e, Account) for e in events) == 40
    top = [e for e in events if isinstance(e, Rate) and e.movie_id == target]
    assert len(top) == 40 and {e.rating for e in top} == {5}
    rank = np.argsort(np.argsort(world.catalog.appeal))[world.movie_index[target]]
    assert rank < world.n_movies // 10  # among the least appealing tenth


def test_popularity_shift_and_taste_drift_change_behaviour(world: World) -> None:
    before_tastes = world.population.genre_pref.copy()
    _, out, _, _, generator = _run(world, InjectionPlan(), days=1.0, shift_at_s=12 * 3600,
                                   drift_at_s=12 * 3600)
    assert np.array_equal(world.population.genre_pref, before_tastes)  # the caller's world
    assert not np.array_equal(generator.world.population.genre_pref, before_tastes)
    assert [c["kind"] for c in generator.changes] == ["popularity_shift", "taste_drift"]
    hits = set(generator.changes[0]["movies"])
    parser = LineParser()
    before = after = before_hits = after_hits = 0
    for line, _ in out:
        e = parser.parse(line)
        if isinstance(e, Watch) and e.minute == 0:  # one count per session
            late = e.time >= datetime(2025, 3, 1, 12)
            before, after = before + (not late), after + late
            before_hits += (not late) and e.movie_id in hits
            after_hits += late and e.movie_id in hits
    assert after_hits / after > 5 * max(before_hits / before, 1e-3)


def test_plan_parsing_names_bad_items() -> None:
    plan = InjectionPlan.parse("malformed=0.01, schema_change_at_h=3,shilling_accounts=7")
    assert (plan.malformed, plan.schema_change_at_h, plan.shilling_accounts) == (0.01, 3.0, 7)
    assert plan.active and not InjectionPlan().active
    with pytest.raises(ValueError, match="bad injection item"):
        InjectionPlan.parse("malformd=0.1")
    with pytest.raises(ValueError, match="bad value"):
        InjectionPlan.parse("malformed=lots")
