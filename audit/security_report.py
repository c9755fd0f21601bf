"""The security audit as a report (``audit.report.AuditReport``): pure, from the
enumeration runs found in the served records and the shilling summary of the model that
serves (its training's data provenance)."""

from __future__ import annotations

from datetime import UTC, datetime

from audit.report import AuditReport, Table
from audit.scraping import Run

REQUIREMENT = (
    "No client walks the user space to copy every user's list (scraping by enumeration: "
    "consecutive user ids asked one after another), and no coordinated fake accounts "
    "shape the model that serves (shilling: their accounts are left out of its training).")

MITIGATION = (
    "Shilling: training leaves every detected campaign's accounts out "
    "(MOVIEREC_TRAIN_SHILLING=exclude; docs/security.md), alert MovierecShillingCampaign. "
    "Scraping: the service answers every step of a walk from its 30th id with the popular "
    "list (MOVIEREC_SERVE_WALK_MIN_RUN; fallback scraping, alert MovierecScrapingWalk) and a "
    "flood from one address with 429 (MOVIEREC_SERVE_CLIENT_RATE_PER_S); this audit finds "
    "the walks afterwards, whatever their rate.")


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")


def build(runs: list[Run], *, lists: int, shilling: dict | None, model: str | None,
          source: str) -> AuditReport:
    walked = sum(r.requests for r in runs)
    campaigns = (shilling or {}).get("campaigns", 0)
    measurement = (
        f"Every served record of {source} ({lists:,} lists) ordered by time; a run of 30 or "
        f"more consecutive user ids, each asked within 60 s of its neighbour, is an "
        f"enumeration (audit/scraping.py: organic traffic makes one with a chance of about "
        f"p^29, p the share of users active in a minute). Shilling: the data provenance of "
        f"the serving model ({model or 'none'}).")
    if runs:
        verdict = (f"{len(runs)} enumeration(s) took {walked:,} of {lists:,} lists "
                   f"({walked / max(1, lists):.1%})")
    else:
        verdict = f"no enumeration in {lists:,} lists"
    if shilling is None:
        verdict += "; the serving model records no shilling check"
    elif campaigns:
        verdict += (f"; the serving model left out {shilling.get('excluded_accounts', 0):,} "
                    f"accounts of {campaigns} campaign(s)")
    tables = [
        Table("Enumerations", ["first user", "last user", "requests", "from", "to", "rate/s"],
              [[r.first, r.last, r.requests, _when(r.start_ms), _when(r.end_ms),
                f"{r.rate_per_s:.2f}"] for r in runs]),
        Table("Shilling in the serving model's training", ["campaigns", "targets",
                                                             "accounts left out", "rows left out"],
              [[campaigns, ", ".join((shilling or {}).get("targets", [])) or "-",
                (shilling or {}).get("excluded_accounts", 0),
                (shilling or {}).get("excluded_rows", 0)]]),
    ]
    numbers = {"lists": lists, "runs": [vars(r) | {"rate_per_s": r.rate_per_s} for r in runs],
               "enumerated_lists": walked, "shilling": shilling, "model": model,
               "source": source}
    return AuditReport(name="security", requirement=REQUIREMENT, measurement=measurement,
                       passed=not runs, result=verdict, mitigation=MITIGATION,
                       numbers=numbers, tables=tables)
