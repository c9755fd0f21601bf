"""Benchmark: shilling campaigns against the detector and training's exclusion (issue 18).

A simulated world's history is backfilled as log lines three times with the same seed:
clean, with a campaign of 1% of the users, and with one of 5% (``movierec sim backfill
--inject shilling_accounts=N``: fake accounts sign up and give one obscure target the top
score, with filler ratings of popular movies). The lines are parsed as the consumer
parses them into event-store rows. For each attacked history:

- detection: the campaigns ``recommender.shilling`` finds (with the training filter's
  births), their accounts against the injected ones (the simulator's truth, read here
  only to score): precision and recall;
- effect: ALS (the service's model, the project's tuned defaults) trained on the rows as
  they are, and on the rows training keeps (``exclude_campaigns``); the share of 500
  organic users' top-20 lists holding the target, against the clean history's model.
  The lift is that share minus the clean one, in percentage points; the issue asks it
  to stay under 1 point with the mitigation on.

    python benchmarks/shilling.py [--users 2000] [--movies 1000] [--days 10] [--seed 42]
        [--at-h 150] [--json] [--out out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from datetime import datetime
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.report import add_output_args, emit
from movierec.wire import Account, LineParser, Rate, Watch
from recommender.dataset import build_trainset
from recommender.models.als import ALSRecommender
from recommender.training.settings import TrainSettings
from recommender.training.shilling_filter import exclude_campaigns
from stores.event_columns import EventColumns

REPO = Path(__file__).resolve().parents[1]
SAMPLE_USERS = 500


def backfill(folder: Path, args: argparse.Namespace, accounts: int) -> tuple[Path, dict | None]:
    """The history's lines in a file (and the campaign's truth when there is one)."""
    out, truth = folder / f"log-{accounts}.txt", folder / f"truth-{accounts}.jsonl"
    env = {**os.environ, "MOVIEREC_SIM_USERS": str(args.users),
           "MOVIEREC_SIM_MOVIES": str(args.movies), "MOVIEREC_SIM_SEED": str(args.seed)}
    cmd = [sys.executable, "-m", "movierec", "sim", "backfill", "--days", str(args.days),
           "--sink", "file", "--out", str(out), "--no-progress"]
    if accounts:
        cmd += ["--inject", f"shilling_accounts={accounts},shilling_at_h={args.at_h}",
                "--truth", str(truth)]
    subprocess.run(cmd, cwd=REPO, env=env, check=True, capture_output=True)
    return out, json.loads(truth.read_text().splitlines()[0]) if accounts else None


def rows_of(path: Path) -> pa.Table:
    """The lines as event-store rows (watch, rate and account), as the consumer writes."""
    parser, columns = LineParser(5), EventColumns()
    with path.open("rb") as fh:
        for offset, raw in enumerate(fh):
            event = parser.parse(raw)
            if isinstance(event, (Watch, Rate, Account)):
                columns.add(event, 0, offset)
    return columns.to_table()


def target_share(table: pa.Table, target: str, users: np.ndarray) -> float:
    """Share of ``users``' top-20 ALS lists (trained on ``table``) that hold ``target``."""
    events = table.filter(pa.compute.is_in(pa.compute.cast(table["kind"], pa.string()),
                                           value_set=pa.array(["watch", "rate"])))
    as_of = datetime.fromtimestamp(events["time"].to_numpy().max().astype("datetime64[ms]")
                                   .astype(np.int64) / 1000 + 1)
    train = build_trainset(events, as_of=as_of)
    defaults = TrainSettings()
    model = ALSRecommender(factors=defaults.als_factors, iterations=defaults.als_iterations,
                           regularization=defaults.als_regularization, alpha=defaults.als_alpha,
                           random_state=0, num_threads=1)
    model.fit(train)
    rows = np.flatnonzero(np.isin(train.user_ids, users))
    lists = model.recommend_batch(rows, 20)
    where = np.flatnonzero(train.item_ids == target)
    if len(where) == 0:
        return 0.0
    return float(np.mean((lists == where[0]).any(axis=1)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=2_000)
    ap.add_argument("--movies", type=int, default=1_000)
    ap.add_argument("--days", type=float, default=10.0)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--at-h", type=float, default=150.0, help="campaign start, hours in")
    add_output_args(ap)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        clean_path, _ = backfill(folder, args, 0)
        clean = rows_of(clean_path)
        organic = np.unique(clean["user_id"].to_numpy())
        sample = np.random.default_rng(args.seed).choice(
            organic, size=min(SAMPLE_USERS, len(organic)), replace=False)
        results = []
        for share in (0.01, 0.05):
            accounts = max(1, round(args.users * share))
            path, truth = backfill(folder, args, accounts)
            assert truth is not None
            table = rows_of(path)
            events = table.filter(pa.compute.not_equal(pa.compute.cast(table["kind"], pa.string()),
                                                       "account"))
            signups = table.filter(pa.compute.equal(pa.compute.cast(table["kind"], pa.string()),
                                                    "account")).select(["time", "user_id"])
            kept, found, summary = exclude_campaigns(events, signups, scale_max=5)
            fakes = set(range(truth["first_user"], truth["first_user"] + truth["accounts"]))
            hit = len(found.accounts & fakes)
            target = truth["target"]
            base = target_share(clean, target, sample)
            attacked = target_share(events, target, sample)
            mitigated = target_share(kept, target, sample)
            results.append({
                "campaign_share": share, "accounts": accounts, "target": target,
                "detected_targets": found.targets,
                "precision": hit / len(found.accounts) if found.accounts else float("nan"),
                "recall": hit / len(fakes),
                "target_share_clean": base, "target_share_attacked": attacked,
                "target_share_mitigated": mitigated,
                "lift_pp_unmitigated": 100 * (attacked - base),
                "lift_pp_mitigated": 100 * (mitigated - base),
                "excluded_accounts": summary["excluded_accounts"],
            })
    lines = ["| campaign | accounts | precision | recall | target in lists: clean | "
             "attacked | mitigated | lift, pp: unmitigated | mitigated |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['campaign_share']:.0%} | {r['accounts']:,} | {r['precision']:.3f} | "
                     f"{r['recall']:.3f} | {r['target_share_clean']:.1%} | "
                     f"{r['target_share_attacked']:.1%} | {r['target_share_mitigated']:.1%} | "
                     f"{r['lift_pp_unmitigated']:+.1f} | {r['lift_pp_mitigated']:+.1f} |")
    if not args.json:
        print("\n".join(lines))
    emit({"args": {k: v for k, v in vars(args).items() if k not in ("json", "out")},
          "results": results}, args)


if __name__ == "__main__":
    main()
