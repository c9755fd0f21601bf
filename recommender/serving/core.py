"""The pure decisions of /recommend: plain data in, plain data out (no Redis, no files).

- ``parse_user_id``: the path segment of ``GET /recommend/<userid>`` as an int, or
  ``BadRequest`` with the short reason sent back with status 400.
- ``history_of``: a ``UserState`` seen through one model's catalog: the ``History`` the
  model folds in, weighted by the confidence formula training uses
  (``recommender.dataset.confidence``); its items are also the ones never to recommend
  back.
- ``profile_of`` / ``needs_minor_filter``: the user's ``Profile`` (demographics and the
  titles matched in the self-description), and whether the answer must be minor-safe.
- ``unsafe_for_minors`` / ``unsafe_reason``: one movie's stored metadata judged for minors.
- ``Answer`` / ``format_answer``: what the request path returns, and its wire form
  (section 2 of the MLiP interface: ids joined by "," on one line, nothing else).

The minor filter is deliberately conservative: a user is treated as a (possible) minor
unless a plausible age of 18 or more is on file, and a movie as unsafe unless its
metadata says otherwise. A profile arrives asynchronously (the consumer's enricher
fetches it after the user's first event), so "no profile yet" is the common case for new
users; assuming adulthood there would break the promise "never R-rated content to a
minor". The cost is that unknown users get a smaller catalog.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from movierec import wire
from recommender.coldstart import Matcher, profile_items
from recommender.confidence import ConfidenceError, ConfidenceParams, confidence
from recommender.models.base import History
from recommender.models.profiles import Profile, profile_fields
from recommender.serving.state import BadRequest, ModelUnavailable
from stores.online import UserState

PATH_MODEL = "model"
"""Ranked by the model from the user's history (fold-in for ALS)."""
PATH_COLDSTART_PROFILE = "coldstart_profile"
"""No usable history; titles from the self-description were matched and used."""
PATH_COLDSTART_DEMOGRAPHIC = "coldstart_demographic"
"""No usable history or titles; age or gender known (segment-based cold start)."""
PATH_POPULAR = "popular"
"""Nothing known about the user: the model's popularity ranking."""
PATHS: tuple[str, ...] = (PATH_MODEL, PATH_COLDSTART_PROFILE, PATH_COLDSTART_DEMOGRAPHIC,
                          PATH_POPULAR)

MAX_ID_DIGITS = 19
"""Longest accepted user id: 19 digits is the int64 range, and it bounds ``int()``'s work."""
ADULT_AGE = 18
UNSAFE_RATINGS = frozenset({"R", "NC17", "X"})
"""Content ratings unsuitable for minors, after upper-casing and dropping "-", "_" and
spaces (so "NC-17", "nc17" and "Nc 17" all read "NC17"). MPA: R = under 17 requires an
accompanying adult, NC-17 = no one 17 and under admitted; X is NC-17's predecessor."""

_DIGITS = re.compile(r"[0-9]+")  # ASCII only: str.isdigit() would accept "²" and "٣"
_RATING_NOISE = re.compile(r"[\s_-]+")
_NOT_ADULT = frozenset({"0", "false"})
_ADULT = frozenset({"1", "true"})


@dataclass(frozen=True)
class Answer:
    """The decision for one request: movie ids best first (at most the list size) and
    which path produced them (one of ``PATHS``; a label of the answers metric)."""

    items: tuple[str, ...]
    path: str


def parse_user_id(raw: str, *, max_id: int) -> int:
    """The user id of a request path segment. ASCII digits only (no sign, space or
    Unicode digit), at most ``MAX_ID_DIGITS`` of them, value <= ``max_id``; leading zeros
    are fine ("007" -> 7). ``BadRequest`` with a short reason otherwise."""
    if not _DIGITS.fullmatch(raw):
        raise BadRequest("user id must be a non-negative integer")
    if len(raw) > MAX_ID_DIGITS or int(raw) > max_id:
        raise BadRequest(f"user id is out of range (max {max_id})")
    return int(raw)


def clock_ms(state: UserState, wall_ms: int) -> int:
    """The "now" that recency is measured from: the user's latest stored event time, or
    ``wall_ms`` when the state holds no time.

    Event times are the log's own zone-less local times (stored as if UTC, like training
    reads them), and a simulated or replayed log can run days or years away from the wall
    clock. Measured from the wall clock every such history would sit at the recency floor;
    measured from the user's own latest event, the freshest movie weighs 1 as it does for
    an active user in training (whose ages count from the snapshot's end)."""
    times = [*state.recent.values(), *(ms for ms, _ in state.ratings.values())]
    return max(times) if times else wall_ms


