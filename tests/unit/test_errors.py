"""One root error type, and the one mapping from an error to what a person reads."""

from __future__ import annotations

import ast
import importlib
import inspect
from pathlib import Path

import click
import pytest
import redis
from click.testing import CliRunner
from kafka.errors import KafkaTimeoutError

from movierec.errors import MovierecError, friendly
from ops.cli import FriendlyGroup

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("movierec", "stores", "recommender", "stream_consumer", "offline_eval",
            "online_eval", "load_tests", "simulator", "ops")
SIGNALS = {"stream_consumer.consumer.Stopped", "movierec.kafka_records._Unexpected"}
"""Exceptions used as control flow inside one module, never shown to a person."""


def test_the_project_s_own_errors_are_named_by_their_message() -> None:
    assert friendly(MovierecError("the registry at var/x is locked")) == "the registry at var/x is locked"


def test_outside_causes_get_one_line_that_says_what_to_do() -> None:
    assert "Redis is not answering" in friendly(redis.ConnectionError("refused"))
    assert "movierec infra up" in friendly(redis.TimeoutError("slow"))
    assert "Kafka is not answering (KafkaTimeoutError)" in friendly(KafkaTimeoutError())
    missing = FileNotFoundError(2, "No such file or directory", "/nowhere/x.json")
    assert friendly(missing) == "No such file or directory: /nowhere/x.json"


@pytest.mark.parametrize("bug", [KeyError("k"), TypeError("t"), ZeroDivisionError(),
                                 redis.ResponseError("WRONGTYPE"), OSError(5, "I/O error")])
def test_a_bug_is_not_dressed_up(bug: BaseException) -> None:
    assert friendly(bug) is None


def _group() -> click.Group:
    @click.group(cls=FriendlyGroup)
    def root() -> None:
        pass

    @root.command()
    def ours() -> None:
        raise MovierecError("the event store at /tmp/s is empty")

    @root.command()
    def bug() -> None:
        raise KeyError("surprise")

    return root


def test_the_root_group_prints_ours_as_one_line_and_lets_a_bug_through() -> None:
    result = CliRunner().invoke(_group(), ["ours"])
    assert result.exit_code == 1
    assert result.output == "Error: the event store at /tmp/s is empty\n"
    crashed = CliRunner().invoke(_group(), ["bug"])
    assert crashed.exit_code == 1 and isinstance(crashed.exception, KeyError)


def _defined_exception_classes() -> list[str]:
    """module.Class of every class defined in the packages whose bases name an Error or
    Exception (read from the source, so nothing needs importing to be found)."""
    found = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ClassDef) and any(
                        ast.unparse(b).split(".")[-1].endswith(("Error", "Exception"))
                        for b in node.bases):
                    found.append(f"{module}.{node.name}")
    return found


def test_every_error_class_of_the_project_derives_from_the_root() -> None:
    names = _defined_exception_classes()
    assert len(names) >= 25  # the scan finds them (29 on six bases before the root existed)
    strays = []
    for name in names:
        module, cls = name.rsplit(".", 1)
        obj = getattr(importlib.import_module(module), cls)
        assert inspect.isclass(obj) and issubclass(obj, BaseException), name
        if not issubclass(obj, MovierecError) and name not in SIGNALS:
            strays.append(name)
    assert strays == []
