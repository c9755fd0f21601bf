"""The MLiP wire format: event-log lines and the /recommend answer, parsed and formatted.

This is the one module the simulator, the consumer and the evaluators share
(see ../shared/mlip-interface.md, sections 1 and 2). It is pure: no I/O, no logging.

A line is ``<time>,<userid>,<request>`` where the request is one of::

    GET /data/m/<movieid>/<minute>.mpg                       -> Watch
    GET /rate/<movieid>=<rating>                             -> Rate
    recommendation request <server>, status <code>, result: <result>, <n> ms
                                                             -> Recommendation
    GET /create_account                                      -> Account

``LineParser.parse`` turns any input (``bytes`` or ``str``) into one of those events or
into a ``Rejection`` carrying a ``Reason``; it never raises. ``format_event`` is its
inverse: ``parser.parse(format_event(e)) == e`` for every valid event.

Times are naive ``datetime`` in the site's local time, as the log writes them; any
fractional precision parses, digits beyond microseconds are truncated (nanosecond
stamps exist in real streams).

Speed matters (the consumer reads >= 50k lines/s on one core), hence plain string
methods instead of one big regex, and a bounded cache of movie ids already validated
(a catalog has ~27k ids that recur in every minute of every session).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

MAX_ITEMS = 20
"""The API answers with at most this many movie ids."""

DEFAULT_MAX_LINE = 8192
"""Longest accepted line: bytes for bytes input, characters for str input.

A 20-item recommendation line is under 2,000."""

MAX_MINUTE = 9999
"""Upper bound for a minute index; runtime-aware checks belong to the consumer."""

MAX_USER_DIGITS = 18
"""User ids must fit a signed 64-bit integer."""

_MINUTES = {str(i): i for i in range(MAX_MINUTE + 1)}
"""Canonical minute texts to ints: one lookup checks digits, range and converts."""

_MOVIE_ID_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789+._-"
MAX_MOVIE_ID = 256
"""Longest movie id accepted, in characters."""
_ID_CACHE_LIMIT = 200_000

_WATCH = "GET /data/m/"
_RATE = "GET /rate/"
_RECO = "recommendation request "
_ACCOUNT = "GET /create_account"


class Reason(enum.StrEnum):
    """Why a line was rejected; the value is the label used in metrics and the DLQ."""

    EMPTY = "empty"
    TOO_LONG = "too_long"
    BAD_ENCODING = "bad_encoding"
    BAD_FIELD_COUNT = "bad_field_count"
    BAD_TIMESTAMP = "bad_timestamp"
    BAD_USER_ID = "bad_user_id"
    UNKNOWN_KIND = "unknown_kind"
    BAD_MOVIE_ID = "bad_movie_id"
    BAD_MINUTE = "bad_minute"
    BAD_RATING = "bad_rating"
    RATING_OUT_OF_RANGE = "rating_out_of_range"
    BAD_SERVER = "bad_server"
    BAD_STATUS = "bad_status"
    BAD_RESULT = "bad_result"
    BAD_RESPONSE_TIME = "bad_response_time"
    UNPARSEABLE = "unparseable"  # the parser itself failed: a bug, kept and counted


@dataclass(slots=True)
class Watch:
    """The user fetched minute ``minute`` (0-based) of ``movie_id``."""

    time: datetime
    user_id: int
    movie_id: str
    minute: int

    kind = "watch"


@dataclass(slots=True)
class Rate:
    """The user rated ``movie_id`` with ``rating`` stars (1..rating scale)."""

    time: datetime
    user_id: int
    movie_id: str
    rating: int

    kind = "rate"


@dataclass(slots=True)
class Recommendation:
    """The course client called ``server`` for this user and logged what came back.

    ``items`` holds the ids received when ``status == 200``; otherwise it is empty and
    ``error`` holds the client's error text. ``response_time_ms`` is whole milliseconds.
    """

    time: datetime
    user_id: int
    server: str
    status: int
    items: tuple[str, ...]
    error: str
    response_time_ms: int

    kind = "recommendation"


@dataclass(slots=True)
class Account:
    """The user created an account (newer offerings only)."""

    time: datetime
    user_id: int

    kind = "account"


@dataclass(slots=True)
class Rejection:
    """A line that is not a valid event: the reason code and a short human detail."""

    reason: Reason
    detail: str

    kind = "rejection"


Event = Watch | Rate | Recommendation | Account


def is_movie_id(text: str) -> bool:
    """True for an MLiP movie id: lower-case title words joined by '+', then '+<year>'.

    Words hold ``[a-z0-9._-]`` (punctuation became ``_`` or vanished, leaving ``++``);
    non-ASCII lower-case letters are tolerated.
    """
    n = len(text)
    if n < 6 or n > MAX_MOVIE_ID or text[0] == "+" or text[-5] != "+":
        return False
    year = text[-4:]
    if not (year.isascii() and year.isdigit()):
        return False
    if text.isascii():
        return not text.strip(_MOVIE_ID_CHARS)
    return all(c in _MOVIE_ID_CHARS or (c.isalpha() and c.islower()) for c in text)


def _parse_uint(text: str, max_digits: int) -> int | None:
    if 0 < len(text) <= max_digits and text.isascii() and text.isdigit():
        return int(text)
    return None


def _short(text: str, limit: int = 60) -> str:
    """The offending value, quoted and cut, for a rejection's detail."""
    return repr(text) if len(text) <= limit else repr(text[:limit]) + "..."


