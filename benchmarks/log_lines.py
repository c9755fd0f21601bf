"""The simulated log the consumer benchmarks feed on: (line, key) pairs of a world's history."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from itertools import islice

from simulator.history import HistoryGenerator
from simulator.world import World, WorldSpec


def log_lines(n: int, *, spec: WorldSpec | None = None, days: float = 3,
              seed: int = 3) -> Iterator[tuple[bytes, bytes]]:
    """The first ``n`` (line, key) pairs of ``days`` of history from 2025-03-01 of the
    world ``spec`` (default: full scale, 1M users x 27k movies)."""
    world = World.build(spec or WorldSpec())
    return islice(HistoryGenerator(world, start=datetime(2025, 3, 1), days=days, seed=seed).lines(), n)
