"""A small file-based model registry: versions, aliases, and an append-only event log.

Layout under ``root`` (e.g. ``var/registry``)::

    models/<version>/      the artifact written by ``Recommender.save`` (.npy, item_ids.txt,
                           model.json), the version's own arrays if any (``VERSION_ARRAYS``,
                           e.g. the runtimes training used), plus ``meta.json`` (provenance,
                           metrics, gate decision)
    aliases.json           {"generation": n, "aliases": {alias: version},
                            "previous": {alias: [older versions, newest last]}}
    events.jsonl           one JSON object per registration, alias change, promotion,
                           rollback, metrics update and gate decision (time, reason)
    registry.lock          the lock file for ``fcntl.flock``

Version ids are ``<model name>-<UTC yyyymmddTHHMMSS>-<6 hex of the artifact hash>``. The
artifact hash is sha256 over the artifact's files (names, sizes and bytes, in name order);
it is kept in meta.json and checked again on ``load`` so a corrupt file is caught before it
serves. meta.json is not part of the hash: metrics and gate decisions are added later.

Why files and not MLflow: one process trains, one serves, both on hosts that share a
disk; the registry must work without a server and survive a crash at any instant.
Durability: a version is written into a temporary folder, fsynced, then renamed into
place; every JSON rewrite goes temp file, fsync, ``os.replace``, fsync of the folder, so a
reader sees the old file or the new one, never half of one. Alias changes and meta updates
are read-modify-write under an exclusive ``flock``, so concurrent promoters (threads or
processes) never lose an update. Serving polls ``aliases_generation()`` (one small read)
and reloads when it grows. A generation counter, not the file's mtime: two rewrites within
one coarse clock tick can share an mtime, a counter cannot repeat.

Rollback semantics: ``promote`` pushes the alias's previous holder on a per-alias stack;
``rollback`` pops it, and the version rolled back from is *not* pushed (it was bad). A second
rollback therefore goes one step further back, never forth to the bad version; promote it
again explicitly if it was good after all.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import numpy as np

from movierec.durable import TMP_PREFIX, fsync_path, write_atomic
from movierec.errors import MovierecError
from recommender.models import model_class
from recommender.models.base import Recommender
from recommender.versions import VERSION as _VERSION
from recommender.versions import version_id

log = logging.getLogger(__name__)

META_JSON = "meta.json"
VERSION_ARRAYS = "version_arrays.npz"
"""Arrays that belong to a version but not to its model class (``register(arrays=...)``):
an uncompressed npz, read without pickle, hashed with the artifact."""
MAX_PREVIOUS = 20
"""Holders remembered per alias for rollback."""

REQUIRED: dict[str, tuple[str, ...]] = {
    "code": ("commit", "dirty"),
    "packages": (),
    "data": ("snapshot_id", "partitions", "rows"),
    "training": ("seconds", "peak_memory_bytes"),
}
"""Metadata the caller must give, with the keys each part must hold. The registry adds
``created``, ``hyperparameters`` (``model.params``), ``artifact``, ``arrays`` (name ->
dtype and shape of each version array), ``size`` (merged over any caller-given size) and
``metrics`` (default ``{}``)."""

_ALIAS = re.compile(r"^[A-Za-z][A-Za-z0-9_.]{0,63}$")
_ARRAY_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")
_CHUNK = 1 << 20
_ID_ATTEMPTS = 60  # seconds past the creation time a colliding version id may move


class RegistryError(MovierecError):
    """Unknown version or alias, corrupt artifact or meta, invalid metadata."""


@dataclass(frozen=True)
class ModelVersion:
    """One registered model: its id, model name, folder and the contents of meta.json."""

    version: str
    name: str
    path: Path
    meta: dict

    @property
    def created(self) -> str:
        return self.meta["created"]

    @property
    def metrics(self) -> dict:
        return self.meta.get("metrics", {})


def _now() -> datetime:
    return datetime.now(UTC)


def _write_json(path: Path, obj: object) -> None:
    """Strict JSON (no NaN), written atomically and durably (``movierec.durable``)."""
    text = json.dumps(obj, indent=2, sort_keys=True, allow_nan=False)
    write_atomic(path, text.encode("utf-8"))


def artifact_digest(directory: Path, names: list[str]) -> str:
    """sha256 hex over ``names`` (sorted) in ``directory``: name, size, bytes of each."""
    h = hashlib.sha256()
    for name in sorted(names):
        path = directory / name
        h.update(name.encode("utf-8") + b"\0" + path.stat().st_size.to_bytes(8, "little"))
        with path.open("rb") as fh:
            while chunk := fh.read(_CHUNK):
                h.update(chunk)
    return h.hexdigest()


def _checked_arrays(arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``arrays`` as contiguous numpy arrays; ``RegistryError`` on a name that is not a
    plain identifier or an array that would need pickle (dtype object)."""
    out = {}
    for name, value in arrays.items():
        arr = np.ascontiguousarray(value)
        # "file" and "allow_pickle" are np.savez's own parameters, not array names.
        if not _ARRAY_NAME.match(name) or name in ("file", "allow_pickle") or arr.dtype.hasobject:
            raise RegistryError(f"version array {name!r} ({arr.dtype}): need an identifier "
                                "name and a numeric dtype")
        out[name] = arr
    return out