class LineParser:
    """Parses MLiP log lines; holds only caches, so results never depend on history.

    ``rating_scale`` is the top of the star scale (5 in older offerings, 10 in newer).
    """

    __slots__ = ("rating_scale", "max_line", "_ids", "_last_stamp", "_last_time")

    def __init__(self, rating_scale: int = 5, max_line: int = DEFAULT_MAX_LINE) -> None:
        if rating_scale < 1:
            raise ValueError("rating_scale must be positive")
        self.rating_scale = rating_scale
        self.max_line = max_line
        self._ids: dict[str, str] = {}
        self._last_stamp = ""
        self._last_time: datetime | None = None

    def parse(self, raw: bytes | bytearray | memoryview | str) -> Event | Rejection:
        """One line (trailing CR/LF allowed) -> an event or a Rejection. Never raises."""
        try:
            if not isinstance(raw, str):
                if len(raw) > self.max_line:
                    return Rejection(Reason.TOO_LONG, f"{len(raw)} bytes")
                try:
                    raw = (raw if type(raw) is bytes else bytes(raw)).decode("utf-8")
                except UnicodeDecodeError as exc:
                    return Rejection(Reason.BAD_ENCODING, f"not UTF-8 at byte {exc.start}")
            elif len(raw) > self.max_line:
                return Rejection(Reason.TOO_LONG, f"{len(raw)} characters")
            line = raw.rstrip("\r\n")
            parts = line.split(",", 2)
            if len(parts) != 3:
                if not line:
                    return Rejection(Reason.EMPTY, "empty line")
                return Rejection(Reason.BAD_FIELD_COUNT, f"{len(parts)} of 3 fields")
            stamp, user, request = parts
            # Every field but free text is checked against a character set, so control
            # characters and garbage fail there; only free text checks printability.
            when = self._last_time if stamp == self._last_stamp else self._time(stamp)
            if when is None:
                return Rejection(Reason.BAD_TIMESTAMP, _short(stamp))
            if not (user.isdigit() and user.isascii() and len(user) <= MAX_USER_DIGITS):
                return Rejection(Reason.BAD_USER_ID, _short(user))
            user_id = int(user)
            if request.startswith(_WATCH):
                # Fast path for the 90% case: a known movie id and a short minute.
                movie, _, minute_text = request[12:-4].rpartition("/")
                movie_id = self._ids.get(movie)
                minute = _MINUTES.get(minute_text)
                if movie_id is not None and minute is not None and request.endswith(".mpg"):
                    return Watch(when, user_id, movie_id, minute)
                return self._watch(when, user_id, request)
            if request.startswith(_RATE):
                return self._rate(when, user_id, request)
            if request.startswith(_RECO):
                return self._recommendation(when, user_id, request)
            if request == _ACCOUNT:
                return Account(when, user_id)
            return Rejection(Reason.UNKNOWN_KIND, _short(request))
        except Exception as exc:  # pragma: no cover - a bug, but the contract holds
            return Rejection(Reason.UNPARSEABLE, f"parser error {type(exc).__name__}")

    def movie_id(self, text: str) -> str | None:
        """The canonical (cached, shared) string for a valid movie id, else None."""
        known = self._ids.get(text)
        if known is not None:
            return known
        if not is_movie_id(text):
            return None
        if len(self._ids) >= _ID_CACHE_LIMIT:
            self._ids.clear()
        self._ids[text] = text
        return text

    def _time(self, stamp: str) -> datetime | None:
        # fromisoformat alone also takes dates, basic format and zones: insist on the
        # extended local date-time shape the log uses (YYYY-MM-DDTHH:MM[...]).
        if len(stamp) < 16 or stamp[10] != "T" or stamp[4] != "-" or stamp[13] != ":":
            return None
        try:
            when = datetime.fromisoformat(stamp)
        except ValueError:
            return None
        if when.tzinfo is not None:
            return None
        self._last_stamp, self._last_time = stamp, when
        return when

    def _watch(self, when: datetime, user_id: int, request: str) -> Watch | Rejection:
        path = request[len(_WATCH):]
        if not path.endswith(".mpg"):
            return Rejection(Reason.BAD_MINUTE, "watch path does not end in .mpg")
        movie, slash, minute_text = path[:-4].rpartition("/")
        if not slash:
            return Rejection(Reason.BAD_FIELD_COUNT, "watch path lacks /<minute>.mpg")
        movie_id = self._ids.get(movie) or self.movie_id(movie)
        if movie_id is None:
            return Rejection(Reason.BAD_MOVIE_ID, _short(movie))
        minute = _parse_uint(minute_text, 4)
        if minute is None or minute > MAX_MINUTE:
            return Rejection(Reason.BAD_MINUTE, _short(minute_text))
        return Watch(when, user_id, movie_id, minute)

    def _rate(self, when: datetime, user_id: int, request: str) -> Rate | Rejection:
        movie, eq, rating_text = request[len(_RATE):].rpartition("=")
        if not eq:
            return Rejection(Reason.BAD_RATING, "rate path lacks =<rating>")
        movie_id = self._ids.get(movie) or self.movie_id(movie)
        if movie_id is None:
            return Rejection(Reason.BAD_MOVIE_ID, _short(movie))
        rating = _parse_uint(rating_text, 3)
        if rating is None:
            return Rejection(Reason.BAD_RATING, _short(rating_text))
        if not 1 <= rating <= self.rating_scale:
            return Rejection(Reason.RATING_OUT_OF_RANGE, f"{rating} not in 1..{self.rating_scale}")
        return Rate(when, user_id, movie_id, rating)

    def _recommendation(
        self, when: datetime, user_id: int, request: str
    ) -> Recommendation | Rejection:
        server, sep, rest = request[len(_RECO):].partition(", status ")
        if not sep:
            return Rejection(Reason.BAD_STATUS, "no ', status' field")
        host, colon, port = server.rpartition(":")
        port_no = _parse_uint(port, 5)
        if not colon or not host or " " in host or port_no is None or port_no > 65535:
            return Rejection(Reason.BAD_SERVER, _short(server))
        code_text, sep, rest = rest.partition(", result:")
        if not sep:
            return Rejection(Reason.BAD_RESULT, "no ', result:' field")
        status = _parse_uint(code_text, 3)
        if status is None:
            return Rejection(Reason.BAD_STATUS, _short(code_text))
        result, sep, elapsed = rest.rpartition(", ")
        if not sep or not elapsed.endswith(" ms"):
            return Rejection(Reason.BAD_RESPONSE_TIME, _short(elapsed or rest))
        millis = _parse_millis(elapsed[:-3])
        if millis is None:
            return Rejection(Reason.BAD_RESPONSE_TIME, _short(elapsed))
        if result.startswith(" "):
            result = result[1:]
        if not server.isprintable():
            return Rejection(Reason.BAD_SERVER, "control characters in server")
        if status != 200:
            if not result.isprintable():
                return Rejection(Reason.BAD_ENCODING, "control characters in error text")
            return Recommendation(when, user_id, server, status, (), result, millis)
        if not result:
            return Recommendation(when, user_id, server, status, (), "", millis)
        pieces = result.split(", ") if ", " in result else result.split(",")
        known = self._ids.get
        items = [known(piece) for piece in pieces]
        if not all(items):  # first sight of some ids, mixed separators, or a bad id
            items = []
            for piece in result.split(","):
                movie_id = self.movie_id(piece.strip(" "))
                if movie_id is None:
                    return Rejection(Reason.BAD_RESULT, f"bad id {_short(piece, 40)}")
                items.append(movie_id)
        # all(items) above: no None is left
        return Recommendation(when, user_id, server, status, tuple(items), "", millis)  # type: ignore[arg-type]


