"""Benchmark: does the loop close? A simulated week, loop on against loop off, measured
against the simulator's hidden truth (issue #16, item 4).

The world (the demo's scale by default) gets ``--backfill-days`` of organic history; the
training pipeline fits its candidates on it and the gate's choice becomes the champion
(as the loop's first cycle does on a fresh install). Then two runs of ``--days`` days,
with the same seed, each from a copy of that registry:

- every hour of event time, users arrive as the history generator's sessions do (the same
  arrivals in both runs: their own random stream), each asks for a list, and reacts as
  the live simulator's users do (``simulator.behaviour.react``: takes a listed movie or
  one found by itself, watches, maybe rates). Lists come from the served model with the
  user's current history folded in, weighted by ``recommender.confidence`` as the service
  does, and the canary's experiment routes users with ``experiments.assign``;
- at ``--drift-day``, tastes drift (``simulator.history.taste_drift``: half of the users
  warm to one genre and cool on another);
- loop on: each hour the loop's own core runs (``triggers.check``, ``runner.run_until_idle``)
  with ports over this simulation: training is the real pipeline on the history so far,
  the gate and the registry and the experiment file are real, the canary's look is the
  per-user take rate of each arm since the canary began (the sessions are the log here),
  and the clock is event time. Loop off: the champion never changes.

Measured with the truth, which the system never sees: each session's oracle utility
(``simulator.oracle.list_values``, the expected utility the user takes from the list).
Reported: the mean per 12 h for both runs, every cycle and its outcome, and a paired test
on each user's mean utility after the drift (users with sessions in both runs). A table
(JSON, markdown) and an SVG plot go to ``--out-dir``.

    python benchmarks/loop_week.py [--users 6000] [--movies 3000] [--backfill-days 25]
        [--days 7] [--drift-day 3.5] [--seed 42] [--out-dir var/bench/loop-week]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.candidates import inputs_from
from movierec.settings import load
from offline_eval.evaluate import compare_paired
from offline_eval.plot import line_chart
from offline_eval.simulated import compact_sessions, simulate
from online_eval.sequential import ArmHealth, ArmSample
from recommender.confidence import confidence
from recommender.loop import effects
from recommender.loop.adapters import choose_challenger
from recommender.loop.cycle import Cycle, Result, open_cycle
from recommender.loop.journal import Journal
from recommender.loop.runner import CanaryView, Ports, Trained, run_until_idle
from recommender.loop.settings import LoopSettings
from recommender.loop.triggers import Signals, check
from recommender.models.base import History
from recommender.registry import Registry
from recommender.serving.experiments import ExperimentStore, assign
from recommender.training.pipeline import Pipeline
from recommender.training.settings import TrainSettings
from simulator.behaviour import BehaviourParams, OrganicSampler, WeightedSampler, react
from simulator.history import _HOURLY, RATE, WATCH, Events, taste_drift
from simulator.oracle import list_values
from simulator.world import World, WorldSpec

START = datetime(2025, 1, 1)
BLOCK_S = 3600.0
LIST_N = 20
BUCKET_H = 12


def train(world: World, events: Events, registry: Registry, work: Path, has_champion: bool) -> Trained:
    """The pipeline's candidates on ``events``, registered and gated; the gate's choice."""
    settings = load(TrainSettings, {}, reports_dir=work / "reports")
    inputs = inputs_from(world, compact_sessions(events), start=START, label="loop week")
    rows = inputs.events.num_rows  # the provenance a registered version needs
    inputs = dataclasses.replace(inputs, data={**inputs.data, "rows": rows,
                                               "snapshot_id": f"loop-week-{rows}",
                                               "partitions": {"0": [0, rows]}})
    report = Pipeline(settings, registry=registry).run(inputs, register=True, promote=False)
    return choose_challenger(report, settings.gate_metric, has_champion=has_champion)


class Week:
    """One run of the week (module docstring); ``loop``: whether the loop runs."""

    def __init__(self, world: World, backfill: Events, work: Path, args: argparse.Namespace,
                 *, loop: bool) -> None:
        population = dataclasses.replace(world.population,
                                         genre_pref=world.population.genre_pref.copy())
        self.world = World(world.spec, world.catalog, population)  # drifts on its own copy
        self.work, self.args, self.loop = work, args, loop
        self.registry = Registry(work / "registry")
        self.experiments = ExperimentStore(work / "registry" / "experiments.json")
        self.journal = Journal(work / "journal.jsonl")
        self.settings = load(LoopSettings, {}, loop_canary_share=args.canary_share,
                             loop_tau=args.tau, loop_min_users=args.min_users,
                             loop_canary_max_h=args.canary_max_h, loop_margin=args.margin)
        self.arrivals = np.random.default_rng([args.seed, 1])  # the same in both runs
        self.rng = np.random.default_rng([args.seed, 2])
        self.params = BehaviourParams()
        self.sampler, self.users = OrganicSampler(self.world), WeightedSampler(population.activity)
        self.events: list[Events] = [backfill]
        # per user: movie index -> [max minute, stars (-1: unrated), last event s]
        self.history: dict[int, dict[int, list[float]]] = defaultdict(dict)
        self._remember(backfill)
        # one row a session: time s, user, arm, model version, took from the list, utility
        self.sessions: list[tuple[float, int, str, str, bool, float]] = []
        self.models: dict[str, tuple] = {}
        self.t = 0.0  # seconds since START

    # -- the log and the histories ---------------------------------------------------

    def _remember(self, events: Events) -> None:
        for t, kind, user, movie, value in zip(events.t.tolist(), events.kind.tolist(),
                                               events.user.tolist(), events.movie.tolist(),
                                               events.value.tolist(), strict=True):
            if movie < 0 or kind not in (WATCH, RATE):
                continue
            row = self.history[user].setdefault(movie, [-1.0, -1.0, t])
            row[0 if kind == WATCH else 1] = max(row[0], value) if kind == WATCH else value
            row[2] = max(row[2], t)

    def now(self) -> datetime:
        return (START + timedelta(seconds=self.t)).replace(tzinfo=UTC)

    # -- serving ---------------------------------------------------------------------

    def _model(self, version: str) -> tuple:
        if version not in self.models:
            model = self.registry.load(version)
            index = {m: i for i, m in enumerate(model.item_ids.tolist())}
            to_model = np.array([index.get(m, -1) for m in self.world.catalog.ids], np.int64)
            to_world = np.array([self.world.movie_index[m] for m in model.item_ids.tolist()], np.int64)
            self.models[version] = (model, to_model, to_world)
        return self.models[version]

    def _list(self, user: int, version: str) -> np.ndarray:
        model, to_model, to_world = self._model(version)
        seen = self.history.get(user, {})
        movies = np.fromiter(seen, np.int64, len(seen))
        known = movies[to_model[movies] >= 0] if len(movies) else movies
        if len(known):
            rows = np.array([seen[m] for m in known.tolist()])
            weights = confidence(rows[:, 0].astype(np.int64), rows[:, 1].astype(np.int64),
                                 np.maximum(self.t - rows[:, 2], 0.0),
                                 self.world.catalog.runtime[known].astype(np.float32))
            order = np.argsort(to_model[known])
            history = History(to_model[known][order].astype(np.int32), weights[order])
        else:
            history = History.empty()
        out = np.full(LIST_N, -1, np.int64)
        items = to_world[np.asarray(model.recommend(history, LIST_N), np.int64)]
        out[:len(items)] = items
        return out

    def hour(self) -> None:
        """One block: arrivals, lists, reactions, the log and the truth's measure."""
        hour = (START + timedelta(seconds=self.t)).hour
        per_s = float(self.world.population.activity.sum()) / 86400.0  # sessions/s, as history's
        n = int(self.arrivals.poisson(per_s * BLOCK_S * _HOURLY[hour]))
        users = np.unique(self.users.sample(self.arrivals, n))
        users = users[self.world.population.joined[users] * 86400.0 <= self.t + BLOCK_S]
        starts = self.t + np.sort(self.arrivals.random(len(users))) * BLOCK_S
        users = self.arrivals.permutation(users)
        experiment = self.experiments.read()[1]
        champion = self.registry.aliases()[effects.CHAMPION_ALIAS]
        arms, versions, lists = [], [], np.full((len(users), LIST_N), -1, np.int64)
        for i, user in enumerate(users.tolist()):
            arm = assign(user, experiment, self.now()) if experiment is not None else None
            arms.append(arm.name if arm else "champion")
            versions.append(champion if arm is None or arm.model == effects.CHAMPION_ALIAS
                            else arm.model)
            lists[i] = self._list(user, versions[-1])
        if not len(users):
            return
        out = react(self.world, users, lists, self.sampler, self.rng, self.params, 5)
        values = list_values(self.world, users, lists, self.params)
        for row in zip(starts.tolist(), users.tolist(), arms, versions, out.from_list.tolist(),
                       values.tolist(), strict=True):
            self.sessions.append(row)
        last = starts + (out.minutes - 1) * 60.0
        rated = out.stars > 0
        events = Events(
            t=np.concatenate([starts, last, last[rated] + 60.0]),
            kind=np.concatenate([np.full(2 * len(users), WATCH, np.int8),
                                 np.full(int(rated.sum()), RATE, np.int8)]),
            user=np.concatenate([users, users, users[rated]]).astype(np.int32),
            movie=np.concatenate([out.movie, out.movie, out.movie[rated]]).astype(np.int32),
            value=np.concatenate([np.zeros(len(users)), out.minutes - 1,
                                  out.stars[rated]]).astype(np.int16))
        events = events.take(np.argsort(events.t, kind="stable"))
        self.events.append(events)
        self._remember(events)

    # -- the loop over this simulation ---------------------------------------------------

    def ports(self) -> Ports:
        def look(cycle: Cycle) -> CanaryView:
            assert cycle.canary_started is not None
            since = (cycle.canary_started - START.replace(tzinfo=UTC)).total_seconds()
            taken: dict[str, dict[int, list[int]]] = {"champion": {}, "challenger": {}}
            for t, user, arm, _v, took, _value in reversed(self.sessions):
                if t < since:
                    break
                if arm in taken:
                    taken[arm].setdefault(user, []).append(took)
            samples = [ArmSample.of([float(np.mean(v)) for v in taken[a].values()]) for a in taken]
            health = tuple(ArmHealth(requests=s.n, served=s.n) for s in samples)
            return CanaryView(samples[0], samples[1], health)  # type: ignore[arg-type]

        def start(cycle: str, challenger: str, share: float) -> datetime | None:
            return effects.start_canary(self.experiments, cycle=cycle, challenger=challenger,
                                        share=share, at=self.now()).start

        return Ports(
            champion=lambda: self.registry.aliases().get(effects.CHAMPION_ALIAS),
            train=lambda _cycle: train(self.world, Events.concat(self.events), self.registry,
                                       self.work, True),
            start_canary=start, look=look,
            promote=lambda c, reason: effects.promote(self.registry, self.experiments, cycle=c.id,
                                                      challenger=str(c.challenger), reason=reason),
            retire=lambda c, result, reason, numbers: effects.retire(
                self.registry, self.experiments, cycle=c.id, challenger=str(c.challenger),
                result=result.value, reason=reason, numbers=numbers),
            now=self.now)

    def tick_loop(self) -> None:
        cycles = self.journal.cycles()
        trigger = None
        if open_cycle(cycles) is None:
            # the first champion was trained at the week's start: the schedule counts from it
            week = START + timedelta(days=self.args.backfill_days)
            last = cycles[-1].started if cycles else week.replace(tzinfo=UTC)
            trigger = check(Signals(log_time=self.now(), last_cycle_log_time=last),
                            self.settings.triggers())
            if trigger is None:
                return
        run_until_idle(self.journal, self.ports(), self.settings.cycle(), trigger)

    def run(self) -> dict:
        began, drifted = time.perf_counter(), None
        self.t = self.args.backfill_days * 86400.0
        end = self.t + self.args.days * 86400.0
        drift_at = self.t + self.args.drift_day * 86400.0
        while self.t < end:
            if drifted is None and self.t >= drift_at:
                drifted = taste_drift(self.world.population.genre_pref,
                                      np.random.default_rng([self.args.seed, 3]))
            if self.loop:
                self.tick_loop()
            self.hour()
            self.t += BLOCK_S
            print(f"  {'on ' if self.loop else 'off'} day {self.t / 86400 - self.args.backfill_days:.2f}: "
                  f"{len(self.sessions)} sessions", end="\r", flush=True)
        print()
        return {"drift": drifted, "seconds": round(time.perf_counter() - began, 1),
                "cycles": [self.cycle_row(c) for c in self.journal.cycles()]}

    def cycle_row(self, cycle: Cycle) -> dict:
        """The cycle as the journal tells it, with the truth's verdict on its canary: the
        mean oracle utility per session of each arm while it ran."""
        def seconds(t: datetime) -> float:
            return (t.replace(tzinfo=None) - START).total_seconds()

        closed = seconds(datetime.fromisoformat(str(cycle.entries[-1]["at"])))
        truth: dict[str, list[float]] = {"champion": [], "challenger": []}
        if cycle.canary_started is not None:
            began = seconds(cycle.canary_started)
            for t, _u, arm, _v, _took, value in self.sessions:
                if began <= t < closed and arm in truth:
                    truth[arm].append(value)
        means = {arm: float(np.mean(v)) if v else None for arm, v in truth.items()}
        return {"id": cycle.id, "trigger": cycle.trigger, "day": round(seconds(cycle.started) / 86400, 2),
                "challenger": cycle.challenger, "result": cycle.result.value if cycle.result else None,
                "reason": cycle.reason, "closed_day": round(closed / 86400, 2),
                "truth_utility": means}


