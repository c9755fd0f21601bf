"""evaluate() with a fake model, the paired test, the comparison report and its SVG."""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from offline_eval.compare import (
    COST_HEADERS,
    comparison_table,
    normalise_row,
    read_rows,
    row_from_result,
    slice_table,
    write_report,
)
from offline_eval.evaluate import compare_paired, evaluate
from offline_eval.plot import (
    BAR_W,
    MAX_LABEL_CHARS,
    Panel,
    format_value,
    small_multiples,
)
from offline_eval.ranking_metrics import EvalError
from recommender.models.base import History, Recommender, TrainSet, top_n
from recommender.models.profiles import Profile, Profiles

N_ITEMS = 8
SVG = "{http://www.w3.org/2000/svg}"


@dataclass(frozen=True)
class Truth:
    """Local stand-in with what evaluate() reads of ``offline_eval.split.Truth``."""

    user_ids: np.ndarray
    items: list[np.ndarray]
    new_user: np.ndarray


class FixedOrder(Recommender):
    """Scores item i as -i (item 0 best), skipping seen items; new users get the catalog
    backwards. Records what it was asked."""

    name = "fixed"

    def __init__(self, **params: object) -> None:
        super().__init__(**params)
        self.batches: list[int] = []
        self.profiles: list[Profile | None] = []
        self.requests = 0
        self.matrix: sp.csr_matrix | None = None

    def fit(self, train: TrainSet) -> None:
        self.item_ids, self.matrix = train.item_ids, train.matrix

    def recommend(self, history: History, n: int = 20, *, exclude: np.ndarray | None = None,
                  profile: Profile | None = None) -> np.ndarray:
        self.requests += 1
        return top_n(-np.arange(N_ITEMS, dtype=np.float32), n, history.items)

    def recommend_new(self, profile: Profile | None, n: int = 20, *,
                      exclude: np.ndarray | None = None) -> np.ndarray:
        self.profiles.append(profile)
        return np.arange(N_ITEMS - 1, -1, -1, dtype=np.int32)[:n]

    def recommend_batch(self, rows: np.ndarray, n: int = 20, *, seen=None) -> np.ndarray:
        assert self.matrix is not None
        self.batches.append(len(rows))
        out = np.full((len(rows), n), -1, dtype=np.int32)
        for i, row in enumerate(rows):
            seen = self.matrix.indices[self.matrix.indptr[row]:self.matrix.indptr[row + 1]]
            top = top_n(-np.arange(N_ITEMS, dtype=np.float32), n, seen)
            out[i, :len(top)] = top
        return out

    def arrays(self) -> dict[str, np.ndarray]:
        return {"scores": -np.arange(N_ITEMS, dtype=np.float32)}

    def restore(self, arrays: dict[str, np.ndarray]) -> None:
        pass


def world() -> tuple[TrainSet, Truth]:
    """Users 10, 20, 30 in training; 20 and 30 saw item 0. Test: 10 (relevant {1}),
    20 (relevant {3}), 30 (nothing known), 40 and 50 new (relevant {7} and {0})."""
    dense = np.zeros((3, N_ITEMS), np.float32)
    dense[0, 5] = dense[1, 0] = dense[2, 0] = dense[2, 6] = 1.0
    matrix = sp.csr_matrix(dense)
    profiles = Profiles.from_records([{"user_id": 40, "age": 16, "gender": "F"}])
    train = TrainSet(matrix, np.array([10, 20, 30], np.int64),
                     np.array([f"m{i}+2000" for i in range(N_ITEMS)], dtype=object),
                     np.zeros(matrix.nnz), datetime(2025, 1, 1), profiles)
    truth = Truth(np.array([10, 20, 30, 40, 50], np.int64),
                  [np.array([1], np.int32), np.array([3], np.int32), np.zeros(0, np.int32),
                   np.array([7], np.int32), np.array([0], np.int32)],
                  np.array([False, False, False, True, True]))
    return train, truth


def fitted(train: TrainSet) -> FixedOrder:
    model = FixedOrder()
    model.fit(train)
    return model


