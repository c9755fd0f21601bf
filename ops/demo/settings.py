"""Settings of `movierec demo`: the size of the demo's world and of its live phase.

The default scale is chosen so that the whole demo (stack already fetched) finishes in
a few minutes on a 2-core box *and* the data are dense enough for a model to learn:
the simulated users start about one movie each per five days, so 6,000 users over 25
days give about 6 movies a user (3.4M log lines), where ALS beats popularity offline by
about 2x (benchmarks/tune_als.py; docs/benchmarks.md). ``movierec demo up --full``
switches to the course's full scale (1,000,000 users x 27,000 movies), which takes far
longer.
"""

from __future__ import annotations

from dataclasses import dataclass

from movierec.settings import setting

FULL_USERS = 1_000_000
FULL_MOVIES = 27_000
FULL_DAYS = 2.0


@dataclass(frozen=True)
class DemoSettings:
    """What the demo builds and how long its live phase runs."""

    demo_users: int = setting(6_000, "Users in the demo's world (--full: 1,000,000)",
                              min=100, max=50_000_000)
    demo_movies: int = setting(3_000, "Movies in the demo's catalog (--full: 27,000)",
                               min=100, max=200_000)
    demo_days: float = setting(25.0, "Days of history the demo backfills before training (--full: 2)",
                               min=0.5, max=60)
    demo_live_s: float = setting(60.0, "Seconds of live simulated sessions against the service",
                                 min=5, max=86_400)
    demo_live_rate: float = setting(40.0, "Requests/s of the live simulated sessions",
                                    min=1, max=1_000)
    demo_canary_share: float = setting(
        0.3, "Share of users the retraining loop's canary routes to its challenger during the "
             "demo's live phase", min=0.01, max=0.5)
    demo_stage_timeout_s: float = setting(1_800.0, "Longest a demo stage may run before it fails",
                                          min=10)
