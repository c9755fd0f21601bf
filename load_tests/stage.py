"""A small serving world on a real Redis and a real registry: what the load tests, the
serving benchmark and the serving integration tests run against.

No Kafka on purpose: the simulated history's lines go through the consumer's own parser
and ``FeatureDelta`` into the online store (``RedisOnlineStore``), so Redis holds exactly
what ``movierec consume`` would write, in seconds instead of minutes. Profiles and movie
metadata are written as the enricher writes them (``clean_user``/``clean_movie``). Two
models are trained on the same history and registered with full provenance: ALS as
``champion`` and popularity as ``baseline`` (what an A/B experiment compares).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

from movierec.wire import Event, LineParser
from offline_eval.simulated import compact_sessions, history_table
from recommender.dataset import build_trainset_with_runtimes
from recommender.models import model_class
from recommender.models.profiles import Profiles
from recommender.provenance import code_version, package_versions, peak_memory_bytes
from recommender.registry import Registry
from recommender.runtimes import RUNTIME_ARRAY
from recommender.training.pipeline import REPO_ROOT
from simulator.history import Events, HistoryGenerator
from simulator.world import World, WorldSpec
from stores.feature_delta import FeatureDelta
from stores.keys import Keys, day_of
from stores.online import Kind
from stores.redis_online import RedisOnlineStore
from stream_consumer.enrich import clean_movie, clean_user

START = datetime(2025, 3, 1)
BATCH_LINES = 20_000
HEAVY_USERS = 50


@dataclass(frozen=True)
class StageSpec:
    users: int = 20_000
    movies: int = 27_000
    days: float = 14.0
    seed: int = 11
    describe_share: float = 0.3
    als_factors: int = 16
    champion: str = "als"  # or "hybrid": what the service serves by default


@dataclass(frozen=True)
class Staged:
    """What a load generator needs to know about the staged world."""

    known_users: list[int]  # users with history in Redis (sorted)
    heavy_users: list[int]  # the most active of them
    first_unknown_user: int  # ids from here on were never seen
    versions: dict[str, str]  # model name -> registry version
    lines: int

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self)))

    @classmethod
    def read(cls, path: Path) -> Staged:
        return cls(**json.loads(path.read_text()))


def _write_features(store: RedisOnlineStore, generator: HistoryGenerator, events: Events) -> int:
    parser = LineParser()
    delta, count = FeatureDelta(), 0
    for line, _key in generator.format(events):
        event = parser.parse(line)
        if isinstance(event, Event):
            delta.add(event, line)
            count += 1
        if count and count % BATCH_LINES == 0:
            store.write(delta)
            delta = FeatureDelta()
    store.write(delta)
    end = START + timedelta(days=generator.end_s / 86400.0)
    store.refresh_popularity([day_of(end - timedelta(days=age)) for age in range(14)])
    return count


def _write_metadata(store: RedisOnlineStore, world: World, users: np.ndarray) -> None:
    """Profiles and movie metadata as the enrichment worker would store them, 5,000 a
    round trip."""
    profiles = {str(u): clean_user(world.user_record(u) or {}) for u in users.tolist()}
    movies = {m: clean_movie(world.movie_record(m) or {}) for m in world.catalog.ids}
    both: list[tuple[Kind, dict[str, dict[str, str] | None]]] = [("user", profiles), ("movie", movies)]
    for kind, records in both:
        kept = [(item, fields) for item, fields in records.items() if fields]
        for i in range(0, len(kept), 5000):
            store.write_records(kind, dict(kept[i:i + 5000]))


def _train_and_register(registry: Registry, world: World, events: Events, spec: StageSpec,
                        end: datetime) -> dict[str, str]:
    table = history_table(world, events, start=START)
    users = np.unique(events.user)
    # the events come from the world: every user has a record (the filter drops none)
    profiles = Profiles.from_records([r for u in users if (r := world.user_record(int(u))) is not None])
    runtimes = {m: int(r) for m, r in zip(world.catalog.ids, world.catalog.runtime.tolist(), strict=True)}
    movies = {m: fields for m in world.catalog.ids if (fields := clean_movie(world.movie_record(m) or {}))}
    train, runtime = build_trainset_with_runtimes(table, as_of=end, profiles=profiles,
                                                  runtimes=runtimes, movies=movies)
    data = {"snapshot_id": f"stage-{spec.seed}-{spec.users}-{spec.movies}-{spec.days:g}",
            "topic": "staged", "partitions": {"0": [0, table.num_rows]}, "rows": table.num_rows}
    versions = {}
    als = {"factors": spec.als_factors, "regularization": 1.0, "alpha": 20.0, "iterations": 10}
    staged: list[tuple[str, dict]] = [("als", als), ("popularity", {})]
    if spec.champion == "hybrid":
        staged.append(("hybrid", als))
    for name, params in staged:
        model = model_class(name)(**params)
        started = time.perf_counter()
        model.fit(train)
        seconds = time.perf_counter() - started
        version = registry.register(model, arrays={RUNTIME_ARRAY: runtime}, metadata={
            "code": code_version(REPO_ROOT), "packages": package_versions(), "data": data,
            "training": {"seconds": seconds, "peak_memory_bytes": peak_memory_bytes()}})
        versions[name] = version.version
    registry.promote(versions[spec.champion], alias="champion", reason="staged")
    registry.set_alias("baseline", versions["popularity"], reason="staged")
    return versions


def stage(spec: StageSpec, *, redis_url: str, prefix: str, registry_dir: Path,
          progress: Callable[[str], None] = lambda _: None) -> Staged:
    """Build the world, fill Redis under ``prefix``, train and register; see the module."""
    progress(f"world: {spec.users:,} users x {spec.movies:,} movies")
    world = World.build(WorldSpec(seed=spec.seed, n_users=spec.users, n_movies=spec.movies,
                                  describe_share=spec.describe_share))
    generator = HistoryGenerator(world, start=START, days=spec.days, seed=spec.seed)
    events = compact_sessions(Events.concat(list(generator.events())))
    end = START + timedelta(days=spec.days)
    store = RedisOnlineStore.connect(redis_url, Keys(prefix), timeout_s=30)
    try:
        progress(f"features: {len(events):,} events into Redis")
        lines = _write_features(store, generator, events)
        users = np.unique(events.user[events.movie >= 0])
        progress("profiles and movie metadata")
        _write_metadata(store, world, np.arange(world.n_users))
    finally:
        store.close()
    progress("train and register als + popularity")
    versions = _train_and_register(Registry(registry_dir), world, events, spec, end)
    counts = np.bincount(events.user[events.movie >= 0])
    heavy = np.argsort(-counts, kind="stable")[:HEAVY_USERS]
    return Staged(known_users=users.tolist(), heavy_users=sorted(heavy.tolist()),
                  first_unknown_user=int(world.n_users) + 1_000_000, versions=versions, lines=lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--prefix", default="mr")
    parser.add_argument("--registry-dir", type=Path, default=Path("var/registry"))
    parser.add_argument("--out", type=Path, default=Path("var/loadtest/staged.json"))
    for field, default in asdict(StageSpec()).items():
        parser.add_argument(f"--{field.replace('_', '-')}", type=type(default), default=default)
    args = parser.parse_args()
    spec = StageSpec(**{f: getattr(args, f) for f in asdict(StageSpec())})
    staged = stage(spec, redis_url=args.redis_url, prefix=args.prefix,
                   registry_dir=args.registry_dir, progress=lambda s: print(f"stage: {s}", flush=True))
    staged.save(args.out)
    print(f"stage: {len(staged.known_users):,} known users, versions {staged.versions}; wrote {args.out}")


if __name__ == "__main__":
    main()
