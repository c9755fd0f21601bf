"""The model watcher against a real file registry with tiny real models: promotion and
rollback swap the served set, corrupt artifacts are rejected and not retried early,
experiments route users to their arms' models, broken inputs keep the current set, and
readers never see a half-swapped or empty set while versions change under them."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from recommender.models.base import ModelError, Recommender, TrainSet
from recommender.models.popularity import PopularityRecommender
from recommender.registry import Registry, RegistryError
from recommender.serving.experiments import Experiment, ExperimentStore, assign
from recommender.serving.state import ServingError
from recommender.serving.watcher import ModelSet, ModelWatcher

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
AS_OF = datetime(2025, 6, 1)


@dataclass(frozen=True)
class Served:
    """What the lead's ServingModel is to the watcher: a model and its version."""

    version: str
    model: Recommender


class Loader:
    """Loads through the registry (which re-hashes the artifact) and makes one smoke
    prediction, as the service's loader does; records every call."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.calls: list[str] = []

    def __call__(self, version: str) -> Served:
        self.calls.append(version)
        try:
            model = self.registry.load(version)
            top = model.recommend_new(None, 5)
        except (RegistryError, ModelError) as exc:
            raise ServingError(f"cannot serve {version}: {exc}") from exc
        if len(top) != 5:
            raise ServingError(f"{version}: smoke prediction gave {len(top)} items")
        return Served(version, model)


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def tiny_model(seed: int) -> PopularityRecommender:
    """Popularity over 30 random users x 12 items; another seed gives other counts, hence
    another artifact hash and version id."""
    rng = np.random.default_rng(seed)
    matrix = sp.csr_matrix((rng.random((30, 12)) < 0.4).astype(np.float32))
    matrix.sort_indices()
    train = TrainSet(matrix, np.arange(1, 31, dtype=np.int64),
                     np.array([f"m{i:03d}+2000" for i in range(12)], dtype=object),
                     np.zeros(matrix.nnz), AS_OF)
    model = PopularityRecommender()
    model.fit(train)
    return model


METADATA = {"code": {"commit": "0" * 40, "dirty": False}, "packages": {},
            "data": {"snapshot_id": "0123456789abcdef", "partitions": {"0": [0, 9, 10]},
                     "rows": 10},
            "training": {"seconds": 0.01, "peak_memory_bytes": 10**6}}


@dataclass
class World:
    registry: Registry
    store: ExperimentStore
    loader: Loader
    clock: Clock
    events: list[tuple[str, str]]
    watcher: ModelWatcher[Served]

    def register(self, seed: int) -> str:
        return self.registry.register(tiny_model(seed), metadata=METADATA).version

    def promote(self, version: str, alias: str = "champion") -> None:
        self.registry.promote(version, alias=alias, reason="test")


@pytest.fixture
def world(tmp_path: Path) -> World:
    registry = Registry(tmp_path / "registry")
    store = ExperimentStore(tmp_path / "registry" / "experiments.json")
    loader, clock, events = Loader(registry), Clock(), []
    watcher = ModelWatcher(registry, store, loader, retry_s=60.0, clock=clock,
                           on_event=lambda kind, version: events.append((kind, version)))
    return World(registry, store, loader, clock, events, watcher)


def truncate(registry: Registry, version: str) -> bytes:
    """Cut the version's score array in half after registration; returns the old bytes."""
    path = registry.get(version).path / "scores.npy"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return data


def served_version(world: World, user: int = 1) -> str | None:
    model = world.watcher.current().route(user, NOW)[1]
    return None if model is None else model.version


def test_before_any_model_nothing_serves_and_the_watcher_is_not_ready(world):
    assert world.watcher.refresh() is False
    assert world.watcher.current().route(1, NOW) == ("default", None)
    assert world.watcher.current().default_version is None
    assert world.watcher.wait_until_ready(0.01) is False
    assert world.loader.calls == [] and world.events == []


def test_promotion_swaps_a_quiet_poll_does_nothing_and_rollback_swaps_back(world):
    v1, v2 = world.register(1), world.register(2)
    world.promote(v1)
    assert world.watcher.refresh() is True
    first = world.watcher.current()
    assert first.default_version == v1 and served_version(world) == v1
    assert first.route(1, NOW)[0] == "default" and world.watcher.wait_until_ready(0)
    assert world.events == [("loaded", v1)]

    assert world.watcher.refresh() is False
    assert world.watcher.current() is first and world.loader.calls == [v1]

    world.promote(v2)
    assert world.watcher.refresh() is True
    second = world.watcher.current()
    assert second.default_version == v2 and set(second.models) == {v2}  # v1 dropped
    assert first.default_version == v1 and served_version(world) == v2  # snapshots stay put

    assert world.registry.rollback(reason="test") == v1
    assert world.watcher.refresh() is True
    assert world.watcher.current().default_version == v1 and served_version(world) == v1
    assert world.loader.calls == [v1, v2, v1]
    assert [s.generation for s in (first, second, world.watcher.current())] == [1, 2, 3]


