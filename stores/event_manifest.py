"""The event store's pure parts: file metadata, manifests, snapshot ids and lineage plans.

Everything here is a function of plain data (no file I/O), so the store's bookkeeping can
be tested without touching a disk. ``event_store.py`` is the I/O shell around it.

Vocabulary:

* **offset ranges**: per Kafka partition, the first and last offset a file holds and how
  many rows it has of that partition, ``{partition: (first, last, rows)}``. A consumer
  batch covers every offset of its range, so a file holds *every* accepted line of its
  date whose offset lies in its ranges. That is what lets a compacted file stand in for
  the files it replaced: the old file's rows are the compacted rows inside its ranges.
* **manifest**: what a snapshot names: every file (relative path, bytes, sha256, rows,
  offset ranges, event-time range) plus totals. Its canonical JSON hashes to the
  snapshot id.
* **lineage**: compaction records ``source file -> output files``, with hashes, so a
  snapshot whose files were compacted away can still be resolved and verified.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path

import numpy as np

from movierec.errors import MovierecError

FORMAT_VERSION = 1
"""Version of the file layout and metadata below; readers refuse newer files."""

META_FORMAT = b"movierec.format"
META_TOPIC = b"movierec.topic"
META_OFFSETS = b"movierec.offsets"  # JSON {"<partition>": [first, last, rows]}
META_ROWS = b"movierec.rows"
META_TIME_MIN = b"movierec.time_min"  # ISO-8601, naive site-local, milliseconds
META_TIME_MAX = b"movierec.time_max"
META_SOURCES = b"movierec.compacted_from"  # JSON [file name, ...]; compaction outputs only

SNAPSHOT_ID_HEX = 16
"""A snapshot id is this many hex digits of the manifest's sha256."""

OffsetStats = dict[int, tuple[int, int, int]]
"""Per partition: (first offset, last offset, rows)."""

Ranges = dict[int, list[tuple[int, int]]]
"""Per partition: inclusive offset intervals."""

Day = date
"""A calendar date (an alias: ``FileInfo.date`` shadows the name ``date`` in its class)."""


class EventStoreError(MovierecError):
    """Anything wrong with the event store: bad input, a damaged or tampered file, a
    snapshot that no longer resolves, a compaction already running."""


@dataclass(frozen=True, slots=True)
class FileInfo:
    """One data file of the store, from its path, size and Parquet footer."""

    path: Path  # absolute
    relpath: str  # relative to the store root, POSIX separators
    date: Day  # event date (the directory's date=YYYY-MM-DD)
    rows: int
    bytes: int
    offsets: dict[int, tuple[int, int]]  # partition -> (first, last) offset
    partition_rows: dict[int, int]  # partition -> rows
    time_min: datetime  # earliest event time in the file
    time_max: datetime  # latest event time in the file
    compacted_from: tuple[str, ...] = ()  # names of the files this one replaced

    @property
    def stats(self) -> OffsetStats:
        return {p: (a, b, self.partition_rows[p]) for p, (a, b) in self.offsets.items()}


@dataclass(frozen=True)
class Snapshot:
    """A named, immutable set of store files: ``manifest`` is exactly what ``id`` hashes.

    ``created_at`` (ISO-8601 UTC, when the id was first saved) lies outside the hash.
    """

    id: str
    manifest: dict = field(repr=False)
    created_at: str
    path: Path

    @property
    def files(self) -> list[dict]:
        return self.manifest["files"]

    @property
    def rows(self) -> int:
        """Rows stored in the files; redelivered lines count once per copy (``read``
        deduplicates)."""
        return self.manifest["rows"]

    @property
    def partitions(self) -> dict[int, tuple[int, int]]:
        """Per partition: the first and last offset over all files."""
        return {int(p): (a, b) for p, (a, b) in self.manifest["partitions"].items()}

    @property
    def time_range(self) -> tuple[datetime, datetime] | None:
        lo, hi = self.manifest["time_min"], self.manifest["time_max"]
        return None if lo is None else (datetime.fromisoformat(lo), datetime.fromisoformat(hi))


# -- file metadata ------------------------------------------------------------------------


