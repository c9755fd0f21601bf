"""``movierec sim backfill``: write N simulated days of organic history to a sink,
optionally through an ``Injector`` that adds faults and attacks with ground truth."""

from __future__ import annotations

import heapq
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
from tqdm import tqdm

from simulator.history import HistoryGenerator
from simulator.inject import Injector
from simulator.producer import LineSink

KIND_NAMES = ("watch", "rate", "account")


@dataclass(frozen=True)
class BackfillResult:
    lines: int                     # lines sent, injected ones included
    seconds: float
    by_kind: dict[str, int]        # organic lines by kind
    injected: dict[str, int] = field(default_factory=dict)

    @property
    def lines_per_s(self) -> float:
        return self.lines / self.seconds if self.seconds else 0.0


def backfill(generator: HistoryGenerator, sink: LineSink, *, progress: bool = True,
             injector: Injector | None = None,
             extra: Sequence[tuple[float, bytes, bytes]] = ()) -> BackfillResult:
    """Send the history to ``sink`` and flush; a progress bar shows simulated hours.

    ``extra`` (time-ordered (t, line, key), e.g. a shilling campaign) is merged in by
    time, and everything passes through ``injector`` when one is given.
    """
    by_kind = np.zeros(len(KIND_NAMES), np.int64)
    hours = generator.end_s / 3600
    bar = tqdm(total=hours, unit="sim-h", disable=not progress, dynamic_ncols=True,
               bar_format="{l_bar}{bar}| {n:.1f}/{total:.1f} sim-h [{elapsed}<{remaining}{postfix}]")
    started = time.perf_counter()
    sent = 0

    def organic() -> Iterator[tuple[float, bytes, bytes]]:
        for batch in generator.events():
            yield from generator.timed(batch)
            by_kind[:] += np.bincount(batch.kind, minlength=len(KIND_NAMES))
            if len(batch):
                rate = sent / (time.perf_counter() - started)
                bar.set_postfix_str(f"{sent:,} lines, {rate:,.0f} lines/s", refresh=False)
                bar.update(min(float(batch.t[-1]) / 3600, hours) - bar.n)

    extra = [item for item in extra if item[0] < generator.end_s]  # the end is a hard cut
    timed = heapq.merge(organic(), extra, key=lambda item: item[0]) if extra else organic()
    lines = injector.run(timed) if injector is not None else ((line, key) for _, line, key in timed)
    try:
        for line, key in lines:
            sink.send(line, key)
            sent += 1
        sink.flush()
    finally:
        bar.close()
    return BackfillResult(sent, time.perf_counter() - started,
                          dict(zip(KIND_NAMES, by_kind.tolist(), strict=True)),
                          dict(injector.counts) if injector is not None else {})
