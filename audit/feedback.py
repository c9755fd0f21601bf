"""The feedback-loop audit's pure core: does popularity reinforce itself, bucket by bucket?

A recommender trained on what its own lists made people watch can narrow what it shows,
day after day (Fleder and Hosanagar, "Blockbuster culture's next rise or fall",
Management Science 2009; Chaney, Stewart and Engelhardt, "How algorithmic confounding in
recommendation systems increases homogeneity and decreases utility", RecSys 2018). Three
measures per time bucket (a day of event time by default), fed by ``Tally``:

- **Catalog coverage** of the lists: distinct movies served / catalog size (Ge,
  Delgado-Battenfeld and Jannach, "Beyond accuracy", RecSys 2010). The catalog is what
  the system knows: every movie the audited log names (listed, watched or rated), plus
  any the caller adds; one catalog for the whole window, so a growing denominator cannot
  pass for a shrinking coverage.
- **Gini coefficient of exposure** over the whole catalog, unexposed movies counted as
  zeros. Exposure is ``audit.fairness.exposure``'s (position weight ``1/log2(rank+1)``).
  With the values sorted ascending, ``x_1 <= ... <= x_n``::

      G = sum_i (2 i - n - 1) x_i / (n sum_i x_i)

  (Gini's mean difference over twice the mean, in the sorted form of Damgaard and
  Weiner, "Describing inequality in plant size or fecundity", Ecology 2000): 0 when every
  movie has the same exposure, (n-1)/n when one movie has it all.
- **Long-tail share of plays**: the share of the bucket's plays (watch starts, minute 0)
  of movies outside the head, the head being ``audit.fairness.head_movies`` (the most
  popular fifth of the catalog) by plays in a *reference period before the window*: the
  ``POPULARITY_S`` (7 days) before the first judged bucket, as far as the log reaches
  back (a backfilled history counts), or, when the log starts with the lists, the first
  judged bucket itself, which then has no tail share. One head for the whole window:
  popularity from each bucket itself would be circular (the movies played most in a
  bucket are by construction that bucket's head, so its tail share could barely move);
  popularity from the whole window would let later days define the head that earlier
  days are judged by; a head trailing each bucket would absorb whatever the lists
  pushed (the films a mitigation promotes become "popular" a week later and its tail
  share decays for that reason alone), and a head estimated from more or fewer plays
  predicts more or less, a trend of its own. A fixed reference asks the loop's question
  directly: do plays move towards what was popular before, or away from it? A week
  rather than a day keeps the head from resting on movies tied at one or two plays and
  averages over the days of the week. Movies with no play in the reference are never
  head, even where the head's fifth of the catalog is larger than the set of movies
  played (there is no popularity to rank them by).

Coverage and exposure grow with the number of lists, so a busy day would look broader
than a quiet one and a partial first or last day narrower. Each bucket is therefore
measured on the same number of lists: the smallest judged bucket's count, at most
``SAMPLE_LISTS``, drawn as a bottom-k sample of a keyed hash of each list (the lists
with the smallest hashes: uniform, and the same whatever order the log is read in, so
the audit is reproducible across reads of a multi-partition topic). A bucket is *judged*
when it has at least ``FULL_SHARE`` of the median bucket's lists; others (a partial
first or last day, a bucket with no lists) are reported and left out of the trend.

**Arms.** When an experiment runs, each list is also credited to its user's arm, and
each arm's coverage and Gini of exposure over the whole window are measured on as many
lists as the smallest arm has (same sampling): a re-ranking arm beside its control shows
the mitigation's effect on the lists while it runs. Arms are reported, not judged: their
users see one catalog but are too few, per day, for trends of their own.

**Trend and requirement.** Each measure's least-squares slope per day over the judged
buckets, with its standard error and 95% t interval. Breadth is coverage, ``1 - G`` and
the tail share; the requirement is that no breadth measure loses more than
``TOLERANCE_PER_DAY`` = ``(1 - RATIO) / HORIZON_DAYS`` of its mean level per day (0.67%
with the fairness audit's four-fifths ``RATIO`` and a 30-day horizon): a pace that would
take it below four fifths of today's level within a month, the fairness audit's bar
reached before a monthly review could see it. Judged on the slope's point estimate (a
week of days is too few points for an interval to exclude a slow trend, and a fail is a
prompt to look, not a proof); at least ``MIN_BUCKETS`` judged buckets are needed.
"""

