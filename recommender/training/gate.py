"""The quality gate a trained model must pass before it may serve. Pure.

A candidate passes only if, on the gate metric (higher is better, e.g. ``ndcg@20``):

1. it beats the popularity baseline by at least ``min_lift_over_baseline``, relative:
   ``candidate >= baseline * (1 + min_lift)``. A model that cannot clearly beat "most
   popular" is not worth its cost and its risk;
2. if a champion exists, it is not worse than the champion by more than
   ``max_regression``, relative: ``candidate >= champion * (1 - max_regression)``. Small
   losses are tolerated, because retraining on fresh data is worth a little offline noise;
   large ones are not.

Guard metrics (``GateConfig.guards``, e.g. ``recall@20``) are held to rule 2 as well.

Why relative margins: offline ranking metrics have no fixed scale. NDCG@20 on a
temporal split can be 0.02 on one week and 0.2 on another (it depends on how sparse the
test window is, how many items it has, how long histories are), so an absolute margin of
0.01 would be impossible in one window and meaningless in the other. A relative margin says
the same thing at every scale, and the evaluation noise of these metrics also grows
roughly in proportion to their level.

All three dicts must come from the same evaluation (same split, same users, same
protocol): the caller re-evaluates the champion on the candidate's split. A missing or
non-finite metric fails the gate with a reason, never passes it silently.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class GateConfig:
    """Thresholds of the gate; the margins are fractions (0.05 = 5 %)."""

    metric: str = "ndcg@20"
    min_lift_over_baseline: float = 0.05
    max_regression: float = 0.02
    guards: tuple[str, ...] = ()
    """Further metrics that must not regress against the champion by more than
    ``max_regression`` (they are not compared with the baseline)."""

    def __post_init__(self) -> None:
        if self.min_lift_over_baseline < 0 or not 0 <= self.max_regression < 1:
            raise ValueError("gate margins must be min_lift >= 0 and 0 <= max_regression < 1")


@dataclass(frozen=True)
class GateDecision:
    """The verdict: ``passed``; ``reasons`` in words (why it failed, or what it beat);
    ``numbers``: the values, lifts and thresholds it was decided on (JSON-safe)."""

    passed: bool
    reasons: list[str] = field(default_factory=list)
    numbers: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"passed": self.passed, "reasons": list(self.reasons), "numbers": dict(self.numbers)}


def _value(metrics: Mapping | None, name: str) -> float | None:
    """The metric as a finite float, or None when absent, non-numeric or NaN/inf."""
    if metrics is None:
        return None
    raw = metrics.get(name)
    if isinstance(raw, bool):
        return None
    try:
        value = float(raw)  # type: ignore[arg-type]  # any object: what float refuses is None
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _at_least(value: float, threshold: float) -> bool:
    """``value >= threshold`` up to float rounding (0.1 * 1.05 is 0.10500000000000001)."""
    return value >= threshold - 1e-12 * abs(threshold)


def _relative(new: float, old: float) -> float | None:
    """(new - old) / old, None when ``old`` is not positive (no meaningful ratio)."""
    return (new - old) / old if old > 0 else None


def decide(candidate: Mapping, baseline: Mapping, champion: Mapping | None,
           config: GateConfig = GateConfig()) -> GateDecision:
    """Apply the gate to offline metric dicts (metric name -> value); ``champion`` None
    means nothing serves yet, so only the baseline rule applies."""
    name = config.metric
    cand, base = _value(candidate, name), _value(baseline, name)
    champ = _value(champion, name) if champion is not None else None
    reasons: list[str] = []
    numbers: dict = {
        "metric": name, "candidate": cand, "baseline": base, "champion": champ,
        "min_lift_over_baseline": config.min_lift_over_baseline,
        "max_regression": config.max_regression,
        "lift_over_baseline": None, "change_vs_champion": None,
    }
    ok = True
    if cand is None:
        reasons.append(f"candidate has no finite {name}")
        ok = False
    if base is None:
        reasons.append(f"baseline has no finite {name}")
        ok = False
    if champion is not None and champ is None:
        reasons.append(f"champion has no finite {name}; cannot check for a regression")
        ok = False
    if cand is not None and base is not None:
        required = base * (1 + config.min_lift_over_baseline)
        numbers["lift_over_baseline"] = _relative(cand, base)
        numbers["required_for_baseline"] = required
        if _at_least(cand, required) and cand > base:
            reasons.append(f"{name} {cand:.4g} beats the baseline {base:.4g} by the required "
                           f"{config.min_lift_over_baseline:.0%}")
        else:
            reasons.append(f"{name} {cand:.4g} does not beat the baseline {base:.4g} by "
                           f"{config.min_lift_over_baseline:.0%} (needs >= {required:.4g})")
            ok = False
    if cand is not None and champ is not None:
        floor = champ * (1 - config.max_regression)
        numbers["change_vs_champion"] = _relative(cand, champ)
        numbers["required_for_champion"] = floor
        if _at_least(cand, floor):
            reasons.append(f"{name} {cand:.4g} is within {config.max_regression:.0%} of the "
                           f"champion {champ:.4g} or better")
        else:
            reasons.append(f"{name} {cand:.4g} regresses more than {config.max_regression:.0%} "
                           f"below the champion {champ:.4g} (needs >= {floor:.4g})")
            ok = False
    if champion is not None:
        ok = _check_guards(candidate, champion, config, reasons, numbers) and ok
    return GateDecision(passed=ok, reasons=reasons, numbers=numbers)


def _check_guards(candidate: Mapping, champion: Mapping, config: GateConfig,
                  reasons: list[str], numbers: dict) -> bool:
    """Rule 2 for each guard metric; appends reasons and ``numbers["guards"]``."""
    ok = True
    guards: dict = {}
    for name in config.guards:
        cand, champ = _value(candidate, name), _value(champion, name)
        guards[name] = {"candidate": cand, "champion": champ}
        if cand is None or champ is None:
            reasons.append(f"guard {name} missing for the {'candidate' if cand is None else 'champion'}")
            ok = False
            continue
        floor = champ * (1 - config.max_regression)
        guards[name]["required"] = floor
        if not _at_least(cand, floor):
            reasons.append(f"guard {name} {cand:.4g} regresses more than "
                           f"{config.max_regression:.0%} below the champion {champ:.4g}")
            ok = False
    if guards:
        numbers["guards"] = guards
    return ok


GATE_SLICE_FAMILIES = ("cohort", "activity")
"""The slices whose gate-metric numbers every decision records: new and established users,
and established users by activity band."""


def slice_numbers(candidate: Sequence[Mapping], baseline: Sequence[Mapping], metric: str) -> dict:
    """``{"<family>:<slice>": {"users", "candidate", "baseline", "candidate_ci95"}}`` for the
    ``GATE_SLICE_FAMILIES`` slices of ``metric``, from ``SliceMeans.to_dict`` entries of the
    candidate and the baseline (the same test users): recorded with each decision, so a
    promotion that wins overall but loses a slice shows it."""
    base = {(s["family"], s["name"]): s for s in baseline}
    out: dict = {}
    for s in candidate:
        if s["family"] not in GATE_SLICE_FAMILIES:
            continue
        other = base.get((s["family"], s["name"]), {})
        out[f"{s['family']}:{s['name']}"] = {
            "users": s["users"], "candidate": _value(s["means"], metric),
            "baseline": _value(other.get("means"), metric),
            "candidate_ci95": s.get("ci95", {}).get(metric)}
    return out