def buckets(sessions: list, start_s: float, hours: int) -> list[tuple[float, float]]:
    """(day of the week at the bucket's middle, mean utility per session) per bucket."""
    sums: dict[int, list[float]] = defaultdict(list)
    for t, _u, _a, _v, _took, value in sessions:
        sums[int((t - start_s) // (hours * 3600))].append(value)
    return [((b + 0.5) * hours / 24.0, float(np.mean(v))) for b, v in sorted(sums.items())]


def per_user_after(sessions: list, after_s: float) -> dict[int, float]:
    values: dict[int, list[float]] = defaultdict(list)
    for t, user, _a, _v, _took, value in sessions:
        if t >= after_s:
            values[user].append(value)
    return {u: float(np.mean(v)) for u, v in values.items()}


def markdown(result: dict) -> str:
    rows = ["| days | loop on: utility per session | loop off | on - off |", "|---|---:|---:|---:|"]
    for (day, on), (_, off) in zip(result["utility"]["on"], result["utility"]["off"], strict=True):
        half = BUCKET_H / 48.0
        rows.append(f"| {day - half:.1f}-{day + half:.1f} | {on:.4f} | {off:.4f} | {on - off:+.4f} |")
    rows += ["", "| cycle | trigger | day | challenger | result | closed day | reason | "
                 "truth: utility champion arm, challenger arm |", "|---|---|---:|---|---|---:|---|---|"]
    for c in result["cycles"]:
        truth = ", ".join("n/a" if v is None else f"{v:.3f}" for v in c["truth_utility"].values())
        rows.append(f"| {c['id']} | {c['trigger']} | {c['day']:.2f} | {c['challenger']} | "
                    f"{c['result']} | {c['closed_day']:.2f} | {c['reason']} | {truth} |")
    return "\n".join(rows) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=6_000)
    ap.add_argument("--movies", type=int, default=3_000)
    ap.add_argument("--backfill-days", type=float, default=25.0)
    ap.add_argument("--days", type=float, default=7.0)
    ap.add_argument("--drift-day", type=float, default=3.5)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--canary-share", type=float, default=0.3, help="the demo's (default 0.1)")
    ap.add_argument("--tau", type=float, default=0.1, help="the demo's mSPRT mixing scale")
    ap.add_argument("--min-users", type=int, default=50)
    ap.add_argument("--canary-max-h", type=float, default=12.0, help="in event time")
    ap.add_argument("--margin", type=float, default=0.05, help="non-inferiority margin (the default)")
    ap.add_argument("--out-dir", type=Path, default=Path("var/bench/loop-week"))
    args = ap.parse_args()

    started = time.perf_counter()
    world = World.build(WorldSpec(seed=args.seed, n_users=args.users, n_movies=args.movies))
    print(f"backfill: {args.backfill_days:g} days of {args.users:,} users x {args.movies:,} movies")
    backfill = simulate(world, start=START, days=args.backfill_days, seed=args.seed)
    work = args.out_dir / "work"
    shutil.rmtree(work, ignore_errors=True)
    first = Registry(work / "first" / "registry")
    print("train the first champion on the backfill")
    chosen = train(world, backfill, first, work / "first", has_champion=False)
    assert chosen.challenger is not None
    first.promote(chosen.challenger, reason="the first champion")
    runs = {}
    for name, loop in (("on", True), ("off", False)):
        shutil.copytree(work / "first", work / name)
        week = Week(world, backfill, work / name, args, loop=loop)
        runs[name] = (week, week.run())
    start_s, drift_s = args.backfill_days * 86400.0, (args.backfill_days + args.drift_day) * 86400.0
    on, off = (per_user_after(runs[k][0].sessions, drift_s) for k in ("on", "off"))
    both = sorted(set(on) & set(off))
    test = compare_paired(np.array([on[u] for u in both]), np.array([off[u] for u in both]))
    result = {
        "world": f"{args.users}x{args.movies}, backfill {args.backfill_days:g} d, seed {args.seed}",
        "first_champion": chosen.challenger, "days": args.days, "drift_day": args.drift_day,
        "drift": runs["on"][1]["drift"],
        "sessions": {k: len(runs[k][0].sessions) for k in runs},
        "utility": {k: buckets(runs[k][0].sessions, start_s, BUCKET_H) for k in runs},
        "after_drift": {"users": len(both), "on": round(float(np.mean([on[u] for u in both])), 5),
                        "off": round(float(np.mean([off[u] for u in both])), 5),
                        "mean_diff": round(test.mean_diff, 5), "ci95": [round(x, 5) for x in test.ci],
                        "wilcoxon_p": float(f"{test.p_value:.3g}")},
        "take_share": {k: round(float(np.mean([s[4] for s in runs[k][0].sessions])), 4) for k in runs},
        "cycles": runs["on"][1]["cycles"],
        "run_seconds": {k: runs[k][1]["seconds"] for k in runs},
        "total_s": round(time.perf_counter() - started, 1)}
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "loop-week.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out_dir / "loop-week.md").write_text(markdown(result))
    markers = [(args.drift_day, "taste drift")] + [
        (c["closed_day"] - args.backfill_days, "promoted") for c in result["cycles"]
        if c["result"] == Result.PROMOTED.value]
    (args.out_dir / "loop-week.svg").write_text(line_chart(
        {"loop on": result["utility"]["on"], "loop off": result["utility"]["off"]},
        x_label="day of the simulated week", y_label=f"oracle utility per session ({BUCKET_H} h mean)",
        title="A simulated week: the retraining loop on and off", markers=markers))
    print(json.dumps({k: result[k] for k in ("after_drift", "take_share", "sessions", "total_s")}, indent=2))
    print(markdown(result))


if __name__ == "__main__":
    main()
