"""The consumer's pure core: keys, feature folding, context checks, dead letters,
cleaning of API records."""

from __future__ import annotations

import random
from datetime import datetime, timedelta

import pytest

from movierec.wire import LineParser, Recommendation, Watch
from stores.feature_delta import FeatureDelta, epoch_ms
from stores.keys import Keys, day_of
from stream_consumer.dlq import dead_letter, read_dead_letter
from stream_consumer.enrich import clean_movie, clean_user
from stream_consumer.validate import Check, Validator

T = datetime(2025, 3, 1, 12, 0)
LINES = [
    b"2025-03-01T12:00:00,7,GET /create_account",
    b"2025-03-01T12:01:00,7,GET /data/m/the+matrix+1999/0.mpg",
    b"2025-03-01T12:02:00,7,GET /data/m/the+matrix+1999/1.mpg",
    b"2025-03-01T12:03:00,7,GET /data/m/the+matrix+1999/2.mpg",
    b"2025-03-01T12:05:00,7,GET /rate/the+matrix+1999=3",
    b"2025-03-01T12:06:00,7,GET /rate/the+matrix+1999=5",
    b"2025-03-01T12:06:00,8,GET /data/m/the+matrix+1999/0.mpg",
    b"2025-03-02T00:00:10,8,GET /data/m/up+2009/0.mpg",
]


def test_keys_are_built_without_a_server() -> None:
    k = Keys("test")
    assert k.user_progress(7) == "test:u:7:w"
    assert k.movie_viewers("kill+bill+vol.+1+2003", "20250301") == "test:mv:kill+bill+vol.+1+2003:d:20250301"
    assert k.events("watch", day_of(T)) == "test:g:ev:watch:20250301"
    assert len({k.user_progress(1), k.user_ratings(1), k.user_recent(1), k.user_activity(1),
                k.user_profile(1)}) == 5


def test_provenance_keys_live_under_the_prefix_apart_from_user_features() -> None:
    k = Keys("test")
    assert k.served("0" * 32) == "test:prov:req:" + "0" * 32
    assert k.served_by_user(7) == "test:prov:u:7"
    assert k.served_by_user(7) not in {k.user_progress(7), k.user_ratings(7), k.user_recent(7),
                                       k.user_activity(7), k.user_profile(7)}


def _fold(lines: list[bytes]) -> FeatureDelta:
    parser, delta = LineParser(), FeatureDelta()
    for raw in lines:
        delta.add(parser.parse(raw), raw)
    return delta


def test_folding_keeps_maxima_latest_ratings_and_sets() -> None:
    delta = _fold(LINES)
    assert delta.progress == {(7, "the+matrix+1999"): 2, (8, "the+matrix+1999"): 0, (8, "up+2009"): 0}
    assert delta.ratings == {(7, "the+matrix+1999"): (epoch_ms(T + timedelta(minutes=6)), 5)}
    assert delta.viewers == {("the+matrix+1999", "20250301"): {7, 8}, ("up+2009", "20250302"): {8}}
    assert delta.new_users == {7: epoch_ms(T)}
    assert delta.first_seen[7] == epoch_ms(T)
    assert delta.last_seen[8] == epoch_ms(datetime(2025, 3, 2, 0, 0, 10))
    assert sum(len(v) for v in delta.identities.values()) == len(LINES)


def test_folding_ignores_order_and_duplicates() -> None:
    clean = _fold(LINES)
    for seed in range(20):
        messy = LINES + random.Random(seed).sample(LINES, 4)
        random.Random(seed).shuffle(messy)
        delta = _fold(messy)
        assert (delta.progress, delta.ratings, delta.recent, delta.viewers, delta.new_users,
                delta.first_seen, delta.last_seen) == (clean.progress, clean.ratings, clean.recent,
                                                       clean.viewers, clean.new_users,
                                                       clean.first_seen, clean.last_seen)
        assert {k: set(v) for k, v in delta.identities.items()} == {
            k: set(v) for k, v in clean.identities.items()}


