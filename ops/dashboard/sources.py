"""The project's own stores as the dashboard reads them: the model registry, the
experiment file, the loop's journal, the alerts (Alertmanager and the project's receiver)
and the service's provenance of a served list.

Each reader returns plain data or raises ``SourceError`` saying what it could not read;
the page turns that into a panel that says "no data: <why>". Readers only read: the
registry and the experiment file are replaced whole by their writers, and the journal is
append-only, so a read never sees half a write.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from movierec.errors import MovierecError

OFFLINE_METRICS: tuple[str, ...] = ("ndcg@20", "recall@20", "hit_rate@20", "coverage@20")
"""The offline numbers shown for each model (``movierec train``'s temporal split)."""


class SourceError(MovierecError):
    """A store or a service the dashboard reads did not answer or answered nonsense."""


@dataclass(frozen=True)
class ModelCard:
    """One model the team cares about: its role (champion, challenger, baseline), its
    version, when it was created, its offline numbers and a note (how it got there)."""

    role: str
    version: str
    name: str
    created: str
    metrics: dict[str, float]
    note: str = ""


@dataclass(frozen=True)
class ArmInfo:
    name: str
    model: str
    share: float


@dataclass(frozen=True)
class ExperimentInfo:
    """The running experiment, or (``running`` False) the loop's last canary."""

    id: str
    arms: tuple[ArmInfo, ...]
    running: bool
    since: str
    note: str


@dataclass(frozen=True)
class CycleInfo:
    """One cycle of the loop for the timeline: start and end (aware UTC; end None while
    open), its trigger, last stage, result and reason."""

    id: str
    trigger: str
    started: datetime
    ended: datetime | None
    stage: str
    result: str | None
    reason: str
    challenger: str | None


def models(registry_dir: Path, cycles: list[CycleInfo]) -> list[ModelCard]:
    """Champion, challenger and baseline from the registry's aliases; while no
    ``challenger`` alias exists, the challenger is the last cycle's, with its result."""
    from recommender.registry import Registry, RegistryError

    registry = Registry(registry_dir)
    try:
        aliases = registry.aliases()
    except (RegistryError, OSError, ValueError, KeyError) as exc:
        raise SourceError(f"registry {registry_dir}: {exc}") from exc
    wanted: list[tuple[str, str, str]] = []
    if "champion" in aliases:
        wanted.append(("champion", aliases["champion"], "alias champion"))
    if "challenger" in aliases:
        wanted.append(("challenger", aliases["challenger"], "alias challenger"))
    else:
        last = next((c for c in reversed(cycles) if c.challenger), None)
        if last is not None and last.challenger:
            outcome = last.result or last.stage
            wanted.append(("challenger", last.challenger, f"cycle {last.id}: {outcome}"))
    if "baseline" in aliases:
        wanted.append(("baseline", aliases["baseline"], "alias baseline"))
    cards = []
    for role, version, note in wanted:
        try:
            mv = registry.get(version)
        except (RegistryError, OSError, ValueError, KeyError) as exc:
            raise SourceError(f"registry {registry_dir}: {version}: {exc}") from exc
        numbers = {k: float(v) for k, v in mv.metrics.items()
                   if k in OFFLINE_METRICS and isinstance(v, int | float)}
        cards.append(ModelCard(role, mv.version, mv.name, mv.created, numbers, note))
    if not cards:
        raise SourceError(f"registry {registry_dir} has no champion yet")
    return cards


def cycles(journal_path: Path) -> list[CycleInfo]:
    """Every cycle of the loop's journal, oldest first (empty when the loop never ran)."""
    from recommender.loop.journal import Journal

    try:
        folded = Journal(journal_path).cycles()
    except MovierecError as exc:
        raise SourceError(str(exc)) from exc
    out = []
    for cycle in folded:
        ended = datetime.fromisoformat(str(cycle.entries[-1]["at"])) if not cycle.open else None
        out.append(CycleInfo(cycle.id, cycle.trigger, cycle.started.astimezone(UTC),
                             None if ended is None else ended.astimezone(UTC), cycle.stage.value,
                             None if cycle.result is None else cycle.result.value, cycle.reason,
                             cycle.challenger))
    return out


def experiment(path: Path, cycles: list[CycleInfo], journal_path: Path) -> ExperimentInfo:
    """The experiment in the experiment file; when none runs, the loop's last canary
    (arms from its journal entry); ``SourceError`` when there has been neither."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        doc = {"experiment": None, "updated": "", "reason": "no experiment file yet"}
    except (OSError, ValueError) as exc:
        raise SourceError(f"experiment file {path}: {exc}") from exc
    current = doc.get("experiment") if isinstance(doc, Mapping) else None
    if isinstance(current, Mapping):
        arms = tuple(ArmInfo(str(a["name"]), str(a["model"]), float(a["share"]))
                     for a in current.get("arms", []))
        return ExperimentInfo(str(current.get("id")), arms, True, str(doc.get("updated", "")),
                              str(doc.get("reason", "")))
    canary = _last_canary(journal_path)
    if canary is None:
        raise SourceError(f"no experiment runs ({doc.get('reason', '')}) and the loop has run "
                          f"no canary")
    cycle = next((c for c in cycles if c.id == canary["cycle"]), None)
    share = float(canary.get("share", 0.0))
    arms = (ArmInfo("champion", "champion", round(1 - share, 6)),
            ArmInfo("challenger", str(canary.get("challenger", "?")), share))
    outcome = "" if cycle is None else (cycle.result or cycle.stage)
    return ExperimentInfo(str(canary.get("experiment", canary["cycle"])), arms, False,
                          str(canary.get("since", canary.get("at", ""))),
                          f"ended: {outcome}; now: {doc.get('reason', '')}")


def _last_canary(journal_path: Path) -> dict | None:
    from recommender.loop.journal import Journal

    try:
        entries = Journal(journal_path).entries()
    except MovierecError as exc:
        raise SourceError(str(exc)) from exc
    return next((e for e in reversed(entries) if e.get("stage") == "canary"), None)


def _get_json(client: httpx.Client, url: str, what: str) -> Any:
    try:
        answer = client.get(url)
    except httpx.HTTPError as exc:
        raise SourceError(f"{what} at {url} did not answer: {exc}") from exc
    if answer.status_code != 200:
        raise SourceError(f"{what} at {url} answered {answer.status_code}: {answer.text[:200]}")
    try:
        return answer.json()
    except ValueError as exc:
        raise SourceError(f"{what} at {url} answered no JSON") from exc


def firing(client: httpx.Client, alertmanager_url: str) -> list[dict]:
    """Alerts active now (neither silenced nor inhibited), from Alertmanager's API v2:
    ``{"alertname", "severity", "summary", "since"}`` each, oldest first."""
    body = _get_json(client, f"{alertmanager_url}/api/v2/alerts?active=true&silenced=false"
                             f"&inhibited=false", "Alertmanager")
    if not isinstance(body, list):
        raise SourceError("Alertmanager's /api/v2/alerts answered no list")
    out = [{"alertname": a.get("labels", {}).get("alertname", "?"),
            "severity": a.get("labels", {}).get("severity", ""),
            "summary": a.get("annotations", {}).get("summary", ""),
            "since": a.get("startsAt", "")} for a in body if isinstance(a, Mapping)]
    return sorted(out, key=lambda a: a["since"])


def notifications(client: httpx.Client, receiver_url: str, limit: int = 12) -> list[dict]:
    """The receiver's latest ``limit`` notified alerts, newest first:
    ``{"alertname", "status", "severity", "summary", "since"}`` each."""
    body = _get_json(client, f"{receiver_url}/alerts?limit={limit}", "the alert receiver")
    if not isinstance(body, list):
        raise SourceError("the alert receiver's /alerts answered no list")
    out = [{"alertname": r.get("alertname", "?"), "status": r.get("status", ""),
            "severity": r.get("severity", ""),
            "summary": r.get("annotations", {}).get("summary", ""),
            "since": r.get("starts_at", "")} for r in body if isinstance(r, Mapping)]
    return out[::-1]


@dataclass(frozen=True)
class Provenance:
    """A served list traced back: who, which arm, the model, the code and the data."""

    request_id: str
    user_id: object
    arm: str
    served_at: str
    model_version: str
    model_name: str
    code_commit: str
    code_dirty: object
    snapshot: str
    rows: object


def provenance(client: httpx.Client, serve_url: str, request_id: str) -> Provenance:
    """The service's ``GET /provenance/<request_id>``, condensed."""
    cleaned = request_id.strip()
    if not cleaned or not cleaned.replace("-", "").isalnum() or len(cleaned) > 64:
        raise SourceError(f"{request_id!r} is not a request id (the X-Request-Id of an answer)")
    body = _get_json(client, f"{serve_url}/provenance/{cleaned}", "the service")
    served, model = body.get("served", {}), body.get("model", {})
    code, data = model.get("code", {}), model.get("data", {})
    when = served.get("time_ms")
    at = (datetime.fromtimestamp(when / 1000, UTC).isoformat(timespec="seconds")
          if isinstance(when, int | float) else "")
    return Provenance(cleaned, served.get("user_id"), str(served.get("arm", "")), at,
                      str(served.get("model_version", model.get("version", ""))),
                      str(model.get("name", "")), str(code.get("commit", "")),
                      code.get("dirty"), str(data.get("snapshot_id", "")), data.get("rows"))
