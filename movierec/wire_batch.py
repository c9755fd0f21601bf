"""Watch lines parsed a batch at a time, in Arrow: the consumer's fast path.

Watch lines are over 99% of the event log (one line per minute watched), and parsing
them one by one in Python (``LineParser.parse``, about 4 us a line with the ``Watch``
and ``datetime`` it builds) was the largest part of the consumer's own work. Here a
whole batch is matched by one RE2 pattern and split into columns by Arrow's compute
kernels in C, about 1 us a line (benchmarks/consumer_stages.py).

The pattern accepts only lines whose meaning is certain: a strict subset of what
``LineParser`` accepts as a ``Watch``, with the same values (the unit tests check this
against the parser on generated and edge-case lines). Every other line (rates,
recommendations, accounts, rare variants such as ``2025-03-01T12:45`` without seconds,
non-ASCII ids, and everything malformed) is left to ``LineParser``, row by row. So the
fast path changes speed, never results.

Pure: no I/O, no state.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

# The time: ISO-8601 local, seconds required, any fraction (digits past ms only floor
# it). Month, hour, minute and second ranges are in the pattern; days past the month's
# end (Feb 30) pass it and are caught after parsing. The year is 1000-2999: the parser
# takes years 1-9999, the rest go to it. Movie ids: ``wire.is_movie_id`` restricted to
# ASCII, at most 256 characters. User ids: at most 18 digits (int64). Minutes: up to 4
# digits, leading zeros allowed as in the parser. Up to 8 trailing CR/LF are stripped, as
# there; bounded so that a matching line stays far below the parser's 8192-byte limit.
WATCH_PATTERN = (
    rb"^[12][0-9]{3}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01])"
    rb"T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]{1,9})?"
    rb",[0-9]{1,18}"
    rb",GET /data/m/[a-z0-9._-][a-z0-9+._-]{0,250}\+[0-9]{4}/[0-9]{1,4}\.mpg[\r\n]{0,8}$"
)
_WATCH_PREFIX = len("GET /data/m/")
_MPG = len(".mpg")
_SECONDS = len("YYYY-MM-DDTHH:MM:SS")


@dataclass(frozen=True)
class WatchColumns:
    """The batch rows that are canonical watch lines, as columns (all of length n).

    ``rows``: int64 positions in the batch, ascending. ``ms``: int64 epoch milliseconds
    of the naive event time read as UTC (as ``features.epoch_ms``), sub-ms digits
    floored. ``users``: int64. ``movies``: an Arrow string array. ``minutes``: int16.
    """

    rows: np.ndarray
    ms: np.ndarray
    users: np.ndarray
    movies: pa.Array
    minutes: np.ndarray

    def __len__(self) -> int:
        return len(self.rows)

    def take(self, where: np.ndarray) -> WatchColumns:
        """The rows selected by a boolean mask of length n."""
        if where.all():
            return self
        picked = np.flatnonzero(where)
        return WatchColumns(self.rows[picked], self.ms[picked], self.users[picked],
                            self.movies.take(pa.array(picked)), self.minutes[picked])


def as_binary_array(values: list[bytes]) -> pa.Array:
    """A list of byte strings as one Arrow binary array, built from one joined buffer
    (``pa.array(values)`` converts object by object: about 0.75 us a value here)."""
    n = len(values)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.fromiter(map(len, values), dtype=np.int64, count=n), out=offsets[1:])
    data = pa.py_buffer(b"".join(values))
    return pa.Array.from_buffers(pa.large_binary(), n, [None, pa.py_buffer(offsets), data])


def _mask(flags: pa.Array) -> np.ndarray:
    """A null-free Arrow boolean array as a numpy bool array (``to_numpy`` on booleans
    goes through Python objects: ~1.6 us a value; through uint8 it is ~4 ns)."""
    return pc.cast(flags, pa.uint8()).to_numpy().astype(bool)


def _ints(strings: pa.Array, typ: pa.DataType) -> np.ndarray:
    return pc.cast(strings, typ).to_numpy(zero_copy_only=False)


def parse_watches(values: list[bytes]) -> WatchColumns:
    """The canonical watch lines among ``values`` (one batch, in order), as columns."""
    if not values:
        return _empty()
    lines = as_binary_array(values)
    matched = pc.match_substring_regex(lines, WATCH_PATTERN)
    rows = pc.indices_nonzero(matched).to_numpy().astype(np.int64)
    if len(rows) == 0:
        return _empty()
    # Only ASCII can match, so the bytes are valid UTF-8: no validation pass needed.
    text = pc.utf8_rtrim(lines.take(pa.array(rows)).cast(pa.large_string(), safe=False), characters="\r\n")
    stamp, user, request = (pc.list_element(pc.split_pattern(text, ",", max_splits=2), i) for i in range(3))
    seconds = pc.utf8_slice_codeunits(stamp, 0, _SECONDS)
    when = pc.strptime(seconds, format="%Y-%m-%dT%H:%M:%S", unit="ms", error_is_null=True)
    # strptime rolls an impossible day over (Feb 30 -> Mar 2); the parser rejects it.
    real_day = pc.equal(pc.day(when), pc.cast(pc.utf8_slice_codeunits(stamp, 8, 10), pa.int64()))
    fraction = pc.utf8_rpad(pc.utf8_slice_codeunits(stamp, _SECONDS + 1, _SECONDS + 4), width=3, padding="0")
    ms = (pc.cast(when, pa.int64()).to_numpy(zero_copy_only=False)
          + _ints(fraction, pa.int64()))
    path = pc.split_pattern(pc.utf8_slice_codeunits(request, _WATCH_PREFIX, -_MPG), "/")
    columns = WatchColumns(rows, ms, _ints(user, pa.int64()),
                           pc.cast(pc.list_element(path, 0), pa.string()),
                           _ints(pc.list_element(path, 1), pa.int16()))
    return columns.take(_mask(pc.fill_null(real_day, False)))


def _empty() -> WatchColumns:
    none = np.zeros(0, dtype=np.int64)
    return WatchColumns(none, none, none, pa.array([], pa.string()), np.zeros(0, dtype=np.int16))
