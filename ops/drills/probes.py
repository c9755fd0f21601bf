"""The drills' adapters to the running demo: the receiver's records, Prometheus, the
service's answers, the demo's processes (pid files in ``var/run/demo-<service>.pid``,
logs in ``var/log/demo/<service>.log``), the project's commands, and light traffic.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shlex
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from pathlib import Path

from movierec.errors import MovierecError
from ops.demo.flow import DemoPlan, movierec
from ops.stack import procs
from ops.stack.alerting import AlertReceiver


class DrillError(MovierecError):
    """A drill could not run (the demo is not healthy, a command failed)."""


class Demo:
    """The running demo a drill works on, from the same ``MOVIEREC_*`` environment."""

    def __init__(self, plan: DemoPlan) -> None:
        self.plan = plan
        self.receiver = AlertReceiver(plan.stack)
        self.env = plan.env()

    # -- alerts and metrics ----------------------------------------------------------------

    def notifications(self) -> list[dict]:
        """What the receiver recorded (``GET /alerts``), newest last; [] if it is down."""
        try:
            return self.receiver.notifications(limit=5000)
        except (OSError, ValueError):
            return []

    def query(self, promql: str) -> list[dict] | None:
        """Prometheus's instant vector for ``promql``; None when it cannot be asked."""
        url = (f"{self.plan.stack.local_prometheus_url}/api/v1/query?"
               + urllib.parse.urlencode({"query": promql}))
        try:
            with urllib.request.urlopen(url, timeout=5) as answer:
                body = json.loads(answer.read())
        except (OSError, ValueError):
            return None
        return body.get("data", {}).get("result", []) if body.get("status") == "success" else None

    # -- the service -----------------------------------------------------------------------

    def recommend(self, user: int, timeout_s: float = 1.0) -> dict[str, str] | None:
        """The headers of ``GET /recommend/<user>`` when it answers 200, else None."""
        try:
            with urllib.request.urlopen(f"{self.plan.serve_url}/recommend/{user}",
                                        timeout=timeout_s) as answer:
                body = answer.read().decode("utf-8", "replace")
                return {**{k.lower(): v for k, v in answer.headers.items()}, "body": body}
        except (OSError, ValueError):
            return None

    def model_answer(self, users: range = range(1, 41)) -> dict[str, str] | None:
        """The first answer from the model path among ``users`` (headers), or None."""
        for user in users:
            got = self.recommend(user)
            if got is not None and got.get("x-answer-path") == "model":
                return {**got, "user": str(user)}
        return None

    # -- processes -----------------------------------------------------------------------

    def pid(self, service: str) -> int | None:
        return procs.owned_pid(self.plan.pid_file(service))

    def spawn(self, service: str, args: list[str]) -> tuple[int, str]:
        """Start ``movierec <args>`` in the background as the demo does (its pid file, its
        log appended); (pid, the command as a person would type it)."""
        log = self.plan.log_of(service)
        pid = procs.spawn(movierec(*args), pid_file=self.plan.pid_file(service), log=log,
                          env=self.env)
        return pid, f"nohup movierec {shlex.join(args)} >> {log} 2>&1 &"

    def run(self, args: list[str], timeout_s: float = 180.0) -> str:
        """Run ``movierec <args>`` to its end with the demo's environment; its output.
        DrillError when it fails."""
        done = subprocess.run(movierec(*args), env=self.env, capture_output=True, text=True,
                              timeout=timeout_s, stdin=subprocess.DEVNULL)
        if done.returncode != 0:
            raise DrillError(f"`movierec {shlex.join(args)}` exited with {done.returncode}: "
                             f"{(done.stdout + done.stderr)[-800:]}")
        return done.stdout


def process_state(pid: int) -> str | None:
    """The state letter of ``pid`` (R, S, D, T stopped, Z...) from /proc; None if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2:].split()[0]


def signal_group(pid: int, sig: signal.Signals) -> bool:
    """``sig`` to the process group ``pid`` leads (the demo's services lead their own)."""
    try:
        os.killpg(pid, sig)
        return True
    except ProcessLookupError:
        return False


class Traffic:
    """Light background traffic: one ``GET /recommend/<user>`` every ``1/rate_hz`` s for
    a user drawn at random from ``users`` (in order it would walk the ids as a crawler
    does, which ``movierec audit security`` reports), each outcome counted with its time
    (``samples``: (Unix s, outcome), where the outcome is the answer path, or ``failed``)."""

    def __init__(self, demo: Demo, rate_hz: float = 10.0, users: range = range(1, 301)) -> None:
        self.demo, self.period_s, self.users = demo, 1.0 / rate_hz, users
        self.samples: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="drill-traffic", daemon=True)

    def start(self) -> Traffic:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        pick = random.Random(0)
        while not self._stop.is_set():
            got = self.demo.recommend(pick.choice(self.users), timeout_s=0.6)
            self.samples.append((time.time(), "failed" if got is None
                                 else got.get("x-answer-path", "unknown")))
            self._stop.wait(self.period_s)

    def tally(self, start_s: float, end_s: float) -> Counter[str]:
        """Outcomes of the requests sent from ``start_s`` to ``end_s``."""
        return Counter(outcome for at, outcome in list(self.samples) if start_s <= at <= end_s)


class SimLive:
    """``movierec sim live`` as a child (the drift drill needs the log's clock to move):
    simulated users at ``rate`` req/s from world day ``start_day``, the clock at
    ``clock_ratio`` simulated seconds per real second."""

    def __init__(self, demo: Demo, log: Path, *, rate: float, duration_s: float,
                 start_day: float, clock_ratio: float = 60.0) -> None:
        self.args = ["sim", "live", "--url", demo.plan.serve_url, "--rate", f"{rate:g}",
                     "--duration", f"{duration_s:g}", "--start-day", f"{start_day:g}",
                     "--clock-ratio", f"{clock_ratio:g}", "--truth",
                     str(log.parent / "live-truth.jsonl")]
        self.demo, self.log = demo, log
        self.child: subprocess.Popen | None = None
        self.started_s = 0.0

    def start(self) -> SimLive:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            self.child = subprocess.Popen(movierec(*self.args), env=self.demo.env, stdout=out,
                                          stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                          start_new_session=True)
        self.started_s = time.time()
        return self

    def stop(self) -> None:
        if self.child is None or self.child.poll() is not None:
            return
        for sig, wait_s in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
            signal_group(self.child.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.child.wait(timeout=wait_s)
                return
