"""The training pipeline: event rows -> split -> candidates -> offline evaluation ->
registry -> gate -> promotion.

One run, given the watch and rate rows of an event-store snapshot (``TrainInputs``):

1. **Split.** The last ``eval_test_share`` of the snapshot's time span is the test period;
   everything before the cut trains (``offline_eval.split``: no test event reaches a
   feature, a popularity count or the matrix).
2. **Evaluate.** Every candidate is fitted on the training side and measured on the test
   side at k (``offline_eval.evaluate``); new users get the cold-start path with their
   profile and the titles matched from their self-description. Candidates are compared
   with a paired test against the popularity baseline.
3. **Train for serving.** Every candidate is fitted again on the whole snapshot: the
   version that serves has seen the latest data, and it carries the metrics its
   configuration earned on the split.
4. **Register** each with full provenance (code, packages, data snapshot, params, timings,
   sizes, metrics) and the runtimes its confidences used (``recommender.runtimes``: serving
   weighs histories with them), **gate** it (``recommender.training.gate``) and record the decision, then
   **promote** the best passing model to ``champion``.

The champion the gate compares with is the champion's *configuration* (model name and
hyperparameters from the registry) evaluated on this run's split: re-fitted unless a
candidate of this run has the same configuration. Evaluating the old artifact itself would
mix catalogs and, when its data reaches past the cut, leak test events into it.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa

from movierec.errors import MovierecError
from offline_eval.compare import row_from_result, write_report
from offline_eval.evaluate import EvalResult, compare_paired, evaluate
from offline_eval.split import Truth, build_truth, temporal_split
from recommender.coldstart import TitleMatcher, profile_items
from recommender.confidence import ConfidenceParams
from recommender.dataset import build_trainset, build_trainset_with_runtimes, event_ms
from recommender.models import model_class
from recommender.models.als import ALSRecommender
from recommender.models.base import ModelError, Recommender, TrainSet
from recommender.models.profiles import Profile, Profiles
from recommender.provenance import code_version, package_versions, peak_memory_bytes
from recommender.registry import Registry, RegistryError
from recommender.runtimes import RUNTIME_ARRAY, given_runtimes
from recommender.training.gate import GateConfig, decide, slice_numbers
from recommender.training.settings import TrainSettings

log = logging.getLogger(__name__)

BASELINE = "popularity"
REPO_ROOT = Path(__file__).resolve().parents[2]  # recommender/training/pipeline.py -> the repository


class PipelineError(MovierecError):
    """The pipeline cannot run on these inputs (no data, an empty split, no baseline)."""


@dataclass(frozen=True)
class TrainInputs:
    """What a run trains on: ``events`` (watch and rate rows, ``dataset.EVENT_COLUMNS``),
    ``data`` (provenance of those rows, e.g. ``snapshot_provenance``), profiles by user id,
    runtimes and titles by movie id, and the movies' stored metadata (genres, vote
    average, popularity) by movie id (all optional)."""

    events: pa.Table
    data: dict
    profiles: Profiles = field(default_factory=Profiles.empty)
    runtimes: Mapping[str, int] = field(default_factory=dict)
    titles: Mapping[str, str] = field(default_factory=dict)
    movies: Mapping[str, Mapping[str, str]] = field(default_factory=dict)


@dataclass
class Candidate:
    """One candidate's journey through a run."""

    name: str
    params: dict
    result: EvalResult | None = None
    row: dict = field(default_factory=dict)
    version: str | None = None
    gate: dict | None = None


@dataclass(frozen=True)
class Prepared:
    """A run's split, ready for candidates: the training set before ``cut``, the truth of
    the test period ``[cut, end)``, and each user's profile for cold start."""

    cut: datetime
    end: datetime
    train: TrainSet
    truth: Truth
    profile_for: Callable[[int], Profile]


