"""The MLiP wire format: every variant of mlip-interface.md section 1, every rejection
reason, and properties over arbitrary input (never raises, round-trips)."""

from __future__ import annotations

from datetime import datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from movierec.wire import (
    MAX_ITEMS,
    Account,
    LineParser,
    Rate,
    Reason,
    Recommendation,
    Rejection,
    Watch,
    format_answer,
    format_event,
    is_movie_id,
    parse_answer,
)

T = datetime(2024, 2, 27, 18, 45, 18)

VALID = [
    # every timestamp precision seen in real streams
    ("2024-02-27T18:45:18,1,GET /create_account", Account(T, 1)),
    ("2022-10-29T21:54:35.854,2,GET /create_account", Account(datetime(2022, 10, 29, 21, 54, 35, 854000), 2)),
    (
        "2022-02-08T12:02:38.164729,3,GET /create_account",
        Account(datetime(2022, 2, 8, 12, 2, 38, 164729), 3),
    ),
    (  # nanoseconds are truncated to microseconds
        "2025-10-17T01:33:45.122692921,4,GET /create_account",
        Account(datetime(2025, 10, 17, 1, 33, 45, 122692), 4),
    ),
    ("2025-03-01T12:45,5,GET /create_account", Account(datetime(2025, 3, 1, 12, 45), 5)),
    # movie id shapes
    (
        "2024-02-27T18:45:18,12345,GET /data/m/the+lord+of+the+rings+the+return+of+the+king+2003/0.mpg",
        Watch(T, 12345, "the+lord+of+the+rings+the+return+of+the+king+2003", 0),
    ),
    (
        "2024-02-27T18:45:18,0,GET /data/m/kill+bill+vol.+1+2003/89.mpg",
        Watch(T, 0, "kill+bill+vol.+1+2003", 89),
    ),
    ("2024-02-27T18:45:18,7,GET /data/m/spider-man+3+2007/12.mpg", Watch(T, 7, "spider-man+3+2007", 12)),
    ("2024-02-27T18:45:18,7,GET /data/m/monsters_+inc.+2001/1.mpg", Watch(T, 7, "monsters_+inc.+2001", 1)),
    (
        "2024-02-27T18:45:18,7,GET /data/m/willy+wonka++the+chocolate+factory+1971/3.mpg",
        Watch(T, 7, "willy+wonka++the+chocolate+factory+1971", 3),
    ),
    ("2024-02-27T18:45:18,7,GET /data/m/1900+1976/4.mpg", Watch(T, 7, "1900+1976", 4)),
    ("2024-02-27T18:45:18,7,GET /rate/i_+robot+2004=5", Rate(T, 7, "i_+robot+2004", 5)),
    ("2024-02-27T18:45:18,7,GET /rate/i_+robot+2004=1\r\n", Rate(T, 7, "i_+robot+2004", 1)),
    # recommendation lines: ", " and "," separators, short lists, failures with free text
    (
        "2024-02-27T18:45:18,9,recommendation request 17645-team15.isri.cmu.edu:8082, status 200, "
        "result: spider-man+3+2007, monsters_+inc.+2001, i_+robot+2004, 123 ms",
        Recommendation(
            T, 9, "17645-team15.isri.cmu.edu:8082", 200,
            ("spider-man+3+2007", "monsters_+inc.+2001", "i_+robot+2004"), "", 123,
        ),
    ),
    (
        "2024-02-27T18:45:18,9,recommendation request team15:8082, status 200, "
        "result: 1900+1976,i_+robot+2004, 12 ms",
        Recommendation(T, 9, "team15:8082", 200, ("1900+1976", "i_+robot+2004"), "", 12),
    ),
    (
        "2024-02-27T18:45:18,9,recommendation request 128.2.204.215:8082, status 200, result: , 3 ms",
        Recommendation(T, 9, "128.2.204.215:8082", 200, (), "", 3),
    ),
    (
        "2024-02-27T18:45:18,9,recommendation request team15.example.edu:8082, status 0, result: "
        "java.util.concurrent.TimeoutException: Request to team15.example.edu/128.2.3.4:8082 timed "
        "out after 600 ms, 601 ms",
        Recommendation(
            T, 9, "team15.example.edu:8082", 0, (),
            "java.util.concurrent.TimeoutException: Request to team15.example.edu/128.2.3.4:8082 "
            "timed out after 600 ms",
            601,
        ),
    ),
    (
        "2024-02-27T18:45:18,9,recommendation request team15:8082, status 0, result: Connection refused: "
        "team15/1.2.3.4:8082, 2 ms",
        Recommendation(T, 9, "team15:8082", 0, (), "Connection refused: team15/1.2.3.4:8082", 2),
    ),
]


@pytest.mark.parametrize(("line", "expected"), VALID)
def test_every_documented_variant_parses(line: str, expected: object) -> None:
    parser = LineParser()
    assert parser.parse(line) == expected
    assert parser.parse(line.encode()) == expected


