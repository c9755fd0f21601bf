"""The offline event store: append-only Parquet files that training and evaluation read.

Why this shape: the consumer makes each polled batch durable here *before* it commits its
Kafka offsets, so delivery is at-least-once and the same offsets can be appended again
after a crash, possibly cut into different batches. The store therefore never trusts
files to be disjoint: every read deduplicates rows by (partition, offset). A trained
model names its data by a snapshot id (the hash of a manifest of files and their
content hashes), and the store can prove later that the data is still the same.

Layout under ``root``::

    events/date=YYYY-MM-DD/part-p<parts>-o<first>-<last>-<uuid>.parquet   data (one event date)
    snapshots/<id>.json        manifest of a snapshot (the hashed part) + created_at
    compactions/<stamp>-<uuid>.json   lineage: source files -> output files, with hashes
    .compact.lock              held (flock) by the one compaction allowed at a time

Crash safety: every file is written under a hidden ``.tmp-`` name in its final directory,
flushed and fsynced, then ``os.replace``d into place, then the directory is fsynced; only
``part-*.parquet`` names are data. So a SIGKILL at any instant leaves at worst a stale
``.tmp-`` file, which readers ignore and ``compact`` removes once it is old.

Compaction and snapshots: compaction rewrites a date's small files into a few large ones
and deletes the small ones, even if a saved snapshot lists them. It first writes the
outputs, then a lineage record (sources and outputs with sha256), and only then deletes the
sources. A snapshot whose files are gone resolves through the records: each missing file's
rows are the output rows inside that file's offset ranges (a consumer batch holds every
accepted line of its offset range and date, and a redelivered line is the same row), and
every hash along the way is checked. So the snapshot reads back the same rows, and storage
is not doubled by old snapshots. Assumption: the row for an offset never changes (the
parser that accepted a line would accept it again identically).

Readers take no lock: a file compacted away under a reader (FileNotFoundError) makes the
read start over, and by then the lineage record that explains it exists.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from movierec.durable import TMP_PREFIX, fsync_path, make_dirs, write_atomic
from stores.event_columns import (
    SCHEMA,
    EventColumns,
    check_batch,
    column_values,
    dedupe,
    event_row,
    normalise,
    to_frame,
)
from stores.event_manifest import (
    EventStoreError,
    FileInfo,
    LineageEdge,
    Plan,
    Snapshot,
    build_manifest,
    file_entry,
    file_metadata,
    file_name,
    in_ranges,
    is_snapshot_id,
    manifest_id,
    parse_file_metadata,
    partition_stats,
    resolve_plan,
    snapshot_provenance,
)
from stores.feature_delta import MS_PER_DAY

__all__ = [
    "SCHEMA", "CompactionResult", "EventColumns", "EventStore", "EventStoreError", "FileInfo",
    "Snapshot", "event_row", "snapshot_provenance",
]  # fmt: skip

COMPRESSION = "zstd"
_HASH_CACHE_MAX = 200_000  # files whose sha256 a process remembers (~40 MB at most)
_RETRIES = 5  # a read races a compaction at most this many times before giving up
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class CompactionResult:
    """What one ``compact()`` did. Row counts are rows; bytes are file bytes."""

    dates: tuple[str, ...]  # event dates rewritten
    files_in: int
    files_out: int
    rows_in: int
    rows_out: int  # rows_in less the duplicates (same partition and offset) dropped
    bytes_in: int
    bytes_out: int
    records: tuple[Path, ...]  # lineage records written
    temp_files_removed: int  # stale .tmp- files of killed writers
    leftovers_removed: int  # sources a killed compaction had not yet deleted


class EventStore:
    """Append-only, date-partitioned Parquet store of accepted events for one topic."""

    def __init__(self, root: Path | str, topic: str) -> None:
        if not topic:
            raise EventStoreError("the event store needs a topic name")
        self.root = Path(root)
        self.topic = topic
        self.events_dir = self.root / "events"
        self.snapshots_dir = self.root / "snapshots"
        self.compactions_dir = self.root / "compactions"
        for d in (self.events_dir, self.snapshots_dir, self.compactions_dir):
            make_dirs(d)
        self._hashes: dict[tuple, str] = {}  # (relpath, size, mtime_ns, inode) -> sha256
        self._infos: dict[tuple, FileInfo] = {}  # same key -> footer contents

    # -- writing -----------------------------------------------------------------------

    def append(self, table: pa.Table) -> list[Path]:
        """Write one batch durably: one new Parquet file per event date in it.

        ``table`` must have exactly ``SCHEMA`` (metadata aside) and known kinds. Rows
        repeating a (partition, offset) within the batch are kept once. Returns the new
        files' paths (none for an empty table). Each file appears whole or not at all; if
        the call fails after writing some dates' files, retrying the whole batch is safe
        (reads deduplicate), which is what the consumer does.
        """
        table = check_batch(table)
        if table.num_rows == 0:
            return []
        table = dedupe(table, sort=False)
        days = column_values(table, "time") // MS_PER_DAY  # floor: the calendar day of the event
        unique_days = np.unique(days)
        if len(unique_days) == 1:
            return [self._write_data(table, _day(unique_days[0]))]
        return [self._write_data(table.filter(pa.array(days == d)), _day(d)) for d in unique_days]

    def _write_data(self, table: pa.Table, day: date, sources: tuple[str, ...] = ()) -> Path:
        stats = partition_stats(column_values(table, "partition"), column_values(table, "offset"))
        times = pc.min_max(table["time"])
        meta = file_metadata(self.topic, stats, times["min"].as_py(), times["max"].as_py(), sources)
        directory = self.events_dir / f"date={day.isoformat()}"
        make_dirs(directory)
        path = directory / file_name(stats, uuid.uuid4().hex[:12])
        sink = pa.BufferOutputStream()
        pq.write_table(table.replace_schema_metadata(meta), sink, compression=COMPRESSION)
        data = sink.getvalue()
        write_atomic(path, data)
        st = path.stat()
        self._remember(self._key(path, st), hashlib.sha256(data).hexdigest())
        return path

    # -- listing -----------------------------------------------------------------------

    def files(self) -> list[FileInfo]:
        """Every data file now in the store, by date then name (temp files excluded).

        ``EventStoreError`` if a file's footer is unreadable or of another topic: a damaged
        store is reported, never read partially.

        A directory listing is not atomic: one that overlapped a compaction could miss
        both the sources (deleted) and the outputs (created) while it ran. A compaction
        writes its lineage record between the two, so a listing during which the set of
        records changed is simply taken again.
        """
        return self._between_compactions(self._list_files, "listing its files")

    def _between_compactions(self, action: Callable[[], T], what: str) -> T:
        """``action()``, taken again while the set of compaction records changed during it
        (a compaction ran meanwhile): a result or an ``EventStoreError`` of an attempt no
        compaction overlapped stands. Compactions write their record before deleting
        their sources, so a retry sees both the record and the outputs."""
        for _ in range(_RETRIES):
            records = self._record_names()
            try:
                result = action()
            except EventStoreError:
                if self._record_names() == records:
                    raise
                continue
            if self._record_names() == records:
                return result
        raise EventStoreError(f"compactions kept changing {self.events_dir} while {what} "
                              f"({_RETRIES} tries)")

    def _record_names(self) -> list[str]:
        return sorted(p.name for p in self.compactions_dir.glob("*.json"))

    def _list_files(self) -> list[FileInfo]:
        infos: list[FileInfo] = []
        for directory in sorted(self.events_dir.glob("date=*")):
            try:
                day = date.fromisoformat(directory.name[5:])
            except ValueError:
                continue  # not ours
            for path in sorted(directory.glob("part-*.parquet")):
                try:
                    infos.append(self._info(path, day))
                except FileNotFoundError:
                    continue  # compacted away while we listed
        live = {info.relpath for info in infos}
        self._infos = {k: v for k, v in self._infos.items() if k[0] in live}  # forget deleted files
        return infos

    def _info(self, path: Path, day: date) -> FileInfo:
        st = path.stat()
        key = self._key(path, st)
        info = self._infos.get(key)
        if info is None:
            where = self._rel(path)
            try:
                meta = parse_file_metadata(pq.read_metadata(path).metadata, where)
            except FileNotFoundError:
                raise
            except (pa.ArrowInvalid, OSError) as exc:
                raise EventStoreError(f"{where}: unreadable Parquet footer ({exc})") from exc
            if meta["topic"] != self.topic:
                raise EventStoreError(f"{where}: holds topic {meta['topic']!r}, this store is {self.topic!r}")
            stats = meta["stats"]
            info = FileInfo(
                path=path, relpath=where, date=day, rows=meta["rows"], bytes=st.st_size,
                offsets={p: (a, b) for p, (a, b, _n) in stats.items()},
                partition_rows={p: n for p, (_a, _b, n) in stats.items()},
                time_min=meta["time_min"], time_max=meta["time_max"], compacted_from=meta["sources"],
            )  # fmt: skip
            self._infos[key] = info
        return info

    # -- snapshots ---------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        """Name the store's current content: manifest -> id, saved once to snapshots/<id>.json.

        Hashes every file (cached for files this process wrote). The same files give the
        same id; a compaction changes the files and so the id, not the rows.
        """
        entries = _retry_vanished(lambda: [file_entry(i, self._sha256(i.path)) for i in self.files()])
        manifest = build_manifest(self.topic, entries)
        sid = manifest_id(manifest)
        path = self.snapshots_dir / f"{sid}.json"
        if path.exists():
            return self._load_manifest(sid)
        created = datetime.now(UTC).isoformat(timespec="seconds")
        body = {"id": sid, "created_at": created, "manifest": manifest}
        write_atomic(path, json.dumps(body, indent=1, sort_keys=True).encode())
        return Snapshot(sid, manifest, created, path)

    def snapshots(self) -> list[str]:
        """Ids of every saved snapshot, sorted."""
        return sorted(p.stem for p in self.snapshots_dir.glob("*.json") if is_snapshot_id(p.stem))

    def load_snapshot(self, snapshot_id: str) -> Snapshot:
        """A saved snapshot, after checking that its data is intact.

        Re-hashes every file it needs (its own, or for compacted ones the outputs that the
        lineage records name) and raises ``EventStoreError`` naming the first file that is
        missing, altered or unaccounted for, or if the manifest no longer hashes to its id.
        """
        snap = self._load_manifest(snapshot_id)
        self._plan(snap, verify=True)
        return snap

    def _load_manifest(self, snapshot_id: str) -> Snapshot:
        if not is_snapshot_id(snapshot_id):
            raise EventStoreError(f"not a snapshot id: {snapshot_id!r} (16 lower-case hex digits)")
        path = self.snapshots_dir / f"{snapshot_id}.json"
        try:
            body = json.loads(path.read_bytes())
            manifest, created = body["manifest"], body["created_at"]
        except FileNotFoundError:
            raise EventStoreError(f"no snapshot {snapshot_id} in {self.snapshots_dir}") from None
        except (ValueError, KeyError, TypeError) as exc:
            raise EventStoreError(f"snapshot {snapshot_id}: unreadable manifest ({exc!r})") from exc
        if manifest_id(manifest) != snapshot_id:
            raise EventStoreError(f"snapshot {snapshot_id}: the manifest was altered (it hashes differently)")
        if manifest.get("topic") != self.topic:
            raise EventStoreError(f"snapshot {snapshot_id} is of topic {manifest.get('topic')!r}, "
                                  f"not {self.topic!r}")
        return Snapshot(snapshot_id, manifest, created, path)

    def _plan(self, snap: Snapshot, *, verify: bool) -> Plan:
        """Which present files (and offset ranges of them) hold the snapshot's rows."""
        if snap.manifest.get("topic") != self.topic:
            raise EventStoreError(f"snapshot {snap.id} is of topic {snap.manifest.get('topic')!r}, "
                                  f"not {self.topic!r}")

        def exists(rel: str) -> bool:
            return (self.root / rel).is_file()

        def check(rel: str, sha: str, nbytes: int) -> None:
            path = self.root / rel
            size = path.stat().st_size
            if size != nbytes:
                raise EventStoreError(f"{rel}: {size} bytes, snapshot {snap.id} expects {nbytes} (altered)")
            if verify and (actual := self._sha256(path, fresh=True)) != sha:
                raise EventStoreError(f"{rel}: sha256 {actual[:12]}... differs from {sha[:12]}... (altered)")

        # The lineage is read before the files are checked: a compaction that records and
        # deletes in between leaves a source missing with no record naming it in what was read.
        return self._between_compactions(
            lambda: resolve_plan(snap.files, self._lineage(), exists, check),
            f"resolving snapshot {snap.id}")

    def _lineage(self) -> dict[str, LineageEdge]:
        """Source file -> what replaced it, over every compaction record (later ones win)."""
        edges: dict[str, LineageEdge] = {}
        for path in sorted(self.compactions_dir.glob("*.json")):
            try:
                record = json.loads(path.read_bytes())
                outputs = tuple((o["path"], o["sha256"], o["bytes"]) for o in record["outputs"])
                for src in record["sources"]:
                    edges[src["path"]] = LineageEdge(src["sha256"], outputs, path.name)
            except (ValueError, KeyError, TypeError) as exc:
                raise EventStoreError(f"compaction record {path.name} is unreadable ({exc!r})") from exc
        return edges

    # -- reading -----------------------------------------------------------------------

    def read(
        self,
        snapshot: Snapshot | None = None,
        *,
        columns: list[str] | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> pd.DataFrame:
        """Rows of ``snapshot`` (or of the store now) with event time in [start, end).

        Deduplicated by (partition, offset), keeping the first copy; sorted by
        (time, partition, offset); index 0..n-1. ``columns`` picks and orders columns
        (default: all of ``SCHEMA``). dtypes: ``time`` datetime64[ms]; ``kind`` categorical
        on ``KINDS``; ``minute``/``rating``/``status``/``response_time_ms`` pandas nullable
        integers (``<NA>`` where the kind has none); strings ``str``; ``items`` an object
        column of string arrays (None where not a recommendation).
        """
        return to_frame(self.read_table(snapshot, columns=columns, start=start, end=end))

    def read_table(
        self,
        snapshot: Snapshot | None = None,
        *,
        columns: list[str] | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
        sort: bool = True,
    ) -> pa.Table:
        """``read``'s rows as an Arrow table, for bulk readers (training sets): ``SCHEMA``'s
        types, ``kind`` on the ``KINDS`` dictionary, no pandas conversion. ``sort=False``
        skips the final sort by (time, partition, offset): the rows are still deduplicated
        (first copy kept) but come in no promised order, which saves a full sort."""
        if any(t is not None and t.tzinfo is not None for t in (start, end)):
            raise EventStoreError("start and end are naive site-local times, like the log's")
        wanted = list(columns) if columns is not None else SCHEMA.names
        unknown = [c for c in wanted if c not in SCHEMA.names]
        if unknown:
            raise EventStoreError(f"unknown column(s) {unknown}; the columns are {SCHEMA.names}")
        needed = [c for c in SCHEMA.names if c in wanted or c in ("time", "partition", "offset")]
        table = _retry_vanished(lambda: self._read_table(snapshot, needed, start, end, sort))
        return table.select(wanted)

    def _read_table(
        self, snapshot: Snapshot | None, needed: list[str], start: datetime | None,
        end: datetime | None, sort: bool
    ) -> pa.Table:
        """The deduplicated (and if ``sort``, sorted) rows as Arrow; FileNotFoundError if a
        file vanished."""
        infos = {info.relpath: info for info in self.files()}
        plan: Plan = {rel: None for rel in infos} if snapshot is None else self._plan(snapshot, verify=False)
        lo = None if start is None else pa.scalar(start, SCHEMA.field("time").type)
        hi = None if end is None else pa.scalar(end, SCHEMA.field("time").type)
        pieces = []
        for rel, ranges in plan.items():
            info = infos.get(rel) or self._info(self.root / rel, _day_of(rel))
            if (start is not None and info.time_max < start) or (end is not None and info.time_min >= end):
                continue
            with pq.ParquetFile(self.root / rel) as parquet:
                piece = parquet.read(columns=needed).replace_schema_metadata(None)
            if ranges is not None:
                keep = in_ranges(column_values(piece, "partition"), column_values(piece, "offset"), ranges)
                piece = piece.filter(pa.array(keep))
            if lo is not None:
                piece = piece.filter(pc.greater_equal(piece["time"], lo))
            if hi is not None:
                piece = piece.filter(pc.less(piece["time"], hi))
            pieces.append(normalise(piece))
        if not pieces:
            return normalise(pa.schema([SCHEMA.field(c) for c in needed]).empty_table())
        return dedupe(pa.concat_tables(pieces), sort=sort)

    # -- compaction --------------------------------------------------------------------

    def compact(
        self, *, max_rows_per_file: int = 5_000_000, min_files: int = 4, stale_tmp_s: float = 3600.0
    ) -> CompactionResult:
        """Merge each date's small files (fewer than ``max_rows_per_file`` rows) when it has
        at least ``min_files`` of them, deduplicated, into as few files as the cap allows.

        Order: outputs written atomically, then the lineage record, then the sources
        deleted; a crash anywhere leaves every row readable and ``read`` deduplicates
        (the next ``compact`` finishes the deletes). Also removes ``.tmp-`` files older
        than ``stale_tmp_s`` seconds (writes killed midway). Snapshots listing the deleted
        files stay valid through the lineage record. One compaction at a time per store:
        ``EventStoreError`` if another holds the lock.
        """
        if max_rows_per_file < 1 or min_files < 2:
            raise EventStoreError("compact needs max_rows_per_file >= 1 and min_files >= 2")
        with self._compaction_lock():
            removed_tmp = self._remove_stale_temps(stale_tmp_s)
            leftovers = self._finish_interrupted()
            by_date: dict[date, list[FileInfo]] = {}
            for info in self.files():
                if info.rows < max_rows_per_file:
                    by_date.setdefault(info.date, []).append(info)
            dates, records, totals = [], [], np.zeros(6, dtype=np.int64)
            for day, infos in sorted(by_date.items()):
                if len(infos) >= min_files:
                    record, counts = self._compact_date(day, infos, max_rows_per_file)
                    dates.append(day.isoformat())
                    records.append(record)
                    totals += counts
        f_in, f_out, r_in, r_out, b_in, b_out = (int(x) for x in totals)
        return CompactionResult(tuple(dates), f_in, f_out, r_in, r_out, b_in, b_out, tuple(records),
                                removed_tmp, leftovers)  # fmt: skip

    def _compact_date(self, day: date, infos: list[FileInfo], max_rows: int) -> tuple[Path, list[int]]:
        sources, tables = [], []
        for info in infos:
            data = info.path.read_bytes()
            sources.append(file_entry(info, hashlib.sha256(data).hexdigest()))
            tables.append(normalise(pq.read_table(pa.BufferReader(data)).replace_schema_metadata(None)))
        merged = dedupe(pa.concat_tables(tables), sort=True)
        pieces = -(-merged.num_rows // max_rows)
        size = -(-merged.num_rows // pieces)
        names = tuple(info.path.name for info in infos)
        outputs = []
        for i in range(pieces):
            path = self._write_data(merged.slice(i * size, size), day, names)
            outputs.append(file_entry(self._info(path, day), self._sha256(path)))
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        record_path = self.compactions_dir / f"{stamp}-{uuid.uuid4().hex[:8]}.json"
        record = {"format": 1, "topic": self.topic, "date": day.isoformat(), "created_at": stamp,
                  "sources": sources, "outputs": outputs}  # fmt: skip
        write_atomic(record_path, json.dumps(record, indent=1, sort_keys=True).encode())
        for info in infos:
            info.path.unlink(missing_ok=True)
        fsync_path(self.events_dir / f"date={day.isoformat()}")
        counts = [len(infos), len(outputs), sum(i.rows for i in infos), merged.num_rows,
                  sum(i.bytes for i in infos), sum(o["bytes"] for o in outputs)]  # fmt: skip
        return record_path, counts

    def _finish_interrupted(self) -> int:
        """Delete sources that a recorded compaction replaced but did not get to delete."""
        removed = 0
        for rel, edge in self._lineage().items():
            path = self.root / rel
            if not path.is_file() or not all((self.root / o[0]).is_file() for o in edge.outputs):
                continue
            if self._sha256(path, fresh=True) == edge.sha256:
                path.unlink()
                fsync_path(path.parent)
                removed += 1
        return removed

    def _remove_stale_temps(self, older_than_s: float) -> int:
        cutoff = time.time() - older_than_s
        removed = 0
        dirs = [*self.events_dir.glob("date=*"), self.snapshots_dir, self.compactions_dir]
        for directory in dirs:
            for path in directory.glob(f"{TMP_PREFIX}*"):
                try:
                    if path.stat().st_mtime < cutoff:
                        path.unlink()
                        removed += 1
                except FileNotFoundError:
                    continue
        return removed

    @contextmanager
    def _compaction_lock(self) -> Iterator[None]:
        fd = os.open(self.root / ".compact.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise EventStoreError(f"another compaction of {self.root} is running") from None
            yield
        finally:
            os.close(fd)  # closing releases the lock

    # -- helpers -----------------------------------------------------------------------

    def _rel(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    def _key(self, path: Path, st: os.stat_result) -> tuple:
        return (self._rel(path), st.st_size, st.st_mtime_ns, st.st_ino)

    def _sha256(self, path: Path, *, fresh: bool = False) -> str:
        """Hex sha256 of a file's bytes; cached per (path, size, mtime, inode) unless fresh."""
        key = self._key(path, path.stat())
        if not fresh and key in self._hashes:
            return self._hashes[key]
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
        return self._remember(key, digest.hexdigest())

    def _remember(self, key: tuple, sha256: str) -> str:
        """Cache a file's hash; a long-running consumer keeps only the newest entries."""
        self._hashes[key] = sha256
        if len(self._hashes) > _HASH_CACHE_MAX:
            del self._hashes[next(iter(self._hashes))]
        return sha256


def _retry_vanished(action: Callable[[], T]) -> T:
    """``action()``, started over when a file it lists vanishes before it opens it (a
    concurrent compaction deleted it; the lineage record is already there)."""
    for attempt in range(_RETRIES):
        try:
            return action()
        except FileNotFoundError:
            time.sleep(0.05 * attempt)
    raise EventStoreError(f"files kept vanishing during {_RETRIES} tries (compactions racing the read?)")


def _day(days_since_epoch: int | np.integer) -> date:
    return date(1970, 1, 1) + timedelta(days=int(days_since_epoch))


def _day_of(relpath: str) -> date:
    """The event date of ``events/date=YYYY-MM-DD/part-...``."""
    return date.fromisoformat(relpath.split("date=", 1)[1][:10])
