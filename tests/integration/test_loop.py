"""The retraining loop against the real broker: its canary reads both topics, and the
cycle promotes a better challenger, rolls back a worse one, stops at once on a guardrail,
survives a restart mid-canary, and a crash before or after any of its effects, with the
registry and the experiment file real too. Training is a stand-in here (the demo's
end-to-end test trains for real; ``test_loop_live.py`` runs the canary on a real service
with simulated users)."""

from __future__ import annotations

import contextlib
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from movierec.kafka_admin import ensure_topic
from movierec.settings import load
from movierec.wire import recommendation_line, watch_line
from recommender.loop import adapters
from recommender.loop.cli import pass_once
from recommender.loop.cycle import Result, Stage, open_cycle
from recommender.loop.journal import Journal
from recommender.loop.runner import Ports, Trained
from recommender.loop.settings import LoopSettings
from recommender.registry import Registry
from recommender.serving.experiments import ExperimentStore, assign
from recommender.serving.telemetry import ServedRecord
from tests.integration.conftest import LocalStack
from tests.integration.test_online_eval import produce
from tests.unit.test_registry import metadata, trained

pytestmark = pytest.mark.integration

T0 = datetime(2025, 3, 1, 12, 0)
A, B = "a+2001", "b+2002"


@pytest.fixture
def world(stack: LocalStack, unique: str, tmp_path: Path):
    settings = load(LoopSettings, kafka_bootstrap=stack.bootstrap, kafka_topic=f"log-{unique}",
                    served_topic=f"served-{unique}", registry_dir=tmp_path / "registry",
                    serve_experiments_file=tmp_path / "registry" / "experiments.json",
                    loop_dir=tmp_path / "loop", store_dir=tmp_path / "store",
                    loop_canary_share=0.5, loop_min_users=100, online_idle_s=5.0,
                    loop_prometheus_url="")
    for topic in (settings.kafka_topic, settings.served_topic):  # as a running service has
        ensure_topic(stack.bootstrap, topic, 2)
    registry = Registry(settings.registry_dir, resolve=lambda name: type(trained(1)))
    old = registry.register(trained(1), metadata=metadata()).version
    new = registry.register(trained(2), metadata=metadata()).version
    registry.promote(old, reason="first")
    ports = adapters.ports(settings)
    ports.train = lambda _cycle: Trained(new, {"ndcg@20": 0.2})
    return settings, registry, ports, old, new


def traffic(settings: LoopSettings, *, take: dict[str, float], latency_ms: dict[str, float],
            users: range = range(1, 421)) -> None:
    """Each user gets one list (served record + log line); a share ``take[arm]`` of each
    arm's users starts a listed film within the window."""
    _, experiment = ExperimentStore(settings.serve_experiments_file).read()
    assert experiment is not None
    served, log = [], []
    counters: dict[str, int] = {}
    for user in users:
        arm = assign(user, experiment, datetime.now(UTC))
        assert arm is not None
        k = counters[arm.name] = counters.get(arm.name, 0) + 1
        record = ServedRecord(request_id=f"{user:032x}", time_ms=1_000 + user, user_id=user,
                              arm=arm.name, model_version=arm.model, items=(A, B), path="model",
                              fallback=None, latency_ms=latency_ms[arm.name], status=200)
        served.append((user, record.to_json()))
        at = T0 + timedelta(seconds=user)
        log.append((user, recommendation_line(at.isoformat(timespec="milliseconds"), user,
                                              "svc:8082", 200, f"{A}, {B}", 30).encode()))
        if (k % 100) < take[arm.name] * 100:
            start = at + timedelta(minutes=2)
            log.append((user, watch_line(start.isoformat(timespec="milliseconds"), user, A,
                                         0).encode()))
    log.append((0, watch_line((T0 + timedelta(hours=6)).isoformat(), 0, B, 0).encode()))
    produce(settings.kafka_bootstrap, settings.served_topic, served)
    produce(settings.kafka_bootstrap, settings.kafka_topic, log)


def test_a_better_challenger_is_promoted_from_the_real_topics(world) -> None:
    settings, registry, ports, old, new = world
    journal = Journal(settings.loop_dir / "journal.jsonl")
    done = pass_once(settings, journal, ports, manual="integration test")
    assert done == ["wait", "train", "start_canary", "watch"]
    cycle = journal.cycles()[-1]
    assert cycle.stage is Stage.LOOKED, "no users yet: the canary goes on"
    assert ExperimentStore(settings.serve_experiments_file).read()[1] is not None

    traffic(settings, take={"champion": 0.2, "challenger": 0.6},
            latency_ms={"champion": 20.0, "challenger": 25.0})
    assert pass_once(settings, journal, ports) == ["watch", "carry_out"]
    cycle = journal.cycles()[-1]
    assert cycle.result is Result.PROMOTED and "challenger better" in cycle.reason
    assert registry.aliases()["champion"] == new
    assert ExperimentStore(settings.serve_experiments_file).read()[1] is None
    look = [e for e in cycle.entries if e["stage"] == "looked"][-1]
    assert sum(look["numbers"]["users"]) == 420
    assert look["numbers"]["take_rate"][1] > look["numbers"]["take_rate"][0] + 0.3
    assert registry.get(new).meta["canary"]["result"] == "promoted"


