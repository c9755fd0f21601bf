"""Gathering a training run's inputs: an event-store snapshot, plus profiles, runtimes
and titles from the online store (adapter; the pipeline itself touches no service)."""

from __future__ import annotations

import logging

import numpy as np
import pyarrow.compute as pc

from recommender.dataset import read_events
from recommender.models.profiles import Profiles
from recommender.runtimes import api_runtimes
from recommender.training.pipeline import PipelineError, TrainInputs
from recommender.training.settings import TrainSettings
from stores.event_manifest import EventStoreError, snapshot_provenance
from stores.event_store import EventStore
from stores.keys import Keys
from stores.online import OnlineStoreError
from stores.redis_online import RedisOnlineStore

log = logging.getLogger(__name__)


def load_inputs(settings: TrainSettings, *, snapshot_id: str | None = None,
                compact: bool = True) -> TrainInputs:
    """The snapshot ``snapshot_id`` (default: a fresh snapshot of the store now, after
    compacting small files) with the profiles and movie metadata stored for its users and
    movies. ``PipelineError`` if the store is empty or Redis cannot be read."""
    store = EventStore(settings.store_dir, settings.kafka_topic)
    try:
        if snapshot_id is None:
            if compact:
                store.compact()
            snapshot = store.snapshot()
        else:
            snapshot = store.load_snapshot(snapshot_id)
        events = read_events(store, snapshot)
    except EventStoreError as exc:
        raise PipelineError(f"event store {settings.store_dir}: {exc}") from exc
    if events.num_rows == 0:
        raise PipelineError(f"the event store at {settings.store_dir} has no watch or rate "
                            f"events for topic {settings.kafka_topic!r}")
    data = snapshot_provenance(snapshot)
    if settings.train_profiles == "none":
        return TrainInputs(events, data)
    online = RedisOnlineStore.connect(settings.redis_url, Keys(settings.redis_prefix), timeout_s=30)
    users = np.sort(np.asarray(pc.unique(events["user_id"])))
    # read_events unifies the chunks' dictionaries: the first one names every movie.
    movies = [str(m) for m in events["movie_id"].chunk(0).dictionary.to_pylist()]
    try:
        profiles = Profiles.from_stored(online.profiles(users.tolist()))
        meta = online.movies(movies)
    except OnlineStoreError as exc:
        raise PipelineError(f"cannot read profiles from Redis at {settings.redis_url}: {exc} "
                            "(MOVIEREC_TRAIN_PROFILES=none trains without them)") from exc
    finally:
        online.close()
    log.info("profiles for %d of %d users, metadata for %d of %d movies",
             len(profiles), len(users), len(meta), len(movies))
    titles = {m: f["title"] for m, f in meta.items() if f.get("title")}
    return TrainInputs(events, data, profiles if len(profiles) else Profiles.empty(),
                       api_runtimes(meta), titles, meta)
