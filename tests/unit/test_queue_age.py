"""The queue age read from the kernel: the ``struct tcp_info`` parser on bytes laid out
field by field as include/uapi/linux/tcp.h declares them, and the adapter on real
loopback sockets (which proves the offset against the running kernel)."""

from __future__ import annotations

import socket
import struct
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from recommender.serving.queue_age import (
    LAST_DATA_RECV_OFFSET,
    TCP_INFO_PREFIX,
    parse_last_data_recv_s,
    read_queue_age_s,
)

linux_only = pytest.mark.skipif(sys.platform != "linux", reason="TCP_INFO layout is Linux's")


def tcp_info_bytes(last_data_recv_ms: int, *, tail: int = 160) -> bytes:
    """A ``struct tcp_info`` as the kernel fills it: 8 one-byte fields, then u32s; every
    other field holds a distinct junk value so a wrong offset reads the wrong number."""
    head = bytes(range(1, 9))  # state, ca_state, retransmits, probes, backoff, options, 2 bit fields
    u32 = [1000 + i for i in range(9)]  # rto, ato, snd_mss, rcv_mss, unacked, sacked, lost, retrans, fackets
    u32 += [111_111, 222_222, last_data_recv_ms, 333_333]  # last_data_sent, last_ack_sent, *, last_ack_recv
    return head + struct.pack(f"={len(u32)}I", *u32) + b"\xee" * tail


@contextmanager
def queued_socket(wait_s: float, *, peer: list | None = None) -> Iterator[socket.socket]:
    """The server side of a loopback connection whose request arrived ``wait_s`` seconds
    before it was accepted (as a request waits in a listen backlog for a busy worker);
    the client side is appended to ``peer`` when given."""
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    if peer is not None:
        peer.append(client)
    try:
        client.sendall(b"GET /recommend/7 HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(wait_s)
        server, _ = listener.accept()
        with server:
            yield server
    finally:
        client.close()
        listener.close()


def test_the_offset_is_the_one_of_the_kernel_header():
    # 8 bytes of u8 fields, then rto..last_ack_sent: 11 u32s before last_data_recv.
    assert LAST_DATA_RECV_OFFSET == 8 + 11 * 4 == 52
    assert TCP_INFO_PREFIX.size == 56


@pytest.mark.parametrize("ms", [0, 1, 4, 52, 96, 300, 4_294_967_295])
def test_parser_reads_last_data_recv_in_seconds(ms):
    assert parse_last_data_recv_s(tcp_info_bytes(ms)) == pytest.approx(ms / 1000.0)


def test_parser_needs_the_whole_prefix():
    info = tcp_info_bytes(96, tail=0)[: TCP_INFO_PREFIX.size]
    assert parse_last_data_recv_s(info) == pytest.approx(0.096)  # exactly the prefix is enough
    with pytest.raises(ValueError):
        parse_last_data_recv_s(info[:-1])
    with pytest.raises(ValueError):
        parse_last_data_recv_s(b"")


@linux_only
def test_a_real_socket_reports_how_long_its_request_waited():
    peer: list[socket.socket] = []
    with queued_socket(0.3, peer=peer) as server:
        age = read_queue_age_s(server)
        # Data sent and acknowledged now resets the neighbouring fields (last_data_sent,
        # last_ack_recv), not the one we read: a wrong offset would read about 0 here.
        server.sendall(b"HTTP/1.1 200 OK\r\n\r\n")
        assert peer[0].recv(100)
        time.sleep(0.01)
        after_send = read_queue_age_s(server)
    assert age is not None and 0.25 <= age < 2.0
    assert after_send is not None and 0.25 <= after_send < 2.0


@linux_only
def test_a_request_taken_at_once_has_a_small_age():
    with queued_socket(0.0) as server:
        age = read_queue_age_s(server)
    assert age is not None and 0.0 <= age < 0.1


def test_the_adapter_never_raises():
    a, b = socket.socketpair()  # AF_UNIX: no TCP_INFO
    with a, b:
        assert read_queue_age_s(a) is None
    closed = socket.socket()
    closed.close()
    assert read_queue_age_s(closed) is None
    assert read_queue_age_s(object()) is None
    assert read_queue_age_s(None) is None
