"""The feedback-loop audit as a report (``audit.report.AuditReport``): pure, from the
measures (``audit.feedback.measure``) and the running experiment's arms."""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime

from audit.fairness import RATIO
from audit.feedback import DAY_S, HORIZON_DAYS, MIN_BUCKETS, TOLERANCE_PER_DAY, FeedbackResult
from audit.report import AuditReport, Table
from offline_eval.plot import line_chart
from recommender.serving.experiments import Experiment

REQUIREMENT = (
    f"Popularity does not reinforce itself: over the audited window, none of the three "
    f"breadth measures (catalog coverage of the served lists, 1 - Gini of "
    f"position-weighted exposure over the catalog, the long-tail share of plays) loses "
    f"more than {TOLERANCE_PER_DAY:.2%} of its level per day on its least-squares trend. "
    f"That is the pace that would take a measure below {RATIO:.0%} of its level (the "
    f"fairness audit's four-fifths bar) within {HORIZON_DAYS:g} days, before a monthly "
    f"review could see it. At least {MIN_BUCKETS} full time buckets are needed to judge.")

NAMES = {"coverage": "catalog coverage", "gini": "Gini of exposure",
         "tail_share": "long-tail share of plays"}


def mitigation(experiment: Experiment | None, *, error: str | None = None,
               at: datetime | None = None) -> str:
    """The mitigation in force, from the running experiment's arms: which re-rank their
    lists (an arm's optional ``rerank`` policy), with their share of the users."""
    if error is not None:
        return f"Unknown: the experiments file could not be read ({error})."
    if experiment is None:
        return ("None: no experiment is running, so every list is the serving model's own "
                "order (no arm re-ranks).")
    arms = [(a, getattr(a, "rerank", None)) for a in experiment.arms]
    reranking = [f"arm {a.name} ({a.share:.0%} of users, model {a.model}) re-ranks with "
                 f"policy {policy!r}" for a, policy in arms if policy]
    plain = [a.name for a, policy in arms if not policy]
    active = "" if at is None or experiment.active(at) else " (not active at the audit)"
    if not reranking:
        return (f"None: experiment {experiment.id}{active} runs, and none of its arms "
                f"({', '.join(plain)}) re-ranks its lists.")
    return (f"Experiment {experiment.id}{active}: " + "; ".join(reranking)
            + (f"; arms {', '.join(plain)} serve the model's own order." if plain else ".")
            + " The calibrated re-ranker (Steck, RecSys 2018) gives each user the share of "
              "long-tail and older movies of their own history.")


def _when(start_s: float, bucket_s: float) -> str:
    when = datetime.fromtimestamp(start_s, UTC)
    return when.strftime("%Y-%m-%d" if bucket_s % DAY_S == 0 else "%Y-%m-%d %H:%M")


def _f(value: float | None, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def build(result: FeedbackResult, *, source: str, mitigation: str,
          policies: Mapping[str, str | None] | None = None) -> AuditReport:
    """The report; ``policies`` (arm -> its re-ranking policy or None) label the arms'
    table when an experiment runs."""
    verdict = result.verdict
    judged = [b for b in result.buckets if b.judged]
    hours = result.bucket_s / 3600
    measurement = (
        f"The event log of {source}: {sum(b.lists for b in result.buckets):,} served lists "
        f"(recommendation lines with status 200) and {sum(b.plays for b in result.buckets):,} "
        f"plays (watch starts) in {len(result.buckets)} buckets of {hours:g} h of event "
        f"time (UTC), {len(judged)} of them full enough to judge; each judged bucket "
        f"measured on the same {result.per_bucket:,} lists (the lists of smallest keyed hash), over a "
        f"catalog of {result.catalog:,} movies (every movie the log names). Exposure "
        f"weighs rank r by 1/log2(r+1); the head is the most popular fifth of the catalog "
        f"by plays in the {result.popularity_s / DAY_S:g} days before the first judged bucket "
        f"(that bucket itself when the log starts with the lists), one head for the "
        f"window. Trends are least-squares slopes per day.")
    trends = {t.measure: t for t in result.trends}
    if verdict == "inconclusive" and len(judged) < MIN_BUCKETS:
        said = (f"{len(judged)} full bucket(s) with lists: at least {MIN_BUCKETS} are needed "
                f"to judge a trend")
    else:
        parts = [f"{'1 - ' if t.measure == 'gini' else ''}{NAMES[t.measure]} "
                 f"{'n/a' if t.breadth_change is None else f'{t.breadth_change:+.2%}'}"
                 f"/day ({t.verdict})" for t in result.trends]
        said = ("breadth shrinks faster than the bar: " if verdict == "fail"
                else "no breadth measure shrinks faster than the bar: " if verdict == "pass"
                else "not every trend could be judged: ") + "; ".join(parts)
    tables = [
        Table("Per bucket", ["bucket (UTC)", "lists", "measured lists", "plays", "coverage",
                             "Gini of exposure", "long-tail share of plays", "judged"],
              [[_when(b.start_s, result.bucket_s), b.lists, b.measured_lists, b.plays,
                _f(b.coverage), _f(b.gini), _f(b.tail_share), "yes" if b.judged else "no"]
               for b in result.buckets]),
        Table("Trends over the judged buckets", ["measure", "mean", "slope per day",
                                                 "95% interval", "breadth change per day",
                                                 "verdict"],
              [[NAMES[name], _f(t.mean), _f(t.slope_per_day, 5),
                "n/a" if t.low is None else f"[{t.low:.5f}, {t.high:.5f}]",
                "n/a" if t.breadth_change is None else f"{t.breadth_change:+.2%}", t.verdict]
               for name, t in trends.items()]),
    ]
    if result.arms:
        policy = policies or {}
        tables.append(Table(
            f"Experiment arms over the window (each on {result.arms[0].measured_lists:,} lists)",
            ["arm", "re-ranking", "lists", "coverage", "Gini of exposure"],
            [[a.arm, policy.get(a.arm) or "none", a.lists, _f(a.coverage), _f(a.gini)]
             for a in result.arms]))
    plots = {}
    if result.buckets and any(b.coverage is not None or b.tail_share is not None
                              for b in result.buckets):
        day0 = result.buckets[0].start_s
        series = {NAMES[name]: [((b.start_s - day0 + result.bucket_s / 2) / DAY_S,
                                 math.nan if (v := getattr(b, name)) is None else v)
                                for b in result.buckets] for name in NAMES}
        plots["feedback.svg"] = line_chart(
            series, x_label="days since the first bucket", y_label="share",
            title="Feedback loops: breadth of the lists and of the plays per bucket")
    numbers = {"source": source, "catalog": result.catalog, "bucket_hours": hours,
               "popularity_days": result.popularity_s / DAY_S,
               "per_bucket": result.per_bucket, "window_coverage": result.window_coverage,
               "tolerance_per_day": TOLERANCE_PER_DAY, "verdict": verdict,
               "buckets": [vars(b) for b in result.buckets],
               "trends": [vars(t) for t in result.trends],
               "arms": [{**vars(a), "rerank": (policies or {}).get(a.arm)} for a in result.arms]}
    return AuditReport(name="feedback", requirement=REQUIREMENT, measurement=measurement,
                       passed=verdict == "pass", result=said, mitigation=mitigation,
                       numbers=numbers, tables=tables, plots=plots)
