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

Feedback loops (issue #18, item 3): per day of each run, the feedback audit's own
measures (``audit.feedback``: catalog coverage of the lists, Gini of exposure over the
catalog, long-tail share of plays against the head of the week before, each day on the same
number of lists) beside the truth's utility per session, with the audit's trends and
verdict. A third run, *loop on + mitigation*, is the loop-on run with every list that has
a history behind it re-ranked by ``recommender.rerank.calibrate`` (Steck, "Calibrated
recommendations", RecSys 2018: each user's list carries the share of long-tail and older
movies of their own history), as serving's ``calibrated`` arms do; flags from the model's
popularity ranking and the movie API's release years, as serving derives them. Its effect
against loop on: the coverage gain (percentage points of the catalog) and the utility
cost, paired per user over the week and judged against ``UTILITY_BOUND`` (5%), stated
before measuring. ``loop-week-feedback.svg`` plots the four measures per day;
``--no-mitigation`` skips the third run.

    python benchmarks/loop_week.py [--users 6000] [--movies 3000] [--backfill-days 25]
        [--days 7] [--drift-day 3.5] [--seed 42] [--no-mitigation] [--out-dir var/bench/loop-week]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import re
import shutil
import sys
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from audit import feedback as fb
from benchmarks.candidates import inputs_from
from movierec.settings import load
from offline_eval.evaluate import compare_paired
from offline_eval.plot import line_chart
from offline_eval.simulated import compact_sessions, simulate
from online_eval.sequential import ArmHealth, ArmSample
from recommender import rerank
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
    """One run of the week (module docstring); ``loop``: whether the loop runs;
    ``mitigation``: whether every list with a history behind it is re-ranked by
    ``recommender.rerank.calibrate``, as serving's ``calibrated`` arms do."""

    def __init__(self, world: World, backfill: Events, work: Path, args: argparse.Namespace,
                 *, loop: bool, mitigation: bool = False) -> None:
        population = dataclasses.replace(world.population,
                                         genre_pref=world.population.genre_pref.copy())
        self.world = World(world.spec, world.catalog, population)  # drifts on its own copy
        self.work, self.args, self.loop, self.mitigation = work, args, loop, mitigation
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
        # per hour: the sessions' start times, users, lists (world indices, -1 = none) and
        # the movie each session started (a play)
        self.served: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
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
            # as serving derives them (recommender.serving.loaded): the long tail by the
            # model's own popularity ranking, "older" by the movie API's release year
            ranking = np.asarray(model.recommend_new(None, len(to_world)), np.int64)
            flags = rerank.item_flags(ranking, self.world.catalog.year[to_world].astype(np.float64))
            self.models[version] = (model, to_model, to_world, flags)
        return self.models[version]

    def _list(self, user: int, version: str) -> np.ndarray:
        model, to_model, to_world, flags = self._model(version)
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
        if self.mitigation and len(history):  # cold start is not re-ranked (serving's rule)
            ranked = np.asarray(model.recommend(history, max(LIST_N, rerank.CANDIDATES)), np.int64)
            target = rerank.user_target(history.items, history.weights, flags)
            picks = rerank.calibrate(ranked, flags, target, LIST_N)
        else:
            picks = np.asarray(model.recommend(history, LIST_N), np.int64)
        items = to_world[picks]
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
        self.served.append((starts, users, lists, out.movie))
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
            print(f"  {self.label()} day {self.t / 86400 - self.args.backfill_days:.2f}: "
                  f"{len(self.sessions)} sessions", end="\r", flush=True)
        print()
        return {"drift": drifted, "seconds": round(time.perf_counter() - began, 1),
                "cycles": [self.cycle_row(c) for c in self.journal.cycles()]}

    def label(self) -> str:
        return "on + mitigation" if self.mitigation else "on" if self.loop else "off"

    def feedback(self, start_s: float) -> fb.FeedbackResult:
        """The feedback audit's measures per day of this run (``audit.feedback``): the
        week's lists, plays (the sessions' first minutes) from the head's reference period
        on (the backfill's last week), the world's catalog."""
        ids = self.world.catalog.ids
        tally = fb.Tally(fb.DAY_S, origin_s=start_s)
        for starts, users, lists, movies in self.served:
            for t, user, row, movie in zip(starts.tolist(), users.tolist(), lists.tolist(),
                                           movies.tolist(), strict=True):
                tally.add_list(t, user, [ids[m] for m in row if m >= 0])
                tally.add_play(t, ids[movie])
        before = self.events[0]  # the backfill: a session's first minute line is its start
        plays = ((before.kind == WATCH) & (before.value == 0) & (before.movie >= 0)
                 & (before.t >= start_s - fb.POPULARITY_S))
        for t, m in zip(before.t[plays].tolist(), before.movie[plays].tolist(), strict=True):
            tally.add_play(t, ids[m])
        return fb.measure(tally, catalog=ids)

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


RUNS = {"on": "loop on", "off": "loop off", "mitigation": "loop on + mitigation"}
MEASURES = {"coverage": "catalog coverage", "gini": "Gini of exposure",
            "tail_share": "long-tail share of plays", "utility": "utility per session"}


def feedback_days(week: Week, start_s: float) -> dict:
    """The feedback audit's measures per day of one run (``Week.feedback``) with the
    truth's mean utility per session of each day, the week's means over the judged days,
    and the audit's trends and verdict."""
    result = week.feedback(start_s)
    utility = {int(day): u for day, u in buckets(week.sessions, start_s, 24)}
    days = [{"day": i, "lists": b.lists, "measured_lists": b.measured_lists, "plays": b.plays,
             "coverage": b.coverage, "gini": b.gini, "tail_share": b.tail_share,
             "utility": utility.get(i), "judged": b.judged}
            for b in result.buckets if (i := round((b.start_s - start_s) / fb.DAY_S)) >= 0]
    judged = [d for d in days if d["judged"]]

    def mean(key: str) -> float | None:
        values = [v for d in judged if (v := d[key]) is not None]
        return round(float(np.mean(values)), 5) if values else None

    return {"days": days, "per_day_lists": result.per_bucket,
            "week": {**{k: mean(k) for k in ("coverage", "gini", "tail_share")},
                     "window_coverage": result.window_coverage,
                     "utility": round(float(np.mean([s[5] for s in week.sessions])), 5)
                     if week.sessions else None},
            "trends": {t.measure: {"slope_per_day": t.slope_per_day,
                                   "breadth_change_per_day": t.breadth_change,
                                   "verdict": t.verdict} for t in result.trends},
            "verdict": result.verdict}


UTILITY_BOUND = 0.05
"""The mitigation may cost at most this share of loop on's true utility per session,
stated before measuring: the non-inferiority margin the loop's canary already allows a
challenger (``MOVIEREC_LOOP_MARGIN``, relative to the champion). Judged on the paired 95%
interval's worst end, per user over the whole week."""


def mitigation_effect(on: Week, mitigated: Week, on_fb: dict, mit_fb: dict, start_s: float) -> dict:
    """What the mitigation bought and cost: coverage, Gini and long-tail share (week means
    of the judged days, in percentage points), and the paired per-user test of the true
    utility per session against ``UTILITY_BOUND``."""
    a, b = per_user_after(mitigated.sessions, start_s), per_user_after(on.sessions, start_s)
    both = sorted(set(a) & set(b))
    test = compare_paired(np.array([a[u] for u in both]), np.array([b[u] for u in both]))
    base = float(np.mean([b[u] for u in both]))

    def pp(key: str) -> float | None:
        x, y = mit_fb["week"][key], on_fb["week"][key]
        return None if x is None or y is None else round(100 * (x - y), 2)

    return {"coverage_gain_pp": pp("coverage"), "window_coverage_gain_pp": pp("window_coverage"),
            "gini_change_pp": pp("gini"), "tail_share_change_pp": pp("tail_share"),
            "utility": {"users": len(both), "mitigation": round(float(np.mean([a[u] for u in both])), 5),
                        "on": round(base, 5), "mean_diff": round(test.mean_diff, 5),
                        "ci95": [round(x, 5) for x in test.ci],
                        "relative": round(test.mean_diff / base, 5),
                        "relative_ci95": [round(x / base, 5) for x in test.ci],
                        "wilcoxon_p": float(f"{test.p_value:.3g}"), "bound": UTILITY_BOUND,
                        "within_bound": bool(test.ci[0] > -UTILITY_BOUND * base)}}


def _f(value: float | None, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def markdown(result: dict) -> str:
    mitigated = "mitigation" in result["utility"]
    head = "| days | loop on: utility per session | loop off | on - off |" + (
        " on + mitigation |" if mitigated else "")
    rows = [head, "|---|---:|---:|---:|" + ("---:|" if mitigated else "")]
    third = result["utility"].get("mitigation", [(None, None)] * len(result["utility"]["on"]))
    for (day, on), (_, off), (_, mit) in zip(result["utility"]["on"], result["utility"]["off"],
                                              third, strict=True):
        half = BUCKET_H / 48.0
        rows.append(f"| {day - half:.1f}-{day + half:.1f} | {on:.4f} | {off:.4f} | {on - off:+.4f} |"
                    + (f" {_f(mit)} |" if mitigated else ""))
    rows += ["", "| cycle | trigger | day | challenger | result | closed day | reason | "
                 "truth: utility champion arm, challenger arm |", "|---|---|---:|---|---|---:|---|---|"]
    for c in result["cycles"]:
        truth = ", ".join("n/a" if v is None else f"{v:.3f}" for v in c["truth_utility"].values())
        rows.append(f"| {c['id']} | {c['trigger']} | {c['day']:.2f} | {c['challenger']} | "
                    f"{c['result']} | {c['closed_day']:.2f} | {c['reason']} | {truth} |")
    feedback = result.get("feedback", {})
    if feedback:
        rows += ["", "Feedback loops per day (the feedback audit's measures, "
                     f"each day on {next(iter(feedback.values()))['per_day_lists']:,} lists; "
                     "utility is the truth's):", "",
                 "| day | run | lists | coverage | Gini of exposure | long-tail share of plays "
                 "| utility per session |", "|---:|---|---:|---:|---:|---:|---:|"]
        for i in range(len(next(iter(feedback.values()))["days"])):
            for run, fb_run in feedback.items():
                d = fb_run["days"][i]
                rows.append(f"| {d['day']}{'' if d['judged'] else ' (partial)'} | {RUNS[run]} | "
                            f"{d['lists']:,} | {_f(d['coverage'])} | {_f(d['gini'])} | "
                            f"{_f(d['tail_share'])} | {_f(d['utility'])} |")
        rows += ["", "| run | coverage (mean of days) | coverage (week) | Gini | long-tail share "
                     "| utility per session | breadth change per day: coverage, 1 - Gini, tail "
                     "| audit verdict |", "|---|---:|---:|---:|---:|---:|---|---|"]
        for run, fb_run in feedback.items():
            w, t = fb_run["week"], fb_run["trends"]
            change = ", ".join("n/a" if t[k]["breadth_change_per_day"] is None
                               else f"{t[k]['breadth_change_per_day']:+.2%}" for k in t)
            rows.append(f"| {RUNS[run]} | {_f(w['coverage'])} | {_f(w['window_coverage'])} | "
                        f"{_f(w['gini'])} | {_f(w['tail_share'])} | {_f(w['utility'])} | "
                        f"{change} | {fb_run['verdict']} |")
    if effect := result.get("mitigation"):
        u = effect["utility"]
        rows += ["", f"Mitigation against loop on: coverage {effect['coverage_gain_pp']:+.2f} "
                     f"points of the catalog a day ({effect['window_coverage_gain_pp']:+.2f} over "
                     f"the week), Gini {effect['gini_change_pp']:+.2f} points, long-tail share "
                     f"{effect['tail_share_change_pp']:+.2f} points; utility per session "
                     f"{u['mean_diff']:+.4f} [{u['ci95'][0]:+.4f}, {u['ci95'][1]:+.4f}] "
                     f"({u['relative']:+.2%}, Wilcoxon p {u['wilcoxon_p']:.3g}, {u['users']:,} "
                     f"users): {'within' if u['within_bound'] else 'NOT within'} the bound of "
                     f"-{u['bound']:.0%}."]
        cycles = result.get("cycles_mitigation", [])
        rows.append(f"The mitigated run's loop: {len(cycles)} cycles, "
                    f"{sum(c['result'] == 'promoted' for c in cycles)} promoted.")
    return "\n".join(rows) + "\n"


def stacked(charts: list[str]) -> str:
    """SVG documents one above the other in one document (each nested at its offset)."""
    sizes = [(float(re.search(r'width="([\d.]+)"', c)[1]),  # type: ignore[index]
              float(re.search(r'height="([\d.]+)"', c)[1])) for c in charts]  # type: ignore[index]
    width, height = max(w for w, _ in sizes), sum(h for _, h in sizes)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:g}" height="{height:g}" '
           f'viewBox="0 0 {width:g} {height:g}">']
    y = 0.0
    for chart, (_, h) in zip(charts, sizes, strict=True):
        out.append(chart.replace("<svg ", f'<svg y="{y:g}" ', 1).rstrip())
        y += h
    return "\n".join(out + ["</svg>"]) + "\n"


