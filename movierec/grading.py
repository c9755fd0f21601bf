"""The course's grading rules for one recommendation request, shared by the grader's own
arithmetic (``simulator/grade.py``) and the service's continuous online metrics
(``online_eval/live.py``), so "success" and "down" mean the same in both
(../shared/mlip-interface.md, section 2)."""

from __future__ import annotations

from movierec.wire import MAX_ITEMS, Recommendation

DEFAULT_DEADLINE_MS = 600
"""A 200 answer slower than this is late (800 ms in older offerings)."""
DEFAULT_DOWN_THRESHOLD = 0.5
"""A minute with requests is down when its success share is below this."""

CATEGORIES = ("late", "malformed", "timeout", "refused", "http_error", "other")
"""Failure categories, each request in exactly one of them or a success."""


def classify(event: Recommendation, deadline_ms: int) -> str:
    """``"success"`` or one of ``CATEGORIES`` for one request.

    Status 200: more than 20 ids is ``malformed``, over ``deadline_ms`` is ``late``.
    Other statuses go by the error text: starting with "malformed" -> ``malformed``;
    containing "timed out" or "timeout" -> ``timeout``; "refused" -> ``refused``; else
    ``http_error`` for a real HTTP status, ``other`` for status 0.
    """
    if event.status == 200:
        if len(event.items) > MAX_ITEMS:
            return "malformed"
        return "success" if event.response_time_ms <= deadline_ms else "late"
    text = event.error.lstrip().lower()
    if text.startswith("malformed"):
        return "malformed"
    if "timed out" in text or "timeout" in text:
        return "timeout"
    if "refused" in text:
        return "refused"
    return "http_error" if event.status != 0 else "other"


def minute_down(requests: int, successes: int, threshold: float = DEFAULT_DOWN_THRESHOLD) -> bool:
    """Whether a minute with ``requests`` (> 0) is down: its success share is below
    ``threshold``."""
    return requests > 0 and successes / requests < threshold
