"""The fairness audit as a report (``audit.report.AuditReport``): pure, from the groups'
and the providers' results."""

from __future__ import annotations

from audit.fairness import RATIO, GroupResult, ProviderResult
from audit.report import AuditReport, Table
from offline_eval.plot import Panel, small_multiples

REQUIREMENT = (
    f"Users: every age group and gender takes the service's lists at no less than "
    f"{RATIO:.0%} of the overall take rate (the four-fifths rule of disparate impact), "
    f"judged on the Wilson 95% interval; minutes watched per list are reported beside it. "
    f"Providers: long-tail movies (outside the most popular fifth of the catalog) and "
    f"older movies (released before 2000) get at least {RATIO:.0%} of their share of "
    f"demand (films users started) as their share of exposure in the lists "
    f"(position-weighted, Singh and Joachims, KDD 2018).")

MITIGATION = (
    "None deployed yet: the first measurement decides where one is needed (issue 18). "
    "Serving's minor filter narrows the catalog for users under 18 and of unknown age by "
    "design, which this audit shows as a cost to those groups rather than hides.")


def _row(r: GroupResult) -> list[object]:
    rate = "n/a" if r.take_rate is None else f"{r.take_rate:.3f}"
    interval = "" if r.low is None else f"[{r.low:.3f}, {r.high:.3f}]"
    minutes = "n/a" if r.minutes_per_list is None else f"{r.minutes_per_list:.1f}"
    return [r.group, r.eligible, rate, interval, minutes, r.verdict]


def build(overall: float | None, ages: list[GroupResult], genders: list[GroupResult],
          providers: list[ProviderResult], *, source: str, lists: int) -> AuditReport:
    failed = [r.group for r in ages + genders if r.verdict == "fail"] + \
             [p.group for p in providers if p.verdict == "fail"]
    unclear = [r.group for r in ages + genders if r.verdict == "inconclusive"]
    bar = "n/a" if overall is None else f"{RATIO * overall:.3f}"
    measurement = (
        f"The event log of {source}: {lists:,} lists joined with what their users did next "
        f"(online evaluation's join), grouped by the user's age and gender from the enriched "
        f"profiles; overall take rate {'n/a' if overall is None else f'{overall:.3f}'}, so "
        f"the bar is {bar}. Exposure from the same lists, demand from the films started "
        f"in the same log.")
    if overall is None:
        verdict = "no eligible lists in the log: nothing to judge"
    elif failed:
        verdict = "below the bar: " + ", ".join(failed)
    else:
        verdict = "every group at or above the bar" + (
            f" (too few lists to say for {', '.join(unclear)})" if unclear else "")
    header = ["group", "eligible lists", "take rate", "95% interval", "minutes per list",
              "verdict"]
    tables = [
        Table("Users by age", header, [_row(r) for r in ages]),
        Table("Users by gender", header, [_row(r) for r in genders]),
        Table("Providers", ["group", "movies", "share of exposure", "share of demand",
                            "verdict"],
              [[p.group, p.movies, f"{p.exposure_share:.3f}", f"{p.demand_share:.3f}",
                p.verdict] for p in providers]),
    ]
    plots = {}
    judged = [r for r in ages + genders if r.take_rate is not None]
    if judged:
        plots["fairness.svg"] = small_multiples(
            [r.group for r in judged],
            [Panel("take rate", [r.take_rate for r in judged]),
             Panel("minutes per list", [r.minutes_per_list for r in judged])],
            title="Fairness audit: outcomes by user group")
    numbers = {"overall_take_rate": overall, "ratio": RATIO,
               "ages": [vars(r) for r in ages], "genders": [vars(r) for r in genders],
               "providers": [vars(p) for p in providers], "source": source, "lists": lists}
    return AuditReport(name="fairness", requirement=REQUIREMENT, measurement=measurement,
                       passed=overall is not None and not failed, result=verdict,
                       mitigation=MITIGATION, numbers=numbers, tables=tables, plots=plots)
