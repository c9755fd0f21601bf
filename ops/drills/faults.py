"""One adapter per scenario: how its fault is injected, what "healthy" means, the
runbook's recovery (the commands run, as a person would type them) and the restore
that runs whatever happened (idempotent).

``healthy()`` returns None when the system is healthy for this scenario, else why not.
"""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Callable
from pathlib import Path

from movierec.kafka_admin import broker_probe, group_lag
from ops import stack
from ops.drills.core import SCENARIOS, Scenario, Wanted
from ops.drills.probes import Demo, DrillError, process_state, signal_group
from ops.stack import procs

CAUGHT_UP_LINES = 50
"""A consumer whose group is at most this many lines behind has caught up (traffic keeps
adding lines between the commit and the look)."""


class Fault:
    """The base: no labels to match, restore does nothing."""

    scenario: Scenario

    def __init__(self, demo: Demo, drill_dir: Path) -> None:
        self.demo, self.drill_dir = demo, drill_dir
        self.plan = demo.plan

    def labels(self) -> Wanted:
        """Alert name -> labels the detecting notification must carry."""
        return {}

    def healthy(self) -> str | None:
        raise NotImplementedError

    def inject(self) -> str:
        raise NotImplementedError

    def recover(self) -> list[str]:
        """Run the runbook's fix; the commands, in order (nothing for AUTOMATIC)."""
        return []

    def restore(self) -> list[str]:
        """Put back whatever the drill changed; what it did, in words."""
        return []

    def start_traffic(self, bound_s: float) -> None:
        """Traffic the scenario needs beyond the drill's light /recommend calls, for up to
        ``bound_s`` (the drift drill needs the log's clock to move)."""

    def after_detection(self) -> None:
        """Called once the alert arrived (the drift drill stops its injection here)."""

    def _model_path(self) -> str | None:
        return None if self.demo.model_answer() else "no user is answered from the model path"


class ServeKilled(Fault):
    scenario = SCENARIOS["serve-killed"]

    def labels(self) -> Wanted:
        return {"MovierecTargetDown": {"instance": f"127.0.0.1:{self.plan.serve.serve_port}"}}

    def _args(self) -> list[str]:
        return ["serve", "--port", str(self.plan.serve.serve_port), "--metrics-dir",
                str(self.plan.run_dir / "serve-metrics")]

    def healthy(self) -> str | None:
        return self._model_path()

    def inject(self) -> str:
        pid = self.demo.pid("serve")
        if pid is None or not signal_group(pid, signal.SIGKILL):
            raise DrillError("the demo's service is not running (var/run/demo-serve.pid)")
        return f"SIGKILL to the process group of gunicorn's master, pid {pid}"

    def recover(self) -> list[str]:
        _, command = self.demo.spawn("serve", self._args())
        return [command]

    def restore(self) -> list[str]:
        if self.demo.pid("serve") is not None:
            return []
        self.demo.spawn("serve", self._args())
        return ["the service was down: started it again"]


class RedisDown(Fault):
    scenario = SCENARIOS["redis-down"]

    def healthy(self) -> str | None:
        return self._model_path()

    def inject(self) -> str:
        if not stack.down(self.plan.stack, ["redis"]):
            raise DrillError("Redis was not running as part of the demo's stack")
        return "Redis stopped"

    def recover(self) -> list[str]:
        self.demo.run(["infra", "up", "redis"])
        return ["movierec infra up redis"]

    def restore(self) -> list[str]:
        if all(s.healthy for s in stack.status(self.plan.stack, ["redis"])):
            return []
        stack.up(self.plan.stack, ["redis"])
        return ["Redis was down: started it again"]