from __future__ import annotations

import hashlib
import heapq
import math
import statistics
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from audit.fairness import RATIO, exposure, head_movies

DAY_S = 86_400.0
HORIZON_DAYS = 30.0
TOLERANCE_PER_DAY = (1.0 - RATIO) / HORIZON_DAYS
"""Most relative loss of a breadth measure's level per day (module docstring)."""
POPULARITY_S = 7 * DAY_S
"""The head's popularity: plays in this long before the first judged bucket (rounded up
to whole buckets)."""
SAMPLE_LISTS = 20_000
"""Most lists kept per bucket (bottom-k sample)."""
FULL_SHARE = 0.5
"""A bucket is judged when it has at least this share of the median bucket's lists."""
MIN_BUCKETS = 3
"""Fewest judged buckets for a trend (a slope of 2 points has no error)."""

# t quantiles (two-sided 95%) by degrees of freedom, then 1.96 beyond
_T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
        9: 2.262, 10: 2.228, 12: 2.179, 15: 2.131, 20: 2.086, 30: 2.042}


def gini(values: Sequence[float]) -> float:
    """Gini coefficient of non-negative ``values`` (module docstring); 0 for none or all
    zero (nothing to be unequal about)."""
    xs = sorted(values)
    n, total = len(xs), math.fsum(xs)
    if n == 0 or total <= 0:
        return 0.0
    return math.fsum((2 * i - n - 1) * x for i, x in enumerate(xs, 1)) / (n * total)


def coverage(lists: Iterable[Sequence[str]], catalog_size: int) -> float:
    """Distinct movies in ``lists`` / ``catalog_size``."""
    return len({m for items in lists for m in items}) / catalog_size if catalog_size else 0.0


def exposure_gini(lists: Iterable[tuple[str, ...]], catalog: Iterable[str]) -> float:
    """Gini of position-weighted exposure over ``catalog``, zeros included (movies
    listed but not in ``catalog`` count too)."""
    exposed = exposure(lists)
    return gini([*exposed.values(), *(0.0 for m in set(catalog) if m not in exposed)])


def head_by_plays(plays: Mapping[str, int], catalog: Iterable[str]) -> set[str]:
    """``head_movies`` over the catalog by ``plays`` (zeros for the unplayed), keeping
    only movies with at least one play."""
    popularity = {m: 0.0 for m in catalog}
    popularity.update({m: float(n) for m, n in plays.items()})
    return {m for m in head_movies(popularity) if plays.get(m, 0) > 0}


def tail_share(plays: Mapping[str, int], head: set[str]) -> float | None:
    """Share of ``plays`` of movies outside ``head``; None without plays."""
    total = sum(plays.values())
    return sum(n for m, n in plays.items() if m not in head) / total if total else None


@dataclass(frozen=True)
class Slope:
    """Least-squares slope of y on x (per unit of x), its standard error and the 95%
    t interval, and the mean of y."""

    slope: float
    se: float
    low: float
    high: float
    mean: float
    n: int


def fit(xs: Sequence[float], ys: Sequence[float]) -> Slope | None:
    """The slope of ``ys`` on ``xs``; None with fewer than 3 points or one distinct x."""
    n = len(xs)
    if n < 3 or n != len(ys):
        return None
    mx, my = math.fsum(xs) / n, math.fsum(ys) / n
    sxx = math.fsum((x - mx) ** 2 for x in xs)
    if sxx <= 0:
        return None
    slope = math.fsum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx
    residual = math.fsum((y - my - slope * (x - mx)) ** 2 for x, y in zip(xs, ys, strict=True))
    se = math.sqrt(residual / (n - 2) / sxx)
    df = n - 2
    t = 1.96 if df > 30 else next(v for k, v in sorted(_T95.items(), reverse=True) if df >= k)
    return Slope(slope, se, slope - t * se, slope + t * se, my, n)


