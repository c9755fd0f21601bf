"""Benchmark: the fairness mitigation as an experiment arm on the running service
(issue #18, item 2).

Against the system ``make demo`` leaves running (the service, the consumer, the
simulated user/movie API, Kafka and Redis), with the project's own commands only, run
in the demo's environment (``DemoPlan``: its world's size and seed, its stack and files):

1. ``movierec experiment set``: arms "control" (the champion as it ranks) and one per
   ``--policies`` entry (the same champion re-ranked, e.g. ``"rerank": "calibrated"``:
   ``recommender.rerank``), the users split evenly by the service's sticky hash; it
   refuses to replace a running experiment (the loop's canary, say) unless ``--force``;
2. ``movierec sim live`` for ``--minutes`` at ``--rate`` requests/s: simulated users ask,
   react to the lists they get and write the event log, as in the demo's live stage;
3. ``movierec audit fairness --since-min``: the audit splits outcomes and exposure by arm
   (``audit.fairness.judge_arms``): each arm's take rate with its Wilson interval and
   each provider group's share of exposure against its share of demand;
4. the experiment is cleared (the champion serves everyone again).

Printed (and with ``--out``, written as JSON): per arm the lists, the take rate and its
interval, and long-tail and older movies' exposure share over demand share; then each
re-ranked arm's change against control. The report itself (markdown, JSON, plots) stays under
``--report-dir``.

    .venv/bin/python benchmarks/fairness_arm.py [--minutes 6] [--rate 20] [--force]
        [--policies calibrated,calibrated:0.9]
        [--report-dir var/bench/fairness-arm] [--out var/bench/fairness-arm.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MOVIEREC = str(ROOT / ".venv" / "bin" / "movierec")


def arms_of(policies: list[str]) -> list[dict]:
    """"control" and one arm per re-ranking policy, the users split evenly (the last arm
    takes the rounding): arm names are the policies with ":" as "-" ("calibrated-0.9")."""
    share = round(1.0 / (len(policies) + 1), 6)
    arms = [{"name": "control", "model": "champion", "share": share}]
    arms += [{"name": p.replace(":", "-"), "model": "champion", "share": share, "rerank": p}
             for p in policies]
    arms[-1]["share"] = round(1.0 - share * len(policies), 6)
    return arms
SETTLE_S = 20.0
"""After the traffic stops: the consumer and the broker catch up before the audit reads."""


def movierec(*args: str, env: dict[str, str], stdin: str | None = None,
             check: bool = True) -> str:
    done = subprocess.run([MOVIEREC, *args], input=stdin, capture_output=True, text=True,
                          env=env, check=False)
    if check and done.returncode != 0:
        sys.exit(f"movierec {' '.join(args)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return done.stdout


def summary(report: dict) -> dict:
    arms = report["numbers"]["arms"]
    if len(arms) < 2:
        sys.exit(f"the audit saw {len(arms)} arms: was the experiment read?")
    out: dict = {"arms": {}}
    for arm in arms:
        out["arms"][arm["arm"]] = {
            "rerank": arm["rerank"], "lists": arm["lists"], "eligible": arm["eligible"],
            "take_rate": arm["take_rate"], "interval": [arm["low"], arm["high"]],
            **{p["group"]: {"exposure": p["exposure_share"], "demand": p["demand_share"],
                            "ratio": (p["exposure_share"] / p["demand_share"]
                                      if p["demand_share"] else None)}
               for p in arm["providers"]}}
    control = out["arms"]["control"]
    out["change"] = {name: {
        "take_rate_pp": 100 * (arm["take_rate"] - control["take_rate"]),
        **{g: {"exposure_pp": 100 * (arm[g]["exposure"] - control[g]["exposure"])}
           for g in control if isinstance(control[g], dict)}}
        for name, arm in out["arms"].items() if name != "control"}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=6.0, help="real minutes of live traffic")
    ap.add_argument("--rate", type=float, default=20.0, help="requests per second")
    ap.add_argument("--policies", default="calibrated",
                    help="comma-separated re-ranking policies, one arm each beside control")
    ap.add_argument("--force", action="store_true", help="replace a running experiment")
    ap.add_argument("--report-dir", type=Path, default=Path("var/bench/fairness-arm"))
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    from ops.demo.flow import DemoPlan

    # the demo's own environment: its world's size and seed, its stack, its files (a
    # plain shell would simulate the course's 1,000,000 users, unknown to this service)
    plan = DemoPlan.load()
    env = plan.environ

    running = json.loads(movierec("experiment", "show", env=env) or "null")
    if running and running.get("experiment") and not args.force:
        sys.exit(f"an experiment is running ({running['experiment'].get('id')}); "
                 f"wait for it to end or pass --force")
    experiment = {"id": f"fair-{int(time.time())}",
                  "arms": arms_of([p for p in args.policies.split(",") if p])}
    movierec("experiment", "set", "-", "--reason",
             "fairness mitigation arm (benchmarks/fairness_arm.py)",
             stdin=json.dumps(experiment), env=env)
    started = time.time()
    try:
        time.sleep(3.0)  # every worker's watcher polls the file each second
        live = movierec("sim", "live", "--url", plan.serve_url, "--rate", f"{args.rate:g}",
                        "--duration", f"{args.minutes * 60:g}", "--start-day",
                        f"{plan.demo.demo_days:g}", "--truth",
                        str(args.report_dir / "live-truth.jsonl"), env=env)
        time.sleep(SETTLE_S)
        since_min = (time.time() - started) / 60.0 + 0.5
        report = json.loads(movierec("audit", "fairness", "--since-min", f"{since_min:.2f}",
                                     "--out", str(args.report_dir), "--json", check=False,
                                     env=env))
    finally:
        movierec("experiment", "clear", "--reason", "fairness arm benchmark done", check=False,
                 env=env)
    result = {"experiment": experiment, "minutes": args.minutes, "rate": args.rate,
              "live": live.strip().splitlines()[-1:] if live else [], **summary(report)}
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
