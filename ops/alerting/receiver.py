"""The alert receiver: the webhook Alertmanager notifies (``movierec infra up`` starts it
as the stack's part "receiver"). Every notification's alerts are appended to a JSON-lines
file, fsynced before the answer, so none is lost to a crash; ``GET /alerts`` returns the
recent ones (newest last) for people and dashboards; with ``MOVIEREC_ALERT_FORWARD_URL``
set, each notification is also posted there as ``{"text": ...}``, the shape Slack's
incoming webhooks (and most chat and email relays) accept.

The core (``records``, ``message``) is pure; the HTTP server and the file are thin.
A malformed notification is answered 400 and counted (``GET /health``), never fatal.

    python -m ops.alerting.receiver --port 9095 --file var/alerts/notifications.jsonl \
        [--forward-url URL]      # what the stack's part "receiver" runs
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx

from movierec.durable import fsync_path
from movierec.errors import MovierecError

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1 << 20


class BadNotification(MovierecError, ValueError):
    """Not an Alertmanager webhook notification."""


def records(payload: object, received_s: float) -> list[dict]:
    """One record per alert of an Alertmanager webhook ``payload`` (version 4)."""
    if not isinstance(payload, dict) or not isinstance(payload.get("alerts"), list):
        raise BadNotification("expected an object with a list of alerts")
    out = []
    for alert in payload["alerts"]:
        if not isinstance(alert, dict) or not isinstance(alert.get("labels"), dict):
            raise BadNotification("an alert without labels")
        labels, annotations = alert["labels"], alert.get("annotations") or {}
        out.append({"received_s": round(received_s, 3), "status": str(alert.get("status", "")),
                    "alertname": str(labels.get("alertname", "")),
                    "severity": str(labels.get("severity", "")), "labels": labels,
                    "annotations": annotations, "starts_at": alert.get("startsAt"),
                    "ends_at": alert.get("endsAt"), "fingerprint": alert.get("fingerprint"),
                    "receiver": payload.get("receiver")})
    return out


def message(batch: list[dict]) -> str:
    """The chat text of one notification: a line per alert, its state, summary and runbook."""
    lines = []
    for r in batch:
        mark = "RESOLVED" if r["status"] == "resolved" else f"FIRING ({r['severity'] or 'none'})"
        summary = r["annotations"].get("summary", "")
        runbook = r["annotations"].get("runbook_url", "")
        lines.append(f"[{mark}] {r['alertname']}: {summary}" + (f" ({runbook})" if runbook else ""))
    return "\n".join(lines)


class AlertLog:
    """The durable record: one JSON line per alert, appended and fsynced."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def append(self, batch: list[dict]) -> None:
        data = "".join(json.dumps(r, sort_keys=True) + "\n" for r in batch).encode()
        with self._lock, self.path.open("ab") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        fsync_path(self.path.parent)

    def recent(self, limit: int) -> list[dict]:
        if not self.path.exists():
            return []
        with self._lock:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        out: list[dict] = []
        for line in reversed(lines):  # the newest valid ``limit`` records
            if len(out) == limit:
                break
            try:
                out.append(json.loads(line))
            except ValueError:  # a torn last line after a crash: skipped, never fatal
                continue
        return out[::-1]


class Receiver:
    """The server's state: the log, the optional forward, and the counts /health shows."""

    def __init__(self, log_file: Path, forward_url: str = "") -> None:
        self.log, self.forward_url = AlertLog(log_file), forward_url
        self.counts = {"notifications": 0, "alerts": 0, "rejected": 0, "forward_failures": 0}

    def take(self, body: bytes) -> int:
        """Record one notification; the number of alerts. ``BadNotification`` if invalid."""
        try:
            payload = json.loads(body)
        except ValueError as exc:
            raise BadNotification(f"not JSON: {exc}") from None
        batch = records(payload, time.time())
        self.log.append(batch)
        self.counts["notifications"] += 1
        self.counts["alerts"] += len(batch)
        if self.forward_url and batch:
            try:
                httpx.post(self.forward_url, json={"text": message(batch)}, timeout=5.0)
            except httpx.HTTPError as exc:
                self.counts["forward_failures"] += 1
                log.warning("forwarding to %s failed: %s", self.forward_url, exc)
        return len(batch)


def handler_for(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _answer(self, status: int, body: object) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if urlsplit(self.path).path != "/alerts" or not 0 < length <= MAX_BODY_BYTES:
                receiver.counts["rejected"] += 1
                self._answer(400, {"error": "POST an Alertmanager notification to /alerts"})
                return
            try:
                taken = receiver.take(self.rfile.read(length))
            except BadNotification as exc:
                receiver.counts["rejected"] += 1
                self._answer(400, {"error": str(exc)})
                return
            self._answer(200, {"recorded": taken})

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            if url.path == "/alerts":
                limit = parse_qs(url.query).get("limit", ["100"])[0]
                n = int(limit) if limit.isdigit() else 100
                self._answer(200, receiver.log.recent(max(1, min(n, 10_000))))
            elif url.path == "/health":
                self._answer(200, receiver.counts)
            else:
                self._answer(404, {"error": "GET /alerts or /health"})

        def log_message(self, fmt: str, *args: object) -> None:
            log.debug(fmt, *args)

    return Handler


def main() -> None:
    import argparse

    from movierec.logs import configure

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1", help="address to bind (loopback by default)")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--file", type=Path, required=True, help="the JSON-lines record")
    ap.add_argument("--forward-url", default="", help="post each notification here too")
    args = ap.parse_args()
    configure()
    receiver = Receiver(args.file, args.forward_url)
    server = ThreadingHTTPServer((args.host, args.port), handler_for(receiver))
    log.info("alert receiver on %s:%d, recording to %s", args.host, args.port, args.file)
    server.serve_forever()


if __name__ == "__main__":
    main()
