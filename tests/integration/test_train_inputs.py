"""Training reads profiles, runtimes and titles from the consumer's real Redis layout."""

from __future__ import annotations

from datetime import datetime

import pytest

from movierec.settings import load
from movierec.wire import Rate, Watch
from recommender.training.inputs import load_inputs
from recommender.training.pipeline import PipelineError
from recommender.training.settings import TrainSettings
from stores.event_columns import EventColumns
from stores.event_store import EventStore
from stores.keys import Keys

pytestmark = pytest.mark.integration

T = datetime(2025, 3, 1, 12, 0)


def test_load_inputs_reads_the_enriched_profiles(stack, redis_client, unique, tmp_path):
    cols = EventColumns()
    cols.add(Watch(T, 7, "alien+1979", 30), 0, 0)
    cols.add(Rate(T, 8, "heat+1995", 5), 0, 1)
    cols.add(Watch(T, 9, "heat+1995", 3), 0, 2)  # user 9 has no stored profile
    EventStore(tmp_path / "store", "movielog").append(cols.to_table())
    keys = Keys(unique)
    redis_client.hset(keys.user_profile(7), mapping={"age": "16", "gender": "F",
                                                     "occupation": "K-12 student",
                                                     "likes": "I love Alien"})
    redis_client.hset(keys.user_profile(8), mapping={"age": "", "gender": "M", "occupation": ""})
    redis_client.hset(keys.movie_meta("alien+1979"), mapping={"title": "Alien", "runtime": "117"})
    redis_client.hset(keys.movie_meta("heat+1995"), mapping={"title": "Heat", "runtime": ""})
    settings = load(TrainSettings, {}, store_dir=tmp_path / "store", redis_url=stack.redis_url,
                    redis_prefix=unique)

    inputs = load_inputs(settings)

    assert inputs.events.num_rows == 3
    assert inputs.data["rows"] == 3 and inputs.data["snapshot_id"]
    assert inputs.profiles.user_ids.tolist() == [7, 8]
    assert inputs.profiles.profile(7).age == 16 and inputs.profiles.profile(7).is_minor
    assert inputs.profiles.profile(8).age is None and inputs.profiles.profile(8).gender == "M"
    assert inputs.profiles.likes == {7: "I love Alien"}
    assert inputs.runtimes == {"alien+1979": 117}  # an empty runtime is no runtime
    assert inputs.titles == {"alien+1979": "Alien", "heat+1995": "Heat"}


def test_unreachable_redis_is_a_clear_error(tmp_path):
    cols = EventColumns()
    cols.add(Watch(T, 7, "alien+1979", 30), 0, 0)
    EventStore(tmp_path / "store", "movielog").append(cols.to_table())
    settings = load(TrainSettings, {}, store_dir=tmp_path / "store",
                    redis_url="redis://127.0.0.1:1/0")
    with pytest.raises(PipelineError, match="MOVIEREC_TRAIN_PROFILES=none"):
        load_inputs(settings)
