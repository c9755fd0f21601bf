"""Typed settings read from ``MOVIEREC_*`` environment variables.

Each process declares one frozen dataclass whose fields are its settings; ``load``
fills it from the environment (field ``kafka_port`` <- ``MOVIEREC_KAFKA_PORT``),
converts each value to the field's type and checks its bounds, and fails with a
``SettingsError`` that names the variable. Nothing is read at import time.

Settings shared by several processes (where Kafka and Redis are) live here as small
mixin dataclasses, so a field has the same variable and default everywhere.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from movierec.errors import MovierecError

PREFIX = "MOVIEREC_"

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T", bound="DataclassInstance")


class SettingsError(MovierecError, ValueError):
    """A setting has a value the process cannot run with; the message names it."""


def setting(
    default: Any,
    help: str,
    *,
    min: float | None = None,
    max: float | None = None,
    choices: tuple[Any, ...] | None = None,
) -> Any:
    """Declare a settings field with its documentation and bounds."""
    return dataclasses.field(
        default=default,
        metadata={"help": help, "min": min, "max": max, "choices": choices},
    )


def env_name(field_name: str) -> str:
    """``kafka_port`` -> ``MOVIEREC_KAFKA_PORT``."""
    return PREFIX + field_name.upper()


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _convert(raw: str, kind: type) -> Any:
    text = raw.strip()
    if kind is bool:
        low = text.lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise ValueError("expected one of 1/0, true/false, yes/no, on/off")
    if kind is int:
        try:
            return int(text)
        except ValueError:
            raise ValueError("expected an integer") from None
    if kind is float:
        try:
            return float(text)
        except ValueError:
            raise ValueError("expected a number") from None
    if kind is Path:
        if not text:
            raise ValueError("expected a path")
        return Path(text).expanduser()
    return raw


def _check(value: Any, meta: Mapping[str, Any]) -> None:
    lo, hi, choices = meta.get("min"), meta.get("max"), meta.get("choices")
    if choices is not None and value not in choices:
        raise ValueError(f"expected one of {', '.join(map(str, choices))}")
    if lo is not None and value < lo:
        raise ValueError(f"must be at least {lo}")
    if hi is not None and value > hi:
        raise ValueError(f"must be at most {hi}")


def load(cls: type[T], environ: Mapping[str, str] | None = None, **overrides: Any) -> T:
    """Build ``cls`` from ``environ`` (default ``os.environ``) plus explicit overrides.

    Overrides win over the environment (tests and CLI options use them) and are
    checked against the same bounds.
    """
    env = os.environ if environ is None else environ
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        name = env_name(f.name)
        kind = hints[f.name]
        if f.name in overrides:
            value, shown = overrides.pop(f.name), None
        elif name in env:
            shown = env[name]
            try:
                value = _convert(shown, kind)
            except ValueError as exc:
                raise SettingsError(f"{name}={shown!r}: {exc}") from None
        else:
            continue
        try:
            _check(value, f.metadata)
        except ValueError as exc:
            raise SettingsError(f"{name}={value if shown is None else shown!r}: {exc}") from None
        values[f.name] = value
    if overrides:
        raise TypeError(f"{cls.__name__} has no settings {sorted(overrides)}")
    return cls(**values)


def describe(cls: type) -> list[tuple[str, str, str]]:
    """(variable, default, help) for every field of a settings class, for docs and CLI."""
    rows = []
    for f in dataclasses.fields(cls):
        rows.append((env_name(f.name), str(f.default), f.metadata.get("help", "")))
    return rows


@dataclass(frozen=True)
class KafkaSettings:
    """Where a Kafka client connects and which topic carries the MLiP event log."""

    kafka_bootstrap: str = setting(
        "127.0.0.1:9092",
        "Kafka bootstrap servers, host:port[,host:port]; the course's broker works unchanged",
    )
    kafka_topic: str = setting(
        "movielog", "Topic with the MLiP event log (movielog<TEAM-NR> on the course's broker)"
    )


@dataclass(frozen=True)
class RedisSettings:
    """Where the online feature store lives."""

    redis_url: str = setting("redis://127.0.0.1:6379/0", "Redis URL of the online feature store")
    redis_prefix: str = setting("mr", "Prefix of every feature key in Redis")


@dataclass(frozen=True)
class ServedTopicSettings:
    """Where the service publishes its served records and online evaluation reads them."""

    served_topic: str = setting("movierec.served", "Kafka topic of the served-recommendation records")


@dataclass(frozen=True)
class StoreSettings:
    """Where the Parquet event store lives (written by the consumer, read by training)."""

    store_dir: Path = setting(Path("var/store"), "Folder of the Parquet event store")


@dataclass(frozen=True)
class MetricsSettings:
    """Where a background process (consumer, loop, live metrics) serves its /metrics."""

    metrics_host: str = setting(
        "127.0.0.1", "Address the /metrics of the consumer, the loop and the live metrics bind "
                     "(loopback by default; the compose stack's internal network needs 0.0.0.0)")


@dataclass(frozen=True)
class WireSettings:
    """Facts about the event stream that differ between course offerings."""

    rating_scale: int = setting(5, "Top of the rating scale in rate lines (5 or 10)", choices=(5, 10))