def _parse_millis(text: str) -> int | None:
    whole, dot, frac = text.partition(".")
    value = _parse_uint(whole, 9)
    if value is None or (dot and not (frac.isascii() and frac.isdigit())):
        return None
    return value + (1 if dot and frac[0] >= "5" else 0)


# -- formatting ------------------------------------------------------------------------


def format_time(when: datetime) -> str:
    """ISO-8601 without zone, seconds always, microseconds only when non-zero."""
    return when.isoformat(timespec="auto")


def watch_line(stamp: str, user_id: int, movie_id: str, minute: int) -> str:
    """A watch line from a preformatted time (the bulk producers cache stamps)."""
    return f"{stamp},{user_id},{_WATCH}{movie_id}/{minute}.mpg"


def rate_line(stamp: str, user_id: int, movie_id: str, rating: int) -> str:
    return f"{stamp},{user_id},{_RATE}{movie_id}={rating}"


def account_line(stamp: str, user_id: int) -> str:
    return f"{stamp},{user_id},{_ACCOUNT}"


def recommendation_line(stamp: str, user_id: int, server: str, status: int,
                        result: str, response_time_ms: int) -> str:
    """``result`` is the ids joined by ", " on success, else the error text."""
    return (f"{stamp},{user_id},{_RECO}{server}, status {status}, "
            f"result: {result}, {response_time_ms} ms")