def list_key(t_s: float, user: int, items: Sequence[str]) -> int:
    """The list's place in the bottom-k sample: 8 bytes of blake2b of its text."""
    text = f"{t_s:.3f}|{user}|{','.join(items)}".encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "big")


@dataclass
class _Bucket:
    lists: int = 0
    kept: list[tuple[int, tuple[str, ...]]] = field(default_factory=list)
    """Max-heap by key (keys negated): the ``SAMPLE_LISTS`` lists of smallest key."""
    plays: Counter[str] = field(default_factory=Counter)

    def keep(self, entry: tuple[int, tuple[str, ...]], cap: int) -> None:
        self.lists += 1
        if len(self.kept) < cap:
            heapq.heappush(self.kept, entry)
        elif entry > self.kept[0]:
            heapq.heapreplace(self.kept, entry)

    def sample(self, n: int) -> list[tuple[str, ...]]:
        """The ``n`` kept lists of smallest key."""
        return [items for _, items in sorted(self.kept, reverse=True)[:n]]


class Tally:
    """Served lists and plays folded into buckets of ``bucket_s`` seconds, aligned on
    ``origin_s`` (0: the epoch, so daily buckets are UTC days). Times are seconds."""

    def __init__(self, bucket_s: float = DAY_S, *, origin_s: float = 0.0,
                 sample: int = SAMPLE_LISTS) -> None:
        if bucket_s <= 0 or sample < 1:
            raise ValueError("bucket_s must be positive and sample at least 1")
        self.bucket_s, self.origin_s, self.sample = bucket_s, origin_s, sample
        self.buckets: dict[int, _Bucket] = {}
        self.arms: dict[str, _Bucket] = {}
        """The whole window's lists per experiment arm, when ``add_list`` names one."""
        self.known: set[str] = set()
        self.served: set[str] = set()

    def _at(self, t_s: float) -> _Bucket:
        b = math.floor((t_s - self.origin_s) / self.bucket_s)
        if b not in self.buckets:
            self.buckets[b] = _Bucket()
        return self.buckets[b]

    def add_list(self, t_s: float, user: int, items: Sequence[str],
                 arm: str | None = None) -> None:
        """A list served at ``t_s`` (an empty one counts for nothing), to a user in
        experiment ``arm`` when one is given."""
        if not items:
            return
        items = tuple(items)
        self.served.update(items)
        entry = (-list_key(t_s, user, items), items)
        self._at(t_s).keep(entry, self.sample)
        if arm is not None:
            self.arms.setdefault(arm, _Bucket()).keep(entry, self.sample)

    def add_play(self, t_s: float, movie: str) -> None:
        """A watch start (minute 0) of ``movie`` at ``t_s``."""
        self._at(t_s).plays[movie] += 1
        self.known.add(movie)

    def add_movie(self, movie: str) -> None:
        """A movie the log names otherwise (a rating): part of the catalog."""
        self.known.add(movie)


@dataclass(frozen=True)
class BucketResult:
    """One bucket: its start (seconds, as fed), counts, and the three measures (None
    where the bucket has no lists, or no plays or no popularity before it)."""

    start_s: float
    lists: int
    measured_lists: int
    plays: int
    coverage: float | None
    gini: float | None
    tail_share: float | None
    judged: bool


@dataclass(frozen=True)
class Trend:
    """One measure's trend per day over the judged buckets; ``breadth_change`` is the
    relative change of breadth per day (coverage and tail share themselves, ``1 - G``
    for Gini) and ``verdict`` pass, fail or inconclusive against ``TOLERANCE_PER_DAY``."""

    measure: str
    slope_per_day: float | None
    se: float | None
    low: float | None
    high: float | None
    mean: float | None
    breadth_change: float | None
    verdict: str


@dataclass(frozen=True)
class ArmResult:
    """One experiment arm's lists over the whole window, measured on as many lists as
    the smallest arm has (at most ``SAMPLE_LISTS``), so arms of different shares compare."""

    arm: str
    lists: int
    measured_lists: int
    coverage: float
    gini: float