class ConsumerStalled(Fault):
    scenario = SCENARIOS["consumer-stalled"]

    def labels(self) -> Wanted:
        return {"MovierecTargetDown": {"instance": f"127.0.0.1:{self.plan.consumer.metrics_port}"}}

    def healthy(self) -> str | None:
        pid = self.demo.pid("consume")
        if pid is None:
            return "the consumer is not running"
        if process_state(pid) == "T":
            return "the consumer is stopped (SIGSTOP)"
        lag = group_lag(self.plan.consumer.kafka_bootstrap, self.plan.consumer.consumer_group,
                        self.plan.consumer.kafka_topic)
        if lag is None or lag > CAUGHT_UP_LINES:
            return f"the consumer's lag is {lag} lines"
        return None

    def inject(self) -> str:
        pid = self.demo.pid("consume")
        if pid is None or not signal_group(pid, signal.SIGSTOP):
            raise DrillError("the demo's consumer is not running (var/run/demo-consume.pid)")
        return f"SIGSTOP to the consumer, pid {pid}"

    def recover(self) -> list[str]:
        pid = self.demo.pid("consume")
        commands = []
        if pid is not None:
            signal_group(pid, signal.SIGTERM)
            signal_group(pid, signal.SIGCONT)  # a stopped process acts on SIGTERM once continued
            procs.terminate(self.plan.pid_file("consume"))  # SIGKILL after 20 s
            commands.append(f"kill -TERM {pid}; kill -CONT {pid}")
        _, command = self.demo.spawn("consume", ["consume"])
        return [*commands, command]

    def restore(self) -> list[str]:
        pid = self.demo.pid("consume")
        if pid is not None and process_state(pid) == "T":
            signal_group(pid, signal.SIGCONT)
            return [f"the consumer was still stopped: SIGCONT to pid {pid}"]
        if pid is None:
            self.demo.spawn("consume", ["consume"])
            return ["the consumer was down: started it again"]
        return []


class KafkaDown(Fault):
    scenario = SCENARIOS["kafka-down"]
    PUBLISHED = ('sum(increase(movierec_serve_telemetry_records_total'
                 '{sink="kafka",outcome="published"}[30s]))')

    def healthy(self) -> str | None:
        bootstrap = self.plan.consumer.kafka_bootstrap
        if self.demo.pid("consume") is None:
            return "the consumer is not running"
        if (why := broker_probe(bootstrap)) is not None:
            return f"the broker does not answer: {why}"
        got = self.demo.query(self.PUBLISHED)
        if not got or float(got[0]["value"][1]) <= 0:
            return "no served record published in the last 30 s"
        lag = group_lag(bootstrap, self.plan.consumer.consumer_group, self.plan.consumer.kafka_topic)
        if lag is None or lag > CAUGHT_UP_LINES:
            return f"the consumer's lag is {lag} lines"
        return None

    def inject(self) -> str:
        if not stack.down(self.plan.stack, ["kafka"]):
            raise DrillError("Kafka was not running as part of the demo's stack")
        return "the Kafka broker stopped"

    def recover(self) -> list[str]:
        self.demo.run(["infra", "up", "kafka"], timeout_s=240)
        commands = ["movierec infra up kafka"]
        if self.demo.pid("consume") is None:  # the runbook's second step
            commands.append(self.demo.spawn("consume", ["consume"])[1])
        return commands

    def restore(self) -> list[str]:
        done = []
        if not all(s.healthy for s in stack.status(self.plan.stack, ["kafka"])):
            stack.up(self.plan.stack, ["kafka"])
            done.append("Kafka was down: started it again")
        if self.demo.pid("consume") is None:  # it may give up on a broker gone too long
            self.demo.spawn("consume", ["consume"])
            done.append("the consumer had exited: started it again")
        return done


def fault_for(name: str, demo: Demo, drill_dir: Path) -> Fault:
    """The adapter of scenario ``name``."""
    from ops.drills.faults_model import CorruptModel, Drift

    kinds: dict[str, type[Fault]] = {
        "serve-killed": ServeKilled, "redis-down": RedisDown,
        "consumer-stalled": ConsumerStalled, "kafka-down": KafkaDown,
        "corrupt-model": CorruptModel, "drift": Drift}
    return kinds[name](demo, drill_dir)


def wait_for(check: Callable[[], str | None], bound_s: float, interval_s: float = 1.0) -> bool:
    """Poll ``check()`` (None: passed) until it passes (True) or ``bound_s`` runs out; a
    check that raises (a part still down) has not passed."""
    deadline = time.monotonic() + bound_s
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if check() is None:
                return True
        time.sleep(interval_s)
    return False
