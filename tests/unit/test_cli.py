"""The movierec command's thin subcommands."""

from __future__ import annotations

from pathlib import Path

import click
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
    k, c, r, p, am, rc = free_ports(6)
    env = {"MOVIEREC_VAR_DIR": str(tmp_path), "MOVIEREC_KAFKA_PORT": str(k),
           "MOVIEREC_KAFKA_CONTROLLER_PORT": str(c), "MOVIEREC_REDIS_PORT": str(r),
           "MOVIEREC_PROMETHEUS_PORT": str(p), "MOVIEREC_ALERTMANAGER_PORT": str(am),
           "MOVIEREC_ALERT_RECEIVER_PORT": str(rc)}
    result = CliRunner().invoke(main, ["infra", "status"], env=env)
    assert result.exit_code == 1
    assert [line.split()[:2] for line in result.stdout.splitlines() if not line.startswith(" ")] == [
        ["kafka", "down"], ["redis", "down"], ["receiver", "down"], ["alertmanager", "down"],
        ["prometheus", "down"]
    ]
    assert f"log: {tmp_path.resolve()}/log/kafka/server.log" in result.stdout


def test_config_lists_variables_with_defaults() -> None:
    result = CliRunner().invoke(main, ["config"])
    assert result.exit_code == 0
    rows = {line.split()[0]: line.split()[1] for line in result.stdout.splitlines()}
    assert rows["MOVIEREC_KAFKA_PORT"] == "9092"
    assert rows["MOVIEREC_RATING_SCALE"] == "5"
    assert rows["MOVIEREC_KAFKA_TOPIC"] == "movielog"


def _commands(command: click.Command, path: tuple[str, ...] = ("movierec",)):
    yield path, command
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            yield from _commands(sub, (*path, name))


def test_every_option_has_help_and_json_is_a_flag_everywhere() -> None:
    """--json means one thing in every command (print JSON instead of text); a file goes
    to --out PATH; every option says what it does."""
    without_help, json_not_flag, out_not_path = [], [], []
    for path, command in _commands(main):
        for param in command.params:
            if not isinstance(param, click.Option) or param.hidden:
                continue
            name = f"{' '.join(path)} {param.opts[0]}"
            if not (param.help or "").strip():
                without_help.append(name)
            if "--json" in param.opts and not param.is_flag:
                json_not_flag.append(name)
            if "--out" in param.opts and not isinstance(param.type, click.Path):
                out_not_path.append(name)
    assert (without_help, json_not_flag, out_not_path) == ([], [], [])
    assert sum(1 for _, c in _commands(main) for p in c.params if "--json" in p.opts) >= 6


def test_version_is_the_package_s_one_version() -> None:
    from importlib.metadata import version

    import movierec

    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0
    assert result.output == f"movierec {movierec.__version__}\n"
    assert version("movierec") == movierec.__version__


def test_config_and_wire_check_speak_json(tmp_path: Path) -> None:
    import json

    rows = json.loads(CliRunner().invoke(main, ["config", "--json"]).output)
    assert {"variable", "default", "meaning"} == set(rows[0])
    log = tmp_path / "sample.log"
    log.write_bytes(LINES)
    got = json.loads(CliRunner().invoke(main, ["wire", "check", "--json", str(log)]).stdout)
    assert got == {"kinds": {"account": 1, "rate": 1, "rejection": 2, "watch": 1},
                   "rejections": {"bad_encoding": 1, "bad_user_id": 1}}


def test_loadtest_is_a_subcommand() -> None:
    result = CliRunner().invoke(main, ["loadtest", "--help"])
    assert result.exit_code == 0 and "--slo-min-rps" in result.output