def feedback_svg(feedback: dict, markers: list[tuple[float, str]]) -> str:
    charts = []
    for key, name in MEASURES.items():
        series = {RUNS[run]: [(d["day"] + 0.5, math.nan if d[key] is None else d[key])
                              for d in fb_run["days"]] for run, fb_run in feedback.items()}
        charts.append(line_chart(series, x_label="day of the simulated week",
                                 y_label=f"{name} (day)", markers=markers,
                                 title=f"Feedback loops: {name} per day"))
    return stacked(charts)


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
    ap.add_argument("--no-mitigation", action="store_true",
                    help="skip the third run (loop on, lists re-ranked by recommender.rerank)")
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
    plan = [("on", True, False), ("off", False, False)] + (
        [] if args.no_mitigation else [("mitigation", True, True)])
    for name, loop, mitigation in plan:
        shutil.copytree(work / "first", work / name)
        week = Week(world, backfill, work / name, args, loop=loop, mitigation=mitigation)
        runs[name] = (week, week.run())
    start_s, drift_s = args.backfill_days * 86400.0, (args.backfill_days + args.drift_day) * 86400.0
    on, off = (per_user_after(runs[k][0].sessions, drift_s) for k in ("on", "off"))
    both = sorted(set(on) & set(off))
    test = compare_paired(np.array([on[u] for u in both]), np.array([off[u] for u in both]))
    feedback = {k: feedback_days(runs[k][0], start_s) for k in runs}
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
        "feedback": feedback,
        "run_seconds": {k: runs[k][1]["seconds"] for k in runs},
        "total_s": 0.0}
    if "mitigation" in runs:
        result["cycles_mitigation"] = runs["mitigation"][1]["cycles"]
        result["mitigation"] = mitigation_effect(runs["on"][0], runs["mitigation"][0],
                                                 feedback["on"], feedback["mitigation"], start_s)
    result["total_s"] = round(time.perf_counter() - started, 1)
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
    (args.out_dir / "loop-week-feedback.svg").write_text(
        feedback_svg(feedback, [(args.drift_day, "taste drift")]))
    print(json.dumps({k: result[k] for k in ("after_drift", "take_share", "sessions", "total_s")
                      + (("mitigation",) if "mitigation" in result else ())}, indent=2))
    print(markdown(result))


if __name__ == "__main__":
    main()