def partition_stats(partitions: np.ndarray, offsets: np.ndarray) -> OffsetStats:
    """Per partition: first and last offset and row count, from two parallel int arrays."""
    stats: OffsetStats = {}
    for p in np.unique(partitions):
        mine = offsets[partitions == p]
        stats[int(p)] = (int(mine.min()), int(mine.max()), len(mine))
    return stats


def iso_ms(t: datetime) -> str:
    return t.isoformat(timespec="milliseconds")


def file_metadata(
    topic: str, stats: OffsetStats, time_min: datetime, time_max: datetime, sources: Iterable[str] = ()
) -> dict[bytes, bytes]:
    """The Parquet key-value metadata of a data file."""
    meta = {
        META_FORMAT: str(FORMAT_VERSION).encode(),
        META_TOPIC: topic.encode(),
        META_OFFSETS: json.dumps({str(p): list(v) for p, v in sorted(stats.items())}).encode(),
        META_ROWS: str(sum(v[2] for v in stats.values())).encode(),
        META_TIME_MIN: iso_ms(time_min).encode(),
        META_TIME_MAX: iso_ms(time_max).encode(),
    }
    sources = list(sources)
    if sources:
        meta[META_SOURCES] = json.dumps(sources).encode()
    return meta


def parse_file_metadata(meta: dict[bytes, bytes] | None, where: str) -> dict:
    """Decode ``file_metadata``'s keys; ``EventStoreError`` naming ``where`` if unusable."""
    meta = meta or {}
    try:
        version = int(meta[META_FORMAT])
        if version > FORMAT_VERSION:
            raise EventStoreError(f"{where}: format {version} is newer than this reader ({FORMAT_VERSION})")
        raw = json.loads(meta[META_OFFSETS])
        return {
            "topic": meta[META_TOPIC].decode(),
            "stats": {int(p): (int(a), int(b), int(n)) for p, (a, b, n) in raw.items()},
            "rows": int(meta[META_ROWS]),
            "time_min": datetime.fromisoformat(meta[META_TIME_MIN].decode()),
            "time_max": datetime.fromisoformat(meta[META_TIME_MAX].decode()),
            "sources": tuple(json.loads(meta.get(META_SOURCES, b"[]"))),
        }
    except (KeyError, ValueError, TypeError) as exc:
        raise EventStoreError(f"{where}: missing or bad event-store metadata ({exc!r})") from exc


def file_name(stats: OffsetStats, token: str) -> str:
    """``part-p<first>[-<last>]-o<min first offset>-<max last offset>-<token>.parquet``.

    Informational (the metadata is authoritative); ``token`` makes it unique.
    """
    parts = sorted(stats)
    prange = f"p{parts[0]}" if len(parts) == 1 else f"p{parts[0]}-{parts[-1]}"
    lo = min(v[0] for v in stats.values())
    hi = max(v[1] for v in stats.values())
    return f"part-{prange}-o{lo}-{hi}-{token}.parquet"


# -- manifests and snapshot ids -----------------------------------------------------------


def file_entry(info: FileInfo, sha256: str) -> dict:
    """A file's line in a manifest (JSON-ready; partitions are string keys)."""
    return {
        "path": info.relpath,
        "bytes": info.bytes,
        "sha256": sha256,
        "rows": info.rows,
        "offsets": {str(p): list(v) for p, v in sorted(info.stats.items())},
        "time_min": iso_ms(info.time_min),
        "time_max": iso_ms(info.time_max),
    }


def build_manifest(topic: str, entries: list[dict]) -> dict:
    """The hashed part of a snapshot: the files (sorted by path) and their totals."""
    entries = sorted(entries, key=lambda e: e["path"])
    partitions: dict[str, list[int]] = {}
    for e in entries:
        for p, (first, last, _rows) in e["offsets"].items():
            lo, hi = partitions.get(p, (first, last))
            partitions[p] = [min(lo, first), max(hi, last)]
    return {
        "format": FORMAT_VERSION,
        "topic": topic,
        "files": entries,
        "file_count": len(entries),
        "rows": sum(e["rows"] for e in entries),
        "bytes": sum(e["bytes"] for e in entries),
        "partitions": dict(sorted(partitions.items(), key=lambda kv: int(kv[0]))),
        "time_min": min((e["time_min"] for e in entries), default=None),
        "time_max": max((e["time_max"] for e in entries), default=None),
    }


