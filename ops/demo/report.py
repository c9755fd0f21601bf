"""The demo's last stage: the grade report (the course's checks, read from the Kafka log
like the course's grader), the online A/B comparison, the offline comparison, and the
provenance of one served list; written to ``var/demo/report.md`` and ``report.json``.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from datetime import timedelta
from pathlib import Path
from typing import Any

from movierec.durable import make_dirs, write_atomic
from ops.demo import flow
from ops.demo.flow import DemoPlan, Outcome
from ops.demo.stages import DemoError, Note

PROVENANCE_WAIT_S = 10.0
ONLINE_WINDOW = timedelta(minutes=flow.ONLINE_WINDOW_MIN)


def served_trace(serve_url: str, users: range = range(1, 200), *,
                 arm: str | None = None) -> dict[str, Any]:
    """Ask the service for the lists of a few users until one (in ``arm``; None: any) is
    ranked by a model, then fetch its provenance by request id (the record reaches Redis
    asynchronously)."""
    for user in users:
        with urllib.request.urlopen(f"{serve_url}/recommend/{user}", timeout=5) as answer:
            request_id = answer.headers.get("X-Request-Id", "")
            served_arm = answer.headers.get("X-Arm", "")
            answer.read()
        if arm is not None and served_arm != arm:
            continue
        deadline = time.monotonic() + PROVENANCE_WAIT_S
        while True:
            try:
                with urllib.request.urlopen(f"{serve_url}/provenance/{request_id}",
                                            timeout=5) as found:
                    trace = json.loads(found.read())
                break
            except urllib.error.HTTPError as exc:
                if exc.code != 404 or time.monotonic() > deadline:
                    raise DemoError(f"/provenance/{request_id} answered {exc.code}") from None
                time.sleep(0.2)
        if trace.get("model") and trace["served"].get("path") == "model":
            return {"request_id": request_id, "user": user,
                    "url": f"{serve_url}/provenance/{request_id}", **trace}
    raise DemoError(f"none of users {users.start}-{users.stop - 1} got a model-ranked list "
                    f"in arm {arm!r}")


def trace_lines(trace: dict[str, Any]) -> list[str]:
    """The provenance of one served list in a few lines: request -> model -> code, data."""
    served, model = trace["served"], trace["model"]
    code, data = model.get("code") or {}, model.get("data") or {}
    return [
        f"request {trace['request_id']} (user {trace['user']}, arm {served['arm']}): "
        f"{len(served['items'])} movies in {served['latency_ms']:.1f} ms",
        f"  model   {model['version']} ({model.get('name')}, created {model.get('created')})",
        f"  code    commit {code.get('commit')} dirty={code.get('dirty')}",
        f"  data    snapshot {data.get('snapshot_id')} ({data.get('rows')} rows)",
        f"  detail  curl -s {trace['url']}",
    ]


def build(plan: DemoPlan, outcome: Outcome, note: Note) -> tuple[dict[str, Any], str]:
    """Grade, compare and trace: the JSON report and its markdown (``write`` saves them)."""
    from movierec.settings import load
    from online_eval.cli import evaluate_online
    from online_eval.settings import OnlineSettings
    from simulator.grade_probe import grade_topic

    server = f"127.0.0.1:{plan.serve.serve_port}"
    note("grading the live run's recommendation lines from Kafka (as the course does)")
    grade = grade_topic(plan.consumer.kafka_bootstrap, plan.consumer.kafka_topic,
                        server=server, since_ms=outcome.live_since_ms, idle_s=10)
    note("joining the served lists with what users watched next (online A/B)")
    online = evaluate_online(load(OnlineSettings), server=server, window=ONLINE_WINDOW,
                             reference=flow.MODEL_ARM,
                             written_since_ms=outcome.live_since_ms)
    note("tracing one served list to its model, code and data")
    trace = served_trace(plan.serve_url)
    timeline = _timeline(plan, outcome)
    offline_md = (outcome.offline_dir / "comparison.md").read_text(encoding="utf-8")
    offline_json = json.loads((outcome.offline_dir / "comparison.json").read_text())
    report = {
        "scale": {"users": plan.demo.demo_users, "movies": plan.demo.demo_movies,
                  "days": plan.demo.demo_days, "live_s": plan.demo.demo_live_s,
                  "live_rate": plan.demo.demo_live_rate},
        "grade": grade.to_dict(),
        "online": online.to_dict(),
        "offline": offline_json,
        "provenance": trace,
        "loop": timeline,
    }
    markdown = "\n".join([
        "# movierec demo report", "",
        "## Grade report (the course's checks, from the Kafka log)", "",
        "```", grade.format_table(), "```", "",
        "## The retraining loop: its first cycle", "",
        "```", *_timeline_lines(timeline), "```", "",
        "## Online: the canary's arms (champion, challenger) and, after a promotion, "
        "everyone (default)", "",
        online.to_markdown(), "",
        "## Offline comparison of the candidates", "", offline_md, "",
        "## Provenance of one served list", "", "```", *trace_lines(trace), "```", "",
    ])
    return report, markdown


def _timeline(plan: DemoPlan, outcome: Outcome) -> dict[str, Any]:
    """The loop's cycle as the journal tells it."""
    from recommender.loop.journal import Journal

    journal = Journal(Path(plan.environ["MOVIEREC_LOOP_DIR"]) / "journal.jsonl")
    cycle = next((c for c in journal.cycles() if c.id == outcome.cycle), None)
    if cycle is None:
        return {}
    return {"id": cycle.id, "trigger": cycle.trigger, "challenger": cycle.challenger,
            "champion_before": cycle.champion,
            "result": None if cycle.result is None else cycle.result.value,
            "reason": cycle.reason, "looks": cycle.looks, "entries": cycle.entries}


def _timeline_lines(timeline: dict[str, Any]) -> list[str]:
    if not timeline:
        return ["no cycle"]
    lines = [f"cycle {timeline['id']} ({timeline['trigger']}): {timeline['result']}, "
             f"{timeline['looks']} looks at the canary"]
    for e in timeline["entries"]:
        detail = e.get("reason") or e.get("challenger") or e.get("experiment") or ""
        lines.append(f"  {e['at'][11:19]}  {e['stage']:9s} {detail}")
    return lines


def write(folder: Path, report: dict[str, Any], markdown: str) -> None:
    """``report.json`` and ``report.md`` in ``folder``, each replaced atomically."""
    try:
        make_dirs(folder)
        write_atomic(folder / "report.json", json.dumps(report, indent=2, default=str).encode())
        write_atomic(folder / "report.md", markdown.encode())
    except OSError as exc:
        raise DemoError(f"cannot write the report into {folder}: {exc}") from exc
