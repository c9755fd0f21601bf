"""The demo's stages, in order: stack, world, backfill, consume, train, serve,
online, dashboard, loop, live, verdict, report.

Each stage runs the project's own commands (``movierec sim backfill``, ``movierec
consume``, ``movierec train``, ``movierec serve``, ``movierec sim live``) exactly as a
user would, with the demo's sizes passed through ``MOVIEREC_*`` variables, so what the
demo shows is what the commands do. The services it starts (the user/movie API, the
consumer, the API server) and the stack are left running for inspection.
"""

from __future__ import annotations

import os
import random
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from movierec.kafka_admin import group_lag
from movierec.settings import load
from online_eval.settings import OnlineSettings
from ops import stack
from ops.dashboard.settings import DashboardSettings
from ops.demo import reset
from ops.demo import stages as stages_mod
from ops.demo.settings import DemoSettings
from ops.demo.stages import DemoError, Note, Stages
from ops.stack.settings import StackSettings
from recommender.serving.settings import ServeSettings
from recommender.training.settings import TrainSettings
from simulator.api import ApiSettings
from simulator.settings import SimSettings
from stream_consumer.settings import ConsumerSettings

STAGES = ("stack", "world", "backfill", "consume", "train", "serve", "online", "dashboard",
          "loop", "live", "verdict", "report")
MODEL_ARM, CHALLENGER_ARM = "champion", "challenger"
"""The canary's arms (``recommender.loop.effects``)."""
LOOP_CHECK_S = 3.0
"""The demo's loop looks at its triggers and its canary every few seconds."""
ONLINE_WINDOW_MIN = 10.0
"""A list counts as taken when a listed movie starts within 10 simulated minutes: the live
phase covers only about an hour of simulated time (60 s x 60), so the default 30 minutes
would leave half the lists too young to judge (the canary and the report alike)."""
DEMO_TAU = 0.1
"""The mSPRT's mixing standard deviation for the demo's canary (take-rate units)."""
VERDICT_GRACE_S = 120.0
"""After the live phase, how long the canary may still take before it ends inconclusive."""
DRAIN_STALL_S = 300.0
"""The consume stage fails when the consumer's lag has not shrunk for this long."""
DRAIN_LIMIT_S = 24 * 3600.0
"""Longest the consume stage waits in all: draining is judged by progress, not by the
stage timeout (45M lines at full scale take over half an hour on 2 cores)."""


