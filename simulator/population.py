"""The simulated users: demographics, activity, hidden tastes and self-descriptions.

Arrays indexed by user id (0..n-1). A million users take a few seconds and about
150 MB: demographics in int8/uint8, tastes in float32. Self-descriptions (the answers
to "What movies do you like / not like?") are written on demand from a per-user seed,
so they cost nothing until the user API asks, and are the same every time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simulator.catalog import N_GENRES, Catalog

OCCUPATIONS = (
    "academic/educator", "artist", "clerical/admin", "college/grad student",
    "customer service", "doctor/health care", "executive/managerial", "farmer",
    "homemaker", "K-12 student", "lawyer", "programmer", "retired", "sales/marketing",
    "scientist", "self-employed", "technician/engineer", "tradesman/craftsman",
    "unemployed", "writer", "other or not specified",
)
_ADULT_JOBS = [i for i, o in enumerate(OCCUPATIONS)
               if o not in ("K-12 student", "college/grad student", "retired")]
K12, COLLEGE, RETIRED = (OCCUPATIONS.index(o) for o in
                         ("K-12 student", "college/grad student", "retired"))


@dataclass
class Population:
    """Users as parallel arrays; ``taste`` and ``genre_pref`` are hidden truth."""

    age: np.ndarray          # uint8 years
    gender: np.ndarray       # uint8: 0 = M, 1 = F
    occupation: np.ndarray   # uint8 index into OCCUPATIONS
    activity: np.ndarray     # float32 expected sessions per simulated day (heavy-tailed)
    taste: np.ndarray        # float32 (n, k) latent tastes, pairs with Catalog.factors
    genre_pref: np.ndarray   # float32 (n, N_GENRES) liking of each genre
    describes: np.ndarray    # bool: has a self-description
    joined: np.ndarray       # float32 day the account was created; < 0: before the simulation
    seed: int

    def __len__(self) -> int:
        return len(self.age)


def generate_population(n: int, k: int, seed: int, *, describe_share: float = 0.3,
                        new_share: float = 0.1, horizon_days: float = 30.0) -> Population:
    """Draw ``n`` users with ``k`` hidden taste factors from ``seed``."""
    rng = np.random.default_rng([seed, 3])
    # Ages: a teen bump, most in their 20s-40s, a long tail of older viewers.
    group = rng.choice(3, size=n, p=[0.12, 0.70, 0.18])
    age = np.where(group == 0, rng.integers(13, 18, n),
                   np.where(group == 1, rng.normal(31, 8, n), rng.normal(58, 9, n)))
    age = np.clip(np.round(age), 13, 90).astype(np.uint8)
    gender = (rng.random(n) < 0.45).astype(np.uint8)

    occupation = rng.choice(_ADULT_JOBS, size=n).astype(np.uint8)
    occupation[age < 18] = K12
    student = (age >= 18) & (age <= 24) & (rng.random(n) < 0.6)
    occupation[student] = COLLEGE
    occupation[(age >= 63) & (rng.random(n) < 0.7)] = RETIRED

    activity = rng.lognormal(-1.6, 1.0, n).astype(np.float32)  # median ~0.2 sessions/day

    # Unit-variance tastes against factors of variance 1/k: the dot product has sd ~1.
    taste = rng.normal(0, 1.0, (n, k)).astype(np.float32)
    # Genre preferences: a few liked genres per user, shifted by age and gender.
    genre_pref = rng.normal(0, 0.35, (n, N_GENRES)).astype(np.float32)
    kids = age < 16
    genre_pref[kids, 2] += 0.6   # Animation
    genre_pref[kids, 7] += 0.6   # Family
    genre_pref[gender == 1, 13] += 0.15  # Romance
    genre_pref[gender == 0, 0] += 0.15   # Action
    describes = rng.random(n) < describe_share
    # Most accounts predate the simulation; ``new_share`` sign up during its first
    # ``horizon_days`` and start with a create_account line (the cold-start case).
    joined = np.where(rng.random(n) < new_share, rng.uniform(0, horizon_days, n),
                      -rng.uniform(1, 1000, n)).astype(np.float32)
    return Population(age=age, gender=gender, occupation=occupation, activity=activity,
                      taste=taste, genre_pref=genre_pref, describes=describes, joined=joined,
                      seed=seed)


def misspell(word: str, rng: np.random.Generator) -> str:
    """One typo of the kinds people make: a dropped, doubled or swapped letter."""
    if len(word) < 4:
        return word
    i = int(rng.integers(1, len(word) - 1))
    kind = int(rng.integers(3))
    if kind == 0:
        return word[:i] + word[i + 1:]
    if kind == 1:
        return word[:i] + word[i] + word[i:]
    return word[:i - 1] + word[i] + word[i - 1] + word[i + 1:]


def describe(user: int, liked: list[str], disliked: list[str], seed: int,
             *, typo_rate: float = 0.25) -> tuple[str, str]:
    """Free-text answers naming ``liked`` / ``disliked`` titles, sometimes misspelled.

    ``liked``/``disliked`` are catalog titles chosen by the caller from the user's
    hidden utilities; the phrasing and typos come from a per-user seed.
    """
    rng = np.random.default_rng([seed, 4, user])

    def mention(title: str) -> str:
        words = title.split(" ")
        if rng.random() < typo_rate:
            j = int(rng.integers(len(words)))
            words[j] = misspell(words[j], rng)
        text = " ".join(words)
        return text.lower() if rng.random() < 0.3 else text

    openers = ("I really like", "I love", "Big fan of", "My favourites are", "I enjoy")
    closers = ("I don't like", "I can't stand", "Not a fan of", "I hated", "Please no")
    likes = f"{openers[int(rng.integers(len(openers)))]} " + ", ".join(map(mention, liked))
    dislikes = (f"{closers[int(rng.integers(len(closers)))]} " + ", ".join(map(mention, disliked))
                if disliked else "")
    return likes, dislikes


def genre_matrix(catalog: Catalog) -> np.ndarray:
    """Catalog genres as float32 (n_movies, N_GENRES), normalised per movie."""
    g = catalog.genres.astype(np.float32)
    return g / np.maximum(g.sum(axis=1, keepdims=True), 1)
