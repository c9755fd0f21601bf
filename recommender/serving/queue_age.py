"""How long a request waited before a worker picked it up, as the kernel saw it.

gunicorn's sync and gthread workers accept a connection and read its request only when a
worker (thread) is free; until then the request sits in the listen backlog or the socket's
receive queue, and no user-space clock sees it arrive. The kernel does: on Linux,
``getsockopt(IPPROTO_TCP, TCP_INFO)`` returns ``struct tcp_info``, whose
``tcpi_last_data_recv`` is the milliseconds since the last data segment arrived on that
socket (``jiffies_to_msecs(now - icsk_ack.lrcvtime)`` in ``tcp_get_info``,
net/ipv4/tcp.c; the receive path stamps ``lrcvtime`` in ``tcp_event_data_recv``, also
while the connection still waits in the accept queue). Read when the request's handling
starts, that is the request's queue age: a GET arrives in one segment, and nothing more
arrives before the answer. Resolution is one jiffy (1 to 10 ms depending on the kernel's
HZ).

- ``parse_last_data_recv_s``: pure, the bytes of ``struct tcp_info`` -> seconds;
- ``read_queue_age_s``: the adapter on a socket; never raises (None when unreadable:
  not a TCP socket, closed, not Linux), so the caller can count it and carry on.

gunicorn hands the client socket to the app as ``environ["gunicorn.socket"]``
(``gunicorn.http.wsgi.default_environ``, used by the sync and gthread workers); other
servers (Flask's test client, the dev server) do not, and then the age is unknown.
"""

from __future__ import annotations

import socket
import struct
from typing import Any

TCP_INFO_HEAD = "8B"
"""The eight one-byte fields that open ``struct tcp_info`` (tcpi_state .. the bit fields
of wscale, app_limited and fastopen_client_fail)."""
TCP_INFO_U32 = ("rto", "ato", "snd_mss", "rcv_mss", "unacked", "sacked", "lost", "retrans",
                "fackets", "last_data_sent", "last_ack_sent", "last_data_recv")
"""The ``__u32`` fields that follow, in order, up to the one we read; from
include/uapi/linux/tcp.h (unchanged since Linux 2.6: fields are only ever appended)."""
TCP_INFO_PREFIX = struct.Struct("=" + TCP_INFO_HEAD + "I" * len(TCP_INFO_U32))
"""The leading part of ``struct tcp_info`` in native byte order, without padding (the
kernel's layout has none: 8 bytes, then 4-byte aligned u32s)."""
LAST_DATA_RECV_OFFSET = struct.calcsize(
    "=" + TCP_INFO_HEAD + "I" * TCP_INFO_U32.index("last_data_recv"))
"""Byte offset of ``tcpi_last_data_recv`` in ``struct tcp_info`` (52)."""

TCP_INFO_OPTION = getattr(socket, "TCP_INFO", 11)
"""``TCP_INFO`` from <netinet/tcp.h> (11 on Linux)."""


def parse_last_data_recv_s(info: bytes) -> float:
    """Seconds since the socket last received data, from the bytes of ``struct tcp_info``
    (at least ``TCP_INFO_PREFIX.size`` of them); ``ValueError`` when shorter."""
    if len(info) < TCP_INFO_PREFIX.size:
        raise ValueError(f"tcp_info of {len(info)} bytes, need {TCP_INFO_PREFIX.size}")
    (ms,) = struct.unpack_from("=I", info, LAST_DATA_RECV_OFFSET)
    return ms / 1000.0


def read_queue_age_s(sock: Any) -> float | None:
    """The queue age in seconds of the request just read from ``sock`` (a connected TCP
    socket), or None when the kernel cannot tell (not TCP, closed, no ``TCP_INFO``).
    Costs one system call (about 1 µs)."""
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, TCP_INFO_OPTION, TCP_INFO_PREFIX.size)
        return parse_last_data_recv_s(info)
    except (OSError, ValueError, AttributeError, TypeError):
        return None
