"""One logging set-up for every process: the threshold from ``--log-level`` or
``MOVIEREC_LOG_LEVEL``, the same line format, and the level handed to child processes.

The root command calls ``configure`` with the level it was given and exports it in
``MOVIEREC_LOG_LEVEL``, so whatever it starts (the demo's stages, the consumer's
members, gunicorn and its workers) logs at the same threshold; gunicorn's configuration
calls ``configure`` again in its master and in every forked worker, which would
otherwise have no handler at all and drop every line (the model watcher's included).
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass

from movierec.settings import SettingsError, setting

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
ENV = "MOVIEREC_LOG_LEVEL"
FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


@dataclass(frozen=True)
class LogSettings:
    """The logging threshold every process shares (read by ``level_from_env``; listed by
    ``movierec config``)."""

    log_level: str = setting("INFO", "Logging threshold of every process: DEBUG, INFO, WARNING "
                                     "or ERROR (--log-level sets it for one command and all "
                                     "it starts)")


def level_from_env(default: str = "INFO") -> str:
    """``MOVIEREC_LOG_LEVEL`` (any case), ``default`` when unset or empty;
    ``SettingsError`` naming the variable when it names no level."""
    value = os.environ.get(ENV, "").strip().upper()
    if not value:
        return default
    if value not in LEVELS:
        raise SettingsError(f"{ENV}={os.environ[ENV]!r}: choose from {', '.join(LEVELS)}")
    return value


def configure(level: str | None = None, *, export: bool = True) -> str:
    """Log to stderr at ``level`` (default: ``MOVIEREC_LOG_LEVEL``, else INFO), replacing
    any handler this process had; returns the level. kafka-python narrates every
    connection at INFO, so it is held at WARNING unless the level is DEBUG. ``export``
    puts the level in the environment for child processes."""
    chosen = (level or level_from_env()).upper()
    if chosen not in LEVELS:
        raise ValueError(f"log level {level!r}: choose from {', '.join(LEVELS)}")
    logging.basicConfig(level=chosen, stream=sys.stderr, format=FORMAT, force=True)
    logging.getLogger("kafka").setLevel(logging.DEBUG if chosen == "DEBUG" else logging.WARNING)
    if export:
        os.environ[ENV] = chosen
    return chosen
