"""What the team sees of the loop: its Prometheus metrics, read from the journal (exact
across restarts), and ``movierec loop status``."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

from click.testing import CliRunner
from prometheus_client import generate_latest

from ops.cli import main
from recommender.loop.cycle import Stage
from recommender.loop.journal import Journal
from recommender.loop.loop_metrics import LoopMetrics
from tests.unit.test_loop_cycle import PROMOTION, entry


def write(journal: Journal, entries: list[dict]) -> None:
    for e in entries:
        fields = {k: v for k, v in e.items() if k not in ("cycle", "stage", "at")}
        journal.append(e["cycle"], Stage(e["stage"]), at=datetime.fromisoformat(e["at"]), **fields)


def sample(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in metrics")


def test_metrics_count_cycles_from_the_journal_and_show_a_running_canary(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.jsonl")
    write(journal, PROMOTION)
    write(journal, [entry("c2", Stage.TRIGGERED, 100, trigger="drift"),
                    entry("c2", Stage.TRAINED, 105, challenger="v3"),
                    entry("c2", Stage.CANARY, 106, experiment="canary-c2", share=0.1),
                    entry("c2", Stage.LOOKED, 110, p_value=0.2,
                          numbers={"users": [900, 95]})])
    text = generate_latest(LoopMetrics.create(journal).registry).decode()
    assert 'movierec_loop_cycles_total{result="promoted"} 1.0' in text
    assert 'movierec_loop_cycles_total{result="rolled_back"} 0.0' in text
    assert sample(text, "movierec_loop_cycle_open") == 1.0
    assert sample(text, "movierec_loop_canary_running") == 1.0
    assert 'movierec_loop_canary_users{arm="challenger"} 95.0' in text
    assert sample(text, "movierec_loop_canary_p_value") == 0.2
    promoted_at = sample(text, "movierec_loop_last_update_timestamp_seconds")
    assert promoted_at == datetime.fromisoformat(PROMOTION[-1]["at"]).timestamp()
    assert sample(text, "movierec_loop_seconds_since_update") > 0


def test_metrics_show_what_the_last_training_left_out_as_shilling(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.jsonl")
    write(journal, PROMOTION)  # trained before shilling was recorded: nothing to show
    text = generate_latest(LoopMetrics.create(journal).registry).decode()
    assert sample(text, "movierec_loop_shilling_campaigns") == 0.0
    found = {"campaigns": 2, "excluded_accounts": 57, "targets": ["a", "b"]}
    write(journal, [entry("c2", Stage.TRIGGERED, 100, trigger="schedule"),
                    entry("c2", Stage.TRAINED, 105, challenger="v3",
                          numbers={"shilling": found})])
    text = generate_latest(LoopMetrics.create(journal).registry).decode()
    assert sample(text, "movierec_loop_shilling_campaigns") == 2.0
    assert sample(text, "movierec_loop_shilling_accounts_excluded") == 57.0


def test_status_prints_the_timeline_and_json(tmp_path: Path) -> None:
    env = {"MOVIEREC_LOOP_DIR": str(tmp_path)}
    write(Journal(tmp_path / "journal.jsonl"), PROMOTION)
    result = CliRunner().invoke(main, ["loop", "status"], env=env)
    assert result.exit_code == 0, result.output
    assert "not running; 1 cycles: promoted 1" in result.output
    assert "decided   mSPRT: challenger better" in result.output
    result = CliRunner().invoke(main, ["loop", "status", "--json"], env=env)
    doc = json.loads(result.output)
    assert doc["results"]["promoted"] == 1 and doc["open_cycle"] is None
    assert doc["cycles"][0]["challenger"] == "hybrid-2"


def test_a_paused_loop_opens_no_cycle_until_resumed(tmp_path: Path) -> None:
    from movierec.settings import load
    from recommender.loop.cli import pass_once
    from recommender.loop.settings import LoopSettings
    from tests.unit.test_loop_runner import World

    env = {"MOVIEREC_LOOP_DIR": str(tmp_path)}
    assert CliRunner().invoke(main, ["loop", "pause", "--reason", "exam week"], env=env).exit_code == 0
    settings = load(LoopSettings, loop_dir=tmp_path, store_dir=tmp_path / "store",
                    loop_prometheus_url="")
    journal = Journal(tmp_path / "journal.jsonl")
    world = World()
    assert pass_once(settings, journal, world.ports()) == ["paused"]
    assert journal.entries() == []
    status = CliRunner().invoke(main, ["loop", "status", "--json"], env=env)
    assert json.loads(status.output)["paused"] == "exam week"
    assert CliRunner().invoke(main, ["loop", "resume"], env=env).exit_code == 0
    done = pass_once(settings, journal, world.ports(), manual="by hand")
    assert done[:3] == ["wait", "train", "start_canary"]