def _missing(metadata: dict) -> list[str]:
    missing = []
    for part, keys in REQUIRED.items():
        if not isinstance(metadata.get(part), dict):
            missing.append(part)
            continue
        missing += [f"{part}.{k}" for k in keys if k not in metadata[part]]
    return missing


class Registry:
    """The registry rooted at ``root`` (created on first write, not on construction).

    ``resolve`` maps a model name to its class for ``load``; the default is
    ``recommender.models.model_class``.
    """

    def __init__(self, root: Path | str, *,
                 resolve: Callable[[str], type[Recommender]] | None = None) -> None:
        self.root = Path(root)
        self.models_dir = self.root / "models"
        self.aliases_path = self.root / "aliases.json"
        self.events_path = self.root / "events.jsonl"
        self.lock_path = self.root / "registry.lock"
        self._resolve = resolve or model_class

    # -- writing versions -----------------------------------------------------------------

    def register(self, model: Recommender, *, metadata: dict,
                 arrays: Mapping[str, np.ndarray] | None = None) -> ModelVersion:
        """Store a trained ``model`` with its ``metadata`` (see ``REQUIRED``) and optional
        version ``arrays`` (name -> numeric array, read back by ``arrays``); returns the
        new version. Nothing is left behind if saving fails."""
        if missing := _missing(metadata):
            raise RegistryError(f"metadata is missing {', '.join(missing)}")
        extra = _checked_arrays(arrays or {})
        if not re.fullmatch(r"[A-Za-z0-9_.]+", model.name or ""):
            raise RegistryError(f"model name {model.name!r} cannot be part of a version id")
        self.models_dir.mkdir(parents=True, exist_ok=True)
        created = _now()
        tmp = Path(tempfile.mkdtemp(dir=self.models_dir, prefix=TMP_PREFIX))
        try:
            tmp.chmod(0o755)  # mkdtemp makes 0700
            names = sorted(p.name for p in model.save(tmp))
            if extra:
                if VERSION_ARRAYS in names:
                    raise RegistryError(f"model {model.name!r} wrote a file named {VERSION_ARRAYS}")
                # Any: mypy would match the named arrays against savez's own allow_pickle
                np.savez(tmp / VERSION_ARRAYS, **cast(dict[str, Any], extra))
                names = sorted([*names, VERSION_ARRAYS])
            digest = artifact_digest(tmp, names)
            size = {"disk_bytes": sum((tmp / n).stat().st_size for n in names),
                    "memory_bytes": model.memory_bytes(),
                    **metadata.get("size", {})}
            for name in names:
                fsync_path(tmp / name)
            # The id holds the creation second and the artifact digest, so the same
            # artifact registered twice within a second (a retrained deterministic model,
            # two runs on one snapshot) would collide: the later one takes the next free
            # second instead. rename(2) refuses a non-empty target, so two processes
            # racing for one id cannot overwrite each other either.
            for _ in range(_ID_ATTEMPTS):
                version = version_id(model.name, created, digest)
                meta = {**metadata, "version": version, "name": model.name,
                        "created": created.isoformat(timespec="seconds"),
                        "hyperparameters": dict(model.params), "size": size,
                        "metrics": dict(metadata.get("metrics", {})), "gate": None,
                        "arrays": {k: {"dtype": str(a.dtype), "shape": list(a.shape)}
                                   for k, a in extra.items()},
                        "artifact": {"sha256": digest,
                                     "files": {n: (tmp / n).stat().st_size for n in names}}}
                self._write_meta(tmp, meta)
                fsync_path(tmp)
                target = self.models_dir / version
                try:
                    if not target.exists():
                        os.rename(tmp, target)
                        break
                except OSError:
                    if not target.exists():
                        raise
                created += timedelta(seconds=1)
            else:
                raise RegistryError(f"no free version id for {model.name} near {created:%Y%m%dT%H%M%S} "
                                    f"after {_ID_ATTEMPTS} tries")
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        fsync_path(self.models_dir)
        self._event("register", version=version, name=model.name, sha256=digest)
        return ModelVersion(version, model.name, target, meta)

    def record_metrics(self, version: str, metrics: dict) -> ModelVersion:
        """Merge offline ``metrics`` (name -> value) into the version's meta."""
        with self._locked():
            mv = self.get(version)
            mv.meta["metrics"] = {**mv.metrics, **metrics}
            self._write_meta(mv.path, mv.meta)
            self._append_event("metrics", version=mv.version, metrics=metrics)
        return mv

    def record_gate(self, version: str, decision: dict) -> ModelVersion:
        """Store the gate's decision (``GateDecision.to_dict()``) in meta and the log."""
        return self._record(version, "gate", decision=decision)

    def record_canary(self, version: str, outcome: dict) -> ModelVersion:
        """Store how the version's canary ended (result, reason, numbers: the retraining
        loop's ``recommender.loop.effects``) in meta and the log; ``models show`` prints
        it. A rolled-back version keeps its files: its numbers explain the decision."""
        return self._record(version, "canary", outcome=outcome)

    def _record(self, version: str, kind: str, **payload: dict) -> ModelVersion:
        """``meta[kind]`` = the one payload, time-stamped, and a ``kind`` event in the log."""
        [value] = payload.values()
        with self._locked():
            mv = self.get(version)
            mv.meta[kind] = {"time": _now().isoformat(timespec="seconds"), **value}
            self._write_meta(mv.path, mv.meta)
            self._append_event(kind, version=mv.version, **payload)
        return mv

    # -- hyperparameter searches ------------------------------------------------------------

    def record_tuning(self, result: dict) -> Path:
        """Keep one search (``recommender.training.tuning.TuningResult.to_dict()``: the
        model, every trial, the best, the data) as ``tuning/<model>-<time>.json``, and log
        it; returns the file."""
        model = str(result.get("model", ""))
        if not re.fullmatch(r"[A-Za-z0-9_.]+", model):
            raise RegistryError(f"a tuning record needs a model name, got {model!r}")
        stamp = _now()
        path = self.root / "tuning" / f"{model}-{stamp:%Y%m%dT%H%M%S%f}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            _write_json(path, {"recorded": stamp.isoformat(timespec="seconds"), **result})
        except (TypeError, ValueError) as exc:
            raise RegistryError(f"tuning record is not plain JSON: {exc}") from exc
        self._event("tune", model=model, file=path.name, best=result.get("best"))
        return path

    def tunings(self, model: str | None = None) -> list[dict]:
        """The recorded searches (of ``model``, or all), newest first; an unreadable file
        is skipped (logged), never fatal."""
        records = []
        # by the time stamp after the model's name (names hold no "-"), not the whole
        # file name, which would sort every "hybrid-" record before every "als-" one
        paths = sorted((self.root / "tuning").glob("*.json"),
                       key=lambda path: path.stem.rpartition("-")[2], reverse=True)
        for path in paths:
            try:
                record = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                log.warning("tuning record %s is unreadable: %s", path, exc)
                continue
            if model is None or record.get("model") == model:
                records.append({**record, "file": path.name})
        return records

    # -- reading versions -----------------------------------------------------------------

    def versions(self) -> list[ModelVersion]:
        """Every registered version, oldest first."""
        if not self.models_dir.is_dir():
            return []
        found = [self._read(p.name) for p in self.models_dir.iterdir()
                 if _VERSION.match(p.name) and p.is_dir()]
        return sorted(found, key=lambda mv: (mv.created, mv.version))

    def get(self, version_or_alias: str) -> ModelVersion:
        """A version by id or by alias; ``RegistryError`` if neither exists."""
        if _VERSION.match(version_or_alias):
            return self._read(version_or_alias)
        version = self.aliases().get(version_or_alias)
        if version is None:
            raise RegistryError(f"no version or alias {version_or_alias!r} in {self.root}")
        return self._read(version)

    def load(self, version_or_alias: str, *, mmap: bool = True, verify: bool = True) -> Recommender:
        """The model of a version or alias. ``verify`` re-hashes the artifact first
        (``RegistryError`` on a mismatch); the model's own loader raises ``ModelError``."""
        mv = self.get(version_or_alias)
        if verify:
            self.verify(mv)
        return self._resolve(mv.name).load(mv.path, mmap=mmap)

    def arrays(self, version_or_alias: str | ModelVersion) -> dict[str, np.ndarray]:
        """The version arrays given to ``register`` (``{}`` for a version without any, e.g.
        one registered before they existed), read fully into memory without pickle. Not
        re-hashed here: ``load`` verifies the whole artifact, these arrays included."""
        mv = version_or_alias
        if not isinstance(mv, ModelVersion):
            mv = self.get(mv)
        if VERSION_ARRAYS not in mv.meta.get("artifact", {}).get("files", {}):
            return {}
        try:
            with np.load(mv.path / VERSION_ARRAYS, allow_pickle=False) as npz:
                return {name: npz[name] for name in npz.files}
        except (OSError, ValueError) as exc:
            raise RegistryError(f"arrays of {mv.version} cannot be read: {exc}") from exc

    def verify(self, mv: ModelVersion) -> None:
        """``RegistryError`` unless the artifact's files hash to the recorded sha256."""
        files = mv.meta.get("artifact", {}).get("files", {})
        try:
            digest = artifact_digest(mv.path, list(files))
        except OSError as exc:
            raise RegistryError(f"artifact of {mv.version} is incomplete: {exc}") from exc
        if not files or digest != mv.meta["artifact"].get("sha256"):
            raise RegistryError(f"artifact of {mv.version} is corrupt: sha256 mismatch")

    def _read(self, version: str) -> ModelVersion:
        if not _VERSION.match(version):
            raise RegistryError(f"{version!r} is not a version id")
        path = self.models_dir / version
        try:
            meta = json.loads((path / META_JSON).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise RegistryError(f"no version {version!r} in {self.root}") from None
        except (OSError, ValueError) as exc:
            raise RegistryError(f"corrupt meta of {version}: {exc}") from exc
        if not isinstance(meta, dict) or meta.get("version") != version or "name" not in meta:
            raise RegistryError(f"corrupt meta of {version}: wrong or missing version/name")
        return ModelVersion(version, meta["name"], path, meta)

    # -- aliases ----------------------------------------------------------------------------

    def aliases(self) -> dict[str, str]:
        """Alias -> version."""
        return dict(self._read_aliases()["aliases"])

    def aliases_generation(self) -> int:
        """A counter that grows with every alias change: the serving process polls it."""
        return int(self._read_aliases()["generation"])

    def set_alias(self, alias: str, version: str, *, reason: str) -> None:
        """Point ``alias`` at ``version`` (no rollback memory; see ``promote``)."""
        self._change(alias, version, reason=reason, kind="set_alias", remember=False)

    def promote(self, version: str, *, alias: str = "champion", reason: str,
                force: bool = False) -> None:
        """Make ``version`` the holder of ``alias``, remembering the previous holder for
        ``rollback``. A version whose recorded gate decision failed is refused unless
        ``force``."""
        gate = self.get(version).meta.get("gate")
        if gate is not None and not gate.get("passed", False) and not force:
            raise RegistryError(f"{version} failed its gate; promote with force=True to override")
        self._change(alias, version, reason=reason, kind="promote", remember=True)

    def rollback(self, alias: str = "champion", *, reason: str) -> str:
        """Restore the holder of ``alias`` before the last promotion; returns it."""
        return self._change(alias, None, reason=reason, kind="rollback", remember=False)

    def history(self, alias: str) -> list[dict]:
        """The alias's changes from the event log, oldest first."""
        return [e for e in self.events()
                if e.get("alias") == alias and e["event"] in ("set_alias", "promote", "rollback")]

    def events(self) -> list[dict]:
        """Every event, oldest first. A line that does not parse is the remains of a write
        torn by a crash, and is skipped."""
        try:
            lines = self.events_path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return []
        events = []
        for line in lines:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict) and "event" in event:
                events.append(event)
        return events

    def _change(self, alias: str, version: str | None, *, reason: str, kind: str,
                remember: bool) -> str:
        if not _ALIAS.match(alias):
            raise RegistryError(f"bad alias {alias!r}: letters, digits, '_' or '.'")
        if not reason or not reason.strip():
            raise RegistryError(f"{kind} of {alias!r} needs a reason")
        with self._locked():
            state = self._read_aliases()
            current = state["aliases"].get(alias)
            stack = list(state["previous"].get(alias, []))
            if version is None:  # rollback
                if not stack:
                    raise RegistryError(f"nothing to roll {alias!r} back to")
                version = stack.pop()
            else:
                self.get(version)  # must exist
            if version != current:
                if remember and current is not None:
                    stack = [*stack, current][-MAX_PREVIOUS:]
                state["aliases"][alias] = version
                state["previous"][alias] = stack
                state["generation"] += 1
                _write_json(self.aliases_path, state)
            self._append_event(kind, alias=alias, version=version, previous=current,
                               reason=reason, unchanged=version == current)
        return version

    def _read_aliases(self) -> dict:
        try:
            state = json.loads(self.aliases_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {"generation": 0, "aliases": {}, "previous": {}}
        except (OSError, ValueError) as exc:
            raise RegistryError(f"corrupt {self.aliases_path}: {exc}") from exc
        if not isinstance(state, dict) or not {"generation", "aliases", "previous"} <= set(state):
            raise RegistryError(f"corrupt {self.aliases_path}: missing keys")
        return state

    # -- plumbing ---------------------------------------------------------------------------

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """Exclusive ``flock`` on the lock file. Each call opens its own file description,
        so the lock excludes other threads of this process as well as other processes."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.lock_path, "a+b") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    def _write_meta(self, directory: Path, meta: dict) -> None:
        try:
            _write_json(directory / META_JSON, meta)
        except (TypeError, ValueError) as exc:
            raise RegistryError(f"metadata is not plain JSON: {exc}") from exc

    def _event(self, kind: str, **fields: object) -> None:
        with self._locked():
            self._append_event(kind, **fields)

    def _append_event(self, kind: str, **fields: object) -> None:
        """One line, one ``write`` on an O_APPEND descriptor, then fsync; call locked."""
        line = json.dumps({"time": _now().isoformat(timespec="milliseconds"), "event": kind,
                           **fields}, sort_keys=True, allow_nan=False) + "\n"
        fd = os.open(self.events_path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                line = "\n" + line  # the last write was torn: start a fresh line
            os.write(fd, line.encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)
