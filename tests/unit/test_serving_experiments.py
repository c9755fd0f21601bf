"""A/B experiments: the bucket hash (stable, uniform, independent between experiments),
arm assignment by share and window, validation, and the experiment file under concurrent
writers (threads and processes)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import textwrap
import threading
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from recommender.serving.experiments import (
    Arm,
    Experiment,
    ExperimentStore,
    arm_at,
    assign,
    bucket,
)
from recommender.serving.state import BadRequest, ServingError

REPO = Path(__file__).resolve().parents[2]
USERS = np.arange(1, 100_001)
NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


def buckets(experiment_id: str, users: np.ndarray = USERS) -> np.ndarray:
    return np.array([bucket(int(u), experiment_id) for u in users])


def experiment(**changes: object) -> dict:
    d = {"id": "exp-1", "arms": [{"name": "control", "model": "champion", "share": 0.5},
                                 {"name": "treatment", "model": "challenger", "share": 0.5}],
         "start": None, "stop": None}
    return {**d, **changes}


# -- bucket ------------------------------------------------------------------------------


def test_bucket_follows_its_definition_and_is_stable_across_processes():
    # The definition (blake2b of "<experiment>:<user>", 8 bytes, / 2**64) computed here
    # independently; a change of hash would silently reshuffle every running experiment.
    def by_definition(user: int, exp: str) -> float:
        digest = hashlib.blake2b(f"{exp}:{user}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big") / 2**64

    users = [0, 1, 42, 999_999, 2_147_483_647]
    here = [bucket(u, "exp-1") for u in users]
    assert here == [bucket(u, "exp-1") for u in users]
    assert here == pytest.approx([by_definition(u, "exp-1") for u in users], abs=1e-15)
    # Another interpreter with another hash seed: the built-in hash() would differ there.
    code = ("import json; from recommender.serving.experiments import bucket; "
            f"print(json.dumps([bucket(u, 'exp-1') for u in {users}]))")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                          text=True, check=True, env={"PYTHONHASHSEED": "12345"})
    assert json.loads(done.stdout) == here


def test_buckets_are_uniform_over_ten_bins():
    counts = np.bincount((buckets("uniformity") * 10).astype(int), minlength=10)
    assert len(counts) == 10  # every value is below 1
    assert stats.chisquare(counts).pvalue > 0.001


def test_two_experiments_assign_independently():
    a, b = buckets("exp-a"), buckets("exp-b")
    # Under independence r ~ N(0, 1/sqrt(100k)) = 0.0032; 0.015 is ~5 standard errors.
    assert abs(np.corrcoef(a, b)[0, 1]) < 0.015
    in_a, in_b = a < 0.5, b < 0.5
    assert abs(np.corrcoef(in_a, in_b)[0, 1]) < 0.015
    # The treated half of one experiment splits evenly in the next (about 25,000 each).
    assert abs((in_a & in_b).sum() - 25_000) < 600


# -- assignment ---------------------------------------------------------------------------


def test_a_five_percent_canary_gets_four_to_six_percent_of_users():
    exp = Experiment.from_dict(experiment(arms=[
        {"name": "stable", "model": "champion", "share": 0.95},
        {"name": "canary", "model": "challenger", "share": 0.05}]))
    names = [assign(int(u), exp, NOW).name for u in USERS]
    assert 0.04 <= names.count("canary") / len(USERS) <= 0.06
    assert names.count("stable") + names.count("canary") == len(USERS)


def test_three_arms_get_their_shares():
    exp = Experiment.from_dict(experiment(arms=[
        {"name": "a", "model": "champion", "share": 0.2},
        {"name": "b", "model": "baseline", "share": 0.3},
        {"name": "c", "model": "challenger", "share": 0.5}]))
    names = [assign(int(u), exp, NOW).name for u in USERS[:50_000]]
    for name, share in (("a", 0.2), ("b", 0.3), ("c", 0.5)):
        assert abs(names.count(name) / 50_000 - share) < 0.01  # sd at most 0.0023


def test_arms_own_consecutive_half_open_intervals_and_the_last_takes_the_rounding():
    arms = (Arm("a", "m", 0.25), Arm("b", "m", 0.25), Arm("c", "m", 0.4999995))
    assert [arm_at(arms, p).name for p in (0.0, 0.2499, 0.25, 0.4999, 0.5, 0.9999)] == \
        ["a", "a", "b", "b", "c", "c"]
    assert arm_at(arms, 0.9999999).name == "c"  # above the sum of the shares


def test_assignment_is_sticky_and_matches_the_bucket():
    exp = Experiment.from_dict(experiment())
    for user in range(200):
        arm = assign(user, exp, NOW)
        assert arm == assign(user, exp, NOW + timedelta(days=1))
        assert arm.name == ("control" if bucket(user, "exp-1") < 0.5 else "treatment")


def test_the_window_is_start_inclusive_and_stop_exclusive():
    exp = Experiment.from_dict(experiment(start="2025-06-01T00:00:00Z",
                                          stop="2025-06-08T00:00:00+00:00"))
    start, stop = datetime(2025, 6, 1, tzinfo=UTC), datetime(2025, 6, 8, tzinfo=UTC)
    cases = {start - timedelta(microseconds=1): False, start: True,
             stop - timedelta(microseconds=1): True, stop: False}
    for at, active in cases.items():
        assert exp.active(at) is active
        assert (assign(7, exp, at) is not None) is active
    # The same instant in another zone is the same instant.
    assert exp.active(datetime(2025, 6, 1, 2, 0, tzinfo=timezone(timedelta(hours=2))))
    assert Experiment.from_dict(experiment()).active(datetime(1970, 1, 1, tzinfo=UTC))
    with pytest.raises(ServingError, match="no zone"):
        exp.active(datetime(2025, 6, 2))


# -- validation ---------------------------------------------------------------------------


@pytest.mark.parametrize(("changes", "message"), [
    ({"id": "1st"}, "experiment id '1st' must match"),
    ({"id": ""}, "experiment id '' must match"),
    ({"id": "x" * 65}, "must match"),
    ({"arms": []}, "at least one arm"),
    ({"arms": "control"}, "arms must be a list"),
    ({"arms": [{"name": "a", "model": "champion", "share": 0.5},
               {"name": "a", "model": "challenger", "share": 0.5}]}, r"repeated: \['a'\]"),
    ({"arms": [{"name": "a b", "model": "champion", "share": 1}]}, "arm 'a b': the name"),
    ({"arms": [{"name": "default", "model": "champion", "share": 1}]}, "reserved"),
    ({"arms": [{"name": "a", "model": "no spaces", "share": 1}]}, "alias or version id"),
    ({"arms": [{"name": "a", "model": "champion", "share": 0},
               {"name": "b", "model": "champion", "share": 1}]},
     r"share 0 must be a number in \(0, 1\]"),
    ({"arms": [{"name": "a", "model": "champion", "share": 1.5}]}, r"share 1.5 must be"),
    ({"arms": [{"name": "a", "model": "champion", "share": "1"}]}, "share '1' must be"),
    ({"arms": [{"name": "a", "model": "champion", "share": True}]}, "share True must be"),
    ({"arms": [{"name": "a", "model": "champion", "share": float("nan")}]}, "share nan"),
    ({"arms": [{"name": "a", "model": "champion", "share": 0.5},
               {"name": "b", "model": "champion", "share": 0.4999}]}, "sum to 0.9999, not 1"),
    ({"arms": [{"name": "a", "model": "champion"}]}, r"missing \['share'\]"),
    ({"arms": [{"name": "a", "model": "champion", "share": 1, "weight": 2}]}, "unknown arm keys"),
    ({"stopp": "2025-01-01T00:00:00Z"}, r"unknown experiment keys \['stopp'\]"),
    ({"start": "2025-06-02T00:00:00Z", "stop": "2025-06-01T00:00:00Z"}, "must be before stop"),
    ({"start": "2025-06-01T00:00:00Z", "stop": "2025-06-01T00:00:00Z"}, "must be before stop"),
    ({"start": "2025-06-01T00:00:00"}, "has no zone"),
    ({"stop": "next tuesday"}, "not an ISO-8601 time"),
    ({"stop": 1_750_000_000}, "ISO-8601 string with a zone or null"),
])
def test_invalid_experiments_are_bad_requests_that_say_why(changes, message):
    with pytest.raises(BadRequest, match=message):
        Experiment.from_dict(experiment(**changes))


def test_not_an_object_is_a_bad_request():
    with pytest.raises(BadRequest, match="JSON object"):
        Experiment.from_dict(["exp"])


def test_shares_that_miss_one_by_rounding_only_are_accepted():
    thirds = [{"name": n, "model": "champion", "share": 0.333333333} for n in "abc"]
    assert len(Experiment.from_dict(experiment(arms=thirds)).arms) == 3


def test_to_dict_round_trips_through_json_and_times_become_utc():
    exp = Experiment.from_dict(experiment(start="2025-06-01T02:00:00+02:00",
                                          stop="2025-06-08T00:00:00Z"))
    assert exp.start == datetime(2025, 6, 1, tzinfo=UTC) and exp.start.utcoffset() == timedelta(0)
    again = Experiment.from_dict(json.loads(json.dumps(exp.to_dict())))
    assert again == exp and again.to_dict() == exp.to_dict()
    assert Experiment.from_dict(experiment()).to_dict()["start"] is None


# -- the store ----------------------------------------------------------------------------


def test_a_missing_file_reads_empty_and_reading_creates_nothing(tmp_path):
    store = ExperimentStore(tmp_path / "var" / "experiments.json")
    assert store.read() == (0, None)
    assert not (tmp_path / "var").exists()


def test_writes_grow_the_generation_and_read_back(tmp_path):
    store = ExperimentStore(tmp_path / "var" / "experiments.json")
    exp = Experiment.from_dict(experiment())
    assert store.write(exp, reason="start exp-1") == 1
    assert store.read() == (1, exp)
    assert store.write(None, reason="stop exp-1") == 2
    assert store.read() == (2, None)
    doc = json.loads(store.path.read_text())
    assert doc["reason"] == "stop exp-1" and datetime.fromisoformat(doc["updated"]).tzinfo
    with pytest.raises(BadRequest, match="needs a reason"):
        store.write(exp, reason=" ")
    assert store.read() == (2, None)
    assert sorted(p.name for p in store.path.parent.iterdir()) == \
        ["experiments.json", "experiments.json.lock"]  # no temporary files left


@pytest.mark.parametrize(("text", "message"), [
    ("{not json", "cannot read experiments file"),
    ('{"generation": -1, "experiment": null}', "generation -1 is not a count"),
    ('{"generation": 3}', "not an object with"),
    ('{"generation": 3, "experiment": {"id": "e", "arms": []}}', "at least one arm"),
])
def test_a_corrupt_file_is_a_serving_error_naming_the_path(tmp_path, text, message):
    store = ExperimentStore(tmp_path / "experiments.json")
    store.path.write_text(text)
    with pytest.raises(ServingError, match=message) as err:
        store.read()
    assert str(store.path) in str(err.value) and not isinstance(err.value, BadRequest)
    with pytest.raises(ServingError, match=message):  # no overwrite of an unknown generation
        store.write(None, reason="reset")


def test_concurrent_threads_never_lose_an_update(tmp_path):
    store = ExperimentStore(tmp_path / "experiments.json")
    exp = Experiment.from_dict(experiment())
    got: list[int] = []

    def writer() -> None:
        for i in range(10):
            got.append(store.write(exp if i % 2 else None, reason="thread"))

    threads = [threading.Thread(target=writer) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got) == list(range(1, 61))
    assert store.read()[0] == 60


def test_concurrent_processes_never_lose_an_update(tmp_path):
    path = tmp_path / "experiments.json"
    code = textwrap.dedent(f"""
        import json
        from pathlib import Path
        from recommender.serving.experiments import ExperimentStore
        store = ExperimentStore(Path({str(path)!r}))
        print(json.dumps([store.write(None, reason="process") for _ in range(25)]))
    """)
    procs = [subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE,
                              text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=60)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    got = sorted(g for out in outputs for g in json.loads(out))
    assert got == list(range(1, 51))
    assert ExperimentStore(path).read() == (50, None)
