"""The dependency rule of docs/architecture.md, held by reading every import in the code.

Each module belongs to the most specific package listed in ``LAYERS`` (or in
``OUTSIDE``); an import from one such package into another must point to a lower layer.
Imports inside functions and under ``TYPE_CHECKING`` count too: a lazy import is still a
dependency. ``__main__`` modules are entry points (``python -m``), executed and never
imported, so they are left out.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("kernel", ("movierec",)),
    ("shared stores", ("stores",)),
    ("consumer and models", ("stream_consumer", "recommender.models")),
    ("model data and registry", ("recommender",)),
    ("serving and offline evaluation", ("recommender.serving", "offline_eval")),
    ("training and online evaluation", ("recommender.training", "online_eval")),
    ("audits", ("audit",)),
    ("the retraining loop", ("recommender.loop",)),
    ("roofs", ("ops", "load_tests", "benchmarks", "offline_eval.simulated")),
]
"""Lowest first. A package imports only packages of lower layers; the roofs may also
import each other (never in a cycle). ``offline_eval.simulated`` measures against the
simulator's hidden truth, so it is a roof, not part of offline evaluation."""

OUTSIDE = {"simulator": ("movierec",)}
"""Packages outside the layers, with the only packages they may import: the simulator is
the outside world and shares the kernel (the wire format) and nothing else."""

SIMULATOR_USERS = {"simulator", "ops", "load_tests", "benchmarks", "offline_eval.simulated"}
"""Who may import the simulator: the roofs (the demo, load tests, benchmarks and the
evaluation against the truth), never the system's own packages."""

PACKAGES = ("movierec", "stores", "recommender", "stream_consumer", "offline_eval",
            "online_eval", "audit", "load_tests", "simulator", "ops", "benchmarks")
LEVEL = {name: i for i, (_, names) in enumerate(LAYERS) for name in names}
ROOF = len(LAYERS) - 1
NODES = sorted([*LEVEL, *OUTSIDE], key=len, reverse=True)


def node_of(module: str) -> str | None:
    """The most specific listed package holding ``module`` (None for third parties)."""
    for node in NODES:
        if module == node or module.startswith(node + "."):
            return node
    return None


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if path.name == "__main__.py":
                continue
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            found[name] = path
    return found


def imports_of(path: Path, known: set[str]) -> set[str]:
    """Every project module an ``import`` statement in the file names: ``from a import b``
    names ``a.b`` when that is a module of ``known``, else ``a`` (b is a name in it).
    Relative imports are refused: the project uses none."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import"
            for alias in node.names:
                inner = f"{node.module}.{alias.name}"
                out.add(inner if inner in known else node.module or "")
    return out


def edges() -> dict[tuple[str, str], list[str]]:
    """(from package, to package) -> the 'module -> imported' lines behind it."""
    found: dict[tuple[str, str], list[str]] = defaultdict(list)
    every = modules()
    for module, path in every.items():
        source = node_of(module)
        assert source is not None, f"{module} belongs to no package of the rule"
        for name in imports_of(path, set(every)):
            target = node_of(name)
            if target is not None and target != source:
                found[(source, target)].append(f"{module} -> {name}")
    return found


def allowed(source: str, target: str) -> bool:
    if target == "simulator":
        return source in SIMULATOR_USERS
    if source in OUTSIDE:
        return target in OUTSIDE[source]
    if target in OUTSIDE:
        return False
    return LEVEL[target] < LEVEL[source] or LEVEL[source] == LEVEL[target] == ROOF


def test_every_import_points_down_the_layers() -> None:
    broken = {f"{s} -> {t}": lines[:3] for (s, t), lines in edges().items() if not allowed(s, t)}
    assert broken == {}


def test_no_package_imports_a_package_that_imports_it_back() -> None:
    """Over every package directory of the tree (not only the listed ones): no cycles."""
    graph: dict[str, set[str]] = defaultdict(set)
    packages = {str(p.parent.relative_to(ROOT)).replace("/", ".")
                for package in PACKAGES for p in (ROOT / package).rglob("__init__.py")}

    def package_of(module: str) -> str | None:
        parts = module.split(".")
        for i in range(len(parts), 0, -1):
            if ".".join(parts[:i]) in packages:
                return ".".join(parts[:i])
        return None

    every = modules()
    for module, path in every.items():
        here = package_of(module)
        for name in imports_of(path, set(every)):
            there = package_of(name)
            if here and there and there != here:
                graph[here].add(there)
    assert find_cycles(graph) == []


def find_cycles(graph: dict[str, set[str]]) -> list[str]:
    """Each cycle a depth-first walk meets, as "a -> b -> a"."""
    cycles: list[str] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                path = trail + [node]
                cycles.append(" -> ".join(path[path.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, trail + [node])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [])
    return cycles


def test_the_cycle_finder_finds_cycles() -> None:
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a -> b -> c -> a"]
    assert find_cycles({"ops": {"ops.demo"}, "ops.demo": {"ops"}}) == ["ops -> ops.demo -> ops"]
    assert find_cycles({"a": {"b", "c"}, "b": {"c"}, "c": set()}) == []


def test_the_rule_sees_a_breach() -> None:
    """The checks above would fail on the imports the rule forbids."""
    assert not allowed("stores", "stream_consumer")          # a contract importing its writer
    assert not allowed("recommender.models", "recommender")  # models reaching up to the registry
    assert not allowed("recommender.serving", "offline_eval")  # sideways
    assert not allowed("offline_eval", "recommender.training")  # evaluation above training
    assert not allowed("simulator", "recommender")            # the outside world into the system
    assert not allowed("recommender", "simulator")            # the system reading the truth
    assert not allowed("movierec", "ops")                     # the kernel into the roof
    assert allowed("recommender.training", "offline_eval")
    assert allowed("ops", "load_tests") and allowed("benchmarks", "simulator")
    assert node_of("recommender.serving.wsgi") == "recommender.serving"
    assert node_of("recommender.dataset") == "recommender"
    assert node_of("offline_eval.simulated") == "offline_eval.simulated"
    assert node_of("numpy") is None


def test_every_listed_package_exists_and_has_code() -> None:
    found = {node_of(m) for m in modules()}
    assert found == set(LEVEL) | set(OUTSIDE)
