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

import kafka
import pytest
from kafka import codec
from kafka.consumer.fetcher import ConsumerRecord, Fetcher, IsolationLevel
from kafka.errors import CorruptRecordError
from kafka.record import MemoryRecords
from kafka.record.default_records import DefaultRecordBatch
from kafka.record.memory_records import MemoryRecordsBuilder
from kafka.record.util import calc_crc32c, encode_varint
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
    builder = MemoryRecordsBuilder(magic=magic, compression_type=compression, batch_size=1 << 30,
                                   offset=offset)
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


class Aggregator:
    """Stands in for the fetcher's metric aggregator: what a drained fetch reported."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []

    def record(self, tp, num_bytes: int, num_records: int) -> None:
        self.calls.append((num_bytes, num_records))


def drain(cls, raw: bytes, *, fetch_offset=0, take=5, check_crcs=True, stop_after=None, **kwargs):
    """Everything ``cls`` yields in takes of ``take``: [(records, next fetch offset,
    leader epoch)], then ('error', type) if a take raised, then ('metrics', what the
    drained fetch reported, next fetch offsets at drain). ``stop_after``: the fetcher
    drains the fetch after that many takes (a seek or a rebalance)."""
    aggregator, drained = Aggregator(), []
    part = cls(fetch_offset, TP, MemoryRecords(raw), check_crcs=check_crcs, metric_aggregator=aggregator,
               on_drain=lambda p: drained.append(p.next_fetch_offset), **kwargs)
    trace = []
    try:
        while part:
            got = part.take(take)
            trace.append((got, part.next_fetch_offset, part.leader_epoch))
            if len(trace) == stop_after:
                part.drain()
    except Exception as err:  # the error itself is what is compared
        trace.append(("error", type(err)))
    return trace + [("metrics", aggregator.calls, drained)]


def same(raw: bytes, *, bulk_only=False, **kwargs) -> list:
    """Drain ``raw`` both ways and check they agree; ``bulk_only``: every batch in bulk."""
    stock = drain(Fetcher.PartitionRecords, raw, **kwargs)
    bulk = drain(BulkOnly if bulk_only else Bulk, raw, **kwargs)
    assert bulk == stock
    for got, *_ in bulk:
        if isinstance(got, list):
            assert all(type(r) is ConsumerRecord for r in got)
    return stock


def records_of(trace) -> list:
    return [r for got, *_ in trace if isinstance(got, list) for r in got]


def varint(value: int) -> bytes:
    out = bytearray()
    encode_varint(value, out.append)
    return bytes(out)


def record(offset_delta: int, *, ts_delta=0, key=None, value=b"v") -> bytes:
    """One v2 record, by hand (kafka-python's builder only writes contiguous deltas)."""
    body = b"\0" + varint(ts_delta) + varint(offset_delta)
    body += varint(-1) if key is None else varint(len(key)) + key
    body += varint(-1) if value is None else varint(len(value)) + value
    body += b"\0"  # no headers
    return varint(len(body)) + body


def raw_batch(records: bytes, count: int, *, base_offset=0, last_offset_delta=None, attributes=0,
              leader_epoch=0, producer_id=-1, producer_epoch=-1) -> bytes:
    """An uncompressed v2 batch around ``records``, with its CRC."""
    header = DefaultRecordBatch.HEADER_STRUCT
    buf = bytearray(header.size) + records
    last = max(count - 1, 0) if last_offset_delta is None else last_offset_delta
    header.pack_into(buf, 0, base_offset, len(buf) - DefaultRecordBatch.AFTER_LEN_OFFSET, leader_epoch, 2, 0,
                     attributes, last, T0, T0 + 1000, producer_id, producer_epoch, -1, count)
    return patch(bytes(buf))


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
    assert records_of(trace)[0].offset == 42 and trace[-2][1] == 100


def test_control_batch_is_skipped_and_moves_the_offset():
    control = patch(batch(lines(1, start=10), offset=10), set_bits=0x20)
    raw = batch(lines(10)) + control + batch(lines(5, start=11), offset=11)
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
    assert trace[:-1] == [("error", CorruptRecordError)]


def test_corrupt_body_without_crc_checks_raises_kafka_pythons_error():
    raw = bytearray(batch(lines(50)))
    raw[DefaultRecordBatch.HEADER_STRUCT.size] = 0x7F  # the first record's length: -64
    trace = same(bytes(raw), check_crcs=False)
    assert trace[-2] == ("error", CorruptRecordError)


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
    assert fields["offset_delta"].tolist() == [0, 1, 2] and fields["timestamp_delta"].tolist() == [0, 300, 2]
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


def stand_in_consumer(partition_records) -> types.SimpleNamespace:
    """What ``install`` touches of a KafkaConsumer: its fetcher's PartitionRecords."""
    return types.SimpleNamespace(_fetcher=types.SimpleNamespace(PartitionRecords=partition_records))


def test_install_replaces_the_fetchers_partition_records_only_when_it_knows_them(caplog, monkeypatch):
    consumer = stand_in_consumer(Fetcher.PartitionRecords)
    assert install(consumer)
    assert issubclass(consumer._fetcher.PartitionRecords, Fetcher.PartitionRecords)
    assert consumer._fetcher.PartitionRecords is not Fetcher.PartitionRecords
    assert records_of(drain(consumer._fetcher.PartitionRecords, batch(lines(3)))) == records_of(
        drain(Fetcher.PartitionRecords, batch(lines(3))))

    consumer = stand_in_consumer(Fetcher.PartitionRecords)
    monkeypatch.setattr(kafka, "__version__", "3.0.13")  # a release nobody has read
    with caplog.at_level("WARNING", logger=kafka_records.__name__):
        assert not install(consumer)
    assert consumer._fetcher.PartitionRecords is Fetcher.PartitionRecords and "3.0.13" in caplog.text
    monkeypatch.undo()
    caplog.clear()

    other = type("Other", (), {})
    consumer = stand_in_consumer(other)
    with caplog.at_level("WARNING", logger=kafka_records.__name__):
        assert not install(consumer)
    assert consumer._fetcher.PartitionRecords is other and "one by one" in caplog.text


def test_compaction_gaps_and_an_emptied_last_batch_move_the_offset_past_them():
    """Offsets a batch no longer holds (compaction) are skipped: the next fetch starts
    after the batch's last offset, not after its last record (or it would fetch it again)."""
    gaps = b"".join(record(d, ts_delta=d) for d in (0, 3, 4, 9))
    raw = (raw_batch(gaps, 4, base_offset=100, last_offset_delta=15)
           + raw_batch(b"", 0, base_offset=116, last_offset_delta=2))
    trace = same(raw, bulk_only=True, take=3)
    assert [r.offset for r in records_of(trace)] == [100, 103, 104, 109]
    assert trace[-2][1] == 119
    assert same(raw, fetch_offset=105, take=1)[-2][1] == 119  # a fetch from inside a gap


def test_read_committed_drops_aborted_transactions_as_kafka_python_does():
    marker = b"\0" + varint(0) + varint(0) + varint(4) + bytes(4) + varint(6) + bytes(6) + b"\0"
    abort = varint(len(marker)) + marker  # key: version 0, type 0 (abort)
    rows = b"".join(record(d, value=b"aborted") for d in range(4))
    raw = (raw_batch(rows, 4, attributes=0x10, producer_id=42, producer_epoch=1)
           + raw_batch(abort, 1, base_offset=4, attributes=0x30, producer_id=42, producer_epoch=1)
           + raw_batch(b"".join(record(d) for d in range(3)), 3, base_offset=5))
    aborted = [types.SimpleNamespace(producer_id=42, first_offset=0)]
    committed = same(raw, take=3, aborted_transactions=aborted, isolation_level=IsolationLevel.READ_COMMITTED)
    assert [r.offset for r in records_of(committed)] == [5, 6, 7]
    uncommitted = same(raw, bulk_only=True, take=3, aborted_transactions=aborted)
    assert [r.offset for r in records_of(uncommitted)] == [0, 1, 2, 3, 5, 6, 7]


def test_header_values_near_int64_limits_go_kafka_pythons_way():
    """A base offset or first timestamp near 2**63 (a corrupt header, CRCs off) would
    wrap in int64 arithmetic; Python's ints do not."""
    raw = bytearray(raw_batch(record(0, ts_delta=5) + record(1, ts_delta=-5), 2, base_offset=2 ** 63 - 2))
    struct.pack_into(">q", raw, 27, 2 ** 63 - 3)  # first timestamp (after base offset .. last offset delta)
    got = records_of(same(bytes(raw), check_crcs=False))
    assert [r.offset for r in got] == [2 ** 63 - 2, 2 ** 63 - 1] and got[0].timestamp == 2 ** 63 + 2


def test_leader_epoch_follows_each_batch():
    raw = (raw_batch(record(0) + record(1), 2, leader_epoch=3)
           + raw_batch(record(0), 1, base_offset=2, leader_epoch=5))
    trace = same(raw, bulk_only=True, take=1)
    assert [r.leader_epoch for r in records_of(trace)] == [3, 3, 5]


def test_a_fetch_drained_after_a_partial_take_reports_only_what_was_taken():
    trace = same(batch(lines(100)), take=10, stop_after=1)
    assert trace[-1][1][0][1] == 10  # ten records counted, not the batch's hundred


def test_a_truncated_last_batch_ends_the_fetch_like_kafka_python():
    raw = batch(lines(10)) + batch(lines(10, start=10), offset=10)
    assert len(records_of(same(raw[:-7], take=4))) == 10


@pytest.mark.parametrize("compression", [c for c in CODECS if c])
@pytest.mark.parametrize("check_crcs", [True, False])
def test_corrupt_compressed_batches_fail_or_pass_like_kafka_python(compression, check_crcs):
    rng = random.Random(compression)
    clean = batch(lines(60), compression=compression)
    header = DefaultRecordBatch.HEADER_STRUCT.size
    for _ in range(60):
        raw = bytearray(clean)
        raw[rng.randrange(header, len(raw))] ^= 1 << rng.randrange(8)
        same(bytes(raw), check_crcs=check_crcs, take=16)
