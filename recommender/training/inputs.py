"""Gathering a training run's inputs: an event-store snapshot, plus profiles, runtimes
and titles from the online store (adapter; the pipeline itself touches no service)."""

from __future__ import annotations

import logging

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recommender.dataset import read_events
from recommender.models.profiles import Profiles
from recommender.runtimes import api_runtimes
from recommender.training.pipeline import PipelineError, TrainInputs
from recommender.training.settings import TrainSettings
from recommender.training.shilling_filter import exclude_campaigns
from stores.event_manifest import EventStoreError, snapshot_provenance
from stores.event_store import EventStore, Snapshot
from stores.keys import Keys
from stores.online import OnlineStoreError
from stores.redis_online import RedisOnlineStore

log = logging.getLogger(__name__)


def _without_campaigns(store: EventStore, snapshot: Snapshot, events: pa.Table,
                       settings: TrainSettings) -> tuple[pa.Table, dict]:
    """``events`` without the accounts of detected shilling campaigns, and the summary
    the run's data provenance keeps (``shilling_filter``)."""
    try:
        signups = store.read_table(snapshot, columns=["time", "kind", "user_id"], sort=False)
    except EventStoreError as exc:
        raise PipelineError(f"event store {settings.store_dir}: {exc}") from exc
    signups = signups.filter(pc.equal(pc.cast(signups["kind"], pa.string()), "account"))
    kept, _, summary = exclude_campaigns(events, signups, scale_max=settings.rating_scale)
    if summary["campaigns"]:
        log.warning("left out %d accounts of %d shilling campaign(s) on %s (%d rows)",
                    summary["excluded_accounts"], summary["campaigns"],
                    ", ".join(summary["targets"][:5]), summary["excluded_rows"])
    return kept, summary


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
    if settings.train_shilling == "exclude":
        events, data["shilling"] = _without_campaigns(store, snapshot, events, settings)
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
