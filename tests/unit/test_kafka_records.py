"""The bulk record decoder yields what kafka-python's own fetcher yields, record for record.

Batches are built by kafka-python's own MemoryRecordsBuilder (every codec this install has,
keys, tombstones, headers, large records, long timestamp deltas, legacy formats, control
and log-append-time batches, corrupt ones), then drained through kafka-python's stock
``PartitionRecords`` and through the bulk one with the same takes; the records, the next
fetch offset after every take, and any error must be the same.
"""

from __future__ import annotations

import random
import struct
import types

import pytest
from kafka import codec
from kafka.consumer.fetcher import ConsumerRecord, Fetcher, IsolationLevel
from kafka.errors import CorruptRecordError
from kafka.record import MemoryRecords
from kafka.record.default_records import DefaultRecordBatch
from kafka.record.memory_records import MemoryRecordsBuilder
from kafka.record.util import calc_crc32c
from kafka.serializer import DeserializeWrapper
from kafka.structs import TopicPartition

from movierec import kafka_records
from movierec.kafka_records import _Unexpected, decode, install, partition_records_class

TP = TopicPartition("movielog", 3)
Bulk = partition_records_class(Fetcher.PartitionRecords, ConsumerRecord, IsolationLevel)
CODECS = [0] + [c for c, ok in ((1, codec.has_gzip()), (2, codec.has_snappy()), (3, codec.has_lz4()),
                                (4, codec.has_zstd())) if ok]
T0 = 1_795_403_167_796


def batch(rows, *, offset=0, magic=2, compression=0) -> bytes:
    """One batch of (timestamp, key, value, headers) rows, as kafka-python writes it."""
    builder = MemoryRecordsBuilder(magic=magic, compression_type=compression, batch_size=1 << 30, offset=offset)
    for ts, key, value, headers in rows:
        assert builder.append(ts, key, value, headers) is not None
    builder.close()
    return bytes(builder.records()._buffer)


def lines(n, *, start=0, key=True, step_ms=7):
    return [(T0 + i * step_ms, str(i).encode() if key else None,
             f"2025-03-01T00:00:{i % 60:02d},{1000 + i},GET /data/m/movie+{i}/{i % 90}.mpg".encode(), [])
            for i in range(start, start + n)]


def patch(raw: bytes, *, set_bits=0) -> bytes:
    """A v2 batch with attribute bits set (control, log-append time) and its CRC redone."""
    buf = bytearray(raw)
    at = DefaultRecordBatch.ATTRIBUTES_OFFSET
    attributes = struct.unpack_from(">h", buf, at)[0] | set_bits
    struct.pack_into(">h", buf, at, attributes)
    struct.pack_into(">I", buf, DefaultRecordBatch.CRC_OFFSET, calc_crc32c(memoryview(buf)[at:]))
    return bytes(buf)


class BulkOnly(Bulk):
    """The bulk class that fails a test if a batch went record by record."""

    def _one_by_one(self, tp, batch):
        raise AssertionError(f"batch at {batch.base_offset} was not decoded in bulk")


def drain(cls, raw: bytes, *, fetch_offset=0, take=5, check_crcs=True, **kwargs):
    """Everything ``cls`` yields in takes of ``take``: [(records, next fetch offset,
    leader epoch)], then ('error', type) if a take raised."""
    part = cls(fetch_offset, TP, MemoryRecords(raw), check_crcs=check_crcs, **kwargs)
    trace = []
    try:
        while part:
            got = part.take(take)
            trace.append((got, part.next_fetch_offset, part.leader_epoch))
    except Exception as err:  # noqa: BLE001 - the error itself is what is compared
        trace.append(("error", type(err)))
    return trace


def same(raw: bytes, *, bulk_only=False, **kwargs) -> list:
    """Drain ``raw`` both ways and check they agree; ``bulk_only``: every batch in bulk."""
    stock = drain(Fetcher.PartitionRecords, raw, **kwargs)
    bulk = drain(BulkOnly if bulk_only else Bulk, raw, **kwargs)
    assert bulk == stock
    for got, *_ in bulk:
        if got != "error":
            assert all(type(r) is ConsumerRecord for r in got)
    return stock


def records_of(trace) -> list:
    return [r for got, *_ in trace if got != "error" for r in got]


@pytest.mark.parametrize("compression", CODECS)
def test_plain_batches_match_kafka_python(compression):
    raw = (batch(lines(200), compression=compression)
           + batch(lines(150, start=200, key=False), offset=200, compression=compression))
    trace = same(raw, bulk_only=True, take=37)
    got = records_of(trace)
    assert [r.offset for r in got] == list(range(350))
    assert got[5].value.startswith(b"2025-03-01T00:00:05,1005,") and got[5].key == b"5"
    assert got[250].key is None and got[250].serialized_key_size == -1


@pytest.mark.parametrize("compression", CODECS)
def test_odd_records_match_kafka_python(compression):
    rows = [(T0, None, None, []),  # tombstone
            (T0 + 1, b"", b"", []),  # empty, not None
            (T0 - 5_000, b"k", b"x" * 20_000, []),  # 3-byte length, negative delta
            (T0 + 2 ** 40, b"k" * 300, b"late", []),  # a 6-byte timestamp delta
            (T0 + 3, b"\xff\xfe", "café ünïcode".encode(), [])]
    trace = same(batch(rows * 30, compression=compression), bulk_only=True, take=11)
    assert records_of(trace)[0].value is None and records_of(trace)[1].value == b""


