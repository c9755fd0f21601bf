"""Training leaves coordinated fake accounts out (``recommender.shilling``): their ratings
would lift the target in every model trained on them (issue 18, docs/security.md).

Pure over Arrow tables: the run's watch and rate rows, and the log's sign-ups (the
``account`` rows of the event store), in; the rows of every account of every detected
campaign removed, and what was found, out. ``inputs.load_inputs`` applies it and records
the finding in the run's data provenance, so the registry says what each model did not
see and why."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recommender.shilling import BurstRule, Detection, births, detect


def _seconds(column: pa.ChunkedArray) -> np.ndarray:
    return pc.cast(column, pa.int64()).to_numpy(zero_copy_only=False) / 1000.0


def first_times(table: pa.Table | None) -> dict[int, float]:
    """Each user's earliest row time (seconds) in a table with ``time`` and ``user_id``."""
    if table is None or table.num_rows == 0:
        return {}
    users = table["user_id"].to_numpy()
    times = _seconds(table["time"])
    order = np.argsort(times, kind="stable")[::-1]  # the earliest last: it wins below
    return dict(zip(users[order].tolist(), times[order].tolist(), strict=True))


def exclude_campaigns(events: pa.Table, accounts: pa.Table | None, *, scale_max: int,
                      rule: BurstRule | None = None) -> tuple[pa.Table, Detection, dict]:
    """``events`` without the rows of detected campaigns' accounts, the detection, and a
    JSON-ready summary for the run's provenance. Births: the sign-ups in ``accounts``
    (time, user_id), else each user's first watch or rating (``shilling.births``)."""
    rates = events.filter(pc.equal(pc.cast(events["kind"], pa.string()), "rate"))
    movies = pc.cast(rates["movie_id"], pa.string()).to_numpy(zero_copy_only=False)
    rule = rule or BurstRule()
    born = births(first_times(accounts), first_times(events),
                  data_start_s=float(_seconds(events["time"]).min()) if events.num_rows else 0.0,
                  young_s=rule.young_s)
    found = detect(rates["user_id"].to_numpy(), movies, _seconds(rates["time"]),
                   rates["rating"].to_numpy(zero_copy_only=False), born,
                   scale_max=scale_max, rule=rule)
    flagged = found.accounts
    kept = events
    if flagged:
        drop = pc.is_in(events["user_id"], value_set=pa.array(sorted(flagged), pa.int64()))
        kept = events.filter(pc.invert(drop))
    summary = {
        "campaigns": len(found.campaigns), "targets": found.targets,
        "excluded_accounts": len(flagged), "excluded_rows": events.num_rows - kept.num_rows,
        "baseline_young_share": round(found.baseline_young_share, 6),
    }
    return kept, found, summary
