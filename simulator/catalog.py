"""The simulated movie catalog: MLiP-shaped ids, TMDB-shaped metadata, hidden factors.

Everything is drawn from one seed with numpy, as arrays indexed by movie number
(0..n-1), so 27,000 movies take well under a second. Distributions aim at realism
where a recommender would notice: a long tail of popularity (log-normal appeal), recent
years more common, runtimes around 100 minutes, costs that rise with popularity and
recency, content ratings that follow genres.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

# TMDB's genre ids and names (a public, fixed list).
GENRES: tuple[tuple[int, str], ...] = (
    (28, "Action"), (12, "Adventure"), (16, "Animation"), (35, "Comedy"), (80, "Crime"),
    (99, "Documentary"), (18, "Drama"), (10751, "Family"), (14, "Fantasy"), (36, "History"),
    (27, "Horror"), (10402, "Music"), (9648, "Mystery"), (10749, "Romance"),
    (878, "Science Fiction"), (10770, "TV Movie"), (53, "Thriller"), (10752, "War"),
    (37, "Western"),
)
N_GENRES = len(GENRES)
_GENRE_WEIGHTS = np.array([9, 6, 3, 12, 6, 3, 16, 4, 4, 2, 6, 2, 3, 7, 4, 1, 7, 2, 1], float)

CONTENT_RATINGS = ("G", "PG", "PG-13", "R", "NC-17")
RATED_R = 3
"""Index of "R" in CONTENT_RATINGS: R and NC-17 are unsuitable for minors."""

LANGUAGES = ("en", "fr", "es", "de", "ja", "ko", "it", "hi", "zh", "sv")
_LANGUAGE_WEIGHTS = np.array([70, 6, 5, 4, 4, 3, 3, 2, 2, 1], float)
_LANGUAGE_NAMES = {"en": "English", "fr": "Français", "es": "Español", "de": "Deutsch",
                   "ja": "日本語", "ko": "한국어/조선말", "it": "Italiano", "hi": "हिन्दी",
                   "zh": "普通话", "sv": "svenska"}

# Words to build titles from; plain English, chosen for this project.
_WORDS = """
after air all american angel angry apple army autumn baby back bad ballad bear beast
before beyond big bird black blade blood blue boat body bone border boy brave bridge
broken brother brown burning call captain car castle cat chain child circle city clock
cloud code cold color crazy crown cry dance dancer dark daughter dawn day dead deep desert
devil diamond dinner doctor dog door double down dragon dream drive dust eagle earth echo
edge empire end enemy escape evening eye fall family far father fear fever field fire
first fish flag flight flower forest forever fox free friend frozen game garden ghost
giant girl glass gold good grand grave great green gun hand happy hard heart heaven hero
hidden high hill holiday home honey horse hotel house hunter ice island jack journey
judge jungle key kid killer king kingdom kiss knight lady lake land last late law legend
letter liberty life light lion little lonely long lost love lucky machine magic man
map mark master memory midnight mind mirror mission money monster moon morning mother
mountain murder music mystery name night north ocean old one orange outlaw paper paradise
party past people perfect picture pirate planet poison power prince princess promise
queen quiet rain red return river road rock rose royal run sea secret shadow shark ship
silent silver sister sky sleep small snow soldier son song soul south space spider
spirit spring star steel stone storm story street stranger summer sun sweet tale thief
thunder tiger time tomorrow town train treasure tree true truth twin under valley
vampire voice war water wave west white wild wind winter witch wolf woman wonder world
year yellow young zero
""".split()
_SMALL = ("the", "of", "and", "a", "in", "to", "from", "with")
_SUFFIXES = ("2", "3", "II", "Part 2", "Vol. 1", "Vol. 2", "Returns", "Reloaded", "Begins")

_DROP = re.compile(r"[^a-z0-9 ._\-]")


def movie_id_from_title(title: str, year: int) -> str:
    """The MLiP movie id of a title: lower case, ``,`` -> ``_``, other punctuation
    dropped, words joined by ``+``, then ``+<year>``.

    ``"Monsters, Inc."`` (2001) -> ``monsters_+inc.+2001``;
    ``"Willy Wonka & the Chocolate Factory"`` (1971) -> ``willy+wonka++the+chocolate+factory+1971``.
    """
    text = title.lower().replace(",", "_")
    text = _DROP.sub("", text)
    return "+".join(text.split(" ")) + f"+{year}"


def _make_title(rng: np.random.Generator) -> str:
    n = int(rng.choice([1, 2, 2, 3, 3, 3, 4, 5]))
    words = [str(rng.choice(_WORDS)) for _ in range(n)]
    if n >= 3 and rng.random() < 0.5:
        words[1] = str(rng.choice(_SMALL))
    if rng.random() < 0.35:
        words.insert(0, "the")
    title = " ".join(w.capitalize() if w not in _SMALL or i == 0 else w for i, w in enumerate(words))
    roll = rng.random()
    if roll < 0.06:
        title += ": " + " ".join(str(rng.choice(_WORDS)).capitalize() for _ in range(2))
    elif roll < 0.10:
        title += " " + str(rng.choice(_SUFFIXES))
    elif roll < 0.13:
        title = title.replace(" ", ", ", 1)
    elif roll < 0.15 and n >= 2:
        title = title.replace(" ", " & ", 1)
    elif roll < 0.17:
        title = f"{title.split(' ')[-1]}'s {title}"
    return title


@dataclass
class Catalog:
    """Movies as parallel arrays indexed by movie number; ``factors`` are hidden truth."""

    ids: list[str]
    titles: list[str]
    year: np.ndarray          # int16
    release_day: np.ndarray   # int16, day of year 1..365
    genres: np.ndarray        # bool (n, N_GENRES)
    runtime: np.ndarray       # int16 minutes
    language: np.ndarray      # int8 index into LANGUAGES
    appeal: np.ndarray        # float32, log-normal: drives organic popularity (long tail)
    quality: np.ndarray       # float32, hidden mean utility shift
    vote_average: np.ndarray  # float32 0..10 (external: not behaviour on this site)
    vote_count: np.ndarray    # int32
    adult: np.ndarray         # bool
    content_rating: np.ndarray  # int8 index into CONTENT_RATINGS
    license_cost: np.ndarray  # float32 USD per play
    factors: np.ndarray       # float32 (n, k) hidden latent tastes

    def __len__(self) -> int:
        return len(self.ids)

    def index_of(self) -> dict[str, int]:
        """Movie id -> movie number."""
        return {mid: i for i, mid in enumerate(self.ids)}


def generate_catalog(n: int, k: int, seed: int) -> Catalog:
    """Draw ``n`` movies with ``k`` hidden factors from ``seed``."""
    rng = np.random.default_rng([seed, 1])
    year = np.clip(np.round(2024 - rng.gamma(2.0, 9.0, n)), 1930, 2025).astype(np.int16)
    titles, ids, seen = [], [], set()
    for i in range(n):
        while True:
            title = _make_title(rng)
            mid = movie_id_from_title(title, int(year[i]))
            if mid not in seen:
                break
            year[i] = min(2025, year[i] + 1) if rng.random() < 0.5 else max(1930, year[i] - 1)
        seen.add(mid)
        titles.append(title)
        ids.append(mid)

    probs = _GENRE_WEIGHTS / _GENRE_WEIGHTS.sum()
    genres = np.zeros((n, N_GENRES), bool)
    count = rng.choice([1, 2, 2, 3], size=n)
    for j in range(3):
        pick = rng.choice(N_GENRES, size=n, p=probs)
        genres[np.arange(n)[count > j], pick[count > j]] = True
    animation, family, documentary, horror = (genres[:, g] for g in (2, 7, 5, 10))

    runtime = rng.normal(104, 18, n)
    runtime[animation] -= 15
    runtime[documentary] -= 10
    runtime = np.clip(np.round(runtime), 60, 210).astype(np.int16)

    appeal = rng.lognormal(0.0, 1.3, n).astype(np.float32)
    appeal *= np.where(year >= 2015, 1.6, 1.0).astype(np.float32)  # newer films draw more
    quality = rng.normal(0, 0.5, n).astype(np.float32)
    vote_average = np.clip(6.2 + 1.4 * quality + rng.normal(0, 0.6, n), 1, 10).astype(np.float32)
    vote_count = np.round(appeal * rng.lognormal(5.5, 0.8, n)).astype(np.int32)

    base = rng.choice(len(CONTENT_RATINGS), size=n, p=[0.08, 0.2, 0.35, 0.33, 0.04])
    base = np.where(animation | family, np.minimum(base, 1), base)
    base = np.where(horror, np.maximum(base, 3), base)
    adult = rng.random(n) < 0.01
    content_rating = np.where(adult, 4, base).astype(np.int8)

    pop_rank = appeal.argsort().argsort() / max(1, n - 1)  # 0 = least, 1 = most appealing
    recency = np.clip((year - 1990) / 35.0, 0, 1)
    license_cost = (0.05 + 1.2 * pop_rank**3 + 0.6 * recency**2) * rng.lognormal(0, 0.25, n)

    # Hidden tastes: a genre part (so genre preferences matter) plus free latent factors.
    factors = rng.normal(0, 1.0 / np.sqrt(k), (n, k)).astype(np.float32)
    genre_axes = np.random.default_rng([seed, 2]).normal(0, 1.0 / np.sqrt(k), (N_GENRES, k))
    factors += (genres @ genre_axes).astype(np.float32) * 0.6

    return Catalog(
        ids=ids, titles=titles, year=year, release_day=rng.integers(1, 366, n).astype(np.int16),
        genres=genres, runtime=runtime,
        language=rng.choice(len(LANGUAGES), size=n,
                            p=_LANGUAGE_WEIGHTS / _LANGUAGE_WEIGHTS.sum()).astype(np.int8),
        appeal=appeal, quality=quality, vote_average=vote_average, vote_count=vote_count,
        adult=adult, content_rating=content_rating, license_cost=license_cost.astype(np.float32),
        factors=factors,
    )


def language_name(code: str) -> str:
    return _LANGUAGE_NAMES.get(code, code)