def test_headers_take_kafka_pythons_way():
    rows = lines(10)
    rows[4] = (rows[4][0], b"k", b"v", [("trace", b"abc"), ("none", None)])
    raw = batch(rows) + batch(lines(10, start=10), offset=10)
    trace = same(raw, take=3)
    got = records_of(trace)
    assert got[4].headers == [("trace", b"abc"), ("none", None)] and got[4].serialized_header_size == 12
    assert got[15].headers == []


@pytest.mark.parametrize("magic", [0, 1])
def test_legacy_batches_match_kafka_python(magic):
    raw = batch(lines(20), magic=magic) + batch(lines(20, start=20), offset=20, magic=magic, compression=1)
    assert len(records_of(same(raw, take=6))) == 40


def test_fetch_offset_inside_a_batch_skips_earlier_records():
    raw = batch(lines(100))
    trace = same(raw, fetch_offset=42, bulk_only=True, take=9)
    assert records_of(trace)[0].offset == 42 and trace[-1][1] == 100


def test_control_batch_is_skipped_and_moves_the_offset():
    raw = batch(lines(10)) + patch(batch(lines(1, start=10), offset=10), set_bits=0x20) + batch(lines(5, start=11), offset=11)
    trace = same(raw, bulk_only=True, take=4)
    assert [r.offset for r in records_of(trace)] == list(range(10)) + list(range(11, 16))


def test_log_append_time_takes_the_batch_max_timestamp():
    raw = patch(batch(lines(30, step_ms=1000)), set_bits=0x08)
    got = records_of(same(raw, bulk_only=True, take=30))
    assert {r.timestamp for r in got} == {T0 + 29_000} and {r.timestamp_type for r in got} == {1}


def test_crc_failure_raises_the_same_error():
    raw = bytearray(batch(lines(50)))
    raw[-10] ^= 0xFF
    trace = same(bytes(raw))
    assert trace == [("error", CorruptRecordError)]


def test_corrupt_body_without_crc_checks_raises_kafka_pythons_error():
    raw = bytearray(batch(lines(50)))
    raw[DefaultRecordBatch.HEADER_STRUCT.size] = 0x7F  # the first record's length: -64
    trace = same(bytes(raw), check_crcs=False)
    assert trace[-1] == ("error", CorruptRecordError)


def test_random_corruption_never_gives_different_records():
    """Bytes flipped anywhere in a batch's records, CRCs off: the bulk decoder either
    yields exactly kafka-python's records or hands the batch to kafka-python, which then
    raises or yields the same."""
    rng = random.Random(4)
    clean = batch(lines(40) + [(T0, None, b"v" * 9000, [])])
    header = DefaultRecordBatch.HEADER_STRUCT.size
    outcomes = {"bulk": 0, "handed over": 0}
    for _ in range(600):
        raw = bytearray(clean)
        for _ in range(rng.randint(1, 3)):
            # mostly among the short records, where structure bytes are dense
            end = len(raw) if rng.random() < 0.2 else header + 3000
            raw[rng.randrange(header, end)] = rng.randrange(256)
        same(bytes(raw), check_crcs=False, take=16)
        try:
            decode(bytes(raw[header:]), 41)
            outcomes["bulk"] += 1
        except _Unexpected:
            outcomes["handed over"] += 1
    assert min(outcomes.values()) > 50, outcomes  # both ways were exercised


def test_decode_reads_a_known_batch():
    raw = batch([(T0, b"7", b"one", []), (T0 + 300, None, b"two", []), (T0 + 2, b"", None, [])])
    body = raw[DefaultRecordBatch.HEADER_STRUCT.size:]
    fields = decode(body, 3)
    assert fields["offset_delta"] == [0, 1, 2] and fields["timestamp_delta"] == [0, 300, 2]
    assert fields["key"] == [b"7", None, b""] and fields["value"] == [b"one", b"two", None]
    assert fields["key_size"] == [1, -1, 0] and fields["value_size"] == [3, 3, -1]
    with pytest.raises(_Unexpected):
        decode(body, 2)  # records left over
    with pytest.raises(_Unexpected):
        decode(body, 4)  # runs out of bytes
    with pytest.raises(_Unexpected):
        decode(body, 10 ** 9)


def test_deserializers_go_kafka_pythons_way():
    raw = batch(lines(20))
    kwargs = {"key_deserializer": DeserializeWrapper(lambda b: b.decode() if b else b),
              "value_deserializer": DeserializeWrapper(bytes.upper)}
    got = records_of(same(raw, take=7, **kwargs))
    assert got[3].key == "3" and got[3].value.startswith(b"2025-03-01T00:00:03,1003,GET /DATA/")


def test_read_committed_goes_kafka_pythons_way():
    raw = batch(lines(20))
    assert len(records_of(same(raw, isolation_level=IsolationLevel.READ_COMMITTED))) == 20


def test_install_replaces_the_fetchers_partition_records_only_when_it_knows_them(caplog):
    consumer = types.SimpleNamespace(_fetcher=types.SimpleNamespace(PartitionRecords=Fetcher.PartitionRecords))
    assert install(consumer)
    assert issubclass(consumer._fetcher.PartitionRecords, Fetcher.PartitionRecords)
    assert consumer._fetcher.PartitionRecords is not Fetcher.PartitionRecords
    assert records_of(drain(consumer._fetcher.PartitionRecords, batch(lines(3)))) == records_of(
        drain(Fetcher.PartitionRecords, batch(lines(3))))

    other = type("Other", (), {})
    consumer = types.SimpleNamespace(_fetcher=types.SimpleNamespace(PartitionRecords=other))
    with caplog.at_level("WARNING", logger=kafka_records.__name__):
        assert not install(consumer)
    assert consumer._fetcher.PartitionRecords is other and "one by one" in caplog.text
