"""The root error type, and the one place that turns an error into what a person reads.

Every error the project raises on purpose derives from ``MovierecError``: a command
catches that one type and prints its message, instead of each command listing the error
classes of every package it calls. The packages keep their own subclasses (``DatasetError``,
``RegistryError``, ``ServingError``...), so a caller that can act on one kind still catches
that kind.

``friendly`` is the one mapping from an error to what a person reads: the root command
(``ops.cli``) applies it to every subcommand. It also names the usual outside causes in
one line (a stack that is not up, a file that is missing); anything else is a bug and
keeps its traceback.
"""

from __future__ import annotations


class MovierecError(Exception):
    """Root of every error the project raises on purpose; its message is written for the
    person running the command (what went wrong and, where known, what to do)."""


def friendly(exc: BaseException) -> str | None:
    """The one-line message for ``exc``, or None when it is a bug (show the traceback).

    Outside causes are named by type, never by parsing messages: a Redis or Kafka that
    does not answer, and files that are missing or not allowed.
    """
    if isinstance(exc, MovierecError):
        return str(exc)
    kind = type(exc)
    module = kind.__module__.split(".")[0]
    if module == "redis" and kind.__name__ in ("ConnectionError", "TimeoutError"):
        return f"Redis is not answering ({exc}); is the stack up? `movierec infra up` starts it"
    # kafka-python 3 raises KafkaTimeoutError when no broker answers at start (older
    # releases raised NoBrokersAvailable)
    if module == "kafka" and kind.__name__ in ("NoBrokersAvailable", "KafkaTimeoutError"):
        return f"Kafka is not answering ({kind.__name__}); is the stack up? `movierec infra up` starts it"
    if isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)):
        where = f": {exc.filename}" if exc.filename else ""
        return f"{exc.strerror or kind.__name__}{where}"
    return None
