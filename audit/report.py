"""One shape for every audit's report: markdown for people, JSON for machines, SVG plots.

Each report states the requirement it checks, how it was measured, the result (pass or
fail), and the mitigation in force, in that order (docs/audits.md), followed by tables of
the numbers and the plots. ``write`` puts ``report.md``, ``report.json`` and each plot
in one folder, atomically file by file.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from movierec.durable import make_dirs, write_atomic


@dataclass(frozen=True)
class Table:
    title: str
    header: Sequence[str]
    rows: Sequence[Sequence[object]]

    def markdown(self) -> list[str]:
        out = [f"### {self.title}", "", "| " + " | ".join(self.header) + " |",
               "|" + "---|" * len(self.header)]
        out += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in self.rows]
        return out + [""]


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:,.4g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value).replace("|", "\\|")


@dataclass
class AuditReport:
    """What one audit found. ``numbers`` is the JSON body; ``plots`` maps a file name
    (``*.svg``) to its SVG text."""

    name: str
    requirement: str
    measurement: str
    passed: bool
    result: str
    mitigation: str
    numbers: dict
    tables: list[Table] = field(default_factory=list)
    plots: dict[str, str] = field(default_factory=dict)

    def markdown(self) -> str:
        out = [f"# Audit: {self.name}", "",
               f"**Result: {'PASS' if self.passed else 'FAIL'}**: {self.result}", "",
               "## Requirement", "", self.requirement, "",
               "## Measurement", "", self.measurement, "",
               "## Mitigation in force", "", self.mitigation, "", "## Numbers", ""]
        for table in self.tables:
            out += table.markdown()
        out += [f"![{name}]({name})" for name in self.plots]
        return "\n".join(out).rstrip() + "\n"

    def as_json(self) -> dict:
        return {"audit": self.name, "passed": self.passed, "result": self.result,
                "requirement": self.requirement, "measurement": self.measurement,
                "mitigation": self.mitigation, "numbers": self.numbers,
                "plots": sorted(self.plots)}


def write(report: AuditReport, out_dir: Path) -> list[Path]:
    """Write the report's files into ``out_dir``; their paths."""
    make_dirs(out_dir)
    files = {"report.md": report.markdown().encode(),
             "report.json": (json.dumps(report.as_json(), indent=2, sort_keys=True) + "\n").encode(),
             **{name: svg.encode() for name, svg in report.plots.items()}}
    paths = []
    for name, data in files.items():
        write_atomic(out_dir / name, data)
        paths.append(out_dir / name)
    return paths
