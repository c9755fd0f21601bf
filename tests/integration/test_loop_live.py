"""A bad challenger, end to end: the real service serves the canary to simulated users,
and the loop, reading only the two topics, rolls it back on its own.

The bad model is a classic data bug that an offline gate cannot see: its training rows
had their movie ids relabeled by a consistent permutation (a join against the wrong
catalog version), so measured on its own (equally relabeled) test period it looks as good
as any ALS, but online it recommends movies other than the ones it learned about. The
stand-in training hands it to the loop as the gate's choice; everything after that is
real: the registry, the experiment file the service polls, gunicorn workers serving both
arms, simulated users reacting to the lists and writing the log to Kafka, served records
on their topic, and the loop's sequential test and guardrails.
"""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from kafka import KafkaConsumer

from load_tests.server import ServiceProcess, staged_env
from load_tests.stage import START, StageSpec, stage
from movierec.kafka_admin import ensure_topic
from movierec.settings import load
from offline_eval.simulated import compact_sessions, history_table
from recommender.dataset import build_trainset_with_runtimes
from recommender.loop import adapters
from recommender.loop.cli import pass_once
from recommender.loop.cycle import Result, open_cycle
from recommender.loop.journal import Journal
from recommender.loop.runner import Trained
from recommender.loop.settings import LoopSettings
from recommender.models.als import ALSRecommender
from recommender.registry import Registry
from recommender.runtimes import RUNTIME_ARRAY
from recommender.serving.telemetry import ServedRecord, decode_served
from simulator.history import Events, HistoryGenerator
from simulator.live import LiveConfig, LiveRun
from simulator.producer import KafkaPythonSink
from simulator.world import World, WorldSpec
from tests.conftest import free_ports
from tests.integration.conftest import LocalStack
from tests.unit.test_registry import metadata

pytestmark = pytest.mark.integration

SPEC = StageSpec(users=4_000, movies=1_500, days=14.0, seed=23)
SHARE = 0.1
LIVE_S = 50.0
CLOCK_RATIO = 60.0  # simulated seconds per real second


def relabeled_als(spec: StageSpec) -> tuple[ALSRecommender, np.ndarray]:
    """ALS fitted on the staged world's history with every movie id replaced by another
    one (a fixed permutation of the catalog): the model and its runtime array."""
    world = World.build(WorldSpec(seed=spec.seed, n_users=spec.users, n_movies=spec.movies,
                                  describe_share=spec.describe_share))
    generator = HistoryGenerator(world, start=START, days=spec.days, seed=spec.seed)
    table = history_table(world, compact_sessions(Events.concat(list(generator.events()))),
                          start=START)
    ids = np.asarray(world.catalog.ids, dtype=object)
    wrong = dict(zip(ids.tolist(), np.random.default_rng(5).permutation(ids).tolist(), strict=True))
    column = table.schema.get_field_index("movie_id")
    relabeled = pa.array([wrong.get(m, m) for m in table["movie_id"].to_pylist()], pa.string())
    table = table.set_column(column, table.schema.field(column), relabeled)
    runtimes = {m: int(r) for m, r in zip(ids.tolist(), world.catalog.runtime.tolist(), strict=True)}
    train, runtime = build_trainset_with_runtimes(table, as_of=START + timedelta(days=spec.days),
                                                  runtimes=runtimes)
    model = ALSRecommender(factors=spec.als_factors, regularization=1.0, alpha=20.0, iterations=10)
    model.fit(train)
    return model, runtime


def served_records(bootstrap: str, topic: str) -> list[ServedRecord]:
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                             enable_auto_commit=False, consumer_timeout_ms=3_000)
    try:
        return [r for message in consumer for r in decode_served(message.value)[0]]
    finally:
        consumer.close()