@dataclass
class RunReport:
    """What a run did: per-candidate rows and versions, paired tests, the promotion, and
    the report files."""

    cut: datetime
    end: datetime
    candidates: list[Candidate]
    paired: dict[str, dict]
    promoted: str | None
    report_files: dict[str, Path]
    test_users: int
    new_test_users: int


def candidate_params(settings: TrainSettings) -> dict[str, dict]:
    """Hyperparameters of each candidate named in the settings."""
    known: dict[str, dict] = {
        "als": {"factors": settings.als_factors, "iterations": settings.als_iterations,
                "regularization": settings.als_regularization, "alpha": settings.als_alpha,
                "cg_steps": settings.als_cg_steps,
                "item_cg_steps": settings.als_item_cg_steps or settings.als_cg_steps,
                "num_threads": settings.train_threads},
        "popularity": {"by_segment": True},
        "itemknn": {"num_threads": settings.train_threads},
        "hybrid": {"factors": settings.als_factors, "iterations": settings.als_iterations,
                   "regularization": settings.als_regularization, "alpha": settings.als_alpha,
                   "cg_steps": settings.als_cg_steps,
                   "item_cg_steps": settings.als_item_cg_steps or settings.als_cg_steps,
                   "num_threads": settings.train_threads},
    }
    return {name: known.get(name, {}) for name in settings.model_names()}


def split_cut(events: pa.Table, test_share: float) -> tuple[datetime, datetime]:
    """(cut, end): the cut leaves ``test_share`` of the time span after it; ``end`` is
    1 ms after the last event, so ``[cut, end)`` holds the whole test period."""
    ms = event_ms(events)
    if len(ms) == 0:
        raise PipelineError("no watch or rate events to train on")
    lo, hi = int(ms.min()), int(ms.max())
    cut = lo + int(round((hi - lo) * (1.0 - test_share)))
    if cut <= lo:
        raise PipelineError("the events span no time; nothing to split")
    epoch = datetime(1970, 1, 1)
    return epoch + timedelta(milliseconds=cut), epoch + timedelta(milliseconds=hi + 1)


@dataclass(frozen=True)
class Tuned:
    """What training takes from the recorded searches (``recommender.training.tuning``):
    each tunable model its own latest best ``params`` (and the ``files`` they came from);
    the dataset, which every candidate shares, the ``confidence`` of the newest search of
    any model. Only searches that saw nothing at or after the run's test cut count
    (``seen_until``), so a search on today's log never chooses the parameters of a
    training on an older snapshot, whose test period it has seen."""

    params: dict[str, dict] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    confidence: dict[str, float] = field(default_factory=dict)

    @classmethod
    def latest(cls, registry: Registry, *, cut: datetime) -> Tuned:
        params: dict[str, dict] = {}
        files: dict[str, str] = {}
        confidence: dict[str, float] | None = None
        for record in registry.tunings():  # newest first
            seen_until = record.get("data", {}).get("seen_until")
            if seen_until is None or datetime.fromisoformat(seen_until) > cut:
                log.info("tuning %s not used: it saw events up to %s, past this run's test "
                         "cut %s", record.get("file"), seen_until or "(not recorded)", cut)
                continue
            model = str(record.get("model"))
            if model not in params:
                params[model] = dict(record.get("best", {}).get("params", {}))
                files[model] = str(record.get("file"))
            if confidence is None:
                confidence = dict(record.get("best", {}).get("confidence", {}))
        return cls(params, files, confidence or {})