def test_a_worse_challenger_is_rolled_back_after_a_restart_mid_canary(world) -> None:
    settings, registry, ports, old, new = world
    journal = Journal(settings.loop_dir / "journal.jsonl")
    pass_once(settings, journal, ports, manual="integration test")
    traffic(settings, take={"champion": 0.6, "challenger": 0.1},
            latency_ms={"champion": 20.0, "challenger": 25.0})
    # a new process: nothing but the files and the topics carry over
    restarted = adapters.ports(settings)
    restarted.train = ports.train
    assert pass_once(settings, Journal(journal.path), restarted) == ["watch", "carry_out"]
    cycle = journal.cycles()[-1]
    assert cycle.result is Result.ROLLED_BACK and "challenger worse" in cycle.reason
    assert registry.aliases()["champion"] == old
    assert registry.get(new).meta["canary"]["result"] == "rolled_back"
    assert ExperimentStore(settings.serve_experiments_file).read()[1] is None


def test_a_slow_challenger_is_stopped_by_the_latency_guardrail(world) -> None:
    settings, registry, ports, old, new = world
    settings = replace(settings, loop_max_p99_ms=200.0)
    journal = Journal(settings.loop_dir / "journal.jsonl")
    pass_once(settings, journal, ports, manual="integration test")
    # 840 users: about 420 challenger answers (+-15), well past the 200 the p99 needs
    # before it is judged (online_eval.sequential); 420 users left it a coin toss at 210
    traffic(settings, take={"champion": 0.2, "challenger": 0.9},
            latency_ms={"champion": 20.0, "challenger": 450.0}, users=range(1, 841))
    pass_once(settings, journal, ports)
    cycle = journal.cycles()[-1]
    assert cycle.result is Result.ROLLED_BACK
    assert cycle.reason == "guardrail: p99 latency 450 ms > 200 ms"
    assert registry.aliases()["champion"] == old


class Crash(BaseException):
    """The process dies here: not an Exception, so no handler of the loop's catches it,
    as none runs after a SIGKILL (``test_loop_process.py`` kills a real one)."""


def crashing(ports: Ports, pending: list[tuple[str, str]]) -> Ports:
    """``ports`` whose port ``pending[0][0]`` dies ``pending[0][1]`` ("before" or "after")
    its real work, once: ``pending`` is emptied when it does."""
    if not pending:
        return ports
    name, when = pending[0]
    real = getattr(ports, name)

    def dying(*args: object) -> object:
        if when == "after":
            real(*args)
        pending.clear()
        raise Crash(f"{when} {name}")

    return replace(ports, **{name: dying})


EFFECTS = [(port, when) for port in ("train", "start_canary", "look", "promote", "retire")
           for when in ("before", "after")]


@pytest.mark.parametrize(("port", "when"), EFFECTS)
def test_a_crash_before_or_after_any_effect_resumes_to_the_same_end(world, port: str,
                                                                    when: str) -> None:
    """Each round is a new process (fresh ports from the files and the topics); one dies
    at the given point. Between rounds the service always has a champion and an
    experiment is either none or the cycle's canary: never an alias half moved."""
    settings, registry, ports, old, new = world
    promoting = port != "retire"
    pending = [(port, when)]
    journal_path, sent = settings.loop_dir / "journal.jsonl", False
    for round_ in range(12):
        fresh = adapters.ports(settings)
        fresh.train = ports.train
        with contextlib.suppress(Crash):
            pass_once(settings, Journal(journal_path), crashing(fresh, pending),
                      manual="integration test" if round_ == 0 else None)
        assert registry.aliases()["champion"] in (old, new)
        _, experiment = ExperimentStore(settings.serve_experiments_file).read()
        assert experiment is None or experiment.id.startswith("canary-")
        if experiment is not None and not sent:
            traffic(settings, take={"champion": 0.2 if promoting else 0.6,
                                    "challenger": 0.6 if promoting else 0.1},
                    latency_ms={"champion": 20.0, "challenger": 25.0})
            sent = True
        cycles = Journal(journal_path).cycles()
        if cycles and open_cycle(cycles) is None:
            break
    assert not pending, "the crash happened"
    cycles = Journal(journal_path).cycles()
    assert len(cycles) == 1, "every restart resumed the cycle; none started another"
    cycle = cycles[-1]
    assert cycle.result is (Result.PROMOTED if promoting else Result.ROLLED_BACK), cycle.reason
    assert registry.aliases()["champion"] == (new if promoting else old)
    assert ExperimentStore(settings.serve_experiments_file).read()[1] is None
    assert registry.get(new).meta["canary"]["result"] == ("promoted" if promoting else "rolled_back")
