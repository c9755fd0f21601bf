"""The two scenarios about what the system learns from: a corrupt model version pushed
to champion, and drift injected into the event log."""

from __future__ import annotations

import json
import shutil
import threading
import time
from datetime import UTC, datetime, timedelta

from movierec.wire import rate_line
from ops.drills.core import SCENARIOS, Wanted
from ops.drills.faults import Fault
from ops.drills.probes import DrillError, SimLive
from recommender.registry import META_JSON, Registry
from recommender.versions import version_id

DRILL_REASON = "drill corrupt-model"
EPOCH = datetime(1970, 1, 1)


class CorruptModel(Fault):
    """A byte-for-byte copy of the champion registered under a new version id, with bytes
    flipped in its largest artifact file (its recorded sha256 stays the original's, as
    after a bad copy or a failing disk), then promoted to champion."""

    scenario = SCENARIOS["corrupt-model"]

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.registry = Registry(self.plan.serve.registry_dir)
        self.alias = self.plan.serve.serve_alias
        self.corrupt: str | None = None

    def healthy(self) -> str | None:
        champion = self.registry.aliases().get(self.alias)
        if champion is None or champion == self.corrupt:
            return f"the {self.alias} alias names {champion}"
        answer = self.demo.model_answer()
        if answer is None:
            return "no user is answered from the model path"
        if answer.get("x-arm") == "default" and answer.get("x-model-version") != champion:
            return f"the service serves {answer.get('x-model-version')}, the alias names {champion}"
        return None

    def inject(self) -> str:
        good = self.registry.get(self.alias)
        files = good.meta["artifact"]["files"]
        victim = max(files, key=lambda name: files[name])
        version = version_id(good.name, datetime.now(UTC), "dead" + good.version[-6:-4])
        target = self.registry.models_dir / version
        staging = self.registry.models_dir / f".drill-{version}"
        shutil.copytree(good.path, staging)
        data = bytearray((staging / victim).read_bytes())
        middle = len(data) // 2
        data[middle:middle + 64] = bytes(b ^ 0xFF for b in data[middle:middle + 64])
        (staging / victim).write_bytes(bytes(data))
        meta = {**good.meta, "version": version,
                "created": datetime.now(UTC).isoformat(timespec="seconds")}
        (staging / META_JSON).write_text(json.dumps(meta, indent=2, sort_keys=True))
        staging.rename(target)
        self.corrupt = version
        self.registry.promote(version, alias=self.alias, reason=f"{DRILL_REASON}: pushed")
        return f"{version} (a copy of {good.version}, 64 bytes flipped in {victim}) promoted"

    def recover(self) -> list[str]:
        reason = f"{DRILL_REASON}: {self.corrupt} does not load"
        self.demo.run(["models", "rollback", "--alias", self.alias, "--reason", reason])
        return [f'movierec models rollback --alias {self.alias} --reason "{reason}"']

    def restore(self) -> list[str]:
        done: list[str] = []
        if self.corrupt is None:
            return done
        if self.registry.aliases().get(self.alias) == self.corrupt:
            self.registry.rollback(self.alias, reason=f"{DRILL_REASON}: restore")
            done.append(f"rolled {self.alias} back from {self.corrupt}")
        if self.corrupt not in self.registry.aliases().values():
            shutil.rmtree(self.registry.models_dir / self.corrupt, ignore_errors=True)
            done.append(f"removed {self.corrupt} from the registry")
        return done


