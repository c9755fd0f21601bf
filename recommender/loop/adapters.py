"""The loop's ports to the real world: the training pipeline, the registry, the experiment
file, the Kafka topics (the canary's numbers), the event store (the log's clock) and
Prometheus (the consumer's drift alarm).

The canary's numbers are recomputed from the topics at every look: both topics are read
from the canary's start (Kafka record timestamps, ``written_since_ms``) to their ends now,
so a restarted loop needs no state of its own to judge a canary, and the figures are the
graders' own reading of the log. The cost grows with the canary's length; a canary is
hours long by design (``MOVIEREC_LOOP_CANARY_MAX_H``).
"""

from __future__ import annotations

import logging
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import httpx

from online_eval.join import DEFAULT_FOLLOW_UP, OutcomeJoin
from online_eval.sequential import ArmHealth, ArmSample
from recommender.loop import effects
from recommender.loop.cycle import Cycle, Result
from recommender.loop.runner import CanaryView, Ports, Trained
from recommender.loop.settings import LoopSettings
from recommender.loop.triggers import Signals
from recommender.registry import Registry
from recommender.serving.experiments import ExperimentStore
from stores.online import OnlineStore

if TYPE_CHECKING:
    from recommender.training.pipeline import RunReport

log = logging.getLogger(__name__)

ARMS = ("champion", "challenger")
"""The canary's arm names (``effects.start_canary``)."""


def log_time(settings: LoopSettings) -> datetime | None:
    """The latest event time in the event store (naive, as the log writes it), or None
    when it holds nothing yet."""
    from stores.event_store import EventStore

    files = EventStore(settings.store_dir, settings.kafka_topic).files()
    return max((f.time_max for f in files), default=None)


def _prometheus(settings: LoopSettings, query: str) -> list[dict] | None:
    """The result vector of an instant query, or None when Prometheus cannot be asked
    (logged: a missing monitor must not stop the schedule)."""
    if not settings.loop_prometheus_url:
        return None
    try:
        response = httpx.get(f"{settings.loop_prometheus_url}/api/v1/query",
                             params={"query": query}, timeout=5.0)
        response.raise_for_status()
        result = response.json()["data"]["result"]
    except (httpx.HTTPError, ValueError, KeyError) as exc:
        log.warning("no answer from %s to %s: %s", settings.loop_prometheus_url, query, exc)
        return None
    return list(result)


def drifting(settings: LoopSettings) -> tuple[str, ...]:
    """Features whose drift alarm is on (the consumer's ``movierec_drift_alarm``)."""
    result = _prometheus(settings, "movierec_drift_alarm == 1") or []
    return tuple(sorted({r["metric"].get("feature", "?") for r in result}))


def decay_queries(version: str, window: str) -> dict[str, str]:
    """PromQL of the champion version's (taken, eligible) lists over the last ``window``
    and the one before it, from the live online metrics (``movierec eval live``)."""
    def total(metric: str, offset: str = "") -> str:
        return (f'sum(increase(movierec_online_lists_{metric}_total{{version="{version}"}}'
                f"[{window}]{offset}))")
    return {"recent_taken": total("taken"), "recent_eligible": total("eligible"),
            "base_taken": total("taken", f" offset {window}"),
            "base_eligible": total("eligible", f" offset {window}")}


def take_windows(settings: LoopSettings, version: str | None,
                 window: str) -> tuple[tuple[int, int], tuple[int, int]]:
    """The champion's ((taken, eligible) recent, (taken, eligible) before) for the decay
    trigger; zeros when unknown (no champion, no live metrics, no Prometheus)."""
    if version is None:
        return (0, 0), (0, 0)
    values = {}
    for name, query in decay_queries(version, window).items():
        result = _prometheus(settings, query)
        values[name] = round(float(result[0]["value"][1])) if result else 0
    return ((values["recent_taken"], values["recent_eligible"]),
            (values["base_taken"], values["base_eligible"]))


def signals(settings: LoopSettings, cycles: list[Cycle], *,
            champion: str | None = None) -> Signals:
    """What the triggers see now: the log's clock (the event store), the drift alarm and
    the champion version's take rate over the last ``MOVIEREC_LOOP_DECAY_WINDOW`` and the
    one before (Prometheus, from ``movierec eval live``)."""
    last = next((c.log_time for c in reversed(cycles) if c.log_time is not None), None)
    recent, base = take_windows(settings, champion, settings.loop_decay_window)
    return Signals(log_time=_aware(log_time(settings)), last_cycle_log_time=last,
                   drifting=drifting(settings), recent=recent, baseline=base)


def _aware(t: datetime | None) -> datetime | None:
    return t if t is None or t.tzinfo is not None else t.replace(tzinfo=UTC)


def train(settings: LoopSettings, registry: Registry) -> Trained:
    """Train every candidate on a fresh snapshot, register and gate them without
    promoting; the challenger is ``choose_challenger``'s."""
    from recommender.training.inputs import load_inputs
    from recommender.training.pipeline import Pipeline

    inputs = load_inputs(settings)
    report = Pipeline(settings, registry=registry).run(inputs, register=True, promote=False)
    trained = choose_challenger(report, settings.gate_metric,
                                has_champion=effects.CHAMPION_ALIAS in registry.aliases())
    return Trained(trained.challenger, {"snapshot": inputs.data.get("snapshot_id"),
                                        "shilling": inputs.data.get("shilling"),
                                        **trained.numbers})


