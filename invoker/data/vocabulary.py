"""The generator's vocabulary and the rule that splits it: which values each split may use.

The words and phrases themselves are data, in ``vocabulary.toml`` beside this file (pools of argument
values, the parts generated values are made of, result words, request and answer phrasings, small
talk). Here: reading them, the generators that compose values from the parts, and the partition —
splits share no argument value: a pool member belongs to the split of its position in the
crc32-sorted pool (exact 6:2:2 proportions), any other value to the bucket of its crc32. Nothing
depends on the seed.
"""

from __future__ import annotations

import json
import random
import tomllib
import zlib
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

_DATA = tomllib.loads((Path(__file__).parent / "vocabulary.toml").read_text(encoding="utf-8"))
POOLS: dict[str, tuple[str, ...]] = {name: tuple(items) for name, items in _DATA["pools"].items()}
PARTS: dict[str, tuple[str, ...]] = {name: tuple(items) for name, items in _DATA["parts"].items()}
RESULT_WORDS: dict[str, tuple[str, ...]] = {name: tuple(items) for name, items in _DATA["results"].items()}
PHRASES: dict[str, tuple[str, ...]] = {name: tuple(items) for name, items in _DATA["phrases"].items()}
CHITCHAT: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    intent: (tuple(table["asks"]), tuple(table["answers"])) for intent, table in _DATA["chitchat"].items()}

# 10 buckets -> 6 train, 2 calibration, 2 eval. Index = crc32 % 10 for hashed values, or the
# position in a crc32-sorted vocabulary for small pools (exact 6:2:2 proportions).
BUCKETS = ("train", "eval", "calibration", "train", "train", "eval", "train", "calibration", "train", "train")


def crc(text: str) -> int:
    return zlib.crc32(text.encode("utf-8"))


# --- generated values: large spaces, partitioned by hashing the finished value ------------------


def _gen_person(rng: random.Random) -> str:
    return f"{rng.choice(PARTS['first'])} {rng.choice(PARTS['last'])}"


def _gen_email(rng: random.Random) -> str:
    return f"{rng.choice(PARTS['first']).lower()}.{rng.choice(PARTS['last']).lower()}@{rng.choice(PARTS['mail_domains'])}"


def _gen_date(rng: random.Random) -> str:
    return f"{rng.randint(2024, 2027)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"


def _gen_time(rng: random.Random) -> str:
    return f"{rng.randint(6, 22):02d}:{rng.choice((0, 10, 15, 20, 30, 40, 45, 50)):02d}"


def _gen_title(rng: random.Random) -> str:
    return f"{rng.choice(PARTS['title_a'])} {rng.choice(PARTS['title_b'])}"


def _gen_song(rng: random.Random) -> str:
    return f"{rng.choice(PARTS['song_a'])} {rng.choice(PARTS['song_b'])}"


def _gen_movie(rng: random.Random) -> str:
    return f"The {rng.choice(PARTS['movie_a'])} of {rng.choice(PARTS['movie_b'])}"


def _gen_street(rng: random.Random) -> str:
    return f"{rng.randint(1, 199)} {rng.choice(PARTS['street_names'])} {rng.choice(PARTS['street_kinds'])}"


def _gen_restaurant(rng: random.Random) -> str:
    return f"{rng.choice(PARTS['venue_a'])} {rng.choice(PARTS['venue_b'])}"


def _gen_venue(rng: random.Random) -> str:
    return f"{rng.choice(PARTS['room_kinds'])} {rng.randint(1, 60)}"


def _gen_seat(rng: random.Random) -> str:
    return f"{rng.choice('ABCDEFGHJKLMN')}{rng.randint(1, 30)}"


def _gen_product(rng: random.Random) -> str:
    return f"{rng.choice(PARTS['product_a'])} {rng.choice(PARTS['product_b'])}"


def _gen_sentence(rng: random.Random) -> str:
    return f"{rng.choice(PARTS['sentence_a'])} the {rng.choice(PARTS['sentence_b'])}"


def _gen_tracking(rng: random.Random) -> str:
    letters = "".join(rng.choice("ABCDEFGHJKLMNPRSTUVWXZ") for _ in range(2))
    return f"{letters}{rng.randint(100000, 999999)}"


def _gen_coupon(rng: random.Random) -> str:
    return f"{rng.choice(PARTS['coupon_words'])}{rng.randint(10, 99)}"


GENERATORS: dict[str, Callable[[random.Random], str]] = {
    "person": _gen_person,
    "email": _gen_email,
    "date": _gen_date,
    "time": _gen_time,
    "title": _gen_title,
    "song": _gen_song,
    "movie": _gen_movie,
    "street": _gen_street,
    "restaurant": _gen_restaurant,
    "venue": _gen_venue,
    "seat": _gen_seat,
    "product": _gen_product,
    "sentence": _gen_sentence,
    "tracking": _gen_tracking,
    "coupon": _gen_coupon,
}



# --- the partition ---------------------------------------------------------------------------------


@lru_cache(maxsize=None)
def _pool_splits() -> dict[str, str]:
    owner: dict[str, str] = {}
    assigned: dict[str, str] = {}
    for pool_name, items in POOLS.items():
        for item in items:
            if item in owner:
                raise AssertionError(f"{item!r} is in two value pools: {owner[item]} and {pool_name}")
            owner[item] = pool_name
        for index, item in enumerate(sorted(items, key=lambda text: (crc("pool:" + text), text))):
            assigned[item] = BUCKETS[index % len(BUCKETS)]
    return assigned


@lru_cache(maxsize=None)
def pool_part(pool: str, split: str) -> tuple[str, ...]:
    """The members of value pool ``pool`` that belong to ``split`` (in pool order)."""
    splits = _pool_splits()
    return tuple(item for item in POOLS[pool] if splits[item] == split)


def value_key(value: Any) -> str | None:
    """The canonical text a value is partitioned by; ``None`` for booleans (exempt) and null."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return json.dumps(value)
    if isinstance(value, str):
        return value
    raise TypeError(f"not a scalar argument value: {value!r}")


def value_split(value: Any) -> str | None:
    """Which split may use ``value`` as an argument value (``None`` for booleans).

    Pool strings (cities, currencies, enum members, ...) belong to the split of their position in
    the crc32-sorted pool; any other string or number to ``BUCKETS[crc32(json text) % 10]``.
    """
    key = value_key(value)
    if key is None:
        return None
    pooled = _pool_splits().get(key)
    if pooled is not None:
        return pooled
    return BUCKETS[crc("value:" + key) % len(BUCKETS)]


@lru_cache(maxsize=None)
def ints_in_split(lo: int, hi: int, split: str) -> tuple[int, ...]:
    values = tuple(v for v in range(lo, hi + 1) if value_split(v) == split)
    if len(values) < 2:
        raise AssertionError(f"integer range {lo}..{hi} has fewer than 2 values for split {split}")
    return values
