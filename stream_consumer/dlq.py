"""Dead letters: a rejected line, why, and where it came from, as one JSON message (a
Kafka record's value, or one line of the local dead-letter file: ``dlq_sinks``).

The value keeps the line as UTF-8 text when it is valid UTF-8, else as base64 — never
lost, never silently altered; lines over 64 KiB keep their first 64 KiB and say so.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

MAX_KEPT = 64 * 1024


def dead_letter(raw: bytes, *, reason: str, detail: str, topic: str, partition: int,
                offset: int, timestamp_ms: int | None) -> bytes:
    kept = raw[:MAX_KEPT]
    record: dict[str, object] = {
        "reason": reason, "detail": detail, "topic": topic, "partition": partition,
        "offset": offset, "timestamp_ms": timestamp_ms, "bytes": len(raw),
        "truncated": len(raw) > MAX_KEPT,
    }
    try:
        record["line"] = kept.decode("utf-8")
    except UnicodeDecodeError:
        record["line_base64"] = base64.b64encode(kept).decode("ascii")
    return json.dumps(record, ensure_ascii=False).encode("utf-8")


def read_dead_letter(value: bytes) -> dict:
    """The record, with ``raw`` (bytes) restored from whichever form was kept."""
    record = json.loads(value)
    record["raw"] = (record["line"].encode("utf-8") if "line" in record
                     else base64.b64decode(record["line_base64"]))
    return record


def read_dead_letters(path: Path) -> Iterator[dict]:
    """The records of a dead-letter file (``dlq_sinks.FileSink``), oldest first.

    Splits on b"\\n" only: a line may hold U+2028, which ``str.splitlines`` would split."""
    with open(path, "rb") as file:
        for line in file:
            if line.strip():
                yield read_dead_letter(line)
