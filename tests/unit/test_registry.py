"""The file registry: register/load round trip, metadata rules, aliases, promotion and
rollback, concurrency, corruption and atomicity. Uses a tiny fake model, not the real ones."""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path

import numpy as np
import pytest

from recommender.models.base import (
    History,
    ModelError,
    Recommender,
    TrainSet,
    banned_items,
    is_mapped,
    top_n,
)
from recommender.models.profiles import Profile
from recommender.provenance import code_version, package_versions
from recommender.registry import ModelVersion, Registry, RegistryError
from recommender.training.gate import GateConfig, decide


class FakeModel(Recommender):
    """Fixed scores per item; enough of a model to be saved, registered and loaded."""

    name = "fake"

    def fit(self, train: TrainSet) -> None:
        rng = np.random.default_rng(self.params["seed"])
        self.item_ids = train.item_ids
        self.scores = rng.random(train.n_items).astype(np.float32)
        self.factors = rng.normal(size=(train.n_items, self.params["k"])).astype(np.float32)

    def recommend(self, history: History, n: int = 20, *, exclude: np.ndarray | None = None,
                  profile: Profile | None = None) -> np.ndarray:
        return top_n(self.scores, n, banned_items(history, exclude))

    def recommend_new(self, profile: Profile | None, n: int = 20, *,
                      exclude: np.ndarray | None = None) -> np.ndarray:
        return top_n(self.scores, n, exclude)

    def recommend_batch(self, rows: np.ndarray, n: int = 20, *, seen=None) -> np.ndarray:
        return np.tile(top_n(self.scores, n), (len(rows), 1))

    def arrays(self) -> dict[str, np.ndarray]:
        return {"scores": self.scores, "factors": self.factors}

    def restore(self, arrays: dict[str, np.ndarray]) -> None:
        self.scores, self.factors = arrays["scores"], arrays["factors"]


def trained(seed: int, n_items: int = 50) -> FakeModel:
    model = FakeModel(seed=seed, k=4)
    model.item_ids = np.array([f"movie+{i}+2000" for i in range(n_items)], dtype=object)
    rng = np.random.default_rng(seed)
    model.scores = rng.random(n_items).astype(np.float32)
    model.factors = rng.normal(size=(n_items, 4)).astype(np.float32)
    return model


def metadata(**extra: object) -> dict:
    return {"code": {"commit": "0" * 40, "dirty": False}, "packages": package_versions(),
            "data": {"snapshot_id": "0123456789abcdef", "partitions": {"0": [0, 99, 100]},
                     "rows": 100},
            "training": {"seconds": 1.5, "peak_memory_bytes": 10**6}, **extra}


def registry(tmp_path: Path) -> Registry:
    return Registry(tmp_path / "reg", resolve=lambda name: {"fake": FakeModel}[name])


def leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.startswith(".tmp-") or p.name.endswith(".tmp")]


def test_construction_creates_nothing_and_an_empty_registry_reads_empty(tmp_path):
    reg = registry(tmp_path)
    assert not reg.root.exists()
    assert reg.versions() == [] and reg.aliases() == {} and reg.aliases_generation() == 0
    assert reg.events() == []


def test_register_then_load_gives_the_same_model(tmp_path):
    reg, model = registry(tmp_path), trained(1)
    mv = reg.register(model, metadata=metadata(metrics={"ndcg@20": 0.1}))
    m = re.fullmatch(r"fake-(\d{8}T\d{6})-([0-9a-f]{6})", mv.version)
    assert m and mv.meta["artifact"]["sha256"].startswith(m.group(2))
    assert mv.meta["hyperparameters"] == {"seed": 1, "k": 4}
    assert mv.meta["metrics"] == {"ndcg@20": 0.1}
    assert mv.meta["size"]["disk_bytes"] > model.scores.nbytes + model.factors.nbytes
    assert mv.meta["size"]["memory_bytes"] >= model.scores.nbytes + model.factors.nbytes
    loaded = reg.load(mv.version)
    assert isinstance(loaded, FakeModel) and is_mapped(loaded.factors)
    np.testing.assert_array_equal(loaded.scores, model.scores)
    np.testing.assert_array_equal(loaded.factors, model.factors)
    assert list(loaded.item_ids) == list(model.item_ids) and loaded.params == model.params
    assert reg.get(mv.version).meta == mv.meta == json.loads((mv.path / "meta.json").read_text())
    assert [v.version for v in reg.versions()] == [mv.version]
    assert not is_mapped(reg.load(mv.version, mmap=False).factors)


