"""Benchmark: does the search pay? Default against tuned parameters, judged on the test
period the search never saw.

On a simulated world (``benchmarks/candidates.py``'s inputs): ``recommender.training.
tuning.tune`` searches ``--trials`` configurations of ``--model`` on the validation period
(the stretch before the pipeline's test cut), then the pipeline evaluates the model with
its default parameters and with the search's best (model and confidence parameters) on
the real test period, paired on the same users. Popularity is measured alongside.

    python benchmarks/tune.py [--users 6000] [--movies 3000] [--days 25] [--model hybrid]
        [--trials 20] [--json] [--out out.json]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.candidates import add_world_args, world_inputs
from benchmarks.report import add_output_args, emit
from movierec.settings import load
from offline_eval.evaluate import compare_paired
from recommender.confidence import ConfidenceParams
from recommender.training.pipeline import Pipeline, candidate_params
from recommender.training.settings import TrainSettings
from recommender.training.tuning import tune

METRIC = "ndcg@20"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_world_args(ap)
    ap.add_argument("--model", default="hybrid", choices=("als", "hybrid"))
    ap.add_argument("--trials", type=int, default=20)
    add_output_args(ap)
    args = ap.parse_args()

    inputs = world_inputs(args.users, args.movies, args.days, args.seed)
    settings = load(TrainSettings, {}, train_models=f"{args.model},popularity", train_threads=0)
    started = time.perf_counter()
    search = tune(settings, inputs, model=args.model, trials=args.trials, seed=args.seed,
                  progress=lambda line: print(f"  {line}", flush=True))
    result: dict = {"world": inputs.data["world"], "model": args.model, "trials": len(search.trials),
                    "search_s": search.seconds, "validation_best": round(search.best[METRIC], 5),
                    "best_params": search.best["params"], "best_confidence": {
                        k: round(v, 3) for k, v in search.best["confidence"].items()}}
    defaults = candidate_params(settings)
    runs = {}
    for label, params, confidence in (
            ("popularity", defaults["popularity"], ConfidenceParams()),
            ("default", defaults[args.model], ConfidenceParams()),
            ("tuned", {**defaults[args.model], **search.best["params"]},
             ConfidenceParams(**search.best["confidence"]))):
        pipeline = Pipeline(settings, confidence=confidence)
        prepared = pipeline.prepare(inputs)
        name = "popularity" if label == "popularity" else args.model
        evaluated, _ = pipeline.evaluate_candidate(name, params, prepared)
        runs[label] = evaluated.per_user[METRIC]
        result[f"test_{label}"] = round(float(evaluated.means[METRIC]), 5)
    test = compare_paired(runs["tuned"], runs["default"])
    result["tuned_vs_default"] = {"lift": round(test.mean_diff / test.mean_b, 4),
                                  "ci95": [round(x, 5) for x in test.ci],
                                  "wilcoxon_p": float(f"{test.p_value:.3g}")}
    result["total_s"] = round(time.perf_counter() - started, 1)
    emit(result, args)


if __name__ == "__main__":
    main()
