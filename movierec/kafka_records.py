"""Bulk decoding of Kafka record batches for kafka-python's consumer.

kafka-python decodes every record in Python, one varint call at a time, then builds a
``DefaultRecord``, reads it back through properties and builds a ``ConsumerRecord``: about
7 µs a record on this box, most of a core at 100k lines/s, and the larger part of what a
consumer of this topic spent (docs/benchmarks.md, "Stream consumer throughput and
freshness").

``install(consumer)`` gives one consumer's fetcher a ``PartitionRecords`` whose
``_unpack_records`` decodes a message-format-v2 batch in bulk: one Python step a record to
find where the next one starts (its length is its first varint), numpy for every other
field of every record at once, and C-level constructors for the ``ConsumerRecord`` tuples:
about 1.75 µs a record, 4x less (benchmarks/record_decode.py). It yields what
kafka-python's own generator yields, record for record, and keeps the same bookkeeping
(the next fetch offset and the fetch metrics after every record, the leader epoch, control
batches skipped, the CRC checked before decompressing); tests/unit/test_kafka_records.py
checks that on batches kafka-python builds and on hand-made ones (compaction gaps,
transactions, corrupt bytes).

What the bulk path does not handle goes kafka-python's way, unchanged:
- the whole partition fetch, when the consumer has deserializers or reads committed
  transactions only (aborted transactions then need kafka-python's bookkeeping);
- one batch at a time, when it is a legacy (v0/v1) batch, has record headers (then the
  rest of that fetch too), a varint over 9 bytes, or any structure the bulk decoder does
  not expect.
  That batch is decoded record by record by kafka-python's record classes, so a corrupt
  batch raises kafka-python's own ``CorruptRecordError``.

This reaches into kafka-python's private fetcher (``Fetcher.PartitionRecords``,
``DefaultRecordBatch._maybe_uncompress``/``_buffer``/``_pos``); pyproject pins the
kafka-python release it was written against, and ``install`` leaves the consumer as it is,
with a warning, under any other release or when those are not there.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from itertools import repeat
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # kafka-python publishes no types: these read as Any, and say what is meant
    from kafka import KafkaConsumer
    from kafka.record.default_records import DefaultRecordBatch
    from kafka.record.memory_records import MemoryRecords
    from kafka.structs import TopicPartition

log = logging.getLogger(__name__)

_SUM_SAFE = 2 ** 62
"""Header values this far from 0 and a decoded delta (under 2**62) add up within int64."""

_PAD = 10
"""Zero bytes after a batch's records, so a varint read past the end needs no bounds check."""


class _Unexpected(Exception):
    """The batch is not one the bulk decoder handles; decode it record by record."""


class _Headers(_Unexpected):
    """The batch has record headers: a producer that sets them sets them on most records."""