def choose_challenger(report: RunReport, metric: str, *, has_champion: bool) -> Trained:
    """The best registered candidate that passed the gate (the pipeline's own rule for
    promotion); the baseline when nothing serves yet and nothing passed; else None."""
    from recommender.training.pipeline import BASELINE

    scores = {c.name: c.row.get("metrics", {}).get(metric) for c in report.candidates}
    passing = [c for c in report.candidates if c.gate is not None and c.gate["passed"]
               and c.version is not None]
    best = max(passing, key=lambda c: c.row["metrics"][metric], default=None)
    if best is None and not has_champion:
        # nothing serves yet and nothing beat the baseline: the baseline serves, as the
        # pipeline's own promotion would have it (a cycle must not leave a service empty)
        best = next((c for c in report.candidates if c.name == BASELINE and c.version), None)
    numbers = {"metric": metric, "scores": scores, "passed": [c.name for c in passing],
               "test_users": report.test_users}
    return Trained(None if best is None else best.version, numbers)


def look(settings: LoopSettings, store: OnlineStore | None, cycle: Cycle) -> CanaryView:
    """The canary's numbers since it started, from both topics (module docstring)."""
    from online_eval.source import ServedTally, read_log, read_topic

    assert cycle.canary_started is not None
    since_ms = int(cycle.canary_started.timestamp() * 1000)
    timeout_s, idle_s = settings.online_read_timeout_s, settings.online_idle_s
    tally = ServedTally()
    read_topic(settings.kafka_bootstrap, settings.served_topic,
               lambda value, _ms: tally.add_raw(value), timeout_s=timeout_s, idle_s=idle_s,
               written_since_ms=since_ms)
    window = timedelta(minutes=settings.loop_take_window_min)
    join = OutcomeJoin(tally.arm_of, per_user=True, window=window,
                       follow_up=max(DEFAULT_FOLLOW_UP, window))
    read_log(settings.kafka_bootstrap, settings.kafka_topic, join,
             rating_scale=settings.rating_scale, timeout_s=timeout_s, idle_s=idle_s,
             written_since_ms=since_ms)
    outcomes = join.finish()
    serving = tally.summary()
    costs = _license_costs(store, {m for c in join.plays.values() for m in c})
    health = []
    for arm in ARMS:
        s, o = serving.get(arm), outcomes.get(arm)
        plays: Counter[str] = join.plays.get(arm, Counter())
        requests = o.requests if o is not None else 0
        health.append(ArmHealth(
            requests=requests, errors=requests - (o.successes if o is not None else 0),
            served=s.answers if s is not None else 0,
            fallbacks=s.fallbacks if s is not None else 0,
            p99_ms=(s.latency_p99_ms or 0.0) if s is not None else 0.0,
            plays=sum(plays.values()),
            cost=sum(n * costs.get(m, 0.0) for m, n in plays.items())))
    return CanaryView(ArmSample.of(join.user_take_rates(ARMS[0])),
                      ArmSample.of(join.user_take_rates(ARMS[1])), (health[0], health[1]))


def _license_costs(store: OnlineStore | None, movies: set[str]) -> dict[str, float]:
    """License cost per play (USD) of ``movies`` from the enriched metadata; a movie
    without one costs 0 (offerings before license costs)."""
    if not movies or store is None:
        return {}
    meta = store.movies(sorted(movies))
    out = {}
    for movie, fields in meta.items():
        try:
            out[movie] = float(fields.get("license_cost", 0) or 0)
        except ValueError:
            out[movie] = 0.0
    return out


def ports(settings: LoopSettings, *, online_store: OnlineStore | None = None) -> Ports:
    """The real ports (``online_store``: where license costs are read; None: no costs)."""
    registry = Registry(settings.registry_dir)
    experiments = ExperimentStore(settings.serve_experiments_file)

    def start(cycle: str, challenger: str, share: float) -> datetime | None:
        return effects.start_canary(experiments, cycle=cycle, challenger=challenger,
                                    share=share, at=datetime.now(UTC)).start

    def promote(cycle: Cycle, reason: str) -> None:
        assert cycle.challenger is not None
        effects.promote(registry, experiments, cycle=cycle.id, challenger=cycle.challenger,
                        reason=reason)

    def retire(cycle: Cycle, result: Result, reason: str, numbers: dict) -> None:
        assert cycle.challenger is not None
        effects.retire(registry, experiments, cycle=cycle.id, challenger=cycle.challenger,
                       result=result.value, reason=reason, numbers=numbers)

    return Ports(champion=lambda: registry.aliases().get(effects.CHAMPION_ALIAS),
                 train=lambda _cycle: train(settings, registry), start_canary=start,
                 look=lambda cycle: look(settings, online_store, cycle), promote=promote,
                 retire=retire)
