"""What a cycle does to the world: the canary experiment and the champion alias. Each
effect is idempotent, so the loop may redo it after a crash (``recommender.loop.cycle``).

- ``start_canary`` writes the experiment that routes ``share`` of users to the challenger
  and the rest to the champion alias. It never replaces an experiment someone else runs:
  a person's A/B test outranks the loop's canary (``CanaryBlocked``).
- ``promote`` moves the champion alias to the challenger (``Registry.promote``: atomic,
  the old champion stays one ``rollback`` away), then stops the canary. Between the two,
  both arms serve the challenger, so a crash there serves nothing unknown.
- ``retire`` stops the canary, then records the challenger's rejection (or the
  inconclusive end) with the numbers in the registry.
"""

from __future__ import annotations

from datetime import datetime

from recommender.loop.journal import LoopError
from recommender.registry import Registry
from recommender.serving.experiments import Arm, Experiment, ExperimentStore

CHAMPION_ALIAS = "champion"


class CanaryBlocked(LoopError):
    """Another experiment is running: the canary waits rather than replace it."""


def canary_id(cycle: str) -> str:
    return f"canary-{cycle}"


def start_canary(store: ExperimentStore, *, cycle: str, challenger: str, share: float,
                 at: datetime) -> Experiment:
    """Write (or find already written) the cycle's canary experiment."""
    if not 0 < share < 1:
        raise LoopError(f"the canary share must be in (0, 1), got {share}")
    _, running = store.read()
    if running is not None and running.id == canary_id(cycle):
        return running
    if running is not None and (running.stop is None or running.stop > at):
        raise CanaryBlocked(f"experiment {running.id} is running or scheduled; the canary "
                            f"of cycle {cycle} waits until it ends")
    experiment = Experiment(canary_id(cycle),
                            (Arm("champion", CHAMPION_ALIAS, round(1 - share, 9)),
                             Arm("challenger", challenger, share)), start=at)
    store.write(experiment, reason=f"loop: canary of {challenger} for cycle {cycle}")
    return experiment


def stop_canary(store: ExperimentStore, *, cycle: str, reason: str) -> bool:
    """Stop the cycle's canary if it is the running experiment; False when it is not
    (already stopped, or never started)."""
    _, running = store.read()
    if running is None or running.id != canary_id(cycle):
        return False
    store.write(None, reason=f"loop: {reason}")
    return True


def promote(registry: Registry, store: ExperimentStore, *, cycle: str, challenger: str,
            reason: str) -> None:
    """The challenger becomes the champion, then the canary stops (module docstring)."""
    if registry.aliases().get(CHAMPION_ALIAS) != challenger:
        registry.promote(challenger, alias=CHAMPION_ALIAS, reason=f"loop cycle {cycle}: {reason}")
    stop_canary(store, cycle=cycle, reason=f"cycle {cycle} promoted {challenger}")
    registry.record_canary(challenger, {"cycle": cycle, "result": "promoted", "reason": reason})


def retire(registry: Registry, store: ExperimentStore, *, cycle: str, challenger: str,
           result: str, reason: str, numbers: dict | None = None) -> None:
    """The canary stops and the challenger is marked with ``result`` (rolled_back or
    kept_champion) and the numbers; the champion alias is not touched."""
    stop_canary(store, cycle=cycle, reason=f"cycle {cycle} {result}: {reason}")
    registry.record_canary(challenger, {"cycle": cycle, "result": result, "reason": reason,
                                        "numbers": numbers or {}})