def test_evaluate_scores_each_path_and_times_it() -> None:
    train, truth = world()
    model = fitted(train)
    result = evaluate(model, train, truth, k=2, batch_size=2, latency_sample=2,
                      profile_for=lambda uid: train.profiles.profile(uid))
    # lists at k = 2: user 10 -> [0, 1] (hit at rank 2), user 20 -> [1, 2] (miss),
    # user 30 -> [1, 2], new users -> [7, 6]: hit at rank 1 for 40, miss for 50
    ndcg = result.per_user["ndcg@2"]
    np.testing.assert_allclose(ndcg, [1 / math.log2(3), 0.0, np.nan, 1.0, 0.0])
    assert result.means["hit_rate@2"] == pytest.approx(0.5)
    assert result.evaluated["ndcg@2"] == 4
    assert result.coverage == pytest.approx(5 / N_ITEMS)  # items 0, 1, 2, 6, 7
    assert model.batches == [2, 1]
    assert [p.age if p else None for p in model.profiles] == [16, None]
    assert model.requests == 2 + 2  # two warm-up calls (only two users sampled) + two timed
    timing = result.timing
    assert (timing.batch_users, timing.new_users, len(timing.latency_ms)) == (3, 2, 2)
    assert timing.throughput_users_s > 0 and np.all(timing.latency_ms >= 0)
    cohort = {s.name: s for s in result.slices if s.family == "cohort"}
    assert cohort["new"].users == 2 and cohort["new"].means["ndcg@2"] == pytest.approx(0.5)
    age = {s.name: s.users for s in result.slices if s.family == "age"}
    assert age["<18"] == 1 and age["?"] == 4
    doc = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert doc["users"] == 5 and doc["new_users"] == 2
    assert doc["means"]["ndcg@2"] == pytest.approx((1 / math.log2(3) + 1.0) / 4)
    assert result.summary()["coverage@2"] == result.coverage
    assert doc["timing"]["latency_calls"] == 2


def test_evaluate_popularity_and_novelty_follow_training_counts() -> None:
    train, truth = world()
    result = evaluate(fitted(train), train, truth, k=1, latency_sample=0)
    # top-1: users 10 -> 0, 20 -> 1, 30 -> 1, new -> 7. Training users per item: item 0
    # has 2 of 3, items 1 and 7 none (counted as 1): novelty log2(3/2), log2 3, ...
    novelty = [math.log2(3 / 2), math.log2(3), math.log2(3), math.log2(3), math.log2(3)]
    np.testing.assert_allclose(result.per_user["novelty@1"], novelty)
    assert result.per_user["popularity@1"][0] == 1.0  # item 0 is the most popular
    assert math.isnan(result.timing.latency_percentile(99))


def test_evaluate_rejects_inconsistent_truth_and_bad_models() -> None:
    train, truth = world()
    flags = truth.new_user.copy()
    flags[0] = True  # user 10 is in the train set
    with pytest.raises(EvalError, match="flagged new/established"):
        evaluate(fitted(train), train, Truth(truth.user_ids, truth.items, flags))

    class TooLong(FixedOrder):
        def recommend_batch(self, rows: np.ndarray, n: int = 20, *, seen=None) -> np.ndarray:
            return np.zeros((len(rows), n + 1), np.int32)

    model = TooLong()
    model.fit(train)
    with pytest.raises(EvalError, match="recommend_batch returned shape"):
        evaluate(model, train, truth, k=2)


# -- the paired test --------------------------------------------------------------------------

def test_paired_test_detects_a_real_difference() -> None:
    rng = np.random.default_rng(1)
    base = rng.uniform(0, 1, 2000)
    better = np.clip(base + 0.05 + rng.normal(0, 0.05, 2000), 0, None)
    res = compare_paired(better, base, n_boot=500)
    assert res.p_value < 1e-6
    assert 0 < res.ci[0] < res.mean_diff < res.ci[1]
    assert res.ci[0] < 0.05 < res.ci[1] + 0.01  # clipping trims the shift a little


def test_paired_test_finds_no_difference_under_the_null() -> None:
    rng = np.random.default_rng(2)
    base = rng.uniform(0, 1, 2000)
    noisy = base + rng.normal(0, 0.05, 2000)  # same mean: no real difference
    res = compare_paired(noisy, base, n_boot=500)
    assert res.p_value > 0.05
    assert res.ci[0] < 0 < res.ci[1]
    same = compare_paired(base, base.copy(), n_boot=10)
    assert same.p_value == 1.0 and same.mean_diff == 0.0


def test_paired_test_drops_unscored_users() -> None:
    a = np.array([0.5, np.nan, 0.2, 0.9])
    b = np.array([0.1, 0.3, np.nan, 0.4])
    res = compare_paired(a, b, n_boot=50)
    assert res.n == 2 and res.mean_diff == pytest.approx(0.45)
    with pytest.raises(EvalError, match="aligned"):
        compare_paired(a, b[:3])
    with pytest.raises(EvalError, match="no user"):
        compare_paired(np.array([np.nan]), np.array([1.0]))


