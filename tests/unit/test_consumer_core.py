"""The consumer's pure core: keys, feature folding, context checks, dead letters,
cleaning of API records."""

from __future__ import annotations

import random
from datetime import datetime, timedelta

import numpy as np
import pytest

from movierec.wire import LineParser, Recommendation, Watch
from stores.feature_delta import EPOCH, FeatureDelta, epoch_ms
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
    written = epoch_ms(T)
    assert v.check(Watch(T, 1, "x+2000", 100), written) is None
    assert v.check(Watch(T, 1, "x+2000", 101), written)[0] is Check.MINUTE_BEYOND_RUNTIME
    assert v.check(Watch(T, 1, "unknown+2000", 5000), written) is None  # runtime unknown: benefit of doubt


def test_the_future_is_judged_against_when_the_line_was_written_not_the_streams_past() -> None:
    """Each line alone, against its Kafka record's timestamp: gaps of hours or days and a
    replay of an old period lose nothing; a line stamped past its writing (beyond the
    allowed offset) is rejected, and a line without a timestamp is judged against the
    time it was read."""
    read_at = T + timedelta(days=500)
    v = Validator(runtime_of=lambda m: None, ahead=timedelta(hours=20),
                  now_ms=lambda: epoch_ms(read_at))
    # a quiet stream, each line written as it happened: gaps of 8 h, 3 days, 40 days
    for gap in (0, 8, 72, 960):
        when = T + timedelta(hours=gap)
        assert v.check(Watch(when, 1, "x+2000", 0), epoch_ms(when) + 150) is None
    assert v.clock == T + timedelta(hours=960)
    # a replay: old times written now, in any order
    now = epoch_ms(T + timedelta(days=400))
    assert v.check(Watch(T - timedelta(days=300), 2, "x+2000", 0), now) is None
    assert v.check(Watch(T - timedelta(days=900), 2, "x+2000", 1), now) is None
    # site-local time up to the offset plus the tolerance ahead of UTC is fine; past it not
    written = epoch_ms(T)
    assert v.check(Watch(T + timedelta(hours=19, minutes=59), 3, "x+2000", 0), written) is None
    problem = v.check(Watch(T + timedelta(hours=20, seconds=1), 3, "x+2000", 0), written)
    assert problem is not None and problem[0] is Check.FUTURE_TIMESTAMP
    assert "20.0 h after its line was written (2025-03-01T12:00:00 UTC)" in problem[1]
    assert v.check(Watch(T + timedelta(days=365), 3, "x+2000", 0), written)[0] is Check.FUTURE_TIMESTAMP
    assert v.clock == T + timedelta(hours=960)  # a rejected line never moves the clock
    # no timestamp (-1, an old message format): judged against the time of reading, and a
    # line past it moves no clock
    assert v.check(Watch(T + timedelta(days=365), 4, "x+2000", 0), -1) is None
    assert v.clock == T + timedelta(days=365)
    late = v.check(Watch(read_at + timedelta(hours=21), 4, "x+2000", 0), -1)
    assert late is not None and late[0] is Check.FUTURE_TIMESTAMP
    assert v.clock == T + timedelta(days=365)


def test_a_known_site_offset_tightens_the_check() -> None:
    """A site 5 h behind UTC with 6 h of tolerance: its times may be 1 h past the record."""
    v = Validator(runtime_of=lambda m: None, ahead=timedelta(hours=-5 + 6))
    written = epoch_ms(T)
    assert v.check(Watch(T + timedelta(minutes=59), 1, "x+2000", 0), written) is None
    assert v.check(Watch(T + timedelta(hours=2), 1, "x+2000", 0), written)[0] is Check.FUTURE_TIMESTAMP


def test_the_vectorised_limits_say_what_future_says() -> None:
    v = Validator(runtime_of=lambda m: None, ahead=timedelta(hours=20),
                  now_ms=lambda: epoch_ms(T) + 99)
    written = np.array([epoch_ms(T), epoch_ms(T) + 5, -1], dtype=np.int64)
    for w, limit in zip(written.tolist(), v.time_limits(written).tolist(), strict=True):
        at_limit = EPOCH + timedelta(milliseconds=limit)
        assert v.future(Watch(at_limit, 1, "x+2000", 0), w) is None
        assert v.future(Watch(at_limit + timedelta(milliseconds=1), 1, "x+2000", 0), w) is not None
    assert v.time_limits(np.array([-1]))[0] == epoch_ms(T) + 99 + 20 * 3_600_000  # read time
    # a bogus timestamp near the int64 limit saturates instead of wrapping negative
    huge = np.iinfo(np.int64).max - 5
    assert v.time_limits(np.array([huge]))[0] == np.iinfo(np.int64).max


def test_a_success_with_more_than_twenty_ids_is_rejected() -> None:
    v = Validator(runtime_of=lambda m: None)
    written = epoch_ms(T)
    ok = Recommendation(T, 1, "h:1", 200, tuple(f"m+{i}+2000" for i in range(20)), "", 5)
    big = Recommendation(T, 1, "h:1", 200, tuple(f"m+{i}+2000" for i in range(21)), "", 5)
    assert v.check(ok, written) is None and v.check(big, written)[0] is Check.TOO_MANY_ITEMS


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