def test_a_corrupt_artifact_is_rejected_counted_not_retried_early_and_the_old_one_serves(world):
    v1, v2 = world.register(1), world.register(2)
    world.promote(v1)
    world.watcher.refresh()
    good = truncate(world.registry, v2)
    world.promote(v2)

    assert world.watcher.refresh() is False  # nothing new could be swapped in
    assert world.events[-1] == ("rejected", v2)
    assert world.watcher.current().default_version == v1 and served_version(world) == v1

    world.clock.t += 59.0
    for _ in range(3):
        assert world.watcher.refresh() is False
    world.store.write(None, reason="another change forces a new resolution")
    assert world.watcher.refresh() is False
    assert world.loader.calls.count(v2) == 1

    world.clock.t += 2.0  # 61 s after the rejection
    assert world.watcher.refresh() is False
    assert world.loader.calls.count(v2) == 2 and world.events.count(("rejected", v2)) == 2

    (world.registry.get(v2).path / "scores.npy").write_bytes(good)  # repaired
    world.clock.t += 61.0
    assert world.watcher.refresh() is True
    assert served_version(world) == v2 and world.events[-1] == ("loaded", v2)


def test_a_new_good_version_is_taken_while_a_bad_one_waits_for_its_retry(world):
    v1, v2, v3 = world.register(1), world.register(2), world.register(3)
    world.promote(v1)
    world.watcher.refresh()
    truncate(world.registry, v2)
    world.promote(v2)
    world.watcher.refresh()
    world.promote(v3)
    assert world.watcher.refresh() is True
    assert served_version(world) == v3 and world.loader.calls == [v1, v2, v3]


def test_with_no_retry_delay_a_failed_version_is_tried_on_every_poll(world):
    v1 = world.register(1)
    truncate(world.registry, v1)
    world.promote(v1)
    watcher = ModelWatcher(world.registry, world.store, world.loader, retry_s=0.0,
                           clock=world.clock)
    for _ in range(3):
        assert watcher.refresh() is False
    assert world.loader.calls == [v1] * 3


def test_a_first_default_that_fails_leaves_the_watcher_unready(world):
    v1 = world.register(1)
    truncate(world.registry, v1)
    world.promote(v1)
    assert world.watcher.refresh() is False
    assert world.watcher.current().route(5, NOW) == ("default", None)
    assert not world.watcher.wait_until_ready(0) and world.events == [("rejected", v1)]


def test_any_loader_failure_is_a_rejection_and_a_raising_on_event_does_not_stop_a_swap(world):
    v1 = world.register(1)
    world.promote(v1)

    def broken(version: str) -> Served:
        raise RuntimeError("bug in the loader")

    def angry(kind: str, version: str) -> None:
        raise ValueError("metrics down")

    watcher = ModelWatcher(world.registry, world.store, broken,
                           on_event=lambda kind, version: world.events.append((kind, version)))
    assert watcher.refresh() is False and world.events == [("rejected", v1)]
    watcher = ModelWatcher(world.registry, world.store, world.loader, on_event=angry)
    assert watcher.refresh() is True and watcher.current().default_version == v1


def test_an_experiment_routes_each_user_to_the_model_of_their_arm(world):
    v1, v2 = world.register(1), world.register(2)
    world.promote(v1)
    world.promote(v2, alias="challenger")
    exp = Experiment.from_dict({"id": "ab-1", "arms": [
        {"name": "control", "model": "champion", "share": 0.5},
        {"name": "treatment", "model": "challenger", "share": 0.5}],
        "start": "2025-06-01T00:00:00Z", "stop": "2025-06-02T00:00:00Z"})
    world.store.write(exp, reason="test")
    assert world.watcher.refresh() is True
    current = world.watcher.current()
    assert dict(current.arm_versions) == {"control": v1, "treatment": v2}
    labels = set()
    for user in range(300):
        label, model = current.route(user, NOW)
        arm = assign(user, exp, NOW).name
        assert label == arm and model.version == {"control": v1, "treatment": v2}[arm]
        labels.add(label)
        assert current.route(user, NOW + timedelta(days=1)) == ("default", current.models[v1])
    assert labels == {"control", "treatment"}

    world.store.write(None, reason="stop")
    assert world.watcher.refresh() is True
    assert set(world.watcher.current().models) == {v1}  # the challenger is dropped
    assert world.loader.calls == [v1, v2]  # the loaded champion was kept, not reloaded
    assert world.watcher.current().route(3, NOW)[0] == "default"


def test_arms_that_cannot_be_served_go_to_the_default_under_its_label(world):
    v1, v3 = world.register(1), world.register(3)
    world.promote(v1)
    truncate(world.registry, v3)
    exp = Experiment.from_dict({"id": "ab-2", "arms": [
        {"name": "control", "model": "champion", "share": 0.4},
        {"name": "ghost", "model": "nosuchalias", "share": 0.3},
        {"name": "broken", "model": v3, "share": 0.3}]})
    world.store.write(exp, reason="test")
    assert world.watcher.refresh() is True
    current = world.watcher.current()
    assert dict(current.arm_versions) == {"control": v1} and ("rejected", v3) in world.events
    seen = set()
    for user in range(300):
        arm = assign(user, exp, NOW).name
        label, model = current.route(user, NOW)
        assert model.version == v1 and label == ("control" if arm == "control" else "default")
        seen.add(arm)
    assert seen == {"control", "ghost", "broken"}