# -- the comparison report --------------------------------------------------------------------

def row(name: str, ndcg: float, disk: int, train_s: float = 10.0) -> dict:
    return {"name": name, "version": "v1", "k": 20,
            "metrics": {"extra": 1.0, "coverage@20": 0.3, "recall@20": ndcg * 1.5,
                        "ndcg@20": ndcg},
            "train_seconds": train_s, "infer_p50_ms": 1.5, "infer_p95_ms": 3.0,
            "infer_p99_ms": 4.25, "throughput_users_s": 12_000.0,
            "disk_bytes": disk, "memory_bytes": 2 * disk}


ROWS = [row("als", 0.31, 12_345_678), row("popularity", 0.12, 40_000, 0.5),
        row("itemknn", 0.25, 900_000, float("nan"))]


def test_table_has_a_row_per_model_and_every_column() -> None:
    lines = comparison_table(ROWS).strip().splitlines()
    headers = [c.strip() for c in lines[0].strip("|").split("|")]
    assert headers[:5] == ["Model", "Version", "NDCG@20", "Recall@20", "Coverage@20"]
    assert headers[5] == "extra" and headers[6:] == list(COST_HEADERS.values())
    body = [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]
    assert [cells[0] for cells in body] == ["als", "popularity", "itemknn"]
    assert all(len(cells) == len(headers) for cells in body)
    als = dict(zip(headers, body[0], strict=True))
    assert als["NDCG@20"] == "0.31" and als["Disk MB"] == "12.3" and als["Memory MB"] == "24.7"
    assert als["Users/s"] == "12,000" and als["p99 ms"] == "4.25"
    assert dict(zip(headers, body[2], strict=True))["Train s"] == "–"  # NaN is shown as missing


def test_rows_are_checked() -> None:
    bad = dict(ROWS[0])
    del bad["disk_bytes"]
    with pytest.raises(EvalError, match="disk_bytes"):
        comparison_table([bad])
    with pytest.raises(EvalError, match="different cutoffs"):
        comparison_table([ROWS[0], {**ROWS[1], "k": 10}])
    with pytest.raises(EvalError, match="must be a number"):
        normalise_row({**ROWS[0], "train_seconds": "slow"})
    with pytest.raises(EvalError, match="no rows"):
        comparison_table([])


def test_report_files_round_trip_and_the_svg_has_a_bar_per_model(tmp_path: Path) -> None:
    paths = write_report(ROWS, tmp_path / "report")
    assert set(paths) == {"md", "json", "svg"}
    assert read_rows(paths["json"]) == [normalise_row(r) for r in ROWS]
    assert read_rows(paths["json"])[2]["train_seconds"] is None
    assert comparison_table(ROWS) in paths["md"].read_text()
    root = ET.parse(paths["svg"]).getroot()
    panels = root.findall(f"{SVG}g")
    assert [p.get("data-panel") for p in panels] == [
        "NDCG@20", "Training (s)", "Latency p99 (ms)", "Throughput (users/s)",
        "Size on disk (MB)"]
    for panel in panels:
        bars = panel.findall(f"{SVG}rect")
        assert [b.get("data-label") for b in bars] == ["als v1", "popularity v1", "itemknn v1"]
    ndcg_widths = [float(b.get("width")) for b in panels[0].findall(f"{SVG}rect")]
    assert ndcg_widths[0] == BAR_W  # the largest value spans the panel's bar area
    assert ndcg_widths[1] / ndcg_widths[0] == pytest.approx(0.12 / 0.31, abs=0.01)
    training = panels[1].findall(f"{SVG}text[@class='value']")
    assert [t.text for t in training] == ["10", "0.5", "n/a"]


