"""``movierec train``, ``movierec models …`` and ``movierec eval offline`` on a real
(temporary) event store, without Redis (MOVIEREC_TRAIN_PROFILES=none)."""

from __future__ import annotations

import json
from datetime import datetime

import pytest
from click.testing import CliRunner

from offline_eval.simulated import compact_sessions, history_table, simulate
from ops.cli import main
from simulator.world import World, WorldSpec
from stores.event_store import EventStore

START = datetime(2025, 3, 1)


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("cli")
    world = World.build(WorldSpec(seed=3, n_users=3000, n_movies=800))
    table = history_table(world, compact_sessions(simulate(world, start=START, days=20, seed=2)),
                          start=START)
    store = EventStore(root / "store", "movielog")
    for i in range(0, table.num_rows, 20_000):  # several micro-batches, as the consumer writes
        store.append(table.slice(i, 20_000))
    return {"MOVIEREC_STORE_DIR": str(root / "store"), "MOVIEREC_REGISTRY_DIR": str(root / "reg"),
            "MOVIEREC_REPORTS_DIR": str(root / "reports"), "MOVIEREC_TRAIN_PROFILES": "none",
            "MOVIEREC_TRAIN_THREADS": "1"}


def invoke(env, *args):
    result = CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)
    return result


def test_train_registers_gates_and_promotes(env):
    result = invoke(env, "train")
    assert result.exit_code == 0, result.output
    assert "champion: als-" in result.output
    assert "als vs popularity" in result.output
    listed = json.loads(invoke(env, "models", "list", "--json").output)
    assert {r["name"] for r in listed} == {"als", "popularity", "itemknn", "hybrid"}
    champion = next(r for r in listed if "champion" in r["aliases"])
    assert champion["name"] == "als" and champion["gate"] is True
    shown = json.loads(invoke(env, "models", "show", "champion").output)
    assert shown["version"] == champion["version"]
    assert shown["data"]["snapshot_id"] and shown["data"]["rows"] > 0


def test_promote_and_rollback(env):
    listed = json.loads(invoke(env, "models", "list", "--json").output)
    champion = next(r["version"] for r in listed if "champion" in r["aliases"])
    baseline = next(r["version"] for r in listed if r["name"] == "popularity")
    result = invoke(env, "models", "promote", baseline)
    assert result.exit_code == 0 and f"champion -> {baseline}" in result.output
    result = invoke(env, "models", "rollback")
    assert result.exit_code == 0 and f"champion -> {champion}" in result.output
    failed = [r["version"] for r in listed if r["gate"] is False]
    for version in failed:  # a version that failed its gate needs --force
        refused = invoke(env, "models", "promote", version)
        assert refused.exit_code == 1 and "failed its gate" in refused.output


def test_unknown_version_is_a_clean_error(env):
    result = invoke(env, "models", "show", "als-20990101T000000-abcdef")
    assert result.exit_code == 1 and "Error:" in result.output


def test_eval_offline_writes_the_comparison(env, tmp_path):
    result = invoke(env, "eval", "offline", "--models", "als,popularity", "--report-dir", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert {p.name for p in tmp_path.iterdir()} == {"comparison.md", "comparison.json", "comparison.svg"}
    rows = json.loads((tmp_path / "comparison.json").read_text())["rows"]
    assert [r["name"] for r in rows] == ["als", "popularity"]


def test_empty_store_is_a_clean_error(tmp_path):
    env = {"MOVIEREC_STORE_DIR": str(tmp_path / "none"), "MOVIEREC_TRAIN_PROFILES": "none",
           "MOVIEREC_REGISTRY_DIR": str(tmp_path / "reg")}
    result = invoke(env, "train")
    assert result.exit_code == 1 and "Error:" in result.output