class Pipeline:
    """Runs the steps above with one settings object; ``progress(stage)`` is told each
    stage as it starts (the CLI draws a bar from it)."""

    def __init__(self, settings: TrainSettings, *, registry: Registry | None = None,
                 progress: Callable[[str], None] | None = None,
                 confidence: ConfidenceParams | None = None) -> None:
        self.settings = settings
        self.registry = registry
        self.progress = progress or (lambda stage: log.info("%s", stage))
        self._confidence_given = confidence
        self.tuned = Tuned()  # taken up by run(), which knows its test cut
        self.confidence = confidence or ConfidenceParams()
        self.gate = GateConfig(metric=settings.gate_metric,
                               min_lift_over_baseline=settings.gate_min_lift,
                               max_regression=settings.gate_max_regression)

    # -- the run ------------------------------------------------------------------------------

    def run(self, inputs: TrainInputs, *, register: bool = True, promote: bool = True,
            report_dir: Path | None = None) -> RunReport:
        s = self.settings
        names = s.model_names()
        if register and BASELINE not in names:
            raise PipelineError(f"the gate needs the {BASELINE!r} baseline among the candidates")
        if register and self.registry is None:
            raise PipelineError("registering needs a registry")
        self._take_tuned(split_cut(inputs.events, s.eval_test_share)[0])
        params = self._tuned_params(candidate_params(s))
        prepared = self.prepare(inputs)
        cut, end, train, truth, profile_for = (prepared.cut, prepared.end, prepared.train,
                                               prepared.truth, prepared.profile_for)
        candidates = [Candidate(n, params[n]) for n in names]
        self.progress("evaluate candidates")
        for c in candidates:
            c.result, c.row = self.evaluate_candidate(c.name, c.params, prepared)
        paired = self._paired(candidates)

        report_dir = report_dir or s.reports_dir / f"{datetime.now():%Y%m%dT%H%M%S}"
        promoted = None
        if register:
            assert self.registry is not None
            champion = self._champion_metrics(candidates, train, truth, profile_for)
            full, runtime = build_trainset_with_runtimes(
                inputs.events, as_of=end, profiles=inputs.profiles, runtimes=inputs.runtimes,
                movies=inputs.movies, params=self.confidence, rating_scale=s.rating_scale)
            from_api = int(np.count_nonzero(~np.isnan(given_runtimes(full.item_ids, inputs.runtimes))))
            runtimes = {"stored_as": RUNTIME_ARRAY, "from_api": from_api,
                        "estimated": full.n_items - from_api}
            for c in candidates:
                self._train_and_register(c, full, (runtime, runtimes), inputs, cut)
            promoted = self._gate_and_promote(candidates, champion, promote=promote)
        self.progress("write the comparison report")
        files = write_report([c.row for c in candidates], report_dir)
        return RunReport(cut, end, candidates, paired, promoted, files, len(truth),
                         int(np.sum(truth.new_user)))

    # -- steps ----------------------------------------------------------------------------------

    def _take_tuned(self, cut: datetime) -> None:
        """Take up the latest usable searches (``Tuned``), unless the settings say not to;
        a confidence given to the constructor wins over the searches'."""
        if self.registry is None or not self.settings.train_use_tuned:
            return
        self.tuned = Tuned.latest(self.registry, cut=cut)
        if self._confidence_given is None:
            self.confidence = ConfidenceParams(**self.tuned.confidence)

    def _tuned_params(self, params: dict[str, dict]) -> dict[str, dict]:
        """``params`` with each model's tuned values over the settings' (logged, since a
        ``MOVIEREC_ALS_*`` value then has no effect; ``MOVIEREC_TRAIN_USE_TUNED=0`` keeps
        the settings)."""
        out = dict(params)
        for name, tuned in self.tuned.params.items():
            if name not in out:
                continue
            changed = {k: v for k, v in tuned.items() if out[name].get(k) != v}
            if changed:
                log.info("%s: %s from tuning %s over the settings", name,
                         ", ".join(f"{k}={v}" for k, v in sorted(changed.items())),
                         self.tuned.files.get(name))
            out[name] = {**out[name], **tuned}
        return out

    def prepare(self, inputs: TrainInputs) -> Prepared:
        """Split ``inputs`` at the settings' test share: the training set, the truth, the
        profiles for cold start. ``PipelineError`` when the test period has no truth."""
        s = self.settings
        cut, end = split_cut(inputs.events, s.eval_test_share)
        self.progress(f"split at {cut:%Y-%m-%d %H:%M}")
        train_events, test_events = temporal_split(inputs.events, cut, end=end)
        train = build_trainset(train_events, as_of=cut, profiles=inputs.profiles,
                               runtimes=inputs.runtimes, movies=inputs.movies,
                               params=self.confidence, rating_scale=s.rating_scale)
        truth = build_truth(train, test_events, runtimes=inputs.runtimes,
                            rating_scale=s.rating_scale)
        if len(truth) == 0:
            raise PipelineError("no user has a relevant event in the test period")
        return Prepared(cut, end, train, truth, self._profiles(train, inputs))

    def evaluate_candidate(self, name: str, params: dict, prepared: Prepared) -> tuple[EvalResult, dict]:
        """Fit candidate ``name`` with ``params`` before the cut and measure it after: its
        result and its comparison row (no version yet)."""
        return self._evaluate(name, params, prepared.train, prepared.truth, prepared.profile_for)

    def _profiles(self, train: TrainSet, inputs: TrainInputs) -> Callable[[int], Profile]:
        """Profile of a (new) user, with the titles of their self-description matched
        against the training catalog."""
        titles = [inputs.titles.get(str(m)) for m in train.item_ids] if inputs.titles else None
        matcher = TitleMatcher.from_ids(train.item_ids, titles)
        profiles = inputs.profiles

        def profile_for(user_id: int) -> Profile:
            liked, disliked = profile_items(matcher, profiles.likes.get(user_id),
                                            profiles.dislikes.get(user_id))
            return profiles.profile(user_id, liked=liked, disliked=disliked)

        return profile_for

    def _evaluate(self, name: str, params: dict, train: TrainSet, truth: Truth,
                  profile_for: Callable[[int], Profile]) -> tuple[EvalResult, dict]:
        self.progress(f"fit {name} on the training side")
        model = model_class(name)(**params)
        started = time.perf_counter()
        model.fit(train)
        seconds = time.perf_counter() - started
        self.progress(f"evaluate {name}")
        result = evaluate(model, train, truth, k=self.settings.eval_k, profile_for=profile_for)
        row = row_from_result(result, version="", train_seconds=seconds, disk_bytes=0,
                              memory_bytes=model.memory_bytes())
        return result, row

    def _paired(self, candidates: list[Candidate]) -> dict[str, dict]:
        """Each candidate against the baseline on per-user gate-metric values."""
        base = next((c for c in candidates if c.name == BASELINE), None)
        if base is None or base.result is None:
            return {}
        metric = self.settings.gate_metric
        out = {}
        for c in candidates:
            if c is base or c.result is None or metric not in c.result.per_user:
                continue
            test = compare_paired(c.result.per_user[metric], base.result.per_user[metric])
            out[c.name] = {"metric": metric, "against": BASELINE, **test.to_dict()}
        return out

    def _champion_metrics(self, candidates: list[Candidate], train: TrainSet, truth: Truth,
                          profile_for: Callable[[int], Profile]) -> dict | None:
        assert self.registry is not None
        try:
            champion = self.registry.get("champion")
        except RegistryError:
            return None
        name = champion.name
        params = {**model_class(name).absent_params, **champion.meta.get("hyperparameters", {})}
        for c in candidates:  # same configuration: compare full params, defaults included
            if c.name == name and model_class(c.name)(**c.params).params == params:
                assert c.result is not None
                return c.result.summary()
        self.progress(f"re-evaluate the champion's configuration ({champion.version})")
        result, _ = self._evaluate(name, params, train, truth, profile_for)
        return result.summary()

    def _train_and_register(self, c: Candidate, full: TrainSet,
                            runtimes: tuple[np.ndarray, dict], inputs: TrainInputs,
                            cut: datetime) -> None:
        """Fit ``c`` on ``full`` and register it with ``runtimes``: the array training
        used (stored with the version) and its provenance (for the metadata)."""
        assert self.registry is not None
        self.progress(f"fit {c.name} on all data and register it")
        model: Recommender = model_class(c.name)(**c.params)
        if isinstance(model, ALSRecommender):
            self._warm_start(model)
        started = time.perf_counter()
        model.fit(full)
        seconds = time.perf_counter() - started
        assert c.result is not None
        metrics = {**c.result.summary(), "eval_cut": cut.isoformat(),
                   "eval_users": len(c.result.user_ids)}
        runtime, runtime_meta = runtimes
        version = self.registry.register(model, arrays={RUNTIME_ARRAY: runtime}, metadata={
            "code": code_version(REPO_ROOT, built_from=self.settings.code_commit,
                                 built_dirty=self.settings.code_dirty),
            "packages": package_versions(),
            "data": {**inputs.data, "train_users": full.n_users, "train_items": full.n_items,
                     "interactions": int(full.matrix.nnz),
                     "runtimes": runtime_meta},
            "training": {"seconds": seconds, "peak_memory_bytes": peak_memory_bytes(),
                         **model.fit_facts},
            "metrics": metrics,
            # serving weighs a user's history with the same confidence (ServingModel.load)
            "confidence": dataclasses.asdict(self.confidence),
            "tuning": self.tuned.files.get(c.name),
        })
        c.version = version.version
        c.row = {**c.row, "version": version.version, "train_seconds": seconds,
                 **version.meta["size"]}

    def _warm_start(self, model: ALSRecommender) -> None:
        """Start ``model``'s final fit from the champion's ALS item factors (the champion
        itself, or the ALS inside a hybrid) when the sizes allow, with
        ``als_warm_iterations`` (5) instead of 15: on a log of 40M interactions, a third of
        the time and as good (docs/models.md#warm-started-retraining-issue-16). The
        evaluation fit before the cut stays cold: the champion has seen the test period,
        and a model started from it would be measured on what it learned from. So the
        version's metrics are the cold fit's; its ``training.warm_start`` says the served
        factors were fitted warm."""
        assert self.registry is not None
        iterations = self.settings.als_warm_iterations
        if iterations == 0 or "champion" not in self.registry.aliases():
            return
        try:
            champion = self.registry.load("champion")
        except (RegistryError, ModelError) as exc:
            log.warning("no warm start: the champion cannot be loaded (%s)", exc)
            return
        als = champion if isinstance(champion, ALSRecommender) else getattr(champion, "_als", None)
        if (isinstance(als, ALSRecommender) and len(als.item_ids)
                and model.warm_from(als.item_ids, np.asarray(als.item_factors),
                                    iterations=iterations)):
            self.progress(f"warm start from {self.registry.aliases()['champion']}")

    def _gate_and_promote(self, candidates: list[Candidate], champion: dict | None, *,
                          promote: bool) -> str | None:
        assert self.registry is not None
        self.progress("gate")
        base = next(c for c in candidates if c.name == BASELINE)
        assert base.result is not None
        passing = []
        for c in candidates:
            if c is base or c.result is None or c.version is None:
                continue
            decision = decide(c.result.summary(), base.result.summary(), champion, self.gate)
            c.gate = decision.to_dict()
            c.gate["numbers"]["slices"] = slice_numbers(
                [s.to_dict() for s in c.result.slices], [s.to_dict() for s in base.result.slices],
                self.gate.metric)
            self.registry.record_gate(c.version, c.gate)
            if decision.passed:
                passing.append(c)
        assert base.version is not None
        self.registry.set_alias("baseline", base.version, reason="latest popularity baseline")
        if not promote:
            return None
        if not passing:
            if "champion" in self.registry.aliases():
                return None
            # Nothing serves yet and nothing beat the baseline: the baseline serves.
            best = base
            reason = "no candidate passed the gate and nothing served yet"
        else:
            metric = self.settings.gate_metric
            # a candidate that passed the gate was evaluated: its result is set
            best = max(passing, key=lambda c: c.result.summary()[metric])  # type: ignore[union-attr]
            reason = f"best {metric} of the run among those that passed the gate"
        assert best.version is not None
        self.progress(f"promote {best.version}")
        self.registry.promote(best.version, reason=reason)
        return best.version