def test_a_corrupt_experiments_file_keeps_the_last_good_experiment(world):
    v1, v2 = world.register(1), world.register(2)
    world.promote(v1)
    world.promote(v2, alias="challenger")
    exp = Experiment.from_dict({"id": "ab-3", "arms": [
        {"name": "control", "model": "champion", "share": 0.5},
        {"name": "treatment", "model": "challenger", "share": 0.5}]})
    world.store.write(exp, reason="test")
    world.watcher.refresh()
    before = world.watcher.current()

    world.store.path.write_text('{"generation": 9, "experiment": {"id": ')  # a torn hand edit
    assert world.watcher.refresh() is False and world.watcher.current() is before

    v3 = world.register(3)
    world.promote(v3)  # alias changes are still followed meanwhile
    assert world.watcher.refresh() is True
    after = world.watcher.current()
    assert after.experiment == exp and dict(after.arm_versions) == {"control": v3, "treatment": v2}
    assert world.loader.calls == [v1, v2, v3]

    world.store.path.write_text('{"generation": 10, "experiment": null}')  # repaired
    assert world.watcher.refresh() is True and world.watcher.current().experiment is None


def test_an_unreadable_registry_keeps_the_current_set(world):
    v1, v2 = world.register(1), world.register(2)
    world.promote(v1)
    world.watcher.refresh()
    before = world.watcher.current()
    good = world.registry.aliases_path.read_text()
    world.registry.aliases_path.write_text('{"generation": 2, "ali')
    assert world.watcher.refresh() is False and world.watcher.current() is before
    world.registry.aliases_path.write_text(good)
    world.promote(v2)
    assert world.watcher.refresh() is True and served_version(world) == v2


def test_a_model_set_refuses_versions_it_does_not_hold():
    with pytest.raises(ServingError, match="does not hold"):
        ModelSet({}, default_version="popularity-20250101T000000-abcdef")


def test_readers_see_only_registered_versions_and_never_none_during_ten_promotions(world):
    versions = [world.register(seed) for seed in range(11)]
    world.promote(versions[0])
    watcher = ModelWatcher(world.registry, world.store, world.loader, poll_s=0.005)
    stop, errors = threading.Event(), []
    seen: list[list[str | None]] = [[] for _ in range(4)]

    def reader(out: list[str | None]) -> None:
        try:
            i = 0
            while not stop.is_set():
                snapshot = watcher.current()
                label, model = snapshot.route(i, NOW)
                assert label == "default"
                assert model is None or model.version == snapshot.default_version
                out.append(None if model is None else model.version)
                i += 1
                if i % 50 == 0:
                    time.sleep(0.0005)  # leave the watcher some of the two shared cores
        except Exception as exc:  # reported to the test thread below
            errors.append(exc)

    threads = [threading.Thread(target=reader, args=(out,)) for out in seen]
    for t in threads:
        t.start()
    watcher.start()
    try:
        assert watcher.wait_until_ready(10)
        for version in versions[1:]:
            world.promote(version)
            deadline = time.monotonic() + 10
            while watcher.current().default_version != version and time.monotonic() < deadline:
                time.sleep(0.002)
            assert watcher.current().default_version == version
            while any(not out or out[-1] != version for out in seen) and not errors \
                    and time.monotonic() < deadline:
                time.sleep(0.001)  # until every reader has served this version
    finally:
        stop.set()
        for t in threads:
            t.join()
        assert watcher.stop(5)
    assert errors == []
    for out in seen:
        first = next(i for i, v in enumerate(out) if v is not None)
        assert None not in out[first:]
        assert set(versions[1:]) <= set(out[first:]) <= set(versions)
    assert world.loader.calls == versions


def test_wake_polls_at_once_on_the_watchers_thread(tmp_path: Path):
    registry = Registry(tmp_path / "registry")
    store = ExperimentStore(tmp_path / "registry" / "experiments.json")
    loader = Loader(registry)
    watcher = ModelWatcher(registry, store, loader, poll_s=3600.0)  # never polls by itself
    v1 = registry.register(tiny_model(1), metadata=METADATA).version
    registry.promote(v1, alias="champion", reason="test")
    watcher.start()
    try:
        assert watcher.wait_until_ready(5.0)  # the first poll runs at start
        v2 = registry.register(tiny_model(2), metadata=METADATA).version
        registry.promote(v2, alias="champion", reason="test")
        time.sleep(0.2)
        assert watcher.current().default_version == v1  # an hour until the next poll
        watcher.wake()
        deadline = time.monotonic() + 5.0
        while watcher.current().default_version != v2:
            assert time.monotonic() < deadline, "wake() did not trigger a poll"
            time.sleep(0.02)
    finally:
        assert watcher.stop(5.0)  # stop also interrupts the hour-long wait
