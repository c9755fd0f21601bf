"""ALS hyperparameter sweep on a simulated world (offline NDCG@20 and recall@20).

The defaults of ``MOVIEREC_ALS_*`` come from this sweep (docs/models.md). Each point fits
ALS on the training side of the pipeline's temporal split and evaluates it on the held-out
15%; the popularity baseline is measured alongside.

    python benchmarks/tune_als.py [--users 20000] [--movies 3000] [--days 30]
        [--factors 8,16,32,64] [--regularization 0.1,1,10] [--alpha 1,5,20]
        [--iterations 15] [--cg 3/3,2/1]   # CG steps per iteration, user side/item side
"""

from __future__ import annotations

import argparse
import itertools
import time
from datetime import datetime

from offline_eval.evaluate import evaluate
from offline_eval.simulated import compact_sessions, history_table, simulate
from offline_eval.split import build_truth, temporal_split
from recommender.dataset import build_trainset
from recommender.models import model_class
from recommender.training.pipeline import split_cut
from simulator.world import World, WorldSpec


def floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=20_000)
    ap.add_argument("--movies", type=int, default=3_000)
    ap.add_argument("--days", type=float, default=30.0)
    ap.add_argument("--factors", default="8,16,32,64")
    ap.add_argument("--regularization", default="0.1,1,10")
    ap.add_argument("--alpha", default="1,5,20")
    ap.add_argument("--iterations", type=int, default=15)
    ap.add_argument("--cg", default="3/3", help="user/item CG steps, comma-separated")
    args = ap.parse_args()

    start = datetime(2025, 3, 1)
    world = World.build(WorldSpec(seed=7, n_users=args.users, n_movies=args.movies))
    table = history_table(world, compact_sessions(simulate(world, start=start, days=args.days, seed=1)),
                          start=start)
    cut, end = split_cut(table, 0.15)
    train_rows, test_rows = temporal_split(table, cut, end=end)
    train = build_trainset(train_rows, as_of=cut)
    truth = build_truth(train, test_rows)
    print(f"{train.n_users} users, {train.matrix.nnz} interactions "
          f"({train.matrix.nnz / train.n_users:.1f} per user), {len(truth)} test users")

    def score(name: str, **params: object) -> str:
        model = model_class(name)(**params)
        started = time.perf_counter()
        model.fit(train)
        fit_s = time.perf_counter() - started
        s = evaluate(model, train, truth, k=20, latency_sample=5).summary()
        return f"ndcg@20 {s['ndcg@20']:.4f}  recall@20 {s['recall@20']:.4f}  fit {fit_s:.1f}s"

    print(f"{'popularity':38s} {score('popularity', by_segment=True)}")
    steps = [tuple(int(x) for x in pair.split("/")) for pair in args.cg.split(",")]
    for f, reg, alpha, (user_cg, item_cg) in itertools.product(
            floats(args.factors), floats(args.regularization), floats(args.alpha), steps):
        label = f"als f={int(f)} reg={reg:g} alpha={alpha:g} cg={user_cg}/{item_cg}"
        result = score("als", factors=int(f), regularization=reg, alpha=alpha,
                       iterations=args.iterations, cg_steps=user_cg, item_cg_steps=item_cg)
        print(f"{label:38s} {result}", flush=True)


if __name__ == "__main__":
    main()