def history_of(state: UserState, index: Mapping[str, int], runtimes: np.ndarray, *,
               now_ms: int, params: ConfidenceParams, rating_scale: int) -> History:
    """The user's history as the model sees it: every watched or rated movie in
    ``index`` (movie id -> item), items ascending (int32), confidences float32 computed
    by ``recommender.dataset.confidence`` exactly as training does:

    - max minute from ``progress`` (-1 when only rated); stars from ``ratings`` (-1 when
      unrated, or off the 1..``rating_scale`` scale: such a value says nothing);
    - age = ``now_ms`` minus the movie's last event (the later of its ``recent`` time and
      its rating time), in seconds, at least 0. A movie that fell out of the bounded
      ``recent`` set and has no rating gets the oldest time known for the user, recent
      and rating times alike: it is older than every movie still in ``recent``, and an
      older rating time can only make the guess older, so its weight errs low, never
      high. With no time at all the age is 0;
    - ``runtimes``: minutes per item (float32, (n_items,), > 0).

    ``now_ms`` is on the stored times' clock (ms since 1970 of the site's local time).
    Cost (2 shared cores): about 90 µs for 50 movies, 300 µs for 300.
    ``ModelUnavailable`` if ``index`` and ``runtimes`` disagree (a broken model).
    """
    item_of, minute_of = index.get, state.progress.get
    recent_at, rating_of = state.recent.get, state.ratings.get
    oldest = min(min(state.recent.values(), default=now_ms),
                 min((ms for ms, _ in state.ratings.values()), default=now_ms))
    rows: list[tuple[int, int, int, int]] = []  # item, max minute, stars, last event ms
    for movie in state.seen():
        item = item_of(movie)
        if item is None:
            continue
        at, rated, stars = recent_at(movie), rating_of(movie), -1
        if rated is not None:
            at = rated[0] if at is None else max(at, rated[0])
            if 1 <= rated[1] <= rating_scale:
                stars = rated[1]
        rows.append((item, minute_of(movie, -1), stars, oldest if at is None else at))
    if not rows:
        return History.empty()
    table = np.array(rows, dtype=np.int64)
    table = table[np.argsort(table[:, 0])]
    items = table[:, 0].astype(np.int32)
    age_s = np.maximum(now_ms - table[:, 3], 0) / 1000.0
    try:
        weights = confidence(table[:, 1], table[:, 2], age_s, runtimes[items], params=params,
                             rating_scale=rating_scale)
    except (ConfidenceError, IndexError) as exc:
        raise ModelUnavailable(f"cannot weigh the history: {exc}") from exc
    return History(items, weights)


def profile_age(state: UserState) -> int | None:
    """The profile's age in years, or None when missing or junk
    (``profiles.profile_fields``)."""
    return profile_fields(state.profile)[0]


def profile_of(state: UserState, matcher: Matcher | None) -> Profile:
    """The user's ``Profile``: age, gender and occupation as training reads them
    (``profiles.profile_fields``), and liked/disliked items from the ``likes``/``dislikes``
    texts through ``coldstart.profile_items`` when a ``matcher`` is given."""
    fields = state.profile
    age, gender, occupation = profile_fields(fields)
    liked: tuple[int, ...] = ()
    disliked: tuple[int, ...] = ()
    likes, dislikes = fields.get("likes"), fields.get("dislikes")
    if matcher is not None and (likes or dislikes):
        liked, disliked = profile_items(matcher, likes, dislikes)
    return Profile(age=age, gender=gender, occupation=occupation, liked=liked,
                   disliked=disliked)


MINOR, UNKNOWN_AGE, ADULT = "minor", "unknown_age", "adult"
"""Audiences of a list: an age under 18 on file, no plausible age on file, 18 or more."""


def audience(age: int | None) -> str:
    """Whose list it is, for the minor filter and the safety audit: MINOR, UNKNOWN_AGE
    (served the minor-safe catalog too) or ADULT."""
    if age is None:
        return UNKNOWN_AGE
    return MINOR if age < ADULT_AGE else ADULT


def needs_minor_filter(state: UserState) -> bool:
    """True unless the profile holds a plausible age of at least 18: under 18, no
    profile yet, or a junk age all get the minor-safe catalog (see the module docstring)."""
    age = profile_age(state)
    return age is None or age < ADULT_AGE


def unsafe_for_minors(meta: Mapping[str, str] | None) -> bool:
    """Whether one movie's stored metadata (the consumer's string fields) rules it out
    for minors (``unsafe_reason`` is not None)."""
    return unsafe_reason(meta) is not None


def unsafe_reason(meta: Mapping[str, str] | None) -> str | None:
    """Why one movie's stored metadata rules it out for minors, or None when it does not:
    ``no_metadata`` (none, or no readable ``adult`` flag), ``adult`` (the flag set), or
    ``rating_R``/``rating_NC17``/``rating_X`` (``content_rating``, any case and spelling).

    Unknown counts as unsafe: no metadata at all, or metadata without a readable
    ``adult`` flag (the enricher's record of an id the API did not know holds only
    ``unknown``). With ``adult`` "0" and no content rating (older offerings have none)
    the flag alone decides. The safety audit (``audit.safety``) judges served lists with
    this same rule."""
    if not meta:
        return "no_metadata"
    flag = str(meta.get("adult", "")).strip().lower()
    if flag in _ADULT:
        return "adult"
    if flag not in _NOT_ADULT:
        return "no_metadata"
    rating = _RATING_NOISE.sub("", str(meta.get("content_rating", ""))).upper()
    return f"rating_{rating}" if rating in UNSAFE_RATINGS else None


def format_answer(movie_ids: Sequence[str]) -> str:
    """The response body: ids joined by "," (no spaces, no newline), at most the API's
    20; the wire format's own writer (``movierec.wire.format_answer``), so the service
    and the simulator's strict client share one definition."""
    return wire.format_answer(tuple(movie_ids))
