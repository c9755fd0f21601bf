"""The online store's merge input, without a server: the script's records and key templates."""

from __future__ import annotations

from datetime import datetime

import redis

from movierec.wire import Rate, Watch
from stores.feature_delta import FeatureDelta, epoch_ms
from stores.keys import Keys
from stores.redis_codec import merge_records
from stores.redis_online import RedisOnlineStore

T0 = datetime(2025, 3, 1, 10, 0)
T1 = datetime(2025, 3, 1, 10, 5)


def folded(*events) -> FeatureDelta:
    delta = FeatureDelta()
    for i, event in enumerate(events):
        delta.add(event, f"line {i}".encode())
    return delta


def test_one_record_per_user_movie_carries_progress_and_recent_time() -> None:
    delta = folded(Watch(T0, 7, "up+2009", 3), Watch(T1, 7, "up+2009", 4),
                   Rate(T1, 7, "heat+1995", 5), Watch(T0, 8, "up+2009", 0))
    pairs, ratings, activity, viewers, new_users = merge_records(delta)
    t0, t1 = epoch_ms(T0), epoch_ms(T1)
    # Watched pairs in progress order, then the rated-only pair with an empty minute.
    assert pairs == [f"7\tup+2009\t4\t{t1}\n", f"8\tup+2009\t0\t{t0}\n", f"7\theat+1995\t\t{t1}\n"]
    assert ratings == [f"7\theat+1995\t{t1}\t5\n"]
    assert activity == [f"7\t{t0}\t{t1}\n", f"8\t{t0}\t{t0}\n"]
    assert [v.split("\t")[:2] for v in viewers] == [["up+2009", "20250301"]]
    assert sorted(viewers[0].rstrip("\n").split("\t")[2].split(",")) == ["7", "8"]
    assert new_users == []


def test_negative_values_are_left_out_as_the_script_always_did() -> None:
    """A time before 1970 is negative ms; the script's (%d+) patterns never took one, so
    a pair keeps only its other field (FeatureDelta.add drops most of them already)."""
    delta = FeatureDelta(progress={(7, "up+2009"): 3, (8, "heat+1995"): -1},
                         recent={(7, "up+2009"): -5, (8, "heat+1995"): 10})
    pairs = merge_records(delta)[0]
    assert pairs == ["7\tup+2009\t3\t\n", "8\theat+1995\t\t10\n"]


def test_key_templates_rebuild_the_keys_of_the_layout() -> None:
    keys = Keys("pre:fix")
    store = RedisOnlineStore(redis.Redis(), keys, recent_history=50, retention_days=2)
    t = [None, *store._merge_templates()]  # 1-based, as ARGV in the script
    assert len(t) == 17
    assert t[1] + "42" + t[2] == keys.user_progress(42)
    assert t[3] + "42" + t[4] == keys.user_ratings(42)
    assert t[5] + "42" + t[6] == keys.user_recent(42)
    assert t[7] + "42" + t[8] == keys.user_activity(42)
    viewers = t[9] + "up+2009" + t[10] + "20250301" + t[11]
    assert viewers == keys.movie_viewers("up+2009", "20250301")
    assert t[12] == keys.new_users()
    assert (t[13], t[14]) == ("-51", str(2 * 86400))  # ZREMRANGEBYRANK 0 -51 keeps 50
    assert t[15] + "20250301" + t[16] == keys.active_movies("20250301")
