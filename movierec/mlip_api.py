"""A synchronous client for the MLiP user and movie APIs, on httpx.

The APIs (mlip-interface.md section 3): ``GET <base>/user/<ids>`` and
``GET <base>/movie/<ids>``, JSON, up to 200 comma-joined ids a request, read-only and
rate-limited. ``MlipApiClient.get(path)`` keeps the semantics of the urllib fetch it
replaces (``stream_consumer.enrich.Enricher._http_get``): the parsed JSON of a 2xx answer;
``[]`` for 404 (the API does not know the ids); ``ApiError`` for anything else, a
transport failure, a timeout or a body that is not JSON. Redirects are followed, as
urllib does. ``timeout_s`` bounds each connect, write and read (urllib's ``timeout``
meant the same).

What it adds, and why:

- one pool of keep-alive connections reused across calls (httpx's), instead of a new TCP
  connection a call; a reused connection that the server closed while it was idle is
  retried once on a fresh one, so an idle timeout on the server's side is not an error;
- 429 and 503 with ``Retry-After`` (RFC 9110 section 10.2.3: delay-seconds or an
  HTTP-date) are retried after the wait the server asked for, at most ``max_retries``
  times. The waits of one call add up to ``max_wait_s`` at most: a server asking for more
  gets an ``ApiError`` at once (its ``retry_after_s`` says how long it asked), so a
  caller's own backoff takes over and no thread sleeps unboundedly. 429/503 without a
  valid ``Retry-After`` is an ``ApiError`` at once, as before.

httpx is the project's one HTTP client library (also ``simulator.grade_probe``); the live
simulator keeps its own asyncio client, docs/benchmarks.md ("HTTP client library") says why with figures.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Self

import httpx

from movierec.errors import MovierecError

DEFAULT_TIMEOUT_S = 3.0
DEFAULT_MAX_RETRIES = 2
DEFAULT_MAX_WAIT_S = 10.0
"""Seconds one call may sleep in all for ``Retry-After``: it bounds how long the rest of
an enrichment round, or a stop of the worker, waits on one call."""

RETRY_STATUSES = frozenset({429, 503})
"""Statuses whose ``Retry-After`` is honoured (RFC 9110 section 10.2.3; RFC 6585 section 4)."""

_STALE = (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)
"""What httpx raises when a kept-alive connection was closed by the server meanwhile."""


class ApiError(MovierecError):
    """The user/movie API did not answer usefully (down, slow, 5xx, 429, not JSON).

    ``retry_after_s``: how long the server asked to wait, when it answered 429/503 with a
    valid ``Retry-After`` that this client did not wait out; else None."""

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


def retry_after_s(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (RFC 9110 section 10.2.3): a number of
    seconds (digits only) or an HTTP-date in any of the three forms of RFC 9110 section
    5.6.7, a date in the past meaning 0. None when absent or unreadable. ``now`` (aware)
    defaults to the current UTC time."""
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(int(value))
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # asctime form or "-0000": no zone, and HTTP-dates are in GMT
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


class ExchangeTrace:
    """An httpx ``trace`` extension hook (httpcore names each step it takes): whether a
    request opened a new connection and whether an answer's headers arrived. A failure on
    a reused connection before any answer is a stale keep-alive connection: one more try
    on a fresh connection is safe for a GET."""

    def __init__(self) -> None:
        self.opened = self.answered = False

    def __call__(self, name: str, info: dict) -> None:
        if name.startswith("connection.connect_tcp."):
            self.opened = True
        elif name == "http11.receive_response_headers.complete":
            self.answered = True

    @property
    def stale(self) -> bool:
        """No connection was opened and no answer came: the reused one had gone stale."""
        return not (self.opened or self.answered)


def is_stale(exc: BaseException, trace: ExchangeTrace) -> bool:
    """Did the request fail only because the reused connection had been closed?"""
    return isinstance(exc, _STALE) and trace.stale


class MlipApiClient:
    """``get(path)`` on the user/movie API at ``base_url``, over up to ``max_connections``
    kept-alive connections, for one thread (the enrichment worker's). ``sleep`` waits out
    a ``Retry-After`` (a ``threading.Event().wait`` lets a stop cut the wait short). Close
    it (or use ``with``) to close the connections."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        max_retries: int = DEFAULT_MAX_RETRIES,
        max_wait_s: float = DEFAULT_MAX_WAIT_S,
        max_connections: int = 4,
        sleep: Callable[[float], object] = time.sleep,
    ) -> None:
        if timeout_s <= 0 or max_retries < 0 or max_wait_s < 0 or max_connections < 1:
            raise ValueError("need timeout_s > 0, max_retries >= 0, max_wait_s >= 0, max_connections >= 1")
        self.base_url = base_url.rstrip("/")
        self.max_retries = max_retries
        self.max_wait_s = max_wait_s
        self._sleep = sleep
        self._client = httpx.Client(
            base_url=self.base_url, timeout=timeout_s, follow_redirects=True,
            limits=httpx.Limits(max_connections=max_connections,
                                max_keepalive_connections=max_connections),
            headers={"Accept": "application/json"})

    def get(self, path: str) -> object:
        """The parsed JSON answer to ``GET <base_url><path>``; ``[]`` for 404. Raises
        ``ApiError`` for any other status, a failure, a timeout or a body not JSON, and
        for 429/503 once the retries or the wait allowed are used up."""
        where = f"GET {path[:60]}"
        waited = 0.0
        for attempt in range(self.max_retries + 1):
            response = self._send(path, where)
            status = response.status_code
            if status == 404:
                return []
            if status in RETRY_STATUSES:
                wait = retry_after_s(response.headers.get("Retry-After"))
                refusal = _refusal(wait, waited, self.max_wait_s, attempt, self.max_retries)
                if refusal or wait is None:
                    raise ApiError(f"{where} answered {status} ({refusal})", retry_after_s=wait)
                self._sleep(wait)
                waited += wait
                continue
            if not 200 <= status < 300:
                raise ApiError(f"{where} answered {status}")
            try:
                return json.loads(response.content)
            except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError both are
                raise ApiError(f"{where} failed: {exc}") from None
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _send(self, path: str, where: str) -> httpx.Response:
        """One GET, read whole; a stale kept-alive connection is retried once, fresh."""
        for attempt in (1, 2):
            trace = ExchangeTrace()
            try:
                return self._client.get(path, extensions={"trace": trace})
            except (httpx.HTTPError, httpx.InvalidURL) as exc:
                if attempt == 1 and is_stale(exc, trace):
                    continue
                raise ApiError(f"{where} failed: {type(exc).__name__}: {exc}") from None
        raise AssertionError("unreachable: the second attempt returns or raises")

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def _refusal(wait: float | None, waited: float, max_wait_s: float, attempt: int,
             max_retries: int) -> str:
    """Why a 429/503 is not waited out and retried ("" if it is)."""
    if wait is None:
        return "no usable Retry-After"
    if attempt >= max_retries:
        return f"still after {max_retries} retries"
    if waited + wait > max_wait_s:
        return f"Retry-After {wait:g} s is more than the {max_wait_s - waited:g} s left to wait"
    return ""
