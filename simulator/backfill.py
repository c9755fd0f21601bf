"""``movierec sim backfill``: write N simulated days of organic history to a sink."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from simulator.history import HistoryGenerator
from simulator.producer import LineSink

KIND_NAMES = ("watch", "rate", "account")


@dataclass(frozen=True)
class BackfillResult:
    lines: int
    seconds: float
    by_kind: dict[str, int]

    @property
    def lines_per_s(self) -> float:
        return self.lines / self.seconds if self.seconds else 0.0


def backfill(generator: HistoryGenerator, sink: LineSink, *, progress: bool = True) -> BackfillResult:
    """Send every line of ``generator`` to ``sink``, then flush; shows a progress bar
    in simulated hours with lines sent and the rate."""
    by_kind = np.zeros(len(KIND_NAMES), np.int64)
    hours = generator.end_s / 3600
    bar = tqdm(total=hours, unit="sim-h", disable=not progress, dynamic_ncols=True,
               bar_format="{l_bar}{bar}| {n:.1f}/{total:.1f} sim-h [{elapsed}<{remaining}{postfix}]")
    started = time.perf_counter()
    try:
        for batch in generator.events():
            for line, key in generator.format(batch):
                sink.send(line, key)
            by_kind += np.bincount(batch.kind, minlength=len(KIND_NAMES))
            if len(batch):
                sent = int(by_kind.sum())
                rate = sent / (time.perf_counter() - started)
                bar.set_postfix_str(f"{sent:,} lines, {rate:,.0f} lines/s", refresh=False)
                bar.update(min(float(batch.t[-1]) / 3600, hours) - bar.n)
        sink.flush()
    finally:
        bar.close()
    return BackfillResult(int(by_kind.sum()), time.perf_counter() - started,
                          dict(zip(KIND_NAMES, by_kind.tolist())))