def _varints(arr: np.ndarray, at: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Zigzag varints (Kafka's signed varint/varlong) starting at positions ``at`` of
    ``arr`` (uint8, padded): (values int64, positions after them). Usually one or two
    numpy passes: one more for every byte the longest of them has."""
    byte = arr[at]
    value = (byte & 0x7F).astype(np.int64)
    more = byte >= 0x80
    width = np.ones(len(at), dtype=np.int64)
    shift = 7
    while more.any():
        if shift > 56:  # a 10-byte varint (|v| >= 2**62): not worth a path of its own
            raise _Unexpected("varint over 9 bytes")
        byte = arr[at + width]
        value |= np.where(more, (byte & 0x7F).astype(np.int64) << shift, 0)
        width += more
        more &= byte >= 0x80
        shift += 7
    return (value >> 1) ^ -(value & 1), at + width


def _starts(buf: bytes, count: int) -> list[int]:
    """Where each of ``count`` records of an uncompressed batch begins. The only serial
    step: a record's place depends on every length before it."""
    pos = 0
    starts = [0] * count
    for i in range(count):
        starts[i] = pos
        b = buf[pos]
        if b < 0x80:
            pos += 1 + ((b >> 1) ^ -(b & 1))
        else:
            c = buf[pos + 1]
            if c < 0x80:
                length = (b & 0x7F) | (c << 7)
                pos += 2 + ((length >> 1) ^ -(length & 1))
            else:  # a record over 8 KiB: a length of 3 bytes or more
                length = shift = 0
                while True:
                    c = buf[pos]
                    pos += 1
                    length |= (c & 0x7F) << shift
                    shift += 7
                    if c < 0x80:
                        break
                    if shift >= 35:
                        raise _Unexpected("record length over 5 bytes")
                pos += (length >> 1) ^ -(length & 1)
    if pos != len(buf):
        raise _Unexpected("records do not fill the batch")
    return starts


def decode(buf: bytes, count: int) -> dict:
    """Fields of the ``count`` records of an uncompressed v2 batch body: ``offset_delta``
    and ``timestamp_delta`` (int64 arrays), ``key``, ``value``, ``key_size``,
    ``value_size`` (lists; sizes -1 for None) and ``length`` (each record's, without its own varint), or
    raises ``_Unexpected``. Layout (Kafka's DefaultRecord): length, attributes, timestamp
    delta, offset delta, key length, key, value length, value, header count, headers; every
    integer a zigzag varint."""
    if not 0 <= count <= len(buf):  # a corrupt count: kafka-python yields nothing, or
        raise _Unexpected("a record count out of range")  # no list of 2**31 places
    try:
        starts = _starts(buf, count)
    except IndexError as err:
        raise _Unexpected(str(err)) from None
    try:
        return _fields(buf, starts)
    except IndexError as err:  # a varint running past the padding: a corrupt batch
        raise _Unexpected(str(err)) from None


def _fields(buf: bytes, starts: list[int]) -> dict:
    count = len(starts)
    arr = np.frombuffer(buf + bytes(_PAD), dtype=np.uint8)
    at = np.array(starts, dtype=np.int64)
    length, at = _varints(arr, at)
    if (length < 0).any():  # the first negative length is read at a true start: no record
        raise _Unexpected("negative record length")  # start before it can be out of place
    end = at + length
    _, at = _varints(arr, at)  # record attributes: unused (kafka-python skips them too)
    ts_delta, at = _varints(arr, at)
    offset_delta, at = _varints(arr, at)
    key_size, at = _varints(arr, at)
    key_at = at
    at = at + np.maximum(key_size, 0)
    if (at >= end).any():
        raise _Unexpected("key runs past its record")
    value_size, at = _varints(arr, at)
    value_at = at
    at = at + np.maximum(value_size, 0)
    if (at >= end).any():
        raise _Unexpected("value runs past its record")
    headers, at = _varints(arr, at)
    if (key_size < -1).any() or (value_size < -1).any():
        raise _Unexpected("a size below -1")
    if headers.any():
        raise _Headers("record headers")
    if (at != end).any():
        raise _Unexpected("records whose fields do not fill them")
    value_starts = value_at.tolist()
    value_ends = (value_at + np.maximum(value_size, 0)).tolist()
    sizes = value_size.tolist()
    values = [buf[a:b] if s >= 0 else None for a, b, s in zip(value_starts, value_ends, sizes, strict=True)]
    key_sizes = key_size.tolist()
    if (key_size < 0).all():
        keys: list = [None] * count
    else:
        keys = [buf[a:a + s] if s >= 0 else None for a, s in zip(key_at.tolist(), key_sizes, strict=True)]
    return {"offset_delta": offset_delta, "timestamp_delta": ts_delta,
            "key": keys, "value": values, "key_size": key_sizes, "value_size": sizes,
            "length": length.tolist()}


def partition_records_class(base: type, consumer_record: type, isolation_level: Any) -> type:
    """A subclass of kafka-python's ``Fetcher.PartitionRecords`` (``base``) that decodes
    v2 batches in bulk; ``consumer_record`` is kafka-python's ``ConsumerRecord``."""
    from kafka.errors import CorruptRecordError

    new_tuple = tuple.__new__

    class BulkPartitionRecords(base):
        def _unpack_records(self, tp: TopicPartition, records: MemoryRecords,
                            key_deserializer: Any, value_deserializer: Any) -> Iterator[tuple]:
            if (key_deserializer is not None or value_deserializer is not None
                    or self.isolation_level == isolation_level.READ_COMMITTED):
                yield from super()._unpack_records(tp, records, key_deserializer, value_deserializer)
                return
            topic, partition = tp.topic, tp.partition
            try:
                batch = records.next_batch()
                last_batch = None
                while batch is not None:
                    last_batch = batch
                    if self.check_crcs and not batch.validate_crc():
                        raise CorruptRecordError(
                            f"Record batch for partition {tp} at offset {batch.base_offset} failed crc check")
                    if batch.magic == 2:
                        self.leader_epoch = batch.leader_epoch
                        if batch.is_control_batch:  # transaction markers: never returned
                            self.next_fetch_offset = batch.next_offset
                            batch = records.next_batch()
                            continue
                        rows = self._bulk(batch)
                    else:
                        rows = None
                    if rows is None:
                        yield from self._one_by_one(tp, batch)
                    else:
                        *columns, lengths = rows
                        row: tuple  # ConsumerRecord: mypy cannot see through tuple.__new__
                        for row, length in zip(map(new_tuple, repeat(consumer_record), zip(
                                repeat(topic), repeat(partition), repeat(self.leader_epoch), *columns)),
                                lengths, strict=True):
                            # per record, as kafka-python counts: a fetch drained after a
                            # partial take reports only what was taken
                            self.records_read += 1
                            self.bytes_read += length
                            self.next_fetch_offset = row[3] + 1
                            yield row
                    batch = records.next_batch()
                # v2 keeps a batch's last offset when compaction removed its last record
                if last_batch is not None and last_batch.magic == 2:
                    self.next_fetch_offset = last_batch.next_offset
                self.drain()
            except StopIteration:  # would end the generator silently (kafka-python issue 545)
                raise RuntimeError("StopIteration raised unpacking messageset") from None

        _headers_seen = False

        def _bulk(self, batch: DefaultRecordBatch) -> tuple | None:
            """The columns of one v2 batch's ConsumerRecords after (topic, partition,
            leader_epoch), then the records' lengths; or None to decode it record by record
            (and every later batch of this fetch once one had headers: no wasted tries)."""
            if self._headers_seen:
                return None
            batch._maybe_uncompress()
            body = bytes(batch._buffer[batch._pos:])
            count = batch.records_count
            try:
                fields = decode(body, count)
            except _Unexpected as why:
                self._headers_seen = isinstance(why, _Headers)
                log.debug("batch at offset %s decoded record by record: %s", batch.base_offset, why)
                return None
            base, ts_type = batch.base_offset, batch.timestamp_type
            if not (abs(base) < _SUM_SAFE and abs(batch.first_timestamp) < _SUM_SAFE):
                return None  # deltas are below 2**62: the int64 sums below cannot wrap
            if ts_type == batch.LOG_APPEND_TIME:
                timestamps = repeat(batch.max_timestamp)
            else:
                timestamps = (fields["timestamp_delta"] + batch.first_timestamp).tolist()
            return ((fields["offset_delta"] + base).tolist(), timestamps, repeat(ts_type),
                    fields["key"], fields["value"], map(list, repeat((), count)), repeat(None),
                    fields["key_size"], fields["value_size"], repeat(-1), fields["length"])

        def _one_by_one(self, tp: TopicPartition, batch: DefaultRecordBatch) -> Iterator[tuple]:
            """kafka-python's per-record decoding, for a batch the bulk path does not take."""
            for record in batch:
                if self.check_crcs and not record.validate_crc():
                    raise CorruptRecordError(
                        f"Record for partition {tp} at offset {record.offset} failed crc check")
                key, value, headers = record.key, record.value, record.headers
                header_size = sum(len(k.encode("utf-8")) + (len(v) if v is not None else 0)
                                  for k, v in headers) if headers else -1
                self.records_read += 1
                self.bytes_read += record.size_in_bytes
                self.next_fetch_offset = record.offset + 1
                yield consumer_record(
                    tp.topic, tp.partition, self.leader_epoch, record.offset, record.timestamp,
                    record.timestamp_type, key, value, headers, record.checksum,
                    len(key) if key is not None else -1, len(value) if value is not None else -1,
                    header_size)

    return BulkPartitionRecords


KNOWN_VERSIONS = ("3.0.12",)
"""kafka-python releases whose ``PartitionRecords._unpack_records`` this mirrors (read
against its source); another release keeps its own decoding until checked and added."""


def install(consumer: KafkaConsumer) -> bool:
    """Make ``consumer`` (a kafka-python KafkaConsumer) decode record batches in bulk.
    True if it does; False, with a warning, if this kafka-python's fetcher is not the one
    this module knows (the consumer then works as before, only slower)."""
    try:
        import kafka
        from kafka.consumer.fetcher import ConsumerRecord, Fetcher, IsolationLevel
        from kafka.record.default_records import DefaultRecordBatch

        fetcher = consumer._fetcher
        base = fetcher.PartitionRecords
        version = kafka.__version__
        known = (version in KNOWN_VERSIONS and base is Fetcher.PartitionRecords
                 and hasattr(base, "_unpack_records") and hasattr(DefaultRecordBatch, "_maybe_uncompress")
                 and {"_buffer", "_pos"} <= set(DefaultRecordBatch.__slots__))
    except (ImportError, AttributeError):
        version, known = "?", False
    if not known:
        log.warning("kafka-python %s: its fetcher is not one movierec.kafka_records knows "
                    "(%s); records are decoded one by one (slower)", version, ", ".join(KNOWN_VERSIONS))
        return False
    fetcher.PartitionRecords = partition_records_class(base, ConsumerRecord, IsolationLevel)
    return True
