"""The simulated-week benchmark (``benchmarks/loop_week.py``) on a tiny world: both runs
see the same arrivals, the loop opens a cycle on its schedule in event time, the drift
happens, and the report's table, JSON and plot agree with each other."""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from benchmarks import loop_week


def test_a_tiny_week_runs_the_loop_and_reports_both_runs(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "week"
    monkeypatch.setattr(sys, "argv", ["loop_week", "--users", "1000", "--movies", "400",
                                      "--backfill-days", "8", "--days", "1.5",
                                      "--drift-day", "0.5", "--canary-max-h", "6",
                                      "--out-dir", str(out)])
    loop_week.main()
    result = json.loads((out / "loop-week.json").read_text())
    assert result["sessions"]["on"] == result["sessions"]["off"] > 0, "the same arrivals"
    assert result["drift"]["users"] > 0
    cycles = result["cycles"]
    assert cycles and cycles[0]["trigger"] == "schedule" and cycles[0]["day"] == 9.0
    assert all(c["result"] in ("promoted", "rolled_back", "kept_champion", "gate_refused")
               for c in cycles)
    on, off = result["utility"]["on"], result["utility"]["off"]
    assert len(on) == len(off) == 3 and on[0] == off[0], "identical until the first canary"
    table = (out / "loop-week.md").read_text()
    assert f"{on[0][1]:.4f} | {off[0][1]:.4f}" in table and cycles[0]["id"] in table
    lines = ET.fromstring((out / "loop-week.svg").read_text()).iterfind(
        ".//{http://www.w3.org/2000/svg}polyline")
    assert sorted(line.get("data-label") for line in lines) == ["loop off", "loop on"]
