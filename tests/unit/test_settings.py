"""Typed settings from MOVIEREC_* variables: conversion, bounds, clear errors."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from movierec.settings import (
    SettingsError,
    WireSettings,
    describe,
    env_name,
    load,
    setting,
)
from ops.stack.settings import StackSettings


@dataclass(frozen=True)
class Example:
    port: int = setting(80, "a port", min=1, max=65535)
    ratio: float = setting(0.5, "a ratio", min=0, max=1)
    folder: Path = setting(Path("var"), "a folder")
    verbose: bool = setting(False, "a flag")
    mode: str = setting("fast", "a mode", choices=("fast", "slow"))


def test_defaults_when_nothing_is_set() -> None:
    assert load(Example, {}) == Example()


def test_values_are_converted_to_field_types() -> None:
    got = load(Example, {
        "MOVIEREC_PORT": " 8082 ", "MOVIEREC_RATIO": "0.25", "MOVIEREC_FOLDER": "/tmp/x",
        "MOVIEREC_VERBOSE": "yes", "MOVIEREC_MODE": "slow", "OTHER": "ignored",
    })
    assert got == Example(8082, 0.25, Path("/tmp/x"), True, "slow")


@pytest.mark.parametrize(("var", "value", "message"), [
    ("MOVIEREC_PORT", "eighty", "expected an integer"),
    ("MOVIEREC_PORT", "0", "at least 1"),
    ("MOVIEREC_PORT", "70000", "at most 65535"),
    ("MOVIEREC_RATIO", "lots", "expected a number"),
    ("MOVIEREC_VERBOSE", "maybe", "expected one of"),
    ("MOVIEREC_MODE", "medium", "expected one of fast, slow"),
    ("MOVIEREC_FOLDER", "", "expected a path"),
])
def test_bad_values_fail_naming_the_variable(var: str, value: str, message: str) -> None:
    with pytest.raises(SettingsError) as err:
        load(Example, {var: value})
    assert str(err.value).startswith(f"{var}=")
    assert message in str(err.value)


def test_overrides_win_and_are_checked() -> None:
    assert load(Example, {"MOVIEREC_PORT": "1"}, port=2).port == 2
    with pytest.raises(SettingsError, match="MOVIEREC_PORT"):
        load(Example, {}, port=0)
    with pytest.raises(TypeError, match="nope"):
        load(Example, {}, nope=1)


def test_describe_lists_every_variable() -> None:
    rows = describe(Example)
    assert [name for name, _, _ in rows] == [env_name(n)
                                             for n in ("port", "ratio", "folder", "verbose", "mode")]
    assert rows[0] == ("MOVIEREC_PORT", "80", "a port")


def test_rating_scale_is_five_or_ten() -> None:
    assert load(WireSettings, {"MOVIEREC_RATING_SCALE": "10"}).rating_scale == 10
    with pytest.raises(SettingsError, match="MOVIEREC_RATING_SCALE"):
        load(WireSettings, {"MOVIEREC_RATING_SCALE": "7"})


def test_simulated_start_is_local_time_without_zone() -> None:
    from simulator.settings import SimSettings

    with pytest.raises(SettingsError, match="MOVIEREC_SIM_START"):
        load(SimSettings, {"MOVIEREC_SIM_START": "2025-03-01T00:00:00Z"})
    with pytest.raises(SettingsError, match="MOVIEREC_SIM_START"):
        load(SimSettings, {"MOVIEREC_SIM_START": "yesterday"})


def test_stack_ports_must_differ() -> None:
    with pytest.raises(SettingsError, match="share a port"):
        load(StackSettings, {"MOVIEREC_REDIS_PORT": "9092"})


def test_scrape_targets_are_parsed_and_validated() -> None:
    got = load(StackSettings, {"MOVIEREC_SCRAPE_TARGETS": "a=127.0.0.1:1, a=h:2,b=x:3"})
    assert got.targets() == {"a": ["127.0.0.1:1", "h:2"], "b": ["x:3"]}
    with pytest.raises(SettingsError, match="MOVIEREC_SCRAPE_TARGETS"):
        load(StackSettings, {"MOVIEREC_SCRAPE_TARGETS": "a=nohostport"})
