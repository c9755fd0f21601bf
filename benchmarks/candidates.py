"""Benchmark: the candidates against time-decayed popularity under the temporal protocol,
on a simulated world, through the training pipeline's own split and evaluation.

What it measures (issue #21): NDCG@20 overall and for established users (in the training
set) and new users, each candidate's relative lift over the popularity baseline with a
paired test on the same users (bootstrap interval of the mean difference, Wilcoxon
signed-rank p), fit time, single-request p99 latency, and the share of test users whose
list differs from the most common list (the grader's "personalized", offline); then the
issue's targets, PASS or FAIL, for the candidate the gate would promote. No
services: the world's history goes straight into event-store rows
(``offline_eval.simulated``, an evaluation tool that reads the simulator's truth only to
build the log), with the world's profiles, and its movies' metadata as the consumer's
enrichment stores them (titles, runtimes, genres, vote average, API popularity).

A candidate is a name with optional parameters, e.g. ``itemknn:similarity_input=confidence``.

    python benchmarks/candidates.py [--users 6000] [--movies 3000] [--days 25] [--seed 42]
        [--candidates "popularity;als;itemknn;itemknn:similarity_input=confidence"]
        [--json] [--out out.json]
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.report import add_output_args, emit
from movierec.settings import load
from offline_eval.evaluate import compare_paired
from offline_eval.simulated import compact_sessions, history_table, simulate
from recommender.models.profiles import Profiles
from recommender.training.pipeline import Pipeline, TrainInputs, candidate_params
from recommender.training.settings import TrainSettings
from simulator.history import Events
from simulator.world import World, WorldSpec
from stream_consumer.enrich import clean_movie

START = datetime(2025, 3, 1)
METRIC = "ndcg@20"


def parse_candidate(spec: str, defaults: dict[str, dict]) -> tuple[str, str, dict]:
    """``name[:key=value,...]`` -> (label, model name, params over the settings' own)."""
    name, _, rest = spec.partition(":")
    params = dict(defaults.get(name, {}))
    for item in filter(None, rest.split(",")):
        key, _, value = item.partition("=")
        params[key] = _value(value)
    return spec, name, params


def _value(text: str) -> object:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def world_inputs(users: int, movies: int, days: float, seed: int) -> TrainInputs:
    """The world's history as event-store rows, with what enrichment would store."""
    world = World.build(WorldSpec(seed=seed, n_users=users, n_movies=movies))
    events = compact_sessions(simulate(world, start=START, days=days, seed=seed))
    return inputs_from(world, events, start=START, label=f"{users}x{movies}x{days}d seed {seed}")


def inputs_from(world: World, events: Events, *, start: datetime, label: str) -> TrainInputs:
    """``events`` (time-ordered) of ``world`` as the training pipeline's inputs: the rows,
    the profiles of the users in them, runtimes, titles and metadata as enrichment stores."""
    table = history_table(world, events, start=start)
    seen = np.unique(table["user_id"].to_numpy())
    profiles = Profiles.from_records(r for u in seen.tolist() if (r := world.user_record(int(u))))
    catalog = world.catalog
    runtimes = {m: int(r) for m, r in zip(catalog.ids, catalog.runtime.tolist(), strict=True)}
    stored = {m: clean_movie(world.movie_record(m) or {}) or {} for m in catalog.ids}
    titles = {m: fields["title"] for m, fields in stored.items() if fields.get("title")}
    return TrainInputs(table, {"world": label}, profiles, runtimes, titles, stored)


def personalized_share(recs: np.ndarray) -> float:
    """Share of lists that differ from the most common list (the grader's definition)."""
    if len(recs) == 0:
        return float("nan")
    _, counts = np.unique(recs, axis=0, return_counts=True)
    return 1.0 - counts.max() / len(recs)


def add_world_args(ap: argparse.ArgumentParser) -> None:
    """The simulated world's size (the demo's by default) and seed."""
    ap.add_argument("--users", type=int, default=6_000)
    ap.add_argument("--movies", type=int, default=3_000)
    ap.add_argument("--days", type=float, default=25.0)
    ap.add_argument("--seed", type=int, default=42)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_world_args(ap)
    ap.add_argument("--candidates", default="popularity;als;itemknn;itemknn:similarity_input=confidence",
                    help="candidates separated by ;, each name[:key=value,...]")
    ap.add_argument("--threads", type=int, default=0, help="fit and batch threads (0: all cores)")
    add_output_args(ap)
    args = ap.parse_args()

    started = time.perf_counter()
    inputs = world_inputs(args.users, args.movies, args.days, args.seed)
    settings = load(TrainSettings, {}, train_threads=args.threads, eval_k=20)
    pipeline = Pipeline(settings, progress=lambda stage: print(f"  {stage}", flush=True))
    prepared = pipeline.prepare(inputs)
    truth, train = prepared.truth, prepared.train
    established = ~np.asarray(truth.new_user, dtype=bool)
    result: dict = {"world": inputs.data["world"], "rows": inputs.events.num_rows,
                    "train_users": train.n_users, "train_items": train.n_items,
                    "interactions": int(train.matrix.nnz), "test_users": len(truth),
                    "new_test_users": int((~established).sum()),
                    "prepare_s": round(time.perf_counter() - started, 1)}
    defaults = candidate_params(settings)
    per_user: dict[str, np.ndarray] = {}
    for spec in args.candidates.split(";"):
        label, name, params = parse_candidate(spec, defaults)
        evaluated, row = pipeline.evaluate_candidate(name, params, prepared)
        per_user[label] = evaluated.per_user[METRIC]
        slices = {s.name: s.means[METRIC] for s in evaluated.slices if s.family == "cohort"}
        result[label] = {
            METRIC: round(evaluated.means[METRIC], 5),
            "established": round(slices.get("established", float("nan")), 5),
            "new": round(slices.get("new", float("nan")), 5),
            "recall@20": round(evaluated.means["recall@20"], 5),
            "fit_s": round(row["train_seconds"], 2),
            "infer_p99_ms": round(row["infer_p99_ms"], 3),
            "personalized_share": round(float(personalized_share(evaluated.recs)), 4),
        }
        print(f"{label}: {result[label]}", flush=True)
    base = per_user.get("popularity")
    if base is not None:
        for label, values in per_user.items():
            if label == "popularity":
                continue
            for scope, mask in (("overall", np.ones(len(values), bool)), ("established", established)):
                test = compare_paired(values[mask], base[mask])
                result[label][f"vs_popularity_{scope}"] = {
                    "lift": round(test.mean_diff / test.mean_b, 4) if test.mean_b else None,
                    "mean_diff": round(test.mean_diff, 5),
                    "ci95": [round(x, 5) for x in test.ci], "wilcoxon_p": float(f"{test.p_value:.3g}")}
    result["targets"] = targets(result, [label for label in per_user if label != "popularity"])
    result["total_s"] = round(time.perf_counter() - started, 1)
    emit(result, args)


def targets(result: dict, labels: list[str]) -> list[str]:
    """Issue #21's targets for the champion, the candidate the gate would promote (the
    best overall NDCG@20 among those that beat popularity): a lift of at least 10%
    overall and for established users, each significant (Wilcoxon p < 0.05)."""
    if not labels or "popularity" not in result:
        return []
    champion = max(labels, key=lambda label: result[label][METRIC])
    lines = [f"champion: {champion}"]
    for scope in ("overall", "established"):
        test = result[champion].get(f"vs_popularity_{scope}", {})
        lift, p = test.get("lift"), test.get("wilcoxon_p")
        ok = lift is not None and p is not None and lift >= 0.10 and p < 0.05
        lines.append(f"{'PASS' if ok else 'FAIL'} {scope}: lift {lift} >= 0.10, Wilcoxon p {p} < 0.05")
    share = result[champion]["personalized_share"]
    lines.append(f"{'PASS' if share >= 0.9 else 'FAIL'} personalized share {share} >= 0.90")
    return lines


if __name__ == "__main__":
    main()
