"""What the online store's scripts take and give, encoded and decoded: pure functions.

- ``merge_records``: a batch's ``FeatureDelta`` as the text blobs ``MERGE`` parses;
- ``served_lines``: served records as the lines ``WRITE_SERVED`` parses;
- ``decode_state`` and its parts: ``READ_USER``'s reply as a ``UserState``.

Decoding is forgiving: a value that is not what the consumer writes (a hand-edited key, a
key of the wrong type, bytes that are not UTF-8) is skipped, never raised, so one bad
field costs a feature, not the request.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from stores.feature_delta import FeatureDelta
from stores.online import ServedLine, UserState


def merge_records(delta: FeatureDelta) -> list[list[str]]:
    """The script's five blobs for a batch, one text line a record: (user, movie) pairs
    with progress minute and recent time, ratings, first/last activity, viewers by
    (movie, day), sign-ups. Pure; ``RedisOnlineStore.write`` joins and chunks them."""
    progress, recent = delta.progress, delta.recent
    if min(progress.values(), default=0) < 0 or min(recent.values(), default=0) < 0:
        # Times before 1970 (negative ms) are not merged: the script's (%d+) never took them.
        progress = {key: v for key, v in progress.items() if v >= 0}
        recent = {key: ms for key, ms in recent.items() if ms >= 0}
    # Either field of a pair may be empty. Progress order first, so a user's progress hash
    # gets its fields in delta order (the hash's listpack keeps insertion order).
    pairs = [f"{u}\t{m}\t{v}\t{recent.get((u, m), '')}\n" for (u, m), v in progress.items()]
    pairs += [f"{u}\t{m}\t\t{ms}\n" for (u, m), ms in recent.items() if (u, m) not in progress]
    first = delta.first_seen
    return [
        pairs,
        [f"{u}\t{m}\t{ms}\t{s}\n" for (u, m), (ms, s) in delta.ratings.items()],
        [f"{u}\t{first[u]}\t{ms}\n" for u, ms in delta.last_seen.items()],
        [f"{m}\t{d}\t{','.join(map(str, users))}\n" for (m, d), users in delta.viewers.items()],
        [f"{u}\t{ms}\n" for u, ms in delta.new_users.items()],
    ]


def served_lines(lines: Sequence[ServedLine]) -> bytes:
    """One "<request id>\t<user>\t<time ms>\t<json>\n" line a record (compact JSON
    escapes tabs and newlines, so neither occurs raw in it)."""
    return b"".join(b"%s\t%d\t%d\t%s\n" % (s.request_id.encode(), s.user_id, s.time_ms,
                                               s.record_json) for s in lines)


def text(raw: Any) -> str | None:
    """UTF-8 text of a Redis reply value, None if it is not valid UTF-8 bytes."""
    if isinstance(raw, bytes):
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return None
    return raw if isinstance(raw, str) else None


def _parts(blob: Any) -> list[str]:
    """A joined "field<TAB>value<TAB>field<TAB>value" reply -> [field, value, ...];
    pairs holding bytes that are not UTF-8 are left out."""
    if not isinstance(blob, bytes) or not blob:
        return []
    try:
        parts = blob.decode("utf-8").split("\t")
    except UnicodeDecodeError:  # rare: decode part by part, keep the pairs that are valid
        raw = blob.split(b"\t")
        texts = [(text(f), text(v)) for f, v in zip(raw[::2], raw[1::2], strict=False)]
        parts = [x for f, v in texts if f is not None and v is not None for x in (f, v)]
    return parts if len(parts) % 2 == 0 else []  # odd: not the script's reply, junk


def _numbers(blob: Any) -> dict[str, int]:
    """{field: value} of a joined reply, for values of ASCII digits (``isdigit`` alone
    also takes other scripts' digits, which ``int`` may refuse); other pairs are junk."""
    parts = _parts(blob)
    return {m: int(v) for m, v in zip(parts[::2], parts[1::2], strict=False)
            if m and v.isdigit() and v.isascii()}


def decode_progress(blob: Any) -> dict[str, int]:
    """Joined HGETALL of ``u:{u}:w`` (movie -> highest minute) -> {movie: minute}."""
    return _numbers(blob)


def decode_ratings(blob: Any) -> dict[str, tuple[int, int]]:
    """Joined HGETALL of ``u:{u}:r`` (movie -> "<epoch ms>:<stars>") -> {movie: (ms, stars)}."""
    parts = _parts(blob)
    out: dict[str, tuple[int, int]] = {}
    for movie, value in zip(parts[::2], parts[1::2], strict=False):
        ms, sep, stars = value.partition(":")
        if movie and sep and ms.isdigit() and stars.isdigit() and value.isascii():
            out[movie] = (int(ms), int(stars))
    return out


def decode_recent(blob: Any) -> dict[str, int]:
    """Joined ZRANGE WITHSCORES of ``u:{u}:h`` (movie, epoch ms) -> {movie: ms}. Redis
    writes integral scores as plain digits; any other score is junk here."""
    return _numbers(blob)


def decode_profile(raw: Any) -> dict[str, str]:
    """HGETALL array of ``u:{u}:p`` ([field, value, ...]) -> the profile's text fields."""
    out: dict[str, str] = {}
    if isinstance(raw, list) and len(raw) % 2 == 0:
        for field, value in zip(raw[::2], raw[1::2], strict=False):
            name, value_text = text(field), text(value)
            if name and value_text is not None:
                out[name] = value_text
    return out


def decode_state(reply: Any) -> UserState:
    """The script's reply -> a ``UserState``; a reply of another shape decodes as empty."""
    if not isinstance(reply, list) or len(reply) != 4:
        return UserState.empty()
    progress, ratings, recent, profile = reply
    return UserState(progress=decode_progress(progress), ratings=decode_ratings(ratings),
                     recent=decode_recent(recent), profile=decode_profile(profile))
