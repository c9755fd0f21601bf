"""Packaging holds: every third-party package the code imports is declared where it is
needed, the simulator-only one sits in the [sim] extra, and the version has one home."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import movierec

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("movierec", "stores", "recommender", "stream_consumer", "offline_eval",
            "online_eval", "audit", "load_tests", "simulator", "ops")
PROJECT = {*PACKAGES, "benchmarks", "tests", "report", "log_lines", "consumer", "train"}
TYPING_ONLY = {"_typeshed"}  # the type checker's own stubs, imported under TYPE_CHECKING


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def _names(requirements: list[str]) -> set[str]:
    """Normalised distribution names of requirement strings (extras of ourselves dropped)."""
    out = set()
    for line in requirements:
        name = re.split(r"[\s\[<>=!~;]", line.strip(), maxsplit=1)[0]
        out.add(re.sub(r"[-_.]+", "-", name).lower())
    return out - {"movierec"}


def _imports(folders: tuple[str, ...], skip: frozenset[str] = frozenset()) -> set[str]:
    """Top-level modules imported anywhere under ``folders`` that are neither the
    standard library nor the project's own."""
    found = set()
    for folder in folders:
        for path in (ROOT / folder).rglob("*.py"):
            if path.name in skip:
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    found |= {a.name.split(".")[0] for a in node.names}
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    found.add(node.module.split(".")[0])
    return {m for m in found if m not in sys.stdlib_module_names and m not in PROJECT | TYPING_ONLY}


def _distributions(modules: set[str]) -> set[str]:
    by_module = metadata.packages_distributions()
    return {re.sub(r"[-_.]+", "-", by_module[m][0]).lower() for m in modules}


def test_every_imported_package_is_declared_where_it_is_needed() -> None:
    project = _pyproject()["project"]
    core = _names(project["dependencies"])
    extras = {name: _names(reqs) for name, reqs in project["optional-dependencies"].items()}
    # the locustfile runs only under `movierec loadtest`, which needs the [load] extra;
    # ops/container/lock.py is a developer's tool (it writes the image's lock file)
    system = _distributions(_imports(tuple(p for p in PACKAGES if p != "simulator"),
                                     skip=frozenset({"locustfile.py", "lock.py"})))
    assert sorted(system - core) == [], "imported by the system, not a core dependency"
    load = _distributions(_imports(("load_tests",)))
    assert sorted(load - core - extras["load"]) == []
    assert "locust" in extras["load"] and "locust" not in core
    simulator = _distributions(_imports(("simulator",)))
    assert sorted(simulator - core - extras["sim"]) == []
    assert "confluent-kafka" in extras["sim"] and "confluent-kafka" not in core
    everything = _distributions(_imports(("tests", "benchmarks", "ops/container")))
    assert sorted(everything - core - extras["sim"] - extras["load"] - extras["dev"]) == []


def test_the_version_has_one_home() -> None:
    project = _pyproject()
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "movierec.__version__"}
    assert metadata.version("movierec") == movierec.__version__
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")


def test_the_image_gets_every_package_the_project_installs() -> None:
    """The Dockerfile copies the repository through .dockerignore, which lets in only what
    it names: a package left out there installs nothing and fails at the first import in
    the image (the audit package once did)."""
    include = _pyproject()["tool"]["setuptools"]["packages"]["find"]["include"]
    allowed = {line.strip().rstrip("/") for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.startswith("!")}
    packages = {pattern.rstrip("*") for pattern in include}
    assert sorted(packages - {a.lstrip("!") for a in allowed}) == []