@dataclass(frozen=True)
class DemoPlan:
    """Everything the demo needs to know, read once from the environment.

    The demo always runs on the local stack it starts: whatever the caller's shell says,
    every command it runs gets the local broker, the local Redis and the simulated
    user/movie API (``environ``), so a shell still set up for the course's broker cannot
    send simulated lines there. ``overridden`` lists the caller's values it replaced.
    """

    demo: DemoSettings
    stack: StackSettings
    sim: SimSettings
    api: ApiSettings
    consumer: ConsumerSettings
    train: TrainSettings
    serve: ServeSettings
    online: OnlineSettings
    dashboard: DashboardSettings
    environ: dict[str, str]
    overridden: dict[str, str]

    @classmethod
    def load(cls, *, full: bool = False, environ: dict[str, str] | None = None) -> DemoPlan:
        base = dict(os.environ if environ is None else environ)
        demo = load(DemoSettings, base)
        if full:  # the course's scale, except what the caller set explicitly
            from ops.demo.settings import FULL_DAYS, FULL_MOVIES, FULL_USERS

            wanted = {"demo_users": FULL_USERS, "demo_movies": FULL_MOVIES,
                      "demo_days": FULL_DAYS}
            demo = load(DemoSettings, base, **{k: v for k, v in wanted.items()
                                               if f"MOVIEREC_{k.upper()}" not in base})
        stack, api = load(StackSettings, base), load(ApiSettings, base)
        forced = {
            "MOVIEREC_KAFKA_BOOTSTRAP": stack.local_bootstrap,
            "MOVIEREC_REDIS_URL": stack.local_redis_url,
            "MOVIEREC_USER_API_URL": f"http://127.0.0.1:{api.sim_api_port}",
            "MOVIEREC_SIM_USERS": str(demo.demo_users),
            "MOVIEREC_SIM_MOVIES": str(demo.demo_movies),
        }
        overridden = {k: base[k] for k, v in forced.items()
                      if k in base and base[k] != v and not k.startswith("MOVIEREC_SIM_")}
        env = {**base, **forced}
        env.setdefault("MOVIEREC_LOOP_DIR", str(stack.var_dir / "loop"))
        env.setdefault("MOVIEREC_ONLINE_STATE_DIR", str(stack.var_dir / "online"))
        env.setdefault("MOVIEREC_SERVE_HOST", "127.0.0.1")
        env.setdefault("PYTHONUNBUFFERED", "1")
        return cls(demo=demo, stack=stack, sim=load(SimSettings, env), api=api,
                   consumer=load(ConsumerSettings, env), train=load(TrainSettings, env),
                   serve=load(ServeSettings, env), online=load(OnlineSettings, env),
                   dashboard=load(DashboardSettings, env), environ=env, overridden=overridden)

    @property
    def demo_dir(self) -> Path:
        return self.stack.var_dir / "demo"

    @property
    def log_dir(self) -> Path:
        return self.stack.var_dir / "log" / "demo"

    @property
    def run_dir(self) -> Path:
        return self.stack.var_dir / "run"

    def pid_file(self, service: str) -> Path:
        return stages_mod.pid_file(self.run_dir, service)

    def log_of(self, stage: str) -> Path:
        return stages_mod.log_file(self.log_dir, stage)

    @property
    def serve_url(self) -> str:
        return f"http://127.0.0.1:{self.serve.serve_port}"

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.dashboard.dashboard_port}/"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api.sim_api_port}"

    def env(self) -> dict[str, str]:
        """The environment of every command the demo runs (a copy)."""
        return dict(self.environ)


def movierec(*args: str) -> list[str]:
    """argv of a ``movierec`` subcommand run by this interpreter."""
    return [sys.executable, "-m", "movierec", *args]