def test_ten_point_scale_is_a_setting() -> None:
    line = "2024-02-27T18:45:18,7,GET /rate/i_+robot+2004=9"
    assert LineParser(rating_scale=10).parse(line) == Rate(T, 7, "i_+robot+2004", 9)
    assert LineParser(rating_scale=5).parse(line).reason is Reason.RATING_OUT_OF_RANGE


P = "2024-02-27T18:45:18,7,"
R = P + "recommendation request team15:8082, status "

REJECTED = [
    (b"", Reason.EMPTY),
    (b"\n", Reason.EMPTY),
    (b"x" * 9000, Reason.TOO_LONG),
    (b"\xff\xfe\x00garbage", Reason.BAD_ENCODING),
    (b"2024-02-27T18:45:18,7", Reason.BAD_FIELD_COUNT),
    ("2024-02-27 18:45:18,7,GET /create_account", Reason.BAD_TIMESTAMP),
    ("2024-02-27,7,GET /create_account", Reason.BAD_TIMESTAMP),
    ("2024-02-30T18:45:18,7,GET /create_account", Reason.BAD_TIMESTAMP),
    ("2024-02-27T18:45:18Z,7,GET /create_account", Reason.BAD_TIMESTAMP),
    ("2024-02-27T18:45:18+02:00,7,GET /create_account", Reason.BAD_TIMESTAMP),
    ("2024-02-27T18:45:18,abc,GET /create_account", Reason.BAD_USER_ID),
    ("2024-02-27T18:45:18,-7,GET /create_account", Reason.BAD_USER_ID),
    ("2024-02-27T18:45:18,,GET /create_account", Reason.BAD_USER_ID),
    ("2024-02-27T18:45:18,١٢,GET /create_account", Reason.BAD_USER_ID),  # non-ASCII digits
    ("2024-02-27T18:45:18,1234567890123456789,GET /create_account", Reason.BAD_USER_ID),
    (P + "POST /data/m/x+2000/1.mpg", Reason.UNKNOWN_KIND),
    (P + "GET /create_account/now", Reason.UNKNOWN_KIND),
    (P + "GET /data/m/The+Matrix+1999/1.mpg", Reason.BAD_MOVIE_ID),
    (P + "GET /data/m/the+matrix/1.mpg", Reason.BAD_MOVIE_ID),
    (P + "GET /data/m/the\x00matrix+1999/1.mpg", Reason.BAD_MOVIE_ID),
    (P + "GET /data/m/the+matr", Reason.BAD_MINUTE),  # truncated
    (P + "GET /data/m/the+matrix+1999.mpg", Reason.BAD_FIELD_COUNT),
    (P + "GET /data/m/the+matrix+1999/-1.mpg", Reason.BAD_MINUTE),
    (P + "GET /data/m/the+matrix+1999/99999.mpg", Reason.BAD_MINUTE),
    (P + "GET /data/m/the+matrix+1999/one.mpg", Reason.BAD_MINUTE),
    (P + "GET /rate/the+matrix+1999=x", Reason.BAD_RATING),
    (P + "GET /rate/the+matrix+1999=4.5", Reason.BAD_RATING),
    (P + "GET /rate/the+matrix+1999", Reason.BAD_RATING),
    (P + "GET /rate/the+matrix+1999=0", Reason.RATING_OUT_OF_RANGE),
    (P + "GET /rate/the+matrix+1999=6", Reason.RATING_OUT_OF_RANGE),
    (P + "GET /rate/=4", Reason.BAD_MOVIE_ID),
    (P + "recommendation request team15:8082", Reason.BAD_STATUS),
    (P + "recommendation request team15, status 200, result: x+2000, 4 ms", Reason.BAD_SERVER),
    (P + "recommendation request team15:99999, status 200, result: x+2000, 4 ms", Reason.BAD_SERVER),
    (R + "ok, result: x+2000, 4 ms", Reason.BAD_STATUS),
    (R + "200", Reason.BAD_RESULT),
    (R + "200, result: x+2000, <b>oops</b>, 4 ms", Reason.BAD_RESULT),
    (R + "200, result: x+2000, 4", Reason.BAD_RESPONSE_TIME),
    (R + "200, result: x+2000, fast ms", Reason.BAD_RESPONSE_TIME),
    (R + "0, result: boom\x07, 4 ms", Reason.BAD_ENCODING),
]


@pytest.mark.parametrize(("line", "reason"), REJECTED)
def test_bad_lines_are_rejected_with_their_reason(line: str | bytes, reason: Reason) -> None:
    got = LineParser().parse(line)
    assert isinstance(got, Rejection)
    assert got.reason is reason, got.detail
    assert got.detail


def test_every_reason_but_internal_failure_is_exercised() -> None:
    covered = {reason for _, reason in REJECTED}
    assert covered == set(Reason) - {Reason.UNPARSEABLE}


def test_fractional_response_time_rounds() -> None:
    got = LineParser().parse(R + "0, result: timeout, 600.5 ms")
    assert isinstance(got, Recommendation) and got.response_time_ms == 601


