"""The four-quality comparison of candidate models: accuracy, training cost, inference cost
and size, as a markdown table, a JSON file and an SVG chart.

The course asks to compare candidates on more than accuracy: a model that is 2% better
but takes ten times longer to train, answers ten times slower or needs ten times the
memory may be the worse choice for a service retrained daily under a latency budget.

**A row** (one candidate; ``row_from_result`` builds it from an ``EvalResult``) is a dict:

- ``name`` str: the candidate (``als``, ``popularity``, ...); ``version`` str: its
  artifact version; ``k`` int: the cutoff of every ``@k`` metric (one k per report).
- ``metrics`` dict str -> float | None: ``EvalResult.summary()``, names ``<metric>@<k>``
  (``ndcg@20``, ``recall@20``, ``precision@20``, ``map@20``, ``hit_rate@20``,
  ``tail_recall@20``, ``tail_hit_rate@20``, ``coverage@20``, ``novelty@20``,
  ``popularity@20``), the names ``recommender.training.gate`` reads.
- ``train_seconds`` float: wall time of ``fit``.
- ``infer_p50_ms``, ``infer_p95_ms``, ``infer_p99_ms`` float: single-request latency of
  ``recommend`` in process (see ``evaluate``); ``throughput_users_s`` float: users per
  second through ``recommend_batch``.
- ``disk_bytes`` int: size of the saved model folder; ``memory_bytes`` int: bytes of its
  learned arrays in memory (``Recommender.memory_bytes``).
- ``slices`` (optional, schema 2) list: every metric within every user slice
  (``offline_eval.slices``: cohort, activity band, age group, gender), each with its
  users, means, how many users each mean is over and its 95% interval
  (``SliceMeans.to_dict``). The report shows the gate metric and recall by slice.

Missing or non-finite numbers are stored as None and shown as ``–``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from offline_eval.evaluate import EvalResult
from offline_eval.plot import Panel, format_value, small_multiples
from offline_eval.ranking_metrics import EvalError

SCHEMA_VERSION = 2
READABLE_VERSIONS = (1, 2)
"""1: rows without ``slices``."""
SLICE_FAMILIES = ("cohort", "activity", "age", "gender")
"""The slice families the report shows, in this order."""
TIMING_KEYS: tuple[str, ...] = ("train_seconds", "infer_p50_ms", "infer_p95_ms",
                                "infer_p99_ms", "throughput_users_s")
SIZE_KEYS: tuple[str, ...] = ("disk_bytes", "memory_bytes")
METRIC_LABELS: dict[str, str] = {
    "ndcg": "NDCG", "recall": "Recall", "precision": "Precision", "map": "MAP",
    "hit_rate": "Hit rate", "tail_recall": "Tail recall", "tail_hit_rate": "Tail hit rate",
    "coverage": "Coverage", "novelty": "Novelty", "popularity": "Popularity pct",
}
"""Column labels of metric keys ``<name>@<k>`` by name, in report order; other metric
keys follow, sorted, labelled as they are."""
COST_HEADERS: dict[str, str] = {
    "train_seconds": "Train s", "infer_p50_ms": "p50 ms", "infer_p95_ms": "p95 ms",
    "infer_p99_ms": "p99 ms", "throughput_users_s": "Users/s",
    "disk_bytes": "Disk MB", "memory_bytes": "Memory MB",
}
MB = 1e6
"""Sizes are reported in MB of 10^6 bytes."""


def _number(value: object, what: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise EvalError(f"{what} must be a number or None, got {value!r}")
    return float(value) if math.isfinite(value) else None


def normalise_row(row: Mapping) -> dict:
    """A checked, JSON-ready copy of one row (schema in the module docstring): numbers as
    float (sizes as int), non-finite as None. ``EvalError`` names a missing or bad key."""
    missing = [key for key in ("name", "version", "k", "metrics", *TIMING_KEYS, *SIZE_KEYS)
               if key not in row]
    if missing:
        raise EvalError(f"comparison row {row.get('name')!r} lacks {missing}")
    if not isinstance(row["metrics"], Mapping):
        raise EvalError(f"row {row['name']!r}: metrics must be a mapping")
    if isinstance(row["k"], bool) or not isinstance(row["k"], int) or row["k"] < 1:
        raise EvalError(f"row {row['name']!r}: k must be a positive int, got {row['k']!r}")
    out: dict = {"name": str(row["name"]), "version": str(row["version"]), "k": row["k"],
                 "metrics": {str(m): _number(v, f"metric {m}")
                             for m, v in row["metrics"].items()}}
    out.update({key: _number(row[key], key) for key in TIMING_KEYS})
    for key in SIZE_KEYS:
        size = _number(row[key], key)
        out[key] = None if size is None else int(size)
    if row.get("slices") is not None:
        out["slices"] = [_slice(s, row["name"]) for s in row["slices"]]
    return out


def _slice(entry: Mapping, name: object) -> dict:
    """A checked copy of one slice entry of a row."""
    try:
        return {"family": str(entry["family"]), "name": str(entry["name"]),
                "users": int(entry["users"]),
                "means": {str(m): _number(v, f"slice metric {m}") for m, v in entry["means"].items()},
                "evaluated": {str(m): int(v) for m, v in entry["evaluated"].items()},
                "ci95": {str(m): [_number(lo, f"slice interval {m}"), _number(hi, f"slice interval {m}")]
                         for m, (lo, hi) in entry.get("ci95", {}).items()}}
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise EvalError(f"row {name!r}: a bad slice entry {entry!r}: {exc}") from None


def row_from_result(result: EvalResult, *, version: str, train_seconds: float,
                    disk_bytes: int, memory_bytes: int) -> dict:
    """The comparison row of one evaluated candidate."""
    timing = result.timing
    return normalise_row({
        "name": result.model, "version": version, "k": result.k,
        "metrics": result.summary(),
        "train_seconds": train_seconds,
        "infer_p50_ms": timing.latency_percentile(50),
        "infer_p95_ms": timing.latency_percentile(95),
        "infer_p99_ms": timing.latency_percentile(99),
        "throughput_users_s": timing.throughput_users_s,
        "disk_bytes": disk_bytes, "memory_bytes": memory_bytes,
        "slices": [s.to_dict() for s in result.slices],
    })


def _checked_rows(rows: Sequence[Mapping]) -> tuple[list[dict], int]:
    if not rows:
        raise EvalError("nothing to compare: no rows")
    clean = [normalise_row(r) for r in rows]
    ks = {r["k"] for r in clean}
    if len(ks) != 1:
        raise EvalError(f"rows use different cutoffs {sorted(ks)}; compare at one k")
    return clean, ks.pop()


def metric_columns(rows: Sequence[Mapping]) -> list[str]:
    """Metric keys present in any row: ``METRIC_LABELS`` order, then the rest sorted."""
    order = {name: i for i, name in enumerate(METRIC_LABELS)}

    def rank(key: str) -> tuple[int, str]:
        return order.get(key.partition("@")[0], len(order)), key

    return sorted({m for r in rows for m in r["metrics"]}, key=rank)


def metric_header(key: str) -> str:
    """``ndcg@20`` -> ``NDCG@20``; unknown names stay as they are."""
    name, at, k = key.partition("@")
    return METRIC_LABELS[name] + at + k if name in METRIC_LABELS else key


def _cell(value: float | None, scale: float = 1.0) -> str:
    return "–" if value is None else format_value(value / scale)


def comparison_table(rows: Sequence[Mapping]) -> str:
    """Markdown table: one row per candidate, metric columns then cost columns."""
    clean, _ = _checked_rows(rows)  # one k: the headers carry it
    metrics = metric_columns(clean)
    headers = (["Model", "Version"] + [metric_header(m) for m in metrics]
               + list(COST_HEADERS.values()))
    lines = ["| " + " | ".join(headers) + " |",
             "|" + "|".join(["---"] * 2 + ["---:"] * (len(headers) - 2)) + "|"]
    for r in clean:
        cells = [r["name"], r["version"]]
        cells += [_cell(r["metrics"].get(m)) for m in metrics]
        cells += [_cell(r[key], MB if key in SIZE_KEYS else 1.0) for key in COST_HEADERS]
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines) + "\n"


def comparison_svg(rows: Sequence[Mapping]) -> str:
    """The small-multiples chart: NDCG@k, training s, p99 ms, users/s, MB on disk."""
    clean, k = _checked_rows(rows)

    def mb(value: float | None) -> float | None:
        return None if value is None else value / MB

    panels = [
        Panel(f"NDCG@{k}", [r["metrics"].get(f"ndcg@{k}") for r in clean]),
        Panel("Training (s)", [r["train_seconds"] for r in clean]),
        Panel("Latency p99 (ms)", [r["infer_p99_ms"] for r in clean]),
        Panel("Throughput (users/s)", [r["throughput_users_s"] for r in clean]),
        Panel("Size on disk (MB)", [mb(r["disk_bytes"]) for r in clean]),
    ]
    return small_multiples([f"{r['name']} {r['version']}" for r in clean], panels,
                           title="Candidate models")


def slice_table(rows: Sequence[Mapping], family: str, metric: str) -> str:
    """Markdown table of ``metric`` within each slice of ``family``: a row per slice, a
    column per candidate, each cell the mean with its 95% interval; the users of each
    slice (the same test users for every candidate)."""
    names = [r["name"] for r in rows]
    by_model = [{s["name"]: s for s in r.get("slices") or [] if s["family"] == family} for r in rows]
    order = list(dict.fromkeys(n for slices in by_model for n in slices))
    if not order:
        return ""
    lines = [f"| {family} | users | " + " | ".join(names) + " |",
             "|---|---:|" + "---:|" * len(names)]
    for slice_name in order:
        cells = []
        for slices in by_model:
            s = slices.get(slice_name)
            mean = None if s is None else s["means"].get(metric)
            lo, hi = (None, None) if s is None else s["ci95"].get(metric, (None, None))
            cells.append("–" if mean is None else
                         f"{mean:.4f}" + ("" if lo is None else f" [{lo:.4f}, {hi:.4f}]"))
        users = next((slices[slice_name]["users"] for slices in by_model if slice_name in slices), 0)
        if users == 0:
            continue  # a slice no test user falls in (e.g. no unknown gender)
        lines.append(f"| {slice_name} | {users:,} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _slices_markdown(rows: list[dict], k: int) -> str:
    if not any(r.get("slices") for r in rows):
        return ""
    parts = ["\n## By slice\n\nMeans over the test users of each slice with a relevant item, "
             "[95% interval] (normal approximation, `offline_eval.slices.mean_interval`). "
             "cohort: new (not in the training set, served by each model's cold start) or "
             "established; activity: distinct training items a user had; age and gender "
             "from the profile (? = unknown).\n"]
    for metric in (f"ndcg@{k}", f"recall@{k}"):
        for family in SLICE_FAMILIES:
            table = slice_table(rows, family, metric)
            if table:
                parts.append(f"\n### {metric} by {family}\n\n{table}")
    return "".join(parts)


def _markdown(rows: list[dict], k: int) -> str:
    return (
        "# Candidate comparison\n\n"
        f"Accuracy at k = {k} on the held-out period; costs measured in the same run.\n\n"
        + comparison_table(rows)
        + "\n- Accuracy columns are means over test users with at least one relevant item "
          "(`offline_eval.ranking_metrics`); tail columns count only relevant items outside the "
          "20% most popular.\n"
          "- Coverage: share of the catalog recommended to anyone. Novelty: mean "
          "-log2(share of training users who saw the item), in bits. Popularity pct: mean training "
          "popularity percentile of the recommended items (1 = most popular).\n"
          "- p50/p95/p99: one `recommend` call in process, no HTTP. Users/s: "
          "`recommend_batch` throughput. MB = 10^6 bytes; memory counts the learned "
          "arrays only.\n"
        + _slices_markdown(rows, k)
    )


def write_report(rows: Sequence[Mapping], out_dir: Path | str) -> dict[str, Path]:
    """Write ``comparison.md``, ``comparison.json`` and ``comparison.svg`` into ``out_dir``
    (created); returns their paths under the keys ``md``, ``json``, ``svg``."""
    clean, k = _checked_rows(rows)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"md": out_dir / "comparison.md", "json": out_dir / "comparison.json",
             "svg": out_dir / "comparison.svg"}
    paths["md"].write_text(_markdown(clean, k), encoding="utf-8")
    paths["json"].write_text(json.dumps({"schema_version": SCHEMA_VERSION, "rows": clean},
                                        indent=2, allow_nan=False) + "\n", encoding="utf-8")
    paths["svg"].write_text(comparison_svg(clean), encoding="utf-8")
    return paths


def read_rows(path: Path | str) -> list[dict]:
    """The rows of a ``comparison.json``; ``EvalError`` if it is not one."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
        if doc.get("schema_version") not in READABLE_VERSIONS:
            raise EvalError(f"{path}: schema version {doc.get('schema_version')!r}, "
                            f"expected one of {READABLE_VERSIONS}")
        return [normalise_row(r) for r in doc["rows"]]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise EvalError(f"cannot read comparison rows from {path}: {exc}") from exc