def canonical_json(obj: object) -> bytes:
    """Sorted keys, no whitespace, ASCII: equal data gives equal bytes."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def manifest_id(manifest: dict) -> str:
    return hashlib.sha256(canonical_json(manifest)).hexdigest()[:SNAPSHOT_ID_HEX]


def is_snapshot_id(text: str) -> bool:
    return len(text) == SNAPSHOT_ID_HEX and all(c in "0123456789abcdef" for c in text)


def snapshot_provenance(snapshot: Snapshot) -> dict:
    """The small dict the model registry keeps to say which data a model was trained on."""
    m = snapshot.manifest
    return {
        "snapshot_id": snapshot.id,
        "topic": m["topic"],
        "files": m["file_count"],
        "rows": m["rows"],
        "bytes": m["bytes"],
        "partitions": {p: list(v) for p, v in m["partitions"].items()},
        "time_min": m["time_min"],
        "time_max": m["time_max"],
    }


# -- offset ranges and lineage ------------------------------------------------------------


def merge_intervals(intervals: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted union of inclusive integer intervals; touching ones ([1,3],[4,5]) merge."""
    merged: list[tuple[int, int]] = []
    for a, b in sorted(intervals):
        if merged and a <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], b))
        else:
            merged.append((a, b))
    return merged


def in_ranges(partitions: np.ndarray, offsets: np.ndarray, ranges: Ranges) -> np.ndarray:
    """Boolean mask: rows whose (partition, offset) lies in one of ``ranges``' intervals."""
    keep = np.zeros(len(offsets), dtype=bool)
    for p, intervals in ranges.items():
        merged = merge_intervals(intervals)
        starts = np.array([a for a, _ in merged], dtype=np.int64)
        ends = np.array([b for _, b in merged], dtype=np.int64)
        rows = partitions == p
        mine = offsets[rows]
        at = np.searchsorted(starts, mine, side="right") - 1
        keep[rows] = (at >= 0) & (mine <= ends[np.maximum(at, 0)])
    return keep


@dataclass(frozen=True, slots=True)
class LineageEdge:
    """A compaction record's view of one source file: its hash and what replaced it."""

    sha256: str
    outputs: tuple[tuple[str, str, int], ...]  # (relpath, sha256, bytes)
    record: str  # the record's file name, for messages


Plan = dict[str, Ranges | None]
"""Files to read (relative paths) -> offset ranges to keep from each, or None for all rows."""

Verify = Callable[[str, str, int], None]
"""verify(relpath, expected sha256, expected bytes): raises EventStoreError on mismatch."""


def resolve_plan(
    entries: list[dict], lineage: dict[str, LineageEdge], exists: Callable[[str], bool], verify: Verify
) -> Plan:
    """Which present files, filtered to which offset ranges, hold a manifest's rows.

    A present file is read whole. A file compacted away is replaced by the compaction's
    outputs (followed through later compactions), keeping only rows inside the original
    file's offset ranges; each step checks the hashes the records promise.
    """
    plan: Plan = {}

    def follow(path: str, sha: str, nbytes: int, ranges: Ranges, whole: bool, depth: int) -> None:
        if depth > 64:
            raise EventStoreError(f"compaction lineage of {path} is too deep (a cycle?)")
        if exists(path):
            verify(path, sha, nbytes)
            if whole or (path in plan and plan[path] is None):
                plan[path] = None
            else:
                mine = plan.get(path)
                if mine is None:  # its first ranges (a file planned whole took the branch above)
                    mine = plan[path] = {}
                for p, intervals in ranges.items():
                    mine.setdefault(p, []).extend(intervals)
            return
        edge = lineage.get(path)
        if edge is None:
            raise EventStoreError(f"{path} is missing and no compaction record names it as a source")
        if edge.sha256 != sha:
            raise EventStoreError(
                f"{path}: compaction record {edge.record} has sha256 {edge.sha256[:12]}..., "
                f"the snapshot expects {sha[:12]}..."
            )
        for out_path, out_sha, out_bytes in edge.outputs:
            follow(out_path, out_sha, out_bytes, ranges, False, depth + 1)

    for e in entries:
        ranges = {int(p): [(a, b)] for p, (a, b, _n) in e["offsets"].items()}
        follow(e["path"], e["sha256"], e["bytes"], ranges, True, 0)
    return plan
