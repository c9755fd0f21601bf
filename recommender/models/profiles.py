"""User profiles as plain arrays, and the demographic segments models may use.

A profile comes from the user API (via the consumer's Redis hash in production, or from a
simulator world in tests): age, gender, occupation, and the optional free-text answers
"What movies do you like / not like?". Models never see the text: cold start turns it into
catalog indices first (``recommender.coldstart``), so a ``Profile`` carries ``liked`` and
``disliked`` as item indices of the model's catalog.

Segments are age group x gender, 7 x 3 = 21 codes, small enough that every segment of a
1M-user population has thousands of members.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from recommender.models.ids import positions

AGE_EDGES: tuple[int, ...] = (18, 25, 35, 45, 55, 65)
"""Upper-exclusive edges of the age groups: <18, 18-24, 25-34, 35-44, 45-54, 55-64, 65+."""

AGE_GROUPS: tuple[str, ...] = ("<18", "18-24", "25-34", "35-44", "45-54", "55-64", "65+")
GENDERS: tuple[str, ...] = ("M", "F", "?")
N_SEGMENTS = len(AGE_GROUPS) * len(GENDERS)
UNKNOWN_AGE = -1


def age_group(age: int | None) -> int:
    """Index into ``AGE_GROUPS``; an unknown or absurd age (None, <0, >120) counts as 25-34,
    the most common group, rather than as a child: safety filters decide on the age itself."""
    if age is None or age < 0 or age > MAX_AGE:
        return 2
    return int(np.searchsorted(AGE_EDGES, age, side="right"))


MAX_AGE = 120
"""Oldest believable age in years; above it an age is junk, as is a non-ASCII digit."""


def profile_fields(fields: Mapping[str, str]) -> tuple[int | None, str | None, str | None]:
    """(age, gender, occupation) from a stored profile hash (the user API's fields as the
    consumer keeps them): age from ASCII digits up to ``MAX_AGE`` (``str.isdigit`` would
    take "²", which ``int`` then refuses), gender "M"/"F" in any case and spacing, the
    occupation stripped; None for whatever is missing or junk. Training and serving both
    read profiles through this, so a user lands in the same segment in both."""
    text = str(fields.get("age", "")).strip()
    age = int(text) if text.isascii() and text.isdigit() and len(text) <= 3 else None
    gender = str(fields.get("gender", "")).strip().upper()
    occupation = str(fields.get("occupation", "")).strip()
    return (age if age is not None and age <= MAX_AGE else None,
            gender if gender in ("M", "F") else None, occupation or None)


def gender_code(gender: str | None) -> int:
    """0 for M, 1 for F, 2 for anything else (missing or dirty)."""
    if gender in ("M", "m"):
        return 0
    if gender in ("F", "f"):
        return 1
    return 2


def segment(age: int | None, gender: str | None) -> int:
    """The demographic segment code in [0, N_SEGMENTS)."""
    return age_group(age) * len(GENDERS) + gender_code(gender)


def segments(ages: np.ndarray, genders: np.ndarray) -> np.ndarray:
    """Vectorised ``segment``: ``ages`` int (UNKNOWN_AGE for missing), ``genders`` int8 codes
    from ``gender_code``; returns int16 codes, same shape."""
    ages = np.asarray(ages)
    known = (ages >= 0) & (ages <= 120)
    groups = np.where(known, np.searchsorted(AGE_EDGES, ages, side="right"), 2)
    return (groups * len(GENDERS) + np.asarray(genders)).astype(np.int16)


def segment_onehot(user_segments: np.ndarray) -> sp.csr_matrix:
    """float32 (N_SEGMENTS, n_users) with a 1 at (segment of user, user): multiplying it
    with per-user rows sums them per segment (mean vectors, segment popularity)."""
    n_users = len(user_segments)
    return sp.csr_matrix((np.ones(n_users, np.float32),
                          (np.asarray(user_segments, dtype=np.int64), np.arange(n_users))),
                         shape=(N_SEGMENTS, n_users))


@dataclass(frozen=True)
class Profile:
    """What is known about one user besides their history; every field may be missing.

    ``liked``/``disliked`` are item indices (of the model's ``item_ids``) matched from the
    user's self-description; empty when the user gave none or nothing matched.
    """

    age: int | None = None
    gender: str | None = None
    occupation: str | None = None
    liked: tuple[int, ...] = ()
    disliked: tuple[int, ...] = ()

    @property
    def segment(self) -> int:
        return segment(self.age, self.gender)

    @property
    def is_minor(self) -> bool:
        return self.age is not None and 0 <= self.age < 18


@dataclass(frozen=True)
class Profiles:
    """Profiles of many users as parallel arrays (one row per user id).

    ``user_ids`` int64, sorted ascending and unique; ``age`` int16 (UNKNOWN_AGE when
    missing); ``gender`` int8 codes of ``gender_code``; ``occupation`` int16 index into
    ``occupations`` (-1 when missing). ``likes``/``dislikes`` map a user id to free text,
    only for users who answered.
    """

    user_ids: np.ndarray
    age: np.ndarray
    gender: np.ndarray
    occupation: np.ndarray
    occupations: tuple[str, ...] = ()
    likes: Mapping[int, str] = field(default_factory=dict)
    dislikes: Mapping[int, str] = field(default_factory=dict)

    @classmethod
    def empty(cls) -> Profiles:
        return cls(np.zeros(0, np.int64), np.zeros(0, np.int16), np.zeros(0, np.int8),
                   np.zeros(0, np.int16))

    @classmethod
    def from_records(cls, records: Iterable[Mapping]) -> Profiles:
        """From user-API-shaped dicts (``user_id``, ``age``, ``gender``, ``occupation``,
        optional ``likes``/``dislikes``); later duplicates of a user id win. Values must
        already be clean (the consumer's enricher cleans dirty types)."""
        by_id: dict[int, Mapping] = {int(r["user_id"]): r for r in records}
        ids = np.array(sorted(by_id), dtype=np.int64)
        occupations = tuple(sorted({str(r["occupation"]) for r in by_id.values()
                                    if r.get("occupation") is not None}))
        occ_index = {o: i for i, o in enumerate(occupations)}
        rows = [by_id[int(u)] for u in ids]
        age = np.array([_int_or(r.get("age"), UNKNOWN_AGE) for r in rows], dtype=np.int16)
        gender = np.array([gender_code(r.get("gender")) for r in rows], dtype=np.int8)
        occupation = np.array([occ_index.get(str(r.get("occupation")), -1) for r in rows],
                              dtype=np.int16)
        likes = {int(r["user_id"]): str(r["likes"]) for r in rows if r.get("likes")}
        dislikes = {int(r["user_id"]): str(r["dislikes"]) for r in rows if r.get("dislikes")}
        return cls(ids, age, gender, occupation, occupations, likes, dislikes)

    @classmethod
    def from_stored(cls, stored: Mapping[int, Mapping[str, str]]) -> Profiles:
        """From the online store's profile fields by user id (``OnlineStore.profiles``),
        read by ``profile_fields`` as serving reads them, so junk ages and lower-case
        genders land in the same segment in training and serving."""
        records = []
        for user, fields in stored.items():
            age, gender, occupation = profile_fields(fields)
            record: dict = {"user_id": int(user), "gender": gender, "occupation": occupation,
                            "age": age}
            for key in ("likes", "dislikes"):
                if fields.get(key):
                    record[key] = fields[key]
            records.append(record)
        return cls.from_records(records)

    def __len__(self) -> int:
        return len(self.user_ids)

    def rows_of(self, user_ids: np.ndarray) -> np.ndarray:
        """Row of each id in these profiles, -1 where the user has no profile."""
        return positions(self.user_ids, user_ids)

    def segments_of(self, user_ids: np.ndarray) -> np.ndarray:
        """Segment code per user id; users without a profile get the unknown segment."""
        rows = self.rows_of(user_ids)
        if len(self.user_ids) == 0:
            return segments(np.full(len(rows), UNKNOWN_AGE), np.full(len(rows), 2))
        known = rows >= 0
        ages = np.where(known, self.age[np.maximum(rows, 0)], UNKNOWN_AGE)
        genders = np.where(known, self.gender[np.maximum(rows, 0)], 2)
        return segments(ages, genders)

    def profile(self, user_id: int, *, liked: tuple[int, ...] = (),
                disliked: tuple[int, ...] = ()) -> Profile:
        """One user's ``Profile`` (all fields None when unknown)."""
        row = int(self.rows_of(np.array([user_id]))[0])
        if row < 0:
            return Profile(liked=liked, disliked=disliked)
        age = int(self.age[row])
        occ = int(self.occupation[row])
        return Profile(
            age=None if age == UNKNOWN_AGE else age,
            gender=GENDERS[int(self.gender[row])] if self.gender[row] < 2 else None,
            occupation=self.occupations[occ] if 0 <= occ < len(self.occupations) else None,
            liked=liked, disliked=disliked,
        )


def _int_or(value: object, default: int) -> int:
    try:
        return int(value)  # type: ignore[call-overload]  # any object: what int refuses is the default
    except (TypeError, ValueError):
        return default