def test_a_tie_in_rating_time_keeps_the_higher_score() -> None:
    a = b"2025-03-01T12:00:00,1,GET /rate/x+2000=2"
    b = b"2025-03-01T12:00:00,1,GET /rate/x+2000=4"
    assert _fold([a, b]).ratings == _fold([b, a]).ratings == {(1, "x+2000"): (epoch_ms(T), 4)}


def test_minutes_past_the_runtime_are_rejected() -> None:
    v = Validator(runtime_of={"x+2000": 90}.get, runtime_slack_min=10)
    assert v.check(Watch(T, 1, "x+2000", 100)) is None
    assert v.check(Watch(T, 1, "x+2000", 101))[0] is Check.MINUTE_BEYOND_RUNTIME
    assert v.check(Watch(T, 1, "unknown+2000", 5000)) is None  # runtime unknown: benefit of doubt


def test_events_far_ahead_of_the_streams_clock_are_rejected_until_it_jumps() -> None:
    v = Validator(runtime_of=lambda m: None, future_tolerance=timedelta(hours=6), jump_after=3)
    assert v.check(Watch(T, 1, "x+2000", 0)) is None
    far = T + timedelta(days=400)
    assert v.check(Watch(far, 1, "x+2000", 1))[0] is Check.FUTURE_TIMESTAMP
    assert v.check(Watch(T + timedelta(hours=5), 1, "x+2000", 1)) is None  # within tolerance
    assert v.clock == T + timedelta(hours=5)  # the rejected line did not move the clock
    assert v.check(Watch(far, 1, "x+2000", 2))[0] is Check.FUTURE_TIMESTAMP
    assert v.check(Watch(far, 1, "x+2000", 3))[0] is Check.FUTURE_TIMESTAMP
    assert v.check(Watch(far, 1, "x+2000", 4)) is None  # three in a row: the stream jumped
    assert v.clock == far


def test_a_success_with_more_than_twenty_ids_is_rejected() -> None:
    v = Validator(runtime_of=lambda m: None)
    ok = Recommendation(T, 1, "h:1", 200, tuple(f"m+{i}+2000" for i in range(20)), "", 5)
    big = Recommendation(T, 1, "h:1", 200, tuple(f"m+{i}+2000" for i in range(21)), "", 5)
    assert v.check(ok) is None and v.check(big)[0] is Check.TOO_MANY_ITEMS


@pytest.mark.parametrize("raw", [b"2025-03-01T12:00:00,x,GET /create_account",
                                 b"\xff\xfe\x00 not utf-8", b"x" * 70_000])
def test_dead_letters_keep_the_line_and_its_origin(raw: bytes) -> None:
    value = dead_letter(raw, reason="bad_user_id", detail="'x'", topic="movielog", partition=3,
                        offset=1234, timestamp_ms=99)
    record = read_dead_letter(value)
    assert (record["reason"], record["partition"], record["offset"], record["bytes"]) == (
        "bad_user_id", 3, 1234, len(raw))
    assert record["raw"] == raw[:64 * 1024] and record["truncated"] == (len(raw) > 64 * 1024)


def test_api_records_are_cleaned_of_dirty_types() -> None:
    assert clean_user({"user_id": "12", "age": "34", "gender": "f", "occupation": "writer",
                       "likes": "I love Up"}) == {"age": "34", "gender": "F", "occupation": "writer",
                                                  "likes": "I love Up"}
    assert clean_user({"age": 3}) is None
    movie = clean_movie({"id": "up+2009", "runtime": "96", "adult": "False", "license_cost": 0.4,
                         "genres": [{"id": 16, "name": "Animation"}, {"id": 35, "name": "Comedy"}],
                         "title": "Up"})
    assert movie["runtime"] == "96" and movie["adult"] == "0" and movie["genres"] == "Animation|Comedy"
    assert movie["content_rating"] == ""  # missing fields are empty, not an error