def http_ok(url: str, timeout_s: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as answer:
            return answer.status == 200
    except OSError:
        return False


@dataclass
class Outcome:
    """What the stages produced, for the report."""

    offline_dir: Path
    live_since_ms: int = 0
    cycle: str = ""


def run(plan: DemoPlan, stages: Stages, *, reset_data: bool) -> Outcome:
    """Run every stage but the report; raises DemoError naming the failed stage."""
    env = plan.env()
    d = plan.demo
    outcome = Outcome(offline_dir=plan.demo_dir / "offline")

    def start_stack(note: Note) -> None:
        for status in stack.up(plan.stack):
            note(f"{status.name:10s} {status.state} on 127.0.0.1:{status.port}")
        for line in reset.reset(plan, force=reset_data):
            note(line)

    stages.step("stack", "Kafka, Redis and Prometheus on 127.0.0.1; a clean slate for the demo",
                start_stack)
    stages.service("world", f"the simulated world ({d.demo_users:,} users x {d.demo_movies:,} "
                   f"movies) and its user/movie API on {plan.api_url}",
                   movierec("sim", "api"), env=env,
                   ready=lambda: http_ok(f"{plan.api_url}/health"))
    stages.command("backfill", f"{d.demo_days:g} days of history into Kafka topic "
                   f"{plan.sim.kafka_topic}",
                   movierec("sim", "backfill", "--days", f"{d.demo_days:g}"), env=env)
    stages.service("consume", "the stream consumer drains the topic into Redis, the event "
                   "store and the DLQ (it keeps running)",
                   movierec("consume"), env=env, timeout_s=DRAIN_LIMIT_S,
                   ready=_drained(plan, stages))
    stages.command("train", "day one: the popularity baseline is trained and serves",
                   movierec("train", "--models", "popularity", "--report-dir",
                            str(plan.demo_dir / "day-one")), env=env)
    stages.service("serve", f"the recommendation API on {plan.serve_url}",
                   movierec("serve", "--port", str(plan.serve.serve_port), "--metrics-dir",
                            str(plan.run_dir / "serve-metrics")), env=env,
                   ready=lambda: http_ok(f"{plan.serve_url}/ready"))
    online_metrics = f"http://127.0.0.1:{plan.online.online_metrics_port}/metrics"
    stages.service("online", "online metrics: the log and the served records counted per arm "
                   "as graders count them (availability, take rate, cost), for Prometheus",
                   movierec("eval", "live", "--from-now"), env=env,
                   ready=lambda: http_ok(online_metrics))
    stages.service("dashboard", f"the team's dashboard on {plan.dashboard_url}: service, "
                   "data, model and alerts, live from Prometheus and the stores",
                   movierec("dashboard"), env=env,
                   ready=lambda: http_ok(f"{plan.dashboard_url}health"))
    loop_env = {**env, "MOVIEREC_LOOP_CHECK_S": f"{LOOP_CHECK_S:g}",
                "MOVIEREC_LOOP_CANARY_SHARE": f"{d.demo_canary_share:g}",
                "MOVIEREC_LOOP_CANARY_MAX_H": f"{(d.demo_live_s + VERDICT_GRACE_S) / 3600:.4f}",
                "MOVIEREC_LOOP_TAKE_WINDOW_MIN": f"{ONLINE_WINDOW_MIN:g}",
                "MOVIEREC_LOOP_MIN_USERS": "50",
                # the demo's canary weighs day one's popularity against a personalized
                # model, an effect of tens of points: the mSPRT's mixing scale is set to
                # match (docs/loop.md), where the default 0.02 suits a mature service
                "MOVIEREC_LOOP_TAU": f"{DEMO_TAU:g}",
                # and it asks whether the personalized model is better, not only "not
                # worse" (the margin suits a routine retrain against its champion)
                "MOVIEREC_LOOP_MARGIN": "0",
                "MOVIEREC_REPORTS_DIR": str(outcome.offline_dir.parent / "loop-reports"),
                "MOVIEREC_LOOP_PROMETHEUS_URL": plan.stack.local_prometheus_url}
    stages.service("loop", "the retraining loop: its first cycle trains four candidates, "
                   "gates them against the champion and starts a canary",
                   movierec("loop", "run"), env=loop_env,
                   ready=lambda: _canary_serving(plan, stages))
    outcome.live_since_ms = int(time.time() * 1000) - 1000
    stages.command(
        "live", f"simulated users call the service for {d.demo_live_s:g} s at "
        f"{d.demo_live_rate:g} req/s",
        movierec("sim", "live", "--url", plan.serve_url, "--rate", f"{d.demo_live_rate:g}",
                 "--duration", f"{d.demo_live_s:g}", "--start-day", f"{d.demo_days:g}",
                 "--truth", str(plan.demo_dir / "live-truth.jsonl")),
        env=env)
    stages.step("verdict", "the canary's verdict: promote or roll back on the online evidence",
                lambda note: _verdict(plan, outcome, note))
    return outcome


def _drained(plan: DemoPlan, stages: Stages, *,
             stall_s: float = DRAIN_STALL_S) -> Callable[[], bool]:
    """A readiness check that is true once the consumer group has committed every line,
    showing the lag as it shrinks. Draining has no deadline of its own (at full scale it
    takes over half an hour here); it fails when the lag has not shrunk for ``stall_s``."""
    bootstrap, topic = plan.consumer.kafka_bootstrap, plan.consumer.kafka_topic
    group = plan.consumer.consumer_group
    # the lag last shown and when; the smallest lag seen and when it last shrank
    shown_lag: int | None = None
    best: int | None = None
    shown_at, progress_at = 0.0, time.monotonic()

    def ready() -> bool:
        nonlocal shown_lag, shown_at, best, progress_at
        lag = group_lag(bootstrap, group, topic)
        now = time.monotonic()
        if lag is not None and (best is None or lag < best):
            best, progress_at = lag, now
        elif now - progress_at > stall_s:
            raise DemoError(f"the consumer committed nothing for {stall_s:.0f} s "
                            f"(lag {lag if lag is not None else 'unknown'})")
        if lag is not None and now - shown_at >= 5:
            rate = ""
            if shown_lag is not None and now > shown_at:
                rate = f" ({max(0, shown_lag - lag) / (now - shown_at):,.0f} lines/s)"
            stages.say(f"      lag {lag:,} lines{rate}")
            shown_at, shown_lag = now, lag
        if lag == 0:
            return True
        time.sleep(1.5)  # each check opens two Kafka clients: do not spin
        return False

    return ready


def _journal(plan: DemoPlan) -> Any:
    from recommender.loop.journal import Journal

    return Journal(Path(plan.environ["MOVIEREC_LOOP_DIR"]) / "journal.jsonl")


def _canary_serving(plan: DemoPlan, stages: Stages) -> bool:
    """Ready once the loop's first cycle runs a canary and the service answers from its
    arms (every worker polls the experiment file), 20 in a row over fresh connections."""
    cycles = _journal(plan).cycles()
    if not cycles or cycles[-1].stage.value in ("triggered", "trained"):
        time.sleep(1.0)
        return False
    cycle = cycles[-1]
    if cycle.canary_started is None:
        raise DemoError(f"the loop's first cycle ended without a canary: {cycle.result} "
                        f"({cycle.reason}); read {plan.log_of('loop')}")
    arms, in_a_row = {MODEL_ARM, CHALLENGER_ARM}, 0
    # users in random order: a walk of the ids is what a crawler does (movierec audit security)
    for user in random.Random(0).sample(range(1, 200), 199):
        with urllib.request.urlopen(f"{plan.serve_url}/recommend/{user}", timeout=5) as answer:
            answer.read()
            in_a_row = in_a_row + 1 if answer.headers.get("X-Arm") in arms else 0
        if in_a_row >= 20:
            stages.say(f"      canary of {cycle.challenger} ({cycle.share:.0%} of users) "
                       f"against the champion")
            return True
    time.sleep(0.5)
    return False


def _verdict(plan: DemoPlan, outcome: Outcome, note: Note) -> None:
    """Wait for the loop to close its cycle (the canary ends by its maximum duration at
    the latest), and note how it ended."""
    give_up = time.monotonic() + VERDICT_GRACE_S + 60
    while True:
        cycles = _journal(plan).cycles()
        if cycles and not cycles[-1].open:
            break
        if time.monotonic() > give_up:
            raise DemoError(f"the loop's cycle did not close; read {plan.log_of('loop')}")
        time.sleep(1.0)
    cycle = cycles[-1]
    outcome.cycle = cycle.id
    reports = sorted((outcome.offline_dir.parent / "loop-reports").glob("*/comparison.md"))
    if reports:  # the offline comparison of the cycle's candidates, for the report
        outcome.offline_dir = reports[-1].parent
    for entry in cycle.entries:
        detail = entry.get("reason") or entry.get("challenger") or entry.get("experiment") or ""
        note(f"{entry['at'][11:19]}  {entry['stage']:9s} {detail}")
    note(f"result: {cycle.result.value if cycle.result else '?'}")


def check_ports_free(plan: DemoPlan) -> None:
    """Fail early when a port the demo's services need is held by someone else."""
    from ops.stack import procs

    for name, port in (("world", plan.api.sim_api_port), ("serve", plan.serve.serve_port),
                       ("consume", plan.consumer.metrics_port),
                       ("online", plan.online.online_metrics_port),
                       ("dashboard", plan.dashboard.dashboard_port)):
        if port and procs.owned_pid(plan.pid_file(name)) is None and procs.port_open(port):
            raise DemoError(f"port {port} (for {name}) is taken by a process the demo did not "
                            f"start; stop it, or move it (see `movierec config`)")
