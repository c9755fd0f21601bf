"""The safety audit as a report (``audit.report.AuditReport``): pure, from a
``SafetyAudit`` and what was read."""

from __future__ import annotations

from audit.report import AuditReport, Table
from audit.safety import MINOR, UNKNOWN_AGE, SafetyAudit
from offline_eval.plot import Panel, small_multiples

REQUIREMENT = (
    "No movie that is adult, rated R, NC-17 or X, or whose metadata cannot show otherwise, "
    "is served to a user under 18, on any answer path: the model, cold start, the popular "
    "fallback, shed and degraded answers, and every arm of an experiment or canary. "
    "Serving also promises the minor-safe catalog to users whose age is not on file; "
    "lists to them are judged the same way and counted apart.")

MITIGATION = (
    "The minor filter in serving (`recommender/serving/core.py`: `needs_minor_filter`, "
    "`unsafe_for_minors`) applies to every path, including the popular list cached for "
    "fallbacks and shed answers, and treats an unknown age or unknown metadata as unsafe. "
    "`movierec eval live` judges every served record as it arrives with the same rule "
    "(`movierec_online_unsafe_served_total`), and the alert `MovierecUnsafeServedToMinor` "
    "pages on any (docs/runbook.md).")


def build(result: SafetyAudit, *, source: str, rejected: int) -> AuditReport:
    """The report of one audit run over ``source`` (a topic, and the window read)."""
    to_minor = result.lists_by_audience[MINOR]
    unknown = result.lists_by_audience[UNKNOWN_AGE]
    measurement = (
        f"Every served record of {source} ({result.lists:,} lists; {rejected:,} values that "
        f"were not a served record) joined with the user's age from the enriched profile "
        f"and each listed movie's metadata from the online store, as of the audit. Lists "
        f"to users under 18: {to_minor:,}; to users of unknown age: {unknown:,}.")
    if result.lists == 0:
        verdict = "nothing was served in the window: nothing to judge"
    elif result.passed:
        verdict = (f"0 unsafe movies in {to_minor + unknown:,} lists that had to be "
                   f"minor-safe")
    else:
        verdict = (f"{len(result.violations):,} unsafe movies served to users under 18 and "
                   f"{len(result.policy_breaches):,} to users of unknown age")
    paths = sorted(result.minor_safe_lists_by_path)
    by_path = [result.minor_safe_lists_by_path[p] for p in paths]
    found_by_path = [sum(1 for f in result.findings if (f.fallback or f.path) == p)
                     for p in paths]
    tables = [
        Table("Lists that had to be minor-safe, by answer path",
              ["path (or fallback)", "lists", "unsafe movies found"],
              [[p, n, f] for p, n, f in zip(paths, by_path, found_by_path, strict=True)]),
        Table("Lists that had to be minor-safe, by arm", ["arm", "lists"],
              sorted(result.minor_safe_lists_by_arm.items())),
        Table("Findings (first 20)",
              ["request", "user", "audience", "movie", "reason", "path", "arm"],
              [[f.request_id[:12], f.user_id, f.audience, f.movie_id, f.reason,
                f.fallback or f.path, f.arm] for f in result.findings[:20]]),
    ]
    plots = {}
    if paths:
        plots["safety.svg"] = small_multiples(
            paths, [Panel("lists that had to be minor-safe", by_path),
                    Panel("unsafe movies served", found_by_path)],
            title="Safety audit: lists to minors and unknown ages, by path")
    return AuditReport(name="safety", requirement=REQUIREMENT, measurement=measurement,
                       passed=result.passed, result=verdict, mitigation=MITIGATION,
                       numbers={**result.summary(), "source": source, "rejected": rejected},
                       tables=tables, plots=plots)
