"""A/B experiments: which model answers which user, and the file that says so.

Pure part: an ``Experiment`` splits users into ``Arm``s by share during a time window.
A user's place is ``bucket(user_id, experiment_id)``, a point in [0, 1) taken from a keyed
hash, so assignment is

- *sticky*: the same user lands in the same arm on every request, in every gunicorn
  worker, on every host and under every Python version (blake2b, never the salted
  built-in ``hash``);
- *independent between experiments*: the experiment id is part of the hashed text, so the
  users of one experiment's treatment are a fresh random half in the next one, not the
  same people again (carry-over effects; Kohavi, Tang and Xu, "Trustworthy Online
  Controlled Experiments", 2020, ch. 4 on randomization units and re-randomization).

Arms take consecutive intervals of [0, 1) in their listed order, of length ``share``; a
canary is an arm with a small share. Outside the window nobody is assigned and the serve
alias's model answers.

Adapter: ``ExperimentStore`` keeps the running experiment in one JSON file that gunicorn
workers poll (``recommender.serving.watcher``) and the admin endpoint rewrites.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from movierec.durable import make_dirs, write_atomic
from recommender.rerank import parse_policy
from recommender.serving.state import BadRequest, ServingError

NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")
"""Experiment ids and arm names."""
MODEL_REF = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
"""An arm's model: a registry alias or a version id (the registry checks which exists)."""
DEFAULT_ROUTE = "default"
"""The label of answers given outside any arm; no arm may take this name."""
SHARE_TOLERANCE = 1e-6
"""How far the arms' shares may sum from 1 (decimal shares such as 1/3 do not add up)."""

_KEYS = frozenset({"id", "arms", "start", "stop"})
_ARM_KEYS = frozenset({"name", "model", "share"})
_ARM_OPTIONAL = frozenset({"rerank"})


@dataclass(frozen=True)
class Arm:
    """One variant: ``name`` (labels telemetry), ``model`` (a registry alias such as
    "champion" or a full version id), ``share`` of the users, in (0, 1], and ``rerank``:
    a re-ranking policy applied to the model's lists (``recommender.rerank.parse_policy``:
    "calibrated", or "calibrated:0.8" with its weight), None for the model's own order.
    Two arms may serve the same model, one re-ranked: that is how a fairness mitigation
    runs as an experiment arm."""

    name: str
    model: str
    share: float
    rerank: str | None = None