def test_different_artifacts_get_different_hashes(tmp_path):
    reg = registry(tmp_path)
    a, b = (reg.register(trained(s), metadata=metadata()) for s in (1, 2))
    assert a.meta["artifact"]["sha256"] != b.meta["artifact"]["sha256"] and a.version != b.version


def test_missing_metadata_is_listed_and_nothing_is_written(tmp_path):
    reg = registry(tmp_path)
    meta = metadata()
    del meta["code"], meta["data"]["snapshot_id"], meta["training"]["seconds"]
    with pytest.raises(RegistryError) as err:
        reg.register(trained(1), metadata=meta)
    for key in ("code", "data.snapshot_id", "training.seconds"):
        assert key in str(err.value)
    assert "packages" not in str(err.value)
    assert reg.versions() == [] and not reg.models_dir.exists()


def test_failures_while_writing_leave_no_temporary_files(tmp_path):
    reg = registry(tmp_path)
    with pytest.raises(RegistryError, match="not plain JSON"):
        reg.register(trained(1), metadata=metadata(metrics={"ndcg@20": float("nan")}))
    bad = trained(2)
    bad.scores = np.array(["x"] * 50, dtype=object)
    with pytest.raises(ModelError):
        reg.register(bad, metadata=metadata())
    assert reg.versions() == [] and leftovers(reg.root) == []
    assert list(reg.models_dir.iterdir()) == []


def test_writes_leave_no_temporary_files(tmp_path):
    reg = registry(tmp_path)
    v = reg.register(trained(1), metadata=metadata()).version
    reg.promote(v, reason="first")
    reg.record_metrics(v, {"recall@20": 0.3})
    assert leftovers(reg.root) == []
    assert sorted(p.name for p in reg.root.iterdir()) == [
        "aliases.json", "events.jsonl", "models", "registry.lock"]


def test_promote_and_rollback_sequence(tmp_path):
    reg = registry(tmp_path)
    a, b, c = (reg.register(trained(s), metadata=metadata()).version for s in (1, 2, 3))
    reg.promote(a, reason="first model")
    reg.promote(b, reason="better")
    reg.promote(c, reason="newer")
    assert reg.get("champion").version == c and reg.aliases_generation() == 3
    assert reg.rollback(reason="c is broken") == b
    assert reg.aliases() == {"champion": b}
    # A second rollback goes further back, not forth to the version rolled back from.
    assert reg.rollback(reason="b is broken too") == a
    with pytest.raises(RegistryError, match="nothing to roll"):
        reg.rollback(reason="again")
    assert reg.get("champion").version == a and reg.aliases_generation() == 5
    hist = reg.history("champion")
    assert [(e["event"], e["version"], e["previous"]) for e in hist] == [
        ("promote", a, None), ("promote", b, a), ("promote", c, b),
        ("rollback", b, c), ("rollback", a, b)]
    assert [e["reason"] for e in hist][-1] == "b is broken too"
    assert [e["event"] for e in reg.events()][:3] == ["register"] * 3


def test_rollback_after_re_promotion_restores_the_holder_before_it(tmp_path):
    reg = registry(tmp_path)
    a, b = (reg.register(trained(s), metadata=metadata()).version for s in (1, 2))
    reg.promote(a, reason="r")
    reg.promote(b, reason="r")
    reg.rollback(reason="r")
    reg.promote(b, reason="b was fine after all")
    assert reg.rollback(reason="no it was not") == a


def test_set_alias_is_separate_from_rollback_memory(tmp_path):
    reg = registry(tmp_path)
    a, b = (reg.register(trained(s), metadata=metadata()).version for s in (1, 2))
    reg.set_alias("canary", a, reason="try it")
    reg.set_alias("canary", b, reason="try the other")
    assert reg.aliases() == {"canary": b}
    with pytest.raises(RegistryError, match="nothing to roll"):
        reg.rollback("canary", reason="r")
    assert reg.get("canary").version == b


def test_bad_names_and_unknown_versions_are_registry_errors(tmp_path):
    reg = registry(tmp_path)
    v = reg.register(trained(1), metadata=metadata()).version
    with pytest.raises(RegistryError, match="no version or alias"):
        reg.get("champion")
    with pytest.raises(RegistryError, match="no version"):
        reg.promote("fake-20000101T000000-abcdef", reason="r")
    with pytest.raises(RegistryError, match="bad alias"):
        reg.set_alias("../x", v, reason="r")
    with pytest.raises(RegistryError, match="needs a reason"):
        reg.promote(v, reason=" ")
    assert reg.aliases() == {}


