"""Settings of the local stack: ports, paths and binaries of Kafka, Redis, Prometheus,
Alertmanager and the alert receiver."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from movierec.settings import KafkaSettings, SettingsError, setting

KAFKA_VERSION = "4.1.1"
"""The broker version; must match ops/kafka/pom.xml."""


@dataclass(frozen=True)
class StackSettings(KafkaSettings):
    """Where the stack keeps its state and which loopback ports it takes.

    The stack always binds 127.0.0.1. Clients elsewhere read MOVIEREC_KAFKA_BOOTSTRAP
    and MOVIEREC_REDIS_URL; if you move a port here, move those with it.
    """

    var_dir: Path = setting(Path("var"), "Folder for the stack's data, logs and pid files")
    kafka_lib_dir: Path = setting(
        Path("var/lib/kafka-" + KAFKA_VERSION), "Folder with the Kafka broker's jars (fetched by Maven)"
    )
    kafka_port: int = setting(9092, "Kafka broker (PLAINTEXT) port", min=1, max=65535)
    kafka_controller_port: int = setting(9093, "Kafka KRaft controller port", min=1, max=65535)
    kafka_partitions: int = setting(4, "Partitions of the event-log topic", min=1, max=256)
    kafka_heap_mb: int = setting(512, "Kafka broker JVM heap in MiB", min=128, max=8192)
    redis_port: int = setting(6379, "Redis port", min=1, max=65535)
    prometheus_port: int = setting(9090, "Prometheus web port", min=1, max=65535)
    prometheus_scrape_s: int = setting(5, "Prometheus scrape interval in seconds", min=1, max=300)
    alertmanager_port: int = setting(9094, "Alertmanager web port", min=1, max=65535)
    alert_receiver_port: int = setting(
        9095, "Port of the project's alert receiver (Alertmanager's webhook)", min=1, max=65535)
    alert_group_wait_s: int = setting(
        10, "Seconds Alertmanager waits to group a new alert with others before notifying",
        min=0, max=600)
    alert_forward_url: str = setting(
        "", "Chat or email webhook the receiver also posts each notification to, as "
            "{\"text\": ...} (Slack's incoming-webhook shape); empty: record only")
    scrape_targets: str = setting(
        "recommender=127.0.0.1:8082,stream_consumer=127.0.0.1:9101,simulator=127.0.0.1:9102,"
        "simulator_api=127.0.0.1:8080,loop=127.0.0.1:9103,online=127.0.0.1:9104",
        "Processes Prometheus scrapes, as job=host:port[,job=host:port]",
    )
    java_bin: str = setting("java", "Java 17+ executable for the broker")
    mvn_bin: str = setting("mvn", "Maven executable that fetches the broker's jars")
    redis_server_bin: str = setting("redis-server", "redis-server executable")
    prometheus_bin: str = setting("prometheus", "prometheus executable")
    alertmanager_bin: str = setting("prometheus-alertmanager", "Alertmanager executable")
    start_timeout_s: float = setting(90.0, "How long `infra up` waits for a part to answer", min=1)

    def __post_init__(self) -> None:
        ports = {
            "MOVIEREC_KAFKA_PORT": self.kafka_port,
            "MOVIEREC_KAFKA_CONTROLLER_PORT": self.kafka_controller_port,
            "MOVIEREC_REDIS_PORT": self.redis_port,
            "MOVIEREC_PROMETHEUS_PORT": self.prometheus_port,
            "MOVIEREC_ALERTMANAGER_PORT": self.alertmanager_port,
            "MOVIEREC_ALERT_RECEIVER_PORT": self.alert_receiver_port,
        }
        if len(set(ports.values())) != len(ports):
            raise SettingsError(f"two parts of the stack share a port: {ports}")
        self.targets()  # validates the format

    def targets(self) -> dict[str, list[str]]:
        """The scrape targets as {job: [host:port, ...]}."""
        jobs: dict[str, list[str]] = {}
        for item in filter(None, (p.strip() for p in self.scrape_targets.split(","))):
            job, eq, target = item.partition("=")
            host, colon, port = target.rpartition(":")
            if not (eq and job and host and colon and port.isdigit()):
                raise SettingsError(
                    f"MOVIEREC_SCRAPE_TARGETS: {item!r} is not job=host:port"
                )
            jobs.setdefault(job, []).append(target)
        return jobs

    @property
    def local_bootstrap(self) -> str:
        """Bootstrap address of the broker this stack runs."""
        return f"127.0.0.1:{self.kafka_port}"

    @property
    def local_redis_url(self) -> str:
        """URL of the Redis this stack runs."""
        return f"redis://127.0.0.1:{self.redis_port}/0"

    @property
    def local_prometheus_url(self) -> str:
        return f"http://127.0.0.1:{self.prometheus_port}"