@dataclass(frozen=True)
class Experiment:
    """Arms over a window ``[start, stop)`` of aware UTC datetimes (None: open-ended).

    Construction validates (``BadRequest`` with the reason), so an ``Experiment`` that
    exists is a valid one; ``from_dict``/``to_dict`` are its JSON form.
    """

    id: str
    arms: tuple[Arm, ...]
    start: datetime | None = None
    stop: datetime | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not NAME.match(self.id):
            raise BadRequest(f"experiment id {self.id!r} must match {NAME.pattern}")
        object.__setattr__(self, "arms", tuple(self.arms))
        if not self.arms:
            raise BadRequest(f"experiment {self.id}: needs at least one arm")
        for arm in self.arms:
            if not isinstance(arm, Arm):
                raise BadRequest(f"experiment {self.id}: {arm!r} is not an Arm")
            _check_arm(self.id, arm)
        names = [arm.name for arm in self.arms]
        if len(set(names)) != len(names):
            dupes = sorted({n for n in names if names.count(n) > 1})
            raise BadRequest(f"experiment {self.id}: arm names must be unique, repeated: {dupes}")
        total = math.fsum(arm.share for arm in self.arms)
        if abs(total - 1.0) > SHARE_TOLERANCE:
            raise BadRequest(f"experiment {self.id}: arm shares sum to {total:.9g}, not 1")
        for label in ("start", "stop"):
            when = getattr(self, label)
            if when is None:
                continue
            if not isinstance(when, datetime) or when.utcoffset() is None:
                raise BadRequest(f"experiment {self.id}: {label} must be a datetime with a zone")
            object.__setattr__(self, label, when.astimezone(UTC))
        if self.start is not None and self.stop is not None and not self.start < self.stop:
            raise BadRequest(f"experiment {self.id}: start {self.start.isoformat()} must be "
                             f"before stop {self.stop.isoformat()}")

    @classmethod
    def from_dict(cls, d: object) -> Experiment:
        """From ``{"id", "arms": [{"name", "model", "share"}, ...], "start"?, "stop"?}``
        with ISO-8601 times carrying a zone (``Z`` or ``+hh:mm``); ``BadRequest`` with a
        clear reason on anything else, unknown keys included (a misspelt "stop" must not
        silently leave an experiment running forever)."""
        if not isinstance(d, Mapping):
            raise BadRequest("an experiment must be a JSON object")
        if unknown := sorted(set(d) - _KEYS):
            raise BadRequest(f"unknown experiment keys {unknown}; allowed: {sorted(_KEYS)}")
        arms = d.get("arms")
        if not isinstance(arms, list):
            raise BadRequest("experiment arms must be a list of {name, model, share} objects")
        return cls(id=d.get("id"),  # type: ignore[arg-type]  # checked in __post_init__
                   arms=tuple(_arm_from_dict(a) for a in arms),
                   start=_parse_time("start", d.get("start")),
                   stop=_parse_time("stop", d.get("stop")))

    def to_dict(self) -> dict:
        """The JSON form ``from_dict`` reads back to an equal ``Experiment``."""
        return {"id": self.id,
                "arms": [_arm_to_dict(a) for a in self.arms],
                "start": None if self.start is None else self.start.isoformat(),
                "stop": None if self.stop is None else self.stop.isoformat()}

    def active(self, at: datetime) -> bool:
        """True while ``start <= at < stop``; ``at`` must be aware (``ServingError``
        otherwise: comparing naive and aware times would raise a ``TypeError``)."""
        if at.tzinfo is None:
            raise ServingError(f"experiment {self.id}: the time {at.isoformat()} has no zone")
        return (self.start is None or self.start <= at) and (self.stop is None or at < self.stop)


def bucket(user_id: int, experiment_id: str) -> float:
    """The user's point in [0, 1) for this experiment: blake2b (8-byte digest) of
    ``f"{experiment_id}:{user_id}"``, read big-endian, divided by 2**64.

    Only the top 53 bits are kept (a float's precision): dividing all 64 would round
    digests within 2**-54 of 2**64 up to exactly 1.0, outside the interval.
    """
    digest = hashlib.blake2b(f"{experiment_id}:{user_id}".encode(), digest_size=8).digest()
    return (int.from_bytes(digest, "big") >> 11) / float(1 << 53)


def arm_at(arms: tuple[Arm, ...], point: float) -> Arm:
    """The arm whose interval holds ``point`` in [0, 1): arm k owns
    ``[s_0 + ... + s_{k-1}, s_0 + ... + s_k)``. The last arm also takes whatever rounding
    leaves above the sum of the shares (they add up to 1 only within SHARE_TOLERANCE)."""
    edge = 0.0
    for arm in arms[:-1]:
        edge += arm.share
        if point < edge:
            return arm
    return arms[-1]


def assign(user_id: int, experiment: Experiment, at: datetime) -> Arm | None:
    """The user's arm while ``experiment`` is active at ``at``, else None."""
    if not experiment.active(at):
        return None
    return arm_at(experiment.arms, bucket(user_id, experiment.id))


def _check_arm(experiment_id: str, arm: Arm) -> None:
    where = f"experiment {experiment_id}, arm {arm.name!r}"
    if not isinstance(arm.name, str) or not NAME.match(arm.name):
        raise BadRequest(f"{where}: the name must match {NAME.pattern}")
    if arm.name == DEFAULT_ROUTE:
        raise BadRequest(f"{where}: {DEFAULT_ROUTE!r} is reserved for answers outside any arm")
    if not isinstance(arm.model, str) or not MODEL_REF.match(arm.model):
        raise BadRequest(f"{where}: model {arm.model!r} must be a registry alias or version id")
    if arm.rerank is not None:
        try:
            parse_policy(arm.rerank)
        except ValueError as exc:
            raise BadRequest(f"{where}: rerank {arm.rerank!r}: {exc} (or null)") from None
    share = arm.share
    if (isinstance(share, bool) or not isinstance(share, int | float)
            or not math.isfinite(share) or not 0 < share <= 1):
        raise BadRequest(f"{where}: share {share!r} must be a number in (0, 1]")


