"""The fairness audit as a report (``audit.report.AuditReport``): pure, from the groups'
and the providers' results."""

from __future__ import annotations

from audit.fairness import RATIO, ArmFairness, GroupResult, ProviderResult
from audit.report import AuditReport, Table
from offline_eval.plot import Panel, small_multiples

REQUIREMENT = (
    f"Users: every age group and gender takes the service's lists at no less than "
    f"{RATIO:.0%} of the overall take rate (the four-fifths rule of disparate impact), "
    f"judged on the Wilson 95% interval; minutes watched per list are reported beside it. "
    f"Providers: long-tail movies (outside the most played fifth of the catalog, by the "
    f"consumer's decayed popularity) and "
    f"older movies (released before 2000) get at least {RATIO:.0%} of their share of "
    f"demand (films users started) as their share of exposure in the lists "
    f"(position-weighted, Singh and Joachims, KDD 2018).")

MINOR_FILTER = (
    "Serving's minor filter narrows the catalog for users under 18 and of unknown age by "
    "design, which this audit shows as a cost to those groups rather than hides.")
NO_ARM = (
    "None in force: no experiment arm re-ranks. The mitigation for the provider "
    "requirement is calibrated re-ranking (recommender.rerank: each list carries "
    "long-tail and older films in the share of the user's own history, Steck, RecSys "
    "2018), run as an experiment arm with `\"rerank\": \"calibrated\"` (docs/audits.md).")


def mitigation(arms: dict[str, str | None], shares: dict[str, float], experiment: str | None) -> str:
    """The mitigation in force, from the running experiment's arms (arm -> policy)."""
    reranked = {a: p for a, p in arms.items() if p}
    if not reranked:
        return f"{NO_ARM} {MINOR_FILTER}"
    listed = ", ".join(f"arm {a!r} ({p}, {shares.get(a, 0):.0%} of users)"
                       for a, p in reranked.items())
    return (f"Calibrated re-ranking (recommender.rerank, Steck, RecSys 2018) in experiment "
            f"{experiment!r}: {listed}; the table by arm compares it with its control. "
            f"{MINOR_FILTER}")


def _row(r: GroupResult) -> list[object]:
    rate = "n/a" if r.take_rate is None else f"{r.take_rate:.3f}"
    interval = "" if r.low is None else f"[{r.low:.3f}, {r.high:.3f}]"
    minutes = "n/a" if r.minutes_per_list is None else f"{r.minutes_per_list:.1f}"
    return [r.group, r.eligible, rate, interval, minutes, r.verdict]


def _arm_row(a: ArmFairness) -> list[object]:
    rate = "n/a" if a.take_rate is None else f"{a.take_rate:.3f}"
    interval = "" if a.low is None else f"[{a.low:.3f}, {a.high:.3f}]"
    shares = [f"{p.exposure_share:.3f} / {p.demand_share:.3f} {p.verdict}" for p in a.providers]
    return [a.arm, a.rerank or "none", a.lists, a.eligible, rate, interval, *shares]


def build(overall: float | None, ages: list[GroupResult], genders: list[GroupResult],
          providers: list[ProviderResult], *, source: str, lists: int,
          arms: list[ArmFairness] | None = None, mitigation_text: str | None = None) -> AuditReport:
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
    if arms:
        tables.append(Table(
            "By experiment arm (exposure share / demand share, verdict)",
            ["arm", "re-ranking", "lists", "eligible lists", "take rate", "95% interval",
             *[p.group for p in arms[0].providers]],
            [_arm_row(a) for a in arms]))
    plots = {}
    judged = [r for r in ages + genders if r.take_rate is not None]
    if judged:
        plots["fairness.svg"] = small_multiples(
            [r.group for r in judged],
            [Panel("take rate", [r.take_rate for r in judged]),
             Panel("minutes per list", [r.minutes_per_list for r in judged])],
            title="Fairness audit: outcomes by user group")
    if arms and any(a.take_rate is not None for a in arms):
        plots["fairness-arms.svg"] = small_multiples(
            [a.arm for a in arms],
            [Panel("take rate", [a.take_rate for a in arms]),
             *[Panel(f"{p.group}: exposure / demand",
                     [x.providers[i].exposure_share / x.providers[i].demand_share
                      if x.providers[i].demand_share else None for x in arms])
               for i, p in enumerate(arms[0].providers)]],
            title="Fairness audit: the mitigation arm beside its control")
    numbers = {"overall_take_rate": overall, "ratio": RATIO,
               "ages": [vars(r) for r in ages], "genders": [vars(r) for r in genders],
               "providers": [vars(p) for p in providers], "source": source, "lists": lists,
               "arms": [{**vars(a), "providers": [vars(p) for p in a.providers]}
                        for a in arms or []]}
    return AuditReport(name="fairness", requirement=REQUIREMENT, measurement=measurement,
                       passed=overall is not None and not failed, result=verdict,
                       mitigation=mitigation_text or mitigation({}, {}, None),
                       numbers=numbers, tables=tables, plots=plots)
