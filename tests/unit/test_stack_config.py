"""What the stack writes and decides before anything runs: configs, states, refusals."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from movierec.settings import load
from ops import stack
from ops.stack.kafka_broker import KafkaBroker, server_properties
from ops.stack.procs import StackError
from ops.stack.prometheus_server import prometheus_config
from ops.stack.redis_server import RedisServer, redis_conf
from ops.stack.settings import StackSettings
from tests.conftest import free_ports


def _settings(tmp_path: Path, **extra: object) -> StackSettings:
    kafka, controller, redis_port, prom, manager, receiver = free_ports(6)
    ports = {"kafka_port": kafka, "kafka_controller_port": controller,
             "redis_port": redis_port, "prometheus_port": prom,
             "alertmanager_port": manager, "alert_receiver_port": receiver}
    return load(StackSettings, {}, var_dir=tmp_path, **{**ports, **extra})


def test_server_properties_fill_every_placeholder(tmp_path: Path) -> None:
    text = server_properties(kafka_port=1234, controller_port=1235, data_dir=tmp_path,
                             partitions=6)
    assert "${" not in text
    props = dict(line.split("=", 1) for line in text.splitlines()
                 if line and not line.startswith("#"))
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:1234,CONTROLLER://127.0.0.1:1235"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:1235"
    assert props["log.dirs"] == str(tmp_path)
    assert props["num.partitions"] == "6"
    assert props["process.roles"] == "broker,controller"
    assert props["offsets.topic.replication.factor"] == "1"
    assert props["auto.create.topics.enable"] == "false"


def test_broker_command_runs_kafka_from_the_fetched_jars(tmp_path: Path) -> None:
    broker = KafkaBroker(_settings(tmp_path, kafka_heap_mb=256))
    argv = broker.argv()
    assert argv[0] == "java" and "-Xmx256m" in argv
    assert argv[argv.index("-cp") + 1] == f"{broker.lib_dir}/*"
    assert argv[-2:] == ["kafka.Kafka", str(broker.properties_file)]
    assert broker.log_file == tmp_path.resolve() / "log" / "kafka" / "server.log"


def test_redis_conf_keeps_data_in_the_project_with_aof() -> None:
    conf = redis_conf(6400, "/x/redis")
    assert "port 6400" in conf and "bind 127.0.0.1" in conf
    assert "appendonly yes" in conf and "appendfsync everysec" in conf
    assert 'dir "/x/redis"' in conf


def test_prometheus_config_scrapes_every_target() -> None:
    text = prometheus_config({"recommender": ["127.0.0.1:8082"], "sim": ["a:1", "b:2"]},
                             scrape_s=5, self_port=9090, rule_glob="/r/*.yml")
    assert "scrape_interval: 5s" in text
    assert "- job_name: recommender" in text and "targets: ['127.0.0.1:8082']" in text
    assert "targets: ['a:1', 'b:2']" in text
    assert "targets: ['127.0.0.1:9090']" in text and "'/r/*.yml'" in text


def test_status_of_a_stack_that_never_ran(tmp_path: Path) -> None:
    rows = stack.status(_settings(tmp_path))
    assert [(r.name, r.state, r.healthy) for r in rows] == [
        ("kafka", "down", False), ("redis", "down", False), ("receiver", "down", False),
        ("alertmanager", "down", False), ("prometheus", "down", False)
    ]
    assert stack.down(_settings(tmp_path)) == []


def test_a_port_held_by_someone_else_is_refused(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        settings = _settings(tmp_path, redis_port=s.getsockname()[1])
        part = RedisServer(settings)
        assert part.status().state == "foreign"
        with pytest.raises(StackError, match="taken by a process movierec did not start"):
            part.up()
        assert part.down() is False  # and it is left alone


def test_a_missing_binary_says_how_to_install(tmp_path: Path) -> None:
    part = RedisServer(_settings(tmp_path, redis_server_bin="no-such-redis-server"))
    with pytest.raises(StackError, match="apt-get install redis-server"):
        part.up()


def test_unknown_part_names_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown parts"):
        stack.parts(_settings(tmp_path), ["zookeeper"])