def test_gate_decision_is_recorded_and_a_failed_gate_blocks_promotion(tmp_path):
    reg = registry(tmp_path)
    v = reg.register(trained(1), metadata=metadata()).version
    decision = decide({"ndcg@20": 0.10}, {"ndcg@20": 0.10}, None, GateConfig()).to_dict()
    reg.record_gate(v, decision)
    assert reg.get(v).meta["gate"]["passed"] is False
    assert reg.get(v).meta["gate"]["numbers"]["baseline"] == 0.10
    assert reg.events()[-1]["event"] == "gate" and reg.events()[-1]["decision"] == decision
    with pytest.raises(RegistryError, match="failed its gate"):
        reg.promote(v, reason="r")
    reg.promote(v, reason="manual override", force=True)
    assert reg.aliases() == {"champion": v}


def test_record_metrics_merges(tmp_path):
    reg = registry(tmp_path)
    v = reg.register(trained(1), metadata=metadata(metrics={"ndcg@20": 0.1})).version
    reg.record_metrics(v, {"recall@20": 0.3})
    assert reg.get(v).metrics == {"ndcg@20": 0.1, "recall@20": 0.3}


def test_corrupt_artifact_is_detected_on_load(tmp_path):
    reg = registry(tmp_path)
    mv = reg.register(trained(1), metadata=metadata())
    path = mv.path / "factors.npy"
    raw = bytearray(path.read_bytes())
    raw[-3] ^= 0x01  # one bit of the last float: the file still parses as .npy
    path.write_bytes(bytes(raw))
    with pytest.raises(RegistryError, match="corrupt"):
        reg.load(mv.version)
    assert isinstance(reg.load(mv.version, verify=False), FakeModel)  # only the hash knows
    (mv.path / "scores.npy").unlink()
    with pytest.raises(RegistryError, match="incomplete"):
        reg.load(mv.version)


def test_corrupt_meta_and_aliases_are_registry_errors(tmp_path):
    reg = registry(tmp_path)
    mv = reg.register(trained(1), metadata=metadata())
    reg.promote(mv.version, reason="r")
    (mv.path / "meta.json").write_text("{not json")
    with pytest.raises(RegistryError, match="corrupt meta"):
        reg.get(mv.version)
    reg.aliases_path.write_text("[]")
    with pytest.raises(RegistryError, match="corrupt"):
        reg.aliases()


def test_a_torn_event_line_is_skipped_and_the_log_goes_on(tmp_path):
    reg = registry(tmp_path)
    v = reg.register(trained(1), metadata=metadata()).version
    with reg.events_path.open("a") as fh:
        fh.write('{"event": "promote", "ver')  # a crash in the middle of a write
    assert [e["event"] for e in reg.events()] == ["register"]
    reg.promote(v, reason="after the crash")
    assert [(e["event"], e.get("version")) for e in reg.events()] == [
        ("register", v), ("promote", v)]


def test_concurrent_promoters_lose_no_update_and_readers_see_whole_files(tmp_path):
    reg = registry(tmp_path)
    versions = [reg.register(trained(s), metadata=metadata()).version for s in range(4)]
    n_threads, per_thread = 4, 12
    read_errors: list[Exception] = []
    stop = threading.Event()

    def promoter(t: int) -> None:
        mine = Registry(reg.root, resolve=lambda name: FakeModel)  # as another process would
        for i in range(per_thread):
            mine.promote(versions[(t + i) % len(versions)], reason=f"thread {t} step {i}")

    def reader() -> None:
        while not stop.is_set():
            try:
                if reg.aliases_path.exists():
                    json.loads(reg.aliases_path.read_text())
            except Exception as exc:  # any failure is what we look for
                read_errors.append(exc)

    threads = [threading.Thread(target=promoter, args=(t,)) for t in range(n_threads)]
    watcher = threading.Thread(target=reader)
    watcher.start()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    stop.set()
    watcher.join()

    assert read_errors == []
    promotes = [e for e in reg.events() if e["event"] == "promote"]
    assert len(promotes) == n_threads * per_thread
    # Serialised: every promotion saw the holder the one before it left.
    for before, after in zip(promotes, promotes[1:], strict=False):
        assert after["previous"] == before["version"]
    changed = sum(not e["unchanged"] for e in promotes)
    assert reg.aliases_generation() == changed
    assert reg.aliases()["champion"] == promotes[-1]["version"]


def test_model_version_accessors(tmp_path):
    mv = registry(tmp_path).register(trained(1), metadata=metadata())
    assert isinstance(mv, ModelVersion) and mv.name == "fake"
    assert mv.created.endswith("+00:00") and mv.metrics == {}


