"""What the course's client logs for one ``GET /recommend/<uid>`` call.

mlip-interface.md section 2: a success is status 200 with the list; otherwise the line
has a non-200 status (0 when no answer came) and an error text. Both the live
simulator and the grader's probe call the service and must write the same texts,
which the grader classifies ("timed out", "refused", "malformed answer: ...").
"""

from __future__ import annotations

from dataclasses import dataclass

from movierec.wire import Rejection, parse_answer


@dataclass(frozen=True)
class Outcome:
    """``kind``: ok, http_error, malformed, timeout, refused or error."""

    kind: str
    status: int
    items: tuple[str, ...]
    text: str  # the result field: the ids joined by ", " on success, else the error


def printable(text: str, limit: int = 200) -> str:
    """An error text fit for one log line."""
    return "".join(c if c.isprintable() else " " for c in text)[:limit]


def answered(status: int, body: bytes) -> Outcome:
    """The outcome of an answer that arrived within the deadline."""
    if status != 200:
        return Outcome("http_error", status, (), f"HTTP {status}")
    items = parse_answer(body)
    if isinstance(items, Rejection):
        return Outcome("malformed", 0, (), printable(f"malformed answer: {items.detail}"))
    return Outcome("ok", 200, items, ", ".join(items))


def failed(exc: BaseException, *, deadline_ms: int, server: str) -> Outcome:
    """The outcome of a call that got no usable answer."""
    if isinstance(exc, TimeoutError):
        return Outcome("timeout", 0, (), f"Read timed out after {deadline_ms} ms")
    if isinstance(exc, ConnectionRefusedError):
        return Outcome("refused", 0, (), f"Connection refused: {server}")
    return Outcome("error", 0, (), printable(f"{type(exc).__name__}: {exc}"))