def test_movie_id_cache_returns_one_shared_string() -> None:
    parser = LineParser()
    a = parser.parse(P + "GET /data/m/" + "the+matrix+1999" + "/1.mpg")
    b = parser.parse(P + "GET /data/m/" + "".join(["the+matrix", "+1999"]) + "/2.mpg")
    assert isinstance(a, Watch) and isinstance(b, Watch)
    assert a.movie_id is b.movie_id


# -- the /recommend answer ------------------------------------------------------------------


def test_answer_is_one_line_of_at_most_twenty_ids() -> None:
    ids = [f"movie+{i}+2000" for i in range(30)]
    body = format_answer(ids)
    assert body.count(",") == MAX_ITEMS - 1 and " " not in body and "\n" not in body
    assert parse_answer(body) == tuple(ids[:MAX_ITEMS])
    assert parse_answer(body.encode()) == tuple(ids[:MAX_ITEMS])
    assert parse_answer("") == ()


@pytest.mark.parametrize(
    "body",
    ['["x+2000"]', "x+2000, y+2001", "x+2000\n", ",".join(["x+2000"] * 21), b"\xff", "<html>"],
)
def test_malformed_answers_are_rejected(body: str | bytes) -> None:
    assert isinstance(parse_answer(body), Rejection)


# -- properties -------------------------------------------------------------------------------

WORD = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789._-", max_size=12)
MOVIE_IDS = st.builds(
    lambda first, rest, year: "+".join([first, *rest]) + f"+{year}",
    WORD.filter(lambda w: w != ""),
    st.lists(WORD, max_size=6),
    st.integers(1000, 9999),
).filter(is_movie_id)
TIMES = st.datetimes(min_value=datetime(1000, 1, 1), max_value=datetime(9999, 12, 31))
USERS = st.integers(0, 10**18 - 1)
HOSTS = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789.-", min_size=1, max_size=30)
SERVERS = st.builds(lambda h, p: f"{h}:{p}", HOSTS, st.integers(0, 65535))
ERRORS = st.text(max_size=120).filter(str.isprintable)
MILLIS = st.integers(0, 10**9 - 1)

EVENTS = st.one_of(
    st.builds(Watch, TIMES, USERS, MOVIE_IDS, st.integers(0, 9999)),
    st.builds(Rate, TIMES, USERS, MOVIE_IDS, st.integers(1, 10)),
    st.builds(Account, TIMES, USERS),
    st.builds(
        Recommendation, TIMES, USERS, SERVERS, st.just(200),
        st.lists(MOVIE_IDS, max_size=20).map(tuple), st.just(""), MILLIS,
    ),
    st.builds(
        Recommendation, TIMES, USERS, SERVERS,
        st.integers(0, 999).filter(lambda s: s != 200), st.just(()), ERRORS, MILLIS,
    ),
)


@given(EVENTS)
def test_format_then_parse_gives_the_event_back(event: object) -> None:
    parser = LineParser(rating_scale=10)
    line = format_event(event)  # type: ignore[arg-type]
    assert "\n" not in line
    assert parser.parse(line) == event
    assert parser.parse(line.encode("utf-8") + b"\n") == event


def _check_total(parser: LineParser, raw: bytes | str) -> None:
    got = parser.parse(raw)
    assert isinstance(got, Watch | Rate | Recommendation | Account | Rejection)
    if isinstance(got, Rejection):
        assert isinstance(got.reason, Reason) and got.reason is not Reason.UNPARSEABLE
    else:  # whatever parses is a fixed point of format/parse
        assert parser.parse(format_event(got)) == got


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400))
def test_arbitrary_bytes_never_raise(raw: bytes) -> None:
    _check_total(LineParser(), raw)


@given(st.text(max_size=400))
def test_arbitrary_text_never_raises(raw: str) -> None:
    _check_total(LineParser(), raw)


MUTATIONS = st.sampled_from(["truncate", "insert", "delete", "replace", "duplicate", "swap"])


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(EVENTS, st.lists(st.tuples(MUTATIONS, st.integers(0, 10_000), st.binary(min_size=1, max_size=4)),
                       min_size=1, max_size=4))
def test_mutated_valid_lines_never_raise(event: object, edits: list[tuple[str, int, bytes]]) -> None:
    raw = bytearray(format_event(event).encode("utf-8"))  # type: ignore[arg-type]
    for op, pos, junk in edits:
        at = pos % (len(raw) + 1)
        if op == "truncate":
            del raw[at:]
        elif op == "insert":
            raw[at:at] = junk
        elif op == "delete":
            del raw[at : at + len(junk)]
        elif op == "replace":
            raw[at : at + len(junk)] = junk
        elif op == "duplicate":
            raw[at:at] = raw[at : at + 8]
        elif op == "swap" and at + 1 < len(raw):
            raw[at], raw[at + 1] = raw[at + 1], raw[at]
    parser = LineParser(rating_scale=10)
    _check_total(parser, bytes(raw))
    _check_total(parser, memoryview(bytes(raw)))
