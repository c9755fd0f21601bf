"""``movierec audit <name>``: an audit of the running system from its own telemetry,
written as a report (markdown, JSON, plots) under ``MOVIEREC_AUDIT_REPORTS_DIR/<name>``.

Exit status 0 when the audit passes, 1 when it fails (so a CI job or a drill can gate on
it), with ``--json`` printing the report's JSON body either way."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click


@click.group()
def audit() -> None:
    """Responsible-operation audits of the running system, from its telemetry."""


@audit.command("safety")
@click.option("--since-min", type=float, help="Only lists served in the last N minutes "
                                              "(default: the whole topic).")
@click.option("--out", "out_dir", type=click.Path(path_type=Path),
              help="Report folder (default MOVIEREC_AUDIT_REPORTS_DIR/safety).")
@click.option("--json", "as_json", is_flag=True, help="Print the report's JSON.")
def safety(since_min: float | None, out_dir: Path | None, as_json: bool) -> None:
    """Every served list judged for minors: adult, R, NC-17, X or unverified movies to
    users under 18 (or of unknown age), on every path and arm."""
    from audit import report, safety_report, telemetry
    from audit.safety import audit as run_audit
    from audit.settings import AuditSettings
    from movierec.settings import load
    from stores.keys import Keys
    from stores.redis_online import RedisOnlineStore

    settings = load(AuditSettings)
    since_ms = None if since_min is None else int((time.time() - since_min * 60) * 1000)
    served = telemetry.read_served(settings.kafka_bootstrap, settings.served_topic,
                                   since_ms=since_ms, timeout_s=settings.audit_read_timeout_s)
    store = RedisOnlineStore.connect(settings.redis_url, Keys(settings.redis_prefix),
                                     timeout_s=10)
    ages = telemetry.ages(store, (r.user_id for r in served.records))
    meta = telemetry.movie_meta(store, (m for r in served.records for m in r.items))
    result = run_audit(served.records, ages, meta)
    window = "the whole topic" if since_min is None else f"the last {since_min:g} min"
    built = safety_report.build(result, source=f"topic {settings.served_topic} ({window})",
                                rejected=served.rejected)
    folder = out_dir or settings.audit_reports_dir / "safety"
    paths = report.write(built, folder)
    if as_json:
        click.echo(json.dumps(built.as_json(), indent=2, sort_keys=True))
    else:
        click.echo(f"safety: {'PASS' if built.passed else 'FAIL'}: {built.result}")
        click.echo("report: " + ", ".join(str(p) for p in paths))
    sys.exit(0 if built.passed else 1)