def test_code_version_outside_git_and_inside(tmp_path):
    assert code_version(tmp_path) == {"commit": None, "dirty": None}
    here = code_version(Path(__file__).resolve().parents[2])
    assert re.fullmatch(r"[0-9a-f]{40}", here["commit"]) and isinstance(here["dirty"], bool)
    # an image has no checkout: the commit it was built from (MOVIEREC_CODE_COMMIT) stands in
    assert code_version(tmp_path, built_from="a" * 40, built_dirty=True) == {
        "commit": "a" * 40, "dirty": True}
    assert code_version(tmp_path, built_from="not a commit") == {"commit": None, "dirty": None}
    # a checkout wins over what a build says
    assert code_version(Path(__file__).resolve().parents[2], built_from="b" * 40) == here


# -- version arrays ---------------------------------------------------------------------------


def test_version_arrays_round_trip_and_are_recorded_in_meta(tmp_path):
    """Arrays of the version (not of the model class, e.g. the runtimes training used) come
    back as stored, are part of the hashed artifact, and meta.json names them."""
    reg, runtime = registry(tmp_path), np.linspace(20, 150, 50, dtype=np.float32)
    mv = reg.register(trained(1), metadata=metadata(arrays={"forged": 1}),
                      arrays={"item_runtime": runtime})
    assert mv.meta["arrays"] == {"item_runtime": {"dtype": "float32", "shape": [50]}}
    assert "version_arrays.npz" in mv.meta["artifact"]["files"]
    back = reg.arrays(mv.version)
    assert list(back) == ["item_runtime"] and back["item_runtime"].dtype == np.float32
    np.testing.assert_array_equal(back["item_runtime"], runtime)
    np.testing.assert_array_equal(reg.arrays(reg.get(mv.version))["item_runtime"], runtime)
    assert isinstance(reg.load(mv.version), FakeModel)  # the model's loader ignores the file
    plain = reg.register(trained(2), metadata=metadata())
    assert plain.meta["arrays"] == {} and reg.arrays(plain) == {}
    assert "version_arrays.npz" not in plain.meta["artifact"]["files"]


def test_a_version_registered_before_arrays_existed_reads_none(tmp_path):
    reg = registry(tmp_path)
    mv = reg.register(trained(1), metadata=metadata())
    meta = json.loads((mv.path / "meta.json").read_text())
    del meta["arrays"]  # an older registry wrote no such key
    (mv.path / "meta.json").write_text(json.dumps(meta))
    assert reg.arrays(mv.version) == {} and isinstance(reg.load(mv.version), FakeModel)


def test_a_corrupt_version_array_fails_the_hash(tmp_path):
    reg = registry(tmp_path)
    mv = reg.register(trained(1), metadata=metadata(),
                      arrays={"item_runtime": np.full(50, 90, np.float32)})
    np.savez(mv.path / "version_arrays.npz", item_runtime=np.full(50, 45, np.float32))
    with pytest.raises(RegistryError, match="sha256 mismatch"):
        reg.load(mv.version)


@pytest.mark.parametrize("arrays", [{"item runtime": np.ones(3)}, {"file": np.ones(3)},
                                    {"names": np.array(["a"], dtype=object)}])
def test_bad_version_arrays_are_refused_before_anything_is_written(tmp_path, arrays):
    reg = registry(tmp_path)
    with pytest.raises(RegistryError, match="version array"):
        reg.register(trained(1), metadata=metadata(), arrays=arrays)
    assert reg.versions() == [] and leftovers(reg.root) == []


def test_the_same_artifact_registered_twice_in_one_second_gets_the_next_second(tmp_path, monkeypatch):
    """A deterministic model retrained on the same snapshot has the same digest; within
    one second its id would collide, so the later version takes the next free second."""
    from datetime import UTC, datetime

    import recommender.registry as registry_module

    frozen = datetime(2026, 12, 7, 2, 19, 17, tzinfo=UTC)
    monkeypatch.setattr(registry_module, "_now", lambda: frozen)
    reg = registry(tmp_path)
    first = reg.register(trained(1), metadata=metadata())
    second = reg.register(trained(1), metadata=metadata())
    third = reg.register(trained(1), metadata=metadata())
    assert first.meta["artifact"]["sha256"] == second.meta["artifact"]["sha256"]
    assert [v.version[5:20] for v in (first, second, third)] == [
        "20261207T021917", "20261207T021918", "20261207T021919"]
    assert second.meta["created"] == "2026-12-07T02:19:18+00:00"
    assert {v.version for v in reg.versions()} == {first.version, second.version, third.version}
    assert reg.get(second.version).meta["version"] == second.version
    assert leftovers(reg.root) == []