def test_read_rows_rejects_other_files(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    path.write_text(json.dumps({"schema_version": 99, "rows": []}))
    with pytest.raises(EvalError, match="schema version"):
        read_rows(path)
    path.write_text("not json")
    with pytest.raises(EvalError, match="cannot read"):
        read_rows(path)


def test_row_from_result_and_sizes(tmp_path: Path) -> None:
    train, truth = world()
    model = fitted(train)
    result = evaluate(model, train, truth, k=2, latency_sample=3)
    files = model.save(tmp_path / "m")
    r = row_from_result(result, version="v7", train_seconds=1.0,
                        disk_bytes=sum(p.stat().st_size for p in (tmp_path / "m").iterdir()),
                        memory_bytes=model.memory_bytes())
    assert r["name"] == "fixed" and r["k"] == 2
    assert r["metrics"]["ndcg@2"] == pytest.approx(result.means["ndcg@2"])
    assert r["metrics"]["coverage@2"] == result.coverage
    assert r["disk_bytes"] == sum(p.stat().st_size for p in files)
    assert r["memory_bytes"] == N_ITEMS * 4
    assert r["infer_p50_ms"] <= r["infer_p99_ms"]
    json.dumps(r, allow_nan=False)


def test_small_multiples_checks_and_formats() -> None:
    with pytest.raises(EvalError, match="2 values for 3 labels"):
        small_multiples(["a", "b", "c"], [Panel("p", [1.0, 2.0])])
    svg = small_multiples(["<a&b>"], [Panel("t", [-1.0])])
    bar = ET.fromstring(svg).find(f".//{SVG}rect[@class='bar']")
    assert bar is not None and bar.get("data-label") == "<a&b>" and bar.get("width") == "0.0"
    long = "x" * 40
    root = ET.fromstring(small_multiples([long], [Panel("t", [2.0])]))
    label = root.find(f".//{SVG}g/{SVG}text[@text-anchor='end']")
    assert label is not None and label.text == "x" * (MAX_LABEL_CHARS - 1) + "…"
    assert root.findtext(f".//{SVG}rect/{SVG}title") == f"{long}: 2"
    assert [format_value(v) for v in (None, math.nan, 0.0, 0.01234, 12.34, 99.4, 1234.5)] == [
        "n/a", "n/a", "0", "0.0123", "12.3", "99.4", "1,234"]


# -- slices in the report ----------------------------------------------------------------------

def sliced(name: str, new: float, established: float) -> dict:
    def entry(family: str, slice_name: str, users: int, mean: float) -> dict:
        return {"family": family, "name": slice_name, "users": users,
                "means": {"ndcg@20": mean, "recall@20": mean * 2}, "evaluated": {"ndcg@20": users},
                "ci95": {"ndcg@20": [mean - 0.01, mean + 0.01], "recall@20": [None, None]}}

    return {**row(name, (new + established) / 2, 1000),
            "slices": [entry("cohort", "new", 40, new), entry("cohort", "established", 160, established),
                       entry("age", "?", 200, established)]}


def test_the_report_shows_each_slice_with_its_interval(tmp_path: Path) -> None:
    rows = [sliced("als", 0.02, 0.30), sliced("popularity", 0.05, 0.10)]
    table = slice_table([normalise_row(r) for r in rows], "cohort", "ndcg@20").splitlines()
    assert table[0] == "| cohort | users | als | popularity |"
    assert table[2] == "| new | 40 | 0.0200 [0.0100, 0.0300] | 0.0500 [0.0400, 0.0600] |"
    assert table[3] == "| established | 160 | 0.3000 [0.2900, 0.3100] | 0.1000 [0.0900, 0.1100] |"
    assert slice_table([normalise_row(r) for r in rows], "gender", "ndcg@20") == ""
    text = write_report(rows, tmp_path)["md"].read_text()
    assert "## By slice" in text and "### ndcg@20 by cohort" in text and "### recall@20 by age" in text
    assert "| ? | 200 | 0.6000 | 0.2000 |" in text  # recall: no interval known
    back = read_rows(tmp_path / "comparison.json")
    assert back[0]["slices"][0]["ci95"]["ndcg@20"] == [pytest.approx(0.01), pytest.approx(0.03)]


def test_rows_of_the_first_schema_still_read(tmp_path: Path) -> None:
    path = tmp_path / "old.json"
    path.write_text(json.dumps({"schema_version": 1, "rows": ROWS[:1]}))
    assert read_rows(path)[0]["name"] == "als" and "slices" not in read_rows(path)[0]
    with pytest.raises(EvalError, match="bad slice entry"):
        normalise_row({**ROWS[0], "slices": [{"family": "cohort"}]})


def test_evaluated_rows_carry_every_slice_family(tmp_path: Path) -> None:
    train, truth = world()
    result = evaluate(fitted(train), train, truth, k=2, latency_sample=3)
    r = row_from_result(result, version="v1", train_seconds=1.0, disk_bytes=1, memory_bytes=1)
    assert {s["family"] for s in r["slices"]} >= {"cohort", "activity", "age", "gender"}
    cohort = {s["name"]: s for s in r["slices"] if s["family"] == "cohort"}
    assert set(cohort) <= {"new", "established"}
    assert sum(s["users"] for s in cohort.values()) == len(truth.user_ids)
    json.dumps(r, allow_nan=False)
