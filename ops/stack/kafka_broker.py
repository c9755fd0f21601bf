"""Apache Kafka in single-node KRaft mode, run from jars that Maven fetches.

No Docker: ops/kafka/pom.xml names the broker (org.apache.kafka:kafka_2.13) and a
log4j2 binding; ``mvn dependency:copy-dependencies`` gathers the runtime classpath,
and the broker runs as ``java -cp '<lib>/*' kafka.Kafka server.properties``, which is
all that Kafka's own kafka-server-start.sh does.
"""

from __future__ import annotations

import hashlib
import shutil
import string
import subprocess
from importlib import resources
from pathlib import Path

from movierec.kafka_admin import broker_probe, ensure_topic
from ops.stack.part import Part
from ops.stack.procs import StackError

STORAGE_TOOL = "kafka.tools.StorageTool"
BROKER_MAIN = "kafka.Kafka"


def _resource(name: str) -> Path:
    return Path(str(resources.files("ops") / "kafka" / name))


def server_properties(*, kafka_port: int, controller_port: int, data_dir: Path,
                      partitions: int) -> str:
    """The broker's server.properties, from ops/kafka/server.properties.template."""
    template = string.Template(_resource("server.properties.template").read_text())
    return template.substitute(
        KAFKA_PORT=kafka_port, CONTROLLER_PORT=controller_port,
        DATA_DIR=str(data_dir), NUM_PARTITIONS=partitions,
    )


class KafkaBroker(Part):
    name = "kafka"

    @property
    def port(self) -> int:
        return self.settings.kafka_port

    @property
    def home(self) -> Path:
        return self.var / "kafka"

    @property
    def lib_dir(self) -> Path:
        return self.settings.kafka_lib_dir.resolve()

    @property
    def log_file(self) -> Path:
        return self.var / "log" / "kafka" / "server.log"

    @property
    def spawn_log(self) -> Path:
        return self.var / "log" / "kafka" / "stdout.log"

    @property
    def properties_file(self) -> Path:
        return self.home / "server.properties"

    # -- fetching --------------------------------------------------------------------

    def _pom_digest(self) -> str:
        return hashlib.sha256(_resource("pom.xml").read_bytes()).hexdigest()

    def fetched(self) -> bool:
        marker = self.lib_dir / ".fetched"
        return marker.is_file() and marker.read_text().strip() == self._pom_digest()

    def fetch(self) -> None:
        """Gather the broker's runtime jars with Maven (skipped when already there)."""
        if self.fetched():
            return
        if shutil.which(self.settings.mvn_bin) is None:
            raise StackError(
                f"kafka: {self.settings.mvn_bin!r} not found; Maven fetches the broker's jars "
                "from Maven Central (`apt-get install maven`, or set MOVIEREC_MVN_BIN)"
            )
        self.lib_dir.mkdir(parents=True, exist_ok=True)
        for old in self.lib_dir.glob("*.jar"):  # never mix two versions on a classpath
            old.unlink()
        cmd = [
            self.settings.mvn_bin, "-q", "-B", "-f", str(_resource("pom.xml")),
            "dependency:copy-dependencies", "-DincludeScope=runtime",
            f"-DoutputDirectory={self.lib_dir}",
        ]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        if done.returncode != 0 or not any(self.lib_dir.glob("kafka_2.13-*.jar")):
            raise StackError(
                f"kafka: fetching jars failed ({' '.join(cmd)}):\n"
                + (done.stdout + done.stderr)[-2000:]
            )
        (self.lib_dir / ".fetched").write_text(self._pom_digest() + "\n")

    # -- the Part interface ------------------------------------------------------------

    def check_installed(self) -> None:
        if shutil.which(self.settings.java_bin) is None:
            raise StackError(
                f"kafka: {self.settings.java_bin!r} not found; the broker needs Java 17+ "
                "(`apt-get install openjdk-17-jre-headless`, or set MOVIEREC_JAVA_BIN)"
            )
        self.fetch()

    def _java(self, main_class: str, *args: str) -> subprocess.CompletedProcess[str]:
        cmd = [self.settings.java_bin, "-cp", f"{self.lib_dir}/*", main_class, *args]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise StackError(f"kafka: {main_class} {' '.join(args)} failed:\n"
                             + (done.stdout + done.stderr)[-2000:])
        return done

    def prepare(self) -> None:
        data = self.home / "data"
        data.mkdir(parents=True, exist_ok=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        self.properties_file.write_text(server_properties(
            kafka_port=self.port, controller_port=self.settings.kafka_controller_port,
            data_dir=data, partitions=self.settings.kafka_partitions,
        ))
        if not (data / "meta.properties").exists():  # format once; later starts keep data
            cluster_id = self._java(STORAGE_TOOL, "random-uuid").stdout.strip().splitlines()[-1]
            self._java(STORAGE_TOOL, "format", "-t", cluster_id, "-c", str(self.properties_file))

    def argv(self) -> list[str]:
        heap = f"{self.settings.kafka_heap_mb}m"
        return [
            self.settings.java_bin, f"-Xmx{heap}",
            "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20", "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={_resource('log4j2.yaml')}",
            f"-Dkafka.logs.dir={self.log_file.parent}",
            "-cp", f"{self.lib_dir}/*", BROKER_MAIN, str(self.properties_file),
        ]

    def probe(self) -> str | None:
        return broker_probe(self.settings.local_bootstrap, timeout_ms=2000)

    def after_start(self) -> None:
        ensure_topic(self.settings.local_bootstrap, self.settings.kafka_topic,
                     self.settings.kafka_partitions)