def format_event(event: Event) -> str:
    """The log line for an event (no trailing newline)."""
    stamp = format_time(event.time)
    if isinstance(event, Watch):
        return watch_line(stamp, event.user_id, event.movie_id, event.minute)
    if isinstance(event, Rate):
        return rate_line(stamp, event.user_id, event.movie_id, event.rating)
    if isinstance(event, Recommendation):
        result = ", ".join(event.items) if event.status == 200 else event.error
        return recommendation_line(stamp, event.user_id, event.server, event.status,
                                   result, event.response_time_ms)
    if isinstance(event, Account):
        return account_line(stamp, event.user_id)
    raise TypeError(f"not an MLiP event: {event!r}")


# -- the /recommend answer ---------------------------------------------------------------


def format_answer(movie_ids: list[str] | tuple[str, ...]) -> str:
    """The body of a /recommend answer: up to 20 ids, comma-separated, one line."""
    return ",".join(movie_ids[:MAX_ITEMS])


def parse_answer(body: str | bytes, parser: LineParser | None = None) -> tuple[str, ...] | Rejection:
    """Check a /recommend body the way a strict client does: ids, commas, nothing else."""
    if isinstance(body, (bytes, bytearray)):
        try:
            body = bytes(body).decode("utf-8")
        except UnicodeDecodeError:
            return Rejection(Reason.BAD_ENCODING, "answer is not UTF-8")
    if not body:
        return ()
    if len(body) > MAX_ITEMS * (MAX_MOVIE_ID + 1):
        return Rejection(Reason.TOO_LONG, f"answer of {len(body)} characters")
    pieces = body.split(",")
    if len(pieces) > MAX_ITEMS:
        return Rejection(Reason.BAD_RESULT, f"{len(pieces)} ids, at most {MAX_ITEMS}")
    check = parser.movie_id if parser is not None else (lambda s: s if is_movie_id(s) else None)
    for piece in pieces:
        if check(piece) is None:
            return Rejection(Reason.BAD_RESULT, f"bad id {_short(piece, 40)}")
    return tuple(pieces)


# -- the user and movie APIs (mlip-interface.md section 3) --------------------------------

USER_FIELDS: dict[str, type] = {"user_id": int, "age": int, "occupation": str, "gender": str}
"""Fields of a user record and their clean types; newer offerings add ``likes`` and
``dislikes`` (free text) for users who answered."""

MOVIE_FIELDS: dict[str, type] = {
    "id": str, "tmdb_id": int, "imdb_id": str, "title": str, "original_title": str,
    "adult": bool, "belongs_to_collection": dict, "budget": int, "genres": list,
    "homepage": str, "original_language": str, "overview": str, "popularity": float,
    "poster_path": str, "production_companies": list, "production_countries": list,
    "release_date": str, "revenue": int, "runtime": int, "spoken_languages": list,
    "status": str, "vote_average": float, "vote_count": int, "license_cost": float,
    "content_rating": str,
}
"""Fields of a movie record (TMDB-derived) and their clean types; ``license_cost`` (USD
per play) and ``content_rating`` come with newer offerings."""