@pytest.fixture
def canary(stack: LocalStack, unique: str, tmp_path: Path):
    """The staged world served by a real service, the bad challenger registered, and the
    loop's settings; yields (settings, service, registry, champion, bad)."""
    root = tmp_path
    prefix = f"lv{unique[-8:]}"
    staged = stage(SPEC, redis_url=stack.redis_url, prefix=prefix, registry_dir=root / "registry")
    registry = Registry(root / "registry")
    model, runtime = relabeled_als(SPEC)
    bad = registry.register(model, arrays={RUNTIME_ARRAY: runtime}, metadata=metadata()).version
    log_topic, served_topic = f"log-{unique}", f"served-{unique}"
    for topic in (log_topic, served_topic):
        ensure_topic(stack.bootstrap, topic, 2)
    settings = load(LoopSettings, kafka_bootstrap=stack.bootstrap, kafka_topic=log_topic,
                    served_topic=served_topic, registry_dir=root / "registry",
                    serve_experiments_file=root / "experiments.json", loop_dir=root / "loop",
                    store_dir=root / "store", loop_canary_share=SHARE, loop_min_users=30,
                    loop_tau=0.1, loop_take_window_min=10.0, loop_canary_max_h=1.0,
                    online_idle_s=5.0, loop_prometheus_url="")
    (port,) = free_ports(1)
    env = staged_env(redis_url=stack.redis_url, prefix=prefix, root=root,
                     kafka_bootstrap=stack.bootstrap, served_topic=served_topic,
                     MOVIEREC_SERVE_POLL_S="0.2")
    service = ServiceProcess(port=port, env=env, log=root / "serve.log", workers=2).start()
    try:
        yield settings, service, registry, staged.versions["als"], bad
    finally:
        service.stop()


def test_a_challenger_that_passed_the_gate_but_serves_poor_lists_is_rolled_back(
        stack: LocalStack, canary) -> None:
    settings, service, registry, champion, bad = canary
    journal = Journal(settings.loop_dir / "journal.jsonl")
    ports = adapters.ports(settings)
    ports.train = lambda _cycle: Trained(bad, {"ndcg@20": 0.2, "gate": "passed (stand-in)"})
    assert pass_once(settings, journal, ports, manual="bad challenger test")[-1] == "watch"

    stop, failures = threading.Event(), []

    def loop() -> None:  # the loop's own pass, every 2 s, as `movierec loop run` does
        try:
            while not stop.wait(2.0):
                pass_once(settings, journal, ports)
                if open_cycle(journal.cycles()) is None:
                    return
        except Exception as exc:  # reported by the test's thread
            failures.append(exc)

    looper = threading.Thread(target=loop, daemon=True)
    looper.start()
    world = World.build(WorldSpec(seed=SPEC.seed, n_users=SPEC.users, n_movies=SPEC.movies,
                                  describe_share=SPEC.describe_share))
    sink = KafkaPythonSink(settings.kafka_bootstrap, settings.kafka_topic)
    config = LiveConfig(service_url=service.url, rate_per_s=60.0, duration_s=LIVE_S,
                        clock_ratio=CLOCK_RATIO, new_user_share=0.0, start_day=SPEC.days,
                        seed=SPEC.seed)
    try:
        asyncio.run(LiveRun(world, config, sink, start=START + timedelta(days=SPEC.days)).run())
    finally:
        ended = datetime.now(UTC)
        sink.close()
        stop.set()
        looper.join(timeout=60)
    assert not failures, failures

    cycle = journal.cycles()[-1]
    assert cycle.result is Result.ROLLED_BACK, (cycle.stage, cycle.reason)
    # the test or the guardrail that decided is named in the journal
    assert cycle.reason.startswith(("mSPRT: challenger worse", "guardrail:")), cycle.reason
    assert registry.aliases()["champion"] == champion
    assert registry.get(bad).meta["canary"]["result"] == "rolled_back"
    assert registry.get(bad).meta["canary"]["numbers"]["take_rate"][0] > 0

    # no more than the canary's share of users saw it, and nobody after the rollback
    records = [r for r in served_records(settings.kafka_bootstrap, settings.served_topic)
               if r.status == 200]
    users = {r.user_id for r in records}
    saw_bad = {r.user_id for r in records if r.model_version == bad}
    bound = SHARE * len(users) + 3 * (len(users) * SHARE * (1 - SHARE)) ** 0.5
    assert 0 < len(saw_bad) <= bound, (len(saw_bad), len(users))
    decided = datetime.fromisoformat(str(cycle.entries[-1]["at"]))
    assert decided < ended - timedelta(seconds=5), "decided while users were still coming"
    grace_ms = 2_000  # the workers poll the experiment file every 0.2 s
    late = [r for r in records if r.model_version == bad
            and r.time_ms > decided.timestamp() * 1000 + grace_ms]
    assert not late, f"{len(late)} lists from the rolled-back model after the decision"
