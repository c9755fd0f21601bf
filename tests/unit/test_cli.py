"""The movierec command's thin subcommands."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from ops.cli import main
from tests.conftest import free_ports

LINES = b"""2024-02-27T18:45:18,1,GET /data/m/the+matrix+1999/1.mpg
2024-02-27T18:45:19,1,GET /rate/the+matrix+1999=4
2024-02-27T18:45:20,2,GET /create_account
2024-02-27T18:45:21,x,GET /create_account
\xff\xfe
"""


def test_wire_check_counts_kinds_and_reasons(tmp_path: Path) -> None:
    log = tmp_path / "sample.log"
    log.write_bytes(LINES)
    result = CliRunner().invoke(main, ["wire", "check", str(log)])
    assert result.exit_code == 0, result.output
    counts = dict(line.split() for line in result.stdout.splitlines())
    assert counts == {"account": "1", "rate": "1", "watch": "1", "rejection": "2",
                      "bad_user_id": "1", "bad_encoding": "1"}
    assert "line 4: bad_user_id" in result.stderr


def test_wire_check_honours_the_rating_scale(tmp_path: Path) -> None:
    log = tmp_path / "ten.log"
    log.write_bytes(b"2024-02-27T18:45:19,1,GET /rate/the+matrix+1999=9\n")
    five = CliRunner().invoke(main, ["wire", "check", str(log)])
    ten = CliRunner().invoke(main, ["wire", "check", str(log)], env={"MOVIEREC_RATING_SCALE": "10"})
    assert "rating_out_of_range" in five.stdout
    assert ten.stdout.split() == ["rate", "1"]


def test_bad_setting_is_a_one_line_error() -> None:
    result = CliRunner().invoke(main, ["infra", "status"], env={"MOVIEREC_REDIS_PORT": "redis"})
    assert result.exit_code == 1
    assert "Error: MOVIEREC_REDIS_PORT='redis': expected an integer" in result.output


def test_status_of_nothing_running_exits_nonzero(tmp_path: Path) -> None:
    k, c, r, p = free_ports(4)
    env = {"MOVIEREC_VAR_DIR": str(tmp_path), "MOVIEREC_KAFKA_PORT": str(k),
           "MOVIEREC_KAFKA_CONTROLLER_PORT": str(c), "MOVIEREC_REDIS_PORT": str(r),
           "MOVIEREC_PROMETHEUS_PORT": str(p)}
    result = CliRunner().invoke(main, ["infra", "status"], env=env)
    assert result.exit_code == 1
    assert [line.split()[:2] for line in result.stdout.splitlines() if not line.startswith(" ")] == [
        ["kafka", "down"], ["redis", "down"], ["prometheus", "down"]
    ]
    assert f"log: {tmp_path.resolve()}/log/kafka/server.log" in result.stdout


def test_config_lists_variables_with_defaults() -> None:
    result = CliRunner().invoke(main, ["config"])
    assert result.exit_code == 0
    rows = {line.split()[0]: line.split()[1] for line in result.stdout.splitlines()}
    assert rows["MOVIEREC_KAFKA_PORT"] == "9092"
    assert rows["MOVIEREC_RATING_SCALE"] == "5"
    assert rows["MOVIEREC_KAFKA_TOPIC"] == "movielog"