class Drift(Fault):
    """A schema change upstream, as the course staff inject them (``simulator.inject``'s
    ``schema_change``): from the injection on, about 20 rate lines a second whose time is
    written as epoch milliseconds, which the consumer rejects (``bad_timestamp``), so the
    drift monitor's rejection share leaves its reference. Simulated users keep the log's
    clock moving (``movierec sim live``, 60 simulated seconds a second). Recovery is
    automatic once the producer is fixed (the drill stops the injection when the alert
    arrives): the monitor's window (the last hour of event time, a minute of real time
    here) rolls past the rejected lines.

    Why not a shift of the ratings: the reference is the first hour of event time the
    consumer saw, and after a restart that hour can be the simulator's cold start (few
    rate lines, short sessions), so mix and rating features differ from it without any
    injection; no line of the simulator is ever rejected, so the rejection share's
    reference is 0 whatever the hour."""

    scenario = SCENARIOS["drift"]
    LINES_PER_S = 20.0
    CLOCK_RATIO = 60.0

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.sim: SimLive | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.injected_lines = 0

    FEATURES = ("rejection_share",)
    """The feature rejected lines move (one-sided z-test against the reference's share)."""
    WARM_UP_S = 90.0
    """Clean traffic before the injection: the consumer's reference (its first hour of event
    time, a minute here after a restart) and one full window hold no injected line."""

    def labels(self) -> Wanted:
        return {"MovierecDriftAlarm": {"feature": self.FEATURES}}

    def healthy(self) -> str | None:
        selector = f'movierec_drift_alarm{{feature=~"{"|".join(self.FEATURES)}"}}'
        got = self.demo.query(selector)
        if not got:
            return "no drift alarm series at Prometheus yet"
        if on := [r["metric"].get("feature", "?") for r in got if float(r["value"][1]) != 0]:
            return "drift alarm on: " + ", ".join(on)
        return None

    def start_traffic(self, bound_s: float) -> None:
        """Simulated users from the log's current day (its clock must move on)."""
        sim = self.plan.sim
        day = self.plan.demo.demo_days
        head = log_head(self.plan.consumer.kafka_bootstrap, self.plan.consumer.kafka_topic)
        if head is not None:
            day = max(day, (head - sim.start_time()) / timedelta(days=1))
        self.start_day = day
        self.sim = SimLive(self.demo, self.drill_dir / "sim-live.log", rate=10,
                           duration_s=bound_s + self.WARM_UP_S, start_day=day,
                           clock_ratio=self.CLOCK_RATIO).start()
        time.sleep(self.WARM_UP_S)  # before the injection's clock starts

    def sim_now(self) -> datetime:
        assert self.sim is not None
        elapsed = time.time() - self.sim.started_s
        return (self.plan.sim.start_time() + timedelta(days=self.start_day)
                + timedelta(seconds=elapsed * self.CLOCK_RATIO))

    def inject(self) -> str:
        if self.sim is None:
            raise DrillError("the drift drill starts its simulated users first")
        answer = self.demo.model_answer()
        if answer is None:
            raise DrillError("no answer from the service to take movie ids from")
        movies = [m for m in answer["body"].split(",") if m][:20]
        self._thread = threading.Thread(target=self._inject, args=(movies,), daemon=True,
                                        name="drill-drift")
        self._thread.start()
        return (f"schema change: rate lines stamped in epoch milliseconds into "
                f"{self.plan.consumer.kafka_topic}, {self.LINES_PER_S:g} lines/s")

    def _inject(self, movies: list[str]) -> None:
        from kafka import KafkaProducer

        producer = KafkaProducer(bootstrap_servers=self.plan.consumer.kafka_bootstrap)
        try:
            i = 0
            while not self._stop.is_set():
                user = 1 + i % 400
                millis = int((self.sim_now() - EPOCH).total_seconds() * 1000)
                line = rate_line(str(millis), user, movies[i % len(movies)], 4)
                producer.send(self.plan.consumer.kafka_topic, value=line.encode(),
                              key=str(user).encode())
                i += 1
                self.injected_lines = i
                self._stop.wait(1.0 / self.LINES_PER_S)
        finally:
            producer.close(timeout=5)

    def after_detection(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def restore(self) -> list[str]:
        self.after_detection()
        done: list[str] = []
        if self.sim is not None:
            self.sim.stop()
            done.append(f"stopped the simulated users ({self.sim.log})")
        return done + [f"{self.injected_lines} drifted lines were injected"]


def log_head(bootstrap: str, topic: str) -> datetime | None:
    """The newest event time among the last line of each partition (None: empty)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        consumer.assign(tps)
        ends = consumer.end_offsets(tps)
        for tp in tps:
            consumer.seek(tp, max(0, ends[tp] - 1))
        newest: datetime | None = None
        for records in consumer.poll(timeout_ms=3000).values():
            for record in records:
                try:
                    stamp = datetime.fromisoformat(record.value.split(b",", 1)[0].decode())
                except (ValueError, UnicodeDecodeError):
                    continue
                newest = stamp if newest is None or stamp > newest else newest
        return newest
    finally:
        consumer.close()
