"""The pure serving core: user-id parsing, the history and its confidences, the banned
items, the profile, the minor filter, the unsafe-movie rule and the answer's wire form.

Expected confidences are worked out by hand from the formula in ``recommender.dataset``
(fraction x rating factor x recency, 30-day half-life, floor 0.1, 1.75 at 5 stars and
0.25 at 1 star) and, for arbitrary inputs, compared with ``dataset.confidence`` itself,
which training uses.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from movierec.wire import parse_answer
from recommender.coldstart import TitleMatcher
from recommender.confidence import ConfidenceParams, confidence
from recommender.serving.core import (
    PATHS,
    Answer,
    format_answer,
    history_of,
    needs_minor_filter,
    parse_user_id,
    profile_age,
    profile_of,
    unsafe_for_minors,
)
from recommender.serving.state import BadRequest, ModelUnavailable
from stores.online import UserState

DAY_MS = 86_400_000
NOW = 1_740_000_000_000
INDEX = {"a+2000": 0, "b+2000": 1, "c+2000": 2, "d+2000": 3}
RUNTIMES = np.array([100, 90, 120, 60], dtype=np.float32)
PARAMS = ConfidenceParams()
API_BODY = re.compile(r"^(?:[a-z0-9._+-]+\+\d{4}(?:,[a-z0-9._+-]+\+\d{4})*)?$")
"""Section 2 of the MLiP interface: ids (lower-case words joined by "+", ending in a year)
joined by "," with no spaces, on one line, nothing else."""


def history(state: UserState, *, now: int = NOW, scale: int = 5):
    return history_of(state, INDEX, RUNTIMES, now_ms=now, params=PARAMS, rating_scale=scale)


def weights_by_movie(state: UserState, **kw) -> dict[str, float]:
    h = history(state, **kw)
    names = {item: movie for movie, item in INDEX.items()}
    return {names[int(i)]: float(w) for i, w in zip(h.items, h.weights, strict=True)}


# -- parse_user_id ---------------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "max_id", "expected"), [
    ("0", 100, 0), ("7", 100, 7), ("007", 100, 7), ("100", 100, 100),
    ("2147483647", 2_147_483_647, 2_147_483_647),
    ("9" * 19, 10**19 - 1, 10**19 - 1), ("0" * 18 + "1", 10, 1),
])
def test_parse_user_id_accepts_ascii_digits_up_to_the_maximum(raw, max_id, expected):
    assert parse_user_id(raw, max_id=max_id) == expected


@pytest.mark.parametrize("raw", [
    "", "-1", "+1", " 1", "1 ", "1\n", "\n", "1.0", "1e3", "0x1f", "12a", "abc", "1,2",
    "²", "١٢", "１２", "1_000",
])
def test_parse_user_id_rejects_anything_but_ascii_digits(raw):
    with pytest.raises(BadRequest, match="^user id must be a non-negative integer$"):
        parse_user_id(raw, max_id=10**6)


@pytest.mark.parametrize(("raw", "max_id"), [
    ("101", 100), ("2147483648", 2_147_483_647), ("1" + "0" * 19, 10**30),
    ("0" * 19 + "1", 10**30),  # 20 characters, however small the value
])
def test_parse_user_id_rejects_ids_out_of_range_with_the_maximum(raw, max_id):
    with pytest.raises(BadRequest, match=rf"^user id is out of range \(max {max_id}\)$"):
        parse_user_id(raw, max_id=max_id)


# -- history_of ------------------------------------------------------------------------------


def test_history_confidences_match_hand_computed_values():
    state = UserState(
        progress={"a+2000": 49, "c+2000": 119, "d+2000": 200},
        ratings={"a+2000": (NOW - 40 * DAY_MS, 5), "b+2000": (NOW, 1)},
        recent={"a+2000": NOW - 30 * DAY_MS, "c+2000": NOW - 60 * DAY_MS,
                "d+2000": NOW - 400 * DAY_MS},
    )
    got = weights_by_movie(state)
    # a: 50 of 100 minutes (0.5) x 5 stars (1.75) x 30 days old (0.5), the later of its
    #    recent time (30 d) and rating time (40 d).
    # b: rated only (0.5) x 1 star (0.25) x now (1).
    # c: 120 of 120 minutes (1) x unrated (1) x 60 days (0.25).
    # d: 201 minutes of a 60-minute film, capped at 1, x 400 days (recency floor 0.1).
    assert got == pytest.approx({"a+2000": 0.4375, "b+2000": 0.125, "c+2000": 0.25,
                                 "d+2000": 0.1}, rel=1e-5)


def test_history_uses_the_training_formula_for_arbitrary_inputs():
    rng = np.random.default_rng(4)
    movies = [f"m{i}+2001" for i in range(300)]
    index = {m: i for i, m in enumerate(movies)}
    runtimes = rng.uniform(20, 200, len(movies)).astype(np.float32)
    minute = rng.integers(-1, 250, len(movies))
    stars = np.where(rng.random(len(movies)) < 0.4, rng.integers(1, 11, len(movies)), -1)
    minute[stars < 0] = np.maximum(minute[stars < 0], 0)  # every movie watched or rated
    last = NOW - rng.integers(0, 500 * DAY_MS, len(movies))
    state = UserState(
        progress={m: int(x) for m, x in zip(movies, minute, strict=True) if x >= 0},
        ratings={m: (int(t), int(s)) for m, t, s in zip(movies, last, stars, strict=True)
                 if s > 0},
        recent={m: int(t) for m, t in zip(movies, last, strict=True)},
    )
    got = history_of(state, index, runtimes, now_ms=NOW, params=PARAMS, rating_scale=10)
    want = confidence(minute, stars, (NOW - last) / 1000.0, runtimes, params=PARAMS,
                      rating_scale=10)
    assert got.items.tolist() == list(range(len(movies)))
    assert got.weights.dtype == np.float32
    np.testing.assert_allclose(got.weights, want, rtol=1e-6)


def test_a_movie_out_of_recent_and_unrated_is_as_old_as_the_oldest_known_time():
    state = UserState(progress={"a+2000": 99, "c+2000": 119, "d+2000": 59},
                      ratings={"b+2000": (NOW - 5 * DAY_MS, 3)},
                      recent={"a+2000": NOW - 10 * DAY_MS, "c+2000": NOW - 60 * DAY_MS})
    got = weights_by_movie(state)
    assert got["d+2000"] == pytest.approx(0.25, rel=1e-5)   # full film, 60 days: 0.5 ** 2
    assert got["a+2000"] == pytest.approx(0.5 ** (1 / 3), rel=1e-5)   # 10 days
    # A rating older than every recent time is a time known for the user too: 90 days.
    older = UserState(progress={"a+2000": 99, "d+2000": 59},
                      ratings={"b+2000": (NOW - 90 * DAY_MS, 3)},
                      recent={"a+2000": NOW - 10 * DAY_MS})
    assert weights_by_movie(older)["d+2000"] == pytest.approx(0.125, rel=1e-5)


def test_without_any_time_the_age_is_zero_and_future_events_count_as_now():
    assert weights_by_movie(UserState(progress={"a+2000": 9})) == \
        pytest.approx({"a+2000": 0.1}, rel=1e-6)   # 10 of 100 minutes, recency 1
    future = UserState(progress={"c+2000": 119}, recent={"c+2000": NOW + 5 * DAY_MS})
    assert weights_by_movie(future) == pytest.approx({"c+2000": 1.0}, rel=1e-6)


def test_history_keeps_known_movies_sorted_and_reads_off_scale_stars_as_unrated():
    state = UserState(progress={"d+2000": 59, "zz+1999": 5, "b+2000": 89},
                      ratings={"c+2000": (NOW, 9), "unknown+2000": (NOW, 4)})
    h = history(state)
    assert h.items.dtype == np.int32 and h.items.tolist() == [1, 2, 3]
    # c: rated only, 9 stars on a 5-star scale -> unrated factor 1: 0.5 x 1 x 1.
    assert float(h.weights[1]) == pytest.approx(0.5)
    assert len(history(UserState(progress={"zz+1999": 5}))) == 0
    assert len(history(UserState.empty())) == 0


def test_history_with_runtimes_that_do_not_fit_the_index_is_a_model_error():
    with pytest.raises(ModelUnavailable, match="cannot weigh"):
        history_of(UserState(progress={"d+2000": 1}), INDEX, RUNTIMES[:2], now_ms=NOW,
                   params=PARAMS, rating_scale=5)
    with pytest.raises(ModelUnavailable, match="cannot weigh"):
        history_of(UserState(progress={"a+2000": 1}), INDEX, np.zeros(4, np.float32),
                   now_ms=NOW, params=PARAMS, rating_scale=5)


def test_the_history_holds_every_watched_or_rated_known_movie_and_nothing_else():
    # ServingModel.recommend bans exactly the history's items (plus, for minors, unsafe ones)
    state = UserState(progress={"a+2000": 1, "new+2024": 3}, ratings={"c+2000": (NOW, 2)},
                      recent={"a+2000": NOW, "d+2000": NOW})
    banned = history(state).items
    assert banned.dtype == np.int32 and sorted(banned.tolist()) == [0, 2]
    assert history(UserState.empty()).items.tolist() == []


# -- profile, minors, unsafe movies ------------------------------------------------------------


@pytest.mark.parametrize(("age", "expected"), [
    ("34", 34), (" 17 ", 17), ("0", 0), ("120", 120), ("121", None), ("999", None),
    ("", None), ("abc", None), ("25.5", None), ("-3", None), ("²", None), ("٣٠", None),
    ("1" * 30, None),
])
def test_profile_age_tolerates_junk(age, expected):
    assert profile_age(UserState(profile={"age": age})) == expected


def test_profile_reads_demographics_and_matches_titles_when_a_matcher_is_given():
    matcher = TitleMatcher.from_ids(["the+matrix+1999", "cats+2019", "toy+story+1995"])
    state = UserState(profile={"age": "31", "gender": "f", "occupation": "writer",
                               "likes": "I love The Matrix and toy story",
                               "dislikes": "not a fan of Cats"})
    profile = profile_of(state, matcher)
    assert (profile.age, profile.gender, profile.occupation) == (31, "F", "writer")
    assert sorted(profile.liked) == [0, 2] and profile.disliked == (1,)
    assert profile_of(state, None).liked == ()
    junk = profile_of(UserState(profile={"age": "x", "gender": "?", "occupation": ""}), matcher)
    assert (junk.age, junk.gender, junk.occupation, junk.liked) == (None, None, None, ())


@pytest.mark.parametrize(("profile", "filtered"), [
    ({}, True), ({"age": "12"}, True), ({"age": "17"}, True), ({"age": "18"}, False),
    ({"age": "40", "gender": "M"}, False), ({"age": "abc"}, True), ({"age": "200"}, True),
    ({"gender": "F", "occupation": "lawyer"}, True),
])
def test_the_minor_filter_applies_unless_an_adult_age_is_known(profile, filtered):
    assert needs_minor_filter(UserState(profile=profile)) is filtered


@pytest.mark.parametrize(("meta", "unsafe"), [
    (None, True), ({}, True), ({"unknown": "1", "fetched_at": "1"}, True),
    ({"adult": "1", "content_rating": "G"}, True),
    ({"adult": "0", "content_rating": "R"}, True),
    ({"adult": "0", "content_rating": "r"}, True),
    ({"adult": "0", "content_rating": "NC-17"}, True),
    ({"adult": "0", "content_rating": "nc17"}, True),
    ({"adult": "0", "content_rating": "X"}, True),
    ({"adult": "junk", "content_rating": "PG"}, True),
    ({"adult": "0", "content_rating": "PG-13"}, False),
    ({"adult": "0", "content_rating": "G"}, False),
    ({"adult": "0", "content_rating": ""}, False),
    ({"adult": "0"}, False),
    ({"adult": "false", "runtime": "90"}, False),
])
def test_unsafe_for_minors(meta, unsafe):
    assert unsafe_for_minors(meta) is unsafe


# -- the answer --------------------------------------------------------------------------------


def test_answer_follows_the_api_grammar():
    ids = ["the+lord+of+the+rings+the+return+of+the+king+2003", "kill+bill+vol.+1+2003",
           "monsters_+inc.+2001", "willy+wonka++the+chocolate+factory+1971", "1900+1976"]
    body = format_answer(ids)
    assert API_BODY.fullmatch(body) and "\n" not in body and " " not in body
    assert parse_answer(body) == tuple(ids)   # the strict client's reading
    assert format_answer([]) == "" and API_BODY.fullmatch("")
    many = [f"movie+{i}+2000" for i in range(25)]
    assert parse_answer(format_answer(many)) == tuple(many[:20])   # the API's 20 at most


def test_path_names_are_the_documented_labels():
    assert PATHS == ("model", "coldstart_profile", "coldstart_demographic", "popular")
    answer = Answer(("a+2000",), "model")
    with pytest.raises(AttributeError):
        answer.path = "popular"  # type: ignore[misc]


def test_recency_is_measured_from_the_users_latest_event_not_the_wall_clock():
    from recommender.serving.core import clock_ms

    state = UserState(progress={"a+2000": 10, "b+2001": 5}, recent={"a+2000": 1_000},
                      ratings={"b+2001": (5_000, 4)})
    assert clock_ms(state, wall_ms=10**13) == 5_000
    assert clock_ms(UserState(progress={"a+2000": 3}), wall_ms=123) == 123
