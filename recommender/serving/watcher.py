"""Hot swap: a background poll of the registry and the experiment file, and the frozen
snapshot of loaded models that each request reads.

``ModelWatcher`` owns the one mutable reference, ``current()``: a ``ModelSet`` that is
never changed once built. A request reads that reference once and routes with the
snapshot it got, so a swap in the middle of a request cannot mix two sets, and readers
take no lock (a reference read or write is atomic under the GIL). All loading happens in
``refresh()``, on the watcher's thread (or whoever calls it), never on a request thread.

What a poll costs: ``aliases_generation()`` + ``aliases()`` (two reads of a small JSON
file) and one read of the experiment file. Only when something changed (or a failed
version's retry time has come) are aliases resolved and new versions loaded.

Failure policy, so that a bad artifact or a half-edited file never takes serving down:

- a version whose loader raises is *rejected*: reported through ``on_event``, remembered,
  and not tried again for ``retry_s`` (a corrupt artifact would otherwise be re-hashed on
  every poll of every worker);
- when the serve alias moves to a version that does not load, the old default keeps
  serving; an arm whose version does not load is served by the default and labelled
  ``"default"``, so telemetry never credits an arm with answers it did not give;
- an unreadable registry keeps the current set; an unreadable experiment file keeps the
  last good experiment while alias changes are still followed.

Models of an experiment are loaded as soon as it is in the file (ready when its window
opens) and dropped when it leaves the file, not when its window closes.

Fork safety: construct anywhere, but call ``start()`` in each gunicorn worker after the
fork (a thread does not survive ``fork``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Generic, Protocol, TypeVar

from recommender.registry import Registry, RegistryError
from recommender.serving.experiments import (
    DEFAULT_ROUTE,
    Experiment,
    ExperimentStore,
    assign,
)
from recommender.serving.state import ServingError

log = logging.getLogger(__name__)


class Versioned(Protocol):
    """What the watcher needs of a served model: the registry version it was loaded from."""

    @property
    def version(self) -> str: ...


def reranked(model: M, policy: str | None) -> M:
    """``model`` answering with ``policy``'s re-ranking (an arm's ``rerank``): its
    ``with_rerank(policy)`` view when it has one (``ServingModel`` does), else the model
    itself (test doubles, and ``policy`` None)."""
    with_rerank = getattr(model, "with_rerank", None)
    return model if policy is None or with_rerank is None else with_rerank(policy)


M = TypeVar("M", bound=Versioned)

LOADED = "loaded"
REJECTED = "rejected"
"""The kinds ``on_event`` receives."""


@dataclass(frozen=True)
class ModelSet(Generic[M]):
    """One immutable snapshot of what serves.

    - ``models``: version -> loaded model, exactly the versions in use;
    - ``default_version``: what the serve alias resolved to (or the previous holder while
      the new one fails to load); None until a model exists;
    - ``experiment``: the running experiment (None: none);
    - ``arm_versions``: arm name -> version, only for arms whose version is loaded;
    - ``generation``: swaps by this watcher so far (0: the empty set before any).

    An arm with a ``rerank`` policy is answered by its model's re-ranked view, built
    once here (``reranked``), not per request.
    """

    models: Mapping[str, M] = field(default_factory=dict)
    default_version: str | None = None
    experiment: Experiment | None = None
    arm_versions: Mapping[str, str] = field(default_factory=dict)
    generation: int = 0
    _arm_models: Mapping[str, M] = field(default_factory=dict, init=False, repr=False,
                                         compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "models", MappingProxyType(dict(self.models)))
        object.__setattr__(self, "arm_versions", MappingProxyType(dict(self.arm_versions)))
        used = {v for v in (self.default_version, *self.arm_versions.values()) if v is not None}
        if missing := sorted(v for v in used if v not in self.models):
            raise ServingError(f"model set refers to versions it does not hold: {missing}")
        arms = {} if self.experiment is None else {a.name: a for a in self.experiment.arms}
        object.__setattr__(self, "_arm_models", {
            name: reranked(self.models[version], arms[name].rerank)
            for name, version in self.arm_versions.items() if name in arms})

    @property
    def default_model(self) -> M | None:
        return None if self.default_version is None else self.models[self.default_version]

    def route(self, user_id: int, at: datetime) -> tuple[str, M | None]:
        """(arm name, model) when the experiment, active at ``at`` (aware), assigns the
        user an arm whose model is loaded; otherwise (``"default"``, the default model or
        None before any model exists)."""
        if self.experiment is not None:
            arm = assign(user_id, self.experiment, at)
            if arm is not None:
                model = self._arm_models.get(arm.name)
                if model is not None:
                    return arm.name, model
        return DEFAULT_ROUTE, self.default_model


class ModelWatcher(Generic[M]):
    """Keeps ``current()`` in step with the registry alias and the experiment file.

    ``loader(version)`` builds a servable model and proves it works (load, smoke
    prediction); it raises ``ServingError`` on a corrupt or incompatible artifact.
    ``on_event(kind, version)`` hears ``"loaded"`` and ``"rejected"``. ``clock`` is the
    monotonic clock of the retry delay (seconds), replaceable in tests.
    """

    def __init__(self, registry: Registry, store: ExperimentStore, loader: Callable[[str], M], *,
                 alias: str = "champion", poll_s: float = 1.0, retry_s: float = 60.0,
                 on_event: Callable[[str, str], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not poll_s > 0 or not retry_s >= 0:
            raise ServingError(f"watcher needs poll_s > 0 and retry_s >= 0, "
                               f"got {poll_s}, {retry_s}")
        self.registry = registry
        self.store = store
        self.alias = alias
        self.poll_s = float(poll_s)
        self.retry_s = float(retry_s)
        self._loader = loader
        self._on_event = on_event
        self._clock = clock
        self._current: ModelSet[M] = ModelSet()
        self._experiment_state: tuple[int, Experiment | None] = (0, None)
        """The last good read of the experiment file."""
        self._seen: tuple[int, int, Experiment | None] | None = None
        """(aliases generation, experiment generation, experiment) last acted on."""
        self._wanted: frozenset[str] = frozenset()
        self._failed: dict[str, float] = {}
        """Rejected version -> clock time from which it may be tried again."""
        self._warned: dict[str, str] = {}
        self._refresh_lock = threading.Lock()
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._poke = threading.Event()
        self._thread: threading.Thread | None = None

    # -- what requests call -----------------------------------------------------------------

    def current(self) -> ModelSet[M]:
        """The snapshot to serve this request with (one attribute read, no lock)."""
        return self._current

    # -- polling ----------------------------------------------------------------------------

    def refresh(self) -> bool:
        """One poll (see the module docstring); True if a new set was swapped in.
        Concurrent calls run one after the other."""
        with self._refresh_lock:
            return self._refresh()

    def start(self) -> None:
        """Poll every ``poll_s`` on a daemon thread (no-op if already running)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"model-watcher-{self.alias}",
                                        daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Poll now on the watcher's thread instead of at the next ``poll_s`` (what the
        admin endpoints call: a model load never runs on a request thread)."""
        self._poke.set()

    def stop(self, timeout: float = 5.0) -> bool:
        """Ask the thread to end and wait up to ``timeout`` s; True once it has ended."""
        self._stop.set()
        self._poke.set()
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def wait_until_ready(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for a default model; True when one is loaded."""
        return self._ready.wait(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.refresh()
            except Exception:  # a bug must not end polling: the next poll may succeed
                log.exception("model watcher: poll failed")
            self._poke.wait(self.poll_s)
            self._poke.clear()

    def _refresh(self) -> bool:
        try:
            aliases_generation = self.registry.aliases_generation()
            aliases = self.registry.aliases()
        except RegistryError as exc:
            self._warn("registry", f"registry unreadable, keeping the current models: {exc}")
            return False
        self._warned.pop("registry", None)
        try:
            self._experiment_state = self.store.read()
            self._warned.pop("experiments", None)
        except ServingError as exc:
            self._warn("experiments", f"{exc}; keeping the last good experiment")
        generation, experiment = self._experiment_state
        now = self._clock()
        seen = (aliases_generation, generation, experiment)
        if seen == self._seen and not self._retry_due(now):
            return False
        self._seen = seen
        default, arms = self._resolve(aliases, experiment)
        return self._build(default, arms, experiment, now)

    def _resolve(self, aliases: Mapping[str, str], experiment: Experiment | None,
                 ) -> tuple[str | None, dict[str, str]]:
        """The serve alias's version, and arm name -> version for each arm whose model
        names an existing alias or version (the others are logged and dropped)."""
        default = aliases.get(self.alias)
        arms: dict[str, str] = {}
        if experiment is None:
            return default, arms
        for arm in experiment.arms:
            version = aliases.get(arm.model)
            if version is None:
                try:
                    version = self.registry.get(arm.model).version
                except RegistryError as exc:
                    log.warning("experiment %s: arm %s dropped, its users get the default "
                                "model: %s", experiment.id, arm.name, exc)
                    continue
            arms[arm.name] = version
        return default, arms

    def _build(self, default: str | None, arms: dict[str, str], experiment: Experiment | None,
               now: float) -> bool:
        """Load what is missing, build the new set, swap it in if it differs."""
        current = self._current
        wanted = list(dict.fromkeys([*([default] if default else []), *arms.values()]))
        self._wanted = frozenset(wanted)
        models: dict[str, M] = {}
        for version in wanted:
            model = current.models.get(version)
            if model is None:
                model = self._load(version, now)
            if model is not None:
                models[version] = model
        self._failed = {v: t for v, t in self._failed.items() if t > now or v in self._wanted}
        new_default = default if default in models else current.default_version
        if new_default is not None and new_default != default:
            log.warning("serve alias %r -> %s is not loadable; %s keeps serving",
                        self.alias, default, new_default)
            models[new_default] = current.models[new_default]
        arm_versions = {name: v for name, v in arms.items() if v in models}
        if (new_default == current.default_version and models.keys() == current.models.keys()
                and arm_versions == dict(current.arm_versions)
                and experiment == current.experiment):
            return False
        self._current = ModelSet(models, new_default, experiment, arm_versions,
                                 current.generation + 1)
        log.info("serving %s by default, arms %s (set %d)", new_default, arm_versions,
                 current.generation + 1)
        if new_default is not None:
            self._ready.set()
        return True

    def _load(self, version: str, now: float) -> M | None:
        """``loader(version)``, or None when it failed now or recently (see ``retry_s``)."""
        if self._failed.get(version, now) > now:
            return None
        try:
            model = self._loader(version)
        except Exception as exc:  # the contract is ServingError; any failure is a rejection
            self._failed[version] = self._clock() + self.retry_s
            log.warning("model %s rejected, not retried for %.0f s: %s", version, self.retry_s,
                        exc, exc_info=not isinstance(exc, ServingError))
            self._emit(REJECTED, version)
            return None
        self._failed.pop(version, None)
        self._emit(LOADED, version)
        return model

    def _retry_due(self, now: float) -> bool:
        return any(t <= now for v, t in self._failed.items() if v in self._wanted)

    def _emit(self, kind: str, version: str) -> None:
        if self._on_event is None:
            return
        try:
            self._on_event(kind, version)
        except Exception:  # a metrics hiccup must not stop a swap
            log.exception("model watcher: on_event(%r, %r) failed", kind, version)

    def _warn(self, source: str, message: str) -> None:
        """Log a problem of ``source`` once, not on every poll while it lasts."""
        if self._warned.get(source) != message:
            self._warned[source] = message
            log.warning("model watcher: %s", message)