def _arm_from_dict(d: object) -> Arm:
    if not isinstance(d, Mapping):
        raise BadRequest("each arm must be an object {name, model, share}")
    if unknown := sorted(set(d) - _ARM_KEYS - _ARM_OPTIONAL):
        raise BadRequest(f"unknown arm keys {unknown}; allowed: "
                         f"{sorted(_ARM_KEYS | _ARM_OPTIONAL)}")
    if missing := sorted(_ARM_KEYS - set(d)):
        raise BadRequest(f"arm {d.get('name')!r} is missing {missing}")
    return Arm(d["name"], d["model"], d["share"], d.get("rerank"))


def _arm_to_dict(arm: Arm) -> dict:
    out = {"name": arm.name, "model": arm.model, "share": arm.share}
    if arm.rerank is not None:  # absent otherwise: files of arms without it read as before
        out["rerank"] = arm.rerank
    return out


def _parse_time(label: str, value: object) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadRequest(f"experiment {label} must be an ISO-8601 string with a zone or null")
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise BadRequest(f"experiment {label} {value!r} is not an ISO-8601 time") from None
    if when.utcoffset() is None:
        raise BadRequest(f"experiment {label} {value!r} has no zone (add Z or +hh:mm)")
    return when


class ExperimentStore:
    """The running experiment in one JSON file::

        {"generation": n, "experiment": {...} | null, "updated": iso, "reason": "..."}

    Readers (every worker's watcher, each poll) read without locking: the file is only
    ever replaced whole (``movierec.durable.write_atomic``), so they see the old file or
    the new one. Writers read-modify-write under an exclusive ``flock`` on the sibling
    ``<name>.lock``, so concurrent writers (threads or processes) never lose an update and
    ``generation`` grows by exactly one per write. Nothing is created until the first write.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.lock_path = self.path.with_name(self.path.name + ".lock")

    def read(self) -> tuple[int, Experiment | None]:
        """(generation, experiment); (0, None) when the file does not exist yet.
        ``ServingError`` naming the path and the cause when it is unreadable or invalid."""
        try:
            doc = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return 0, None
        except (OSError, ValueError) as exc:
            raise ServingError(f"cannot read experiments file {self.path}: {exc}") from exc
        if not isinstance(doc, dict) or "experiment" not in doc:
            raise ServingError(f"invalid experiments file {self.path}: not an object with "
                               f"'generation' and 'experiment'")
        generation = doc.get("generation")
        if isinstance(generation, bool) or not isinstance(generation, int) or generation < 0:
            raise ServingError(f"invalid experiments file {self.path}: generation "
                               f"{generation!r} is not a count")
        if doc["experiment"] is None:
            return generation, None
        try:
            return generation, Experiment.from_dict(doc["experiment"])
        except BadRequest as exc:
            raise ServingError(f"invalid experiments file {self.path}: {exc}") from exc

    def write(self, experiment: Experiment | None, *, reason: str) -> int:
        """Replace the running experiment (None stops it); returns the new generation.
        ``BadRequest`` without a reason; ``ServingError`` when the file cannot be written
        or the current one is corrupt (repair or delete it: its generation is unknown,
        and a watcher must see the count change)."""
        if not isinstance(reason, str) or not reason.strip():
            raise BadRequest("changing the experiment needs a reason")
        try:
            make_dirs(self.path.parent)
            with open(self.lock_path, "a+b") as fh:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
                try:
                    generation = self.read()[0] + 1
                    doc = {"generation": generation,
                           "experiment": None if experiment is None else experiment.to_dict(),
                           "updated": datetime.now(UTC).isoformat(timespec="milliseconds"),
                           "reason": reason}
                    text = json.dumps(doc, indent=2, sort_keys=True, allow_nan=False)
                    write_atomic(self.path, text.encode("utf-8"))
                finally:
                    fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
        except OSError as exc:
            raise ServingError(f"cannot write experiments file {self.path}: {exc}") from exc
        return generation
