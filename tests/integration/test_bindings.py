"""Every part of the local stack listens on loopback only (docs/security.md): Kafka (and
its controller), Redis, Prometheus, Alertmanager and the alert receiver. Read from the
kernel's own table of listening sockets (/proc/net/tcp and tcp6), not from the config
files, so a part that ignored its setting would be caught."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from tests.integration.conftest import LocalStack

pytestmark = pytest.mark.integration
LISTEN = "0A"  # TCP_LISTEN in include/net/tcp_states.h


def _address(hex_addr: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """/proc/net/tcp's address: IPv4 as one little-endian 32-bit word, IPv6 as four."""
    raw = bytes.fromhex(hex_addr)
    if len(raw) == 4:
        return ipaddress.IPv4Address(raw[::-1])
    return ipaddress.IPv6Address(b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4)))


def listening() -> dict[int, set[str]]:
    """Port -> the addresses sockets listen on, from both tables."""
    out: dict[int, set[str]] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        path = Path(table)
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] != LISTEN:
                continue
            host, port = fields[1].split(":")
            address = _address(host)
            if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
                address = address.ipv4_mapped
            out.setdefault(int(port, 16), set()).add(str(address))
    return out


def test_the_address_decoder_reads_the_kernels_format() -> None:
    assert str(_address("0100007F")) == "127.0.0.1"
    assert str(_address("00000000")) == "0.0.0.0"
    assert str(_address("00000000000000000000000001000000")) == "::1"


def test_every_stack_part_listens_on_loopback_only(stack: LocalStack) -> None:
    s = stack.settings
    ports = {"kafka": s.kafka_port, "kafka controller": s.kafka_controller_port,
             "redis": s.redis_port, "prometheus": s.prometheus_port,
             "alertmanager": s.alertmanager_port, "alert receiver": s.alert_receiver_port}
    table = listening()
    for part, port in ports.items():
        assert table.get(port), f"{part} is not listening on {port}"
        assert all(ipaddress.ip_address(a).is_loopback for a in table[port]), (part, table[port])
