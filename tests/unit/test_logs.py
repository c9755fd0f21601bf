"""One logging set-up, handed to child processes through MOVIEREC_LOG_LEVEL."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest

from movierec import logs
from movierec.settings import SettingsError


@pytest.fixture(autouse=True)
def restore_logging(monkeypatch):
    monkeypatch.delenv(logs.ENV, raising=False)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.getLogger("kafka").setLevel(logging.NOTSET)


def test_the_level_is_set_exported_and_kafka_held_back() -> None:
    assert logs.configure("warning") == "WARNING"
    assert logging.getLogger().level == logging.WARNING
    assert os.environ[logs.ENV] == "WARNING"
    assert logging.getLogger("kafka").level == logging.WARNING
    logs.configure("DEBUG")
    assert logging.getLogger("kafka").level == logging.DEBUG


def test_the_environment_gives_the_default_and_junk_is_refused_by_name(monkeypatch) -> None:
    monkeypatch.setenv(logs.ENV, "error")
    assert logs.configure() == "ERROR"
    monkeypatch.setenv(logs.ENV, "")
    assert logs.level_from_env() == "INFO"
    monkeypatch.setenv(logs.ENV, "loud")
    with pytest.raises(SettingsError, match="MOVIEREC_LOG_LEVEL='loud': choose from"):
        logs.level_from_env()
    with pytest.raises(ValueError, match="choose from"):
        logs.configure("loud")


def test_the_root_command_hands_its_level_to_a_child_process() -> None:
    """`movierec --log-level debug` exports the level: a child that configures itself
    from the environment logs a DEBUG line."""
    child = ("from movierec import logs; import logging; logs.configure(); "
             "logging.getLogger('probe').debug('child at debug')")
    script = ("import subprocess, sys; from ops.cli import main; "
              "sys.argv = ['movierec', '--log-level', 'debug', 'config'];\n"
              "try:\n    main()\nexcept SystemExit:\n    pass\n"
              f"subprocess.run([sys.executable, '-c', {child!r}], check=True)")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env={k: v for k, v in os.environ.items() if k != logs.ENV}, timeout=60)
    assert "probe: child at debug" in done.stderr, done.stderr[-2000:]