@dataclass(frozen=True)
class FeedbackResult:
    catalog: int
    bucket_s: float
    per_bucket: int
    """Lists each judged bucket is measured on."""
    buckets: list[BucketResult]
    trends: list[Trend]
    window_coverage: float | None
    """Distinct movies in every list of the window / catalog."""
    popularity_s: float = POPULARITY_S
    arms: list[ArmResult] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        verdicts = {t.verdict for t in self.trends}
        return "fail" if "fail" in verdicts else "inconclusive" if (
            "inconclusive" in verdicts or not self.trends) else "pass"


MEASURES = ("coverage", "gini", "tail_share")


def _trend(measure: str, points: list[tuple[float, float]]) -> Trend:
    s = fit([x for x, _ in points], [y for _, y in points])
    if s is None:
        return Trend(measure, None, None, None, None, None, None, "inconclusive")
    breadth = 1.0 - s.mean if measure == "gini" else s.mean
    change = (-s.slope if measure == "gini" else s.slope) / breadth if breadth > 0 else None
    verdict = ("inconclusive" if change is None
               else "fail" if change < -TOLERANCE_PER_DAY else "pass")
    return Trend(measure, s.slope, s.se, s.low, s.high, s.mean, change, verdict)


def measure(tally: Tally, *, catalog: Iterable[str] = (),
            popularity_s: float = POPULARITY_S) -> FeedbackResult:
    """The per-bucket measures, their trends and the verdict (module docstring).
    ``catalog`` adds movies to those the tally met; ``popularity_s`` is the length of the
    reference period before the first judged bucket whose plays rank the head."""
    known = tally.known | tally.served | set(catalog)
    size = len(known)
    if not tally.buckets:
        return FeedbackResult(size, tally.bucket_s, 0, [], [], None, popularity_s)
    first, last = min(tally.buckets), max(tally.buckets)
    counts = [b.lists for b in tally.buckets.values() if b.lists]
    median = statistics.median(counts) if counts else 0
    judged = {i for i, b in tally.buckets.items() if b.lists and b.lists >= FULL_SHARE * median}
    per_bucket = min([tally.buckets[i].lists for i in judged] + [tally.sample]) if judged else 0
    back = max(1, math.ceil(popularity_s / tally.bucket_s))
    start = min(judged, default=last + 1)  # the first judged bucket
    reference: Counter[str] = Counter()
    for j in range(max(first, start - back), start):
        if j in tally.buckets:
            reference.update(tally.buckets[j].plays)
    if not reference and start in tally.buckets:  # nothing before: the first judged bucket
        reference.update(tally.buckets[start].plays)
        start += 1
    head = head_by_plays(reference, known)
    out = []
    for i in range(first, last + 1):
        b = tally.buckets.get(i) or _Bucket()
        sample = b.sample(per_bucket if i in judged else len(b.kept))
        share = tail_share(b.plays, head) if reference and i >= start else None
        out.append(BucketResult(
            start_s=tally.origin_s + i * tally.bucket_s, lists=b.lists,
            measured_lists=len(sample), plays=sum(b.plays.values()),
            coverage=coverage(sample, size) if sample else None,
            gini=exposure_gini(sample, known) if sample else None,
            tail_share=share, judged=i in judged))
    day0 = out[0].start_s
    trends = []
    for name in MEASURES:
        points = [((r.start_s - day0 + tally.bucket_s / 2) / DAY_S, v) for r in out
                  if r.judged and (v := getattr(r, name)) is not None]
        trends.append(_trend(name, points))
    per_arm = min([a.lists for a in tally.arms.values()] + [tally.sample])
    arms = [ArmResult(name, a.lists, len(sample), coverage(sample, size),
                      exposure_gini(sample, known))
            for name, a in sorted(tally.arms.items()) if (sample := a.sample(per_arm))]
    return FeedbackResult(size, tally.bucket_s, per_bucket, out, trends,
                          len(tally.served) / size if tally.served else None, popularity_s,
                          arms)
