"""Synthetic function-calling conversations for training, calibrating and evaluating Invoker models.

The bundled tiny model (a few million parameters, trained from scratch on a CPU in minutes) has to
learn from this data to call functions, so the data is rich in *shape* but learnable by *copying*:

- Function names are ``<verb>_<noun>`` (``fetch_forecast``, ``convert_currency``); the user's request
  says the same words ("Please fetch the forecast in Oslo."), and the function's description starts
  with them too. Distractor functions always come from other domains, so the noun decides.
- Every argument value appears verbatim in the request (numbers as ``json.dumps`` writes them,
  enum members as listed in the schema); booleans come from fixed phrases per parameter ("with
  wind speed" / "without wind speed"); an optional parameter is present exactly when mentioned.
- Splits share no function name and no argument value: names and values are partitioned by fixed
  rules (see ``function_split`` and ``value_split``) that do not depend on the seed. The
  vocabulary the pieces are made of (verbs, nouns, parameter names, phrases) is shared.

A record is a plain dict (see docs/DATA.md); the last message is the target assistant turn.
Everything is deterministic for ``(split, n, seed)``; record ``i`` does not depend on ``n``.
"""

from __future__ import annotations

import copy
import json
import math
import random
import string
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Literal

Split = Literal["train", "calibration", "eval"]
SPLITS: tuple[str, ...] = ("train", "calibration", "eval")
KIND_SHARES = (("call", 0.55), ("no_call", 0.25), ("followup", 0.20))
MAX_PROMPT_CHARS = 1800
OPTIONAL_ARG_RATE = 0.35  # chance that a call mentions (and so passes) an optional parameter

# Invoker's fixed system text (jeffrey-fong/Invoker, invoker/model.py); used here only to measure
# how long a rendered prompt gets. invoker.prompt is the one place that renders for real.
INVOKER_SYSTEM_TEXT = (
    "A chat between a curious user and an artificial intelligence assistant. The assistant gives "
    "helpful, detailed, and polite answers to the user's questions. The assistant calls functions "
    "with appropriate input when necessary."
)

# 10 buckets -> 6 train, 2 calibration, 2 eval. Index = crc32 % 10 for hashed values, or the
# position in a crc32-sorted vocabulary for small pools (exact 6:2:2 proportions).
_BUCKETS = ("train", "eval", "calibration", "train", "train", "eval", "train", "calibration", "train", "train")


def _crc(text: str) -> int:
    return zlib.crc32(text.encode("utf-8"))


# --------------------------------------------------------------------------------------------
# Value vocabularies
# --------------------------------------------------------------------------------------------
# Small pools are partitioned by position (every split gets its share); no string may appear in
# two pools (tests check), so each pool string has exactly one split.
POOLS: dict[str, tuple[str, ...]] = {
    "city": (
        "Oslo", "Lima", "Cairo", "Paris", "Berlin", "Madrid", "Rome", "Vienna", "Prague", "Dublin",
        "Lisbon", "Athens", "Warsaw", "Budapest", "Helsinki", "Stockholm", "Copenhagen", "Amsterdam",
        "Brussels", "Zurich", "Geneva", "Munich", "Hamburg", "Milan", "Naples", "Seville", "Porto",
        "Krakow", "Riga", "Tallinn", "Vilnius", "Sofia", "Bucharest", "Belgrade", "Zagreb",
        "Istanbul", "Ankara", "Dubai", "Doha", "Mumbai", "Delhi", "Chennai", "Dhaka", "Karachi",
        "Kathmandu", "Bangkok", "Hanoi", "Manila", "Jakarta", "Singapore", "Seoul", "Busan", "Tokyo",
        "Osaka", "Kyoto", "Beijing", "Shanghai", "Taipei", "Sydney", "Melbourne", "Perth", "Auckland",
        "Wellington", "Toronto", "Montreal", "Vancouver", "Chicago", "Boston", "Denver", "Seattle",
        "Austin", "Miami", "Atlanta", "Phoenix", "Dallas", "Houston", "New York", "Los Angeles",
        "San Diego", "Mexico City", "Bogota", "Quito", "Santiago", "Buenos Aires", "Montevideo",
        "Havana", "Nairobi", "Lagos", "Accra", "Dakar", "Casablanca", "Tunis", "Addis Ababa",
        "Kampala", "Cape Town", "Reykjavik", "Edinburgh", "Glasgow", "Manchester", "Liverpool",
        "Marseille", "Lyon", "Nice", "Valencia", "Bilbao", "Florence", "Venice", "Salzburg",
        "Antwerp", "Rotterdam", "Gothenburg", "Bergen",
    ),
    "currency": (
        "USD", "EUR", "GBP", "JPY", "CHF", "CAD", "AUD", "NZD", "CNY", "INR", "BRL", "MXN", "ZAR",
        "SEK", "NOK", "DKK", "PLN", "CZK", "HUF", "TRY", "KRW", "SGD", "HKD", "THB", "IDR", "PHP",
        "ILS", "AED", "SAR", "EGP", "ARS", "CLP", "COP", "PEN", "NGN", "KES",
    ),
    "language": (
        "French", "German", "Spanish", "Italian", "Portuguese", "Dutch", "Swedish", "Norwegian",
        "Danish", "Finnish", "Polish", "Czech", "Greek", "Turkish", "Russian", "Ukrainian", "Arabic",
        "Hebrew", "Hindi", "Bengali", "Urdu", "Japanese", "Korean", "Chinese", "Thai", "Vietnamese",
        "Indonesian", "Malay", "Swahili", "Hungarian", "Romanian", "Irish", "Welsh", "Icelandic",
        "Estonian",
    ),
    "cuisine": (
        "sushi", "ramen", "tapas", "curry", "barbecue", "seafood", "dim sum", "pasta", "tacos",
        "kebab", "pho", "falafel", "dumplings", "noodles", "steakhouse", "burgers", "salads",
        "brunch", "vegan", "fusion", "street food", "grill", "soups", "stews",
    ),
    "genre": (
        "jazz", "blues", "rock", "pop", "funk", "soul", "reggae", "techno", "house", "disco",
        "punk", "metal", "folk", "country", "gospel", "hip hop", "ambient", "classical", "opera",
        "salsa", "samba", "tango", "bluegrass", "swing", "grunge", "trance", "indie",
    ),
    "ingredient": (
        "tomato", "basil", "garlic", "onion", "spinach", "mushroom", "chicken", "beef", "tofu",
        "rice", "lentils", "chickpeas", "potato", "carrot", "pepper", "ginger", "lemon", "lime",
        "coconut", "cheese", "egg", "butter", "yogurt", "cucumber", "avocado", "corn", "beans",
        "pumpkin", "zucchini", "eggplant", "salmon", "shrimp", "honey", "oats", "apple", "banana",
        "mango", "peanut", "almond", "cinnamon", "thyme", "rosemary", "parsley", "cilantro",
        "broccoli", "cabbage", "celery", "leek", "peas", "quinoa", "olives", "ham", "pineapple",
        "sausage", "feta", "anchovies", "artichoke", "jalapeno",
    ),
    "ticker": (
        "AAPL", "MSFT", "GOOG", "AMZN", "TSLA", "META", "NVDA", "NFLX", "INTC", "AMD", "IBM",
        "ORCL", "CSCO", "ADBE", "CRM", "PYPL", "UBER", "LYFT", "SHOP", "SPOT", "TWLO", "ZM",
        "SNAP", "PINS", "DIS", "NKE", "KO", "PEP", "MCD", "SBUX", "WMT", "TGT", "COST", "HD",
        "LOW", "JPM", "BAC", "GS", "MS", "AXP", "BA", "GE", "GM", "TM", "SONY", "BABA",
    ),
    "exchange": (
        "NASDAQ", "NYSE", "LSE", "TSX", "ASX", "HKEX", "SSE", "Euronext", "BSE", "NSE", "JPX",
        "SIX", "KRX", "JSE", "BMV", "Xetra", "OMX", "TASE", "SGX", "MOEX",
    ),
    "carrier": (
        "UPS", "FedEx", "DHL", "USPS", "Royal Mail", "Canada Post", "PostNL", "Aramex", "TNT", "GLS",
        "DPD", "Hermes", "Purolator", "La Poste", "Australia Post", "Japan Post", "Correos",
        "PostNord", "Swiss Post", "Yodel",
    ),
    "topic": (
        "politics", "sports", "science", "technology", "health", "business", "economy", "travel",
        "culture", "movies", "education", "climate", "space", "fashion", "gaming", "finance",
        "energy", "law", "history", "art", "environment", "startups", "medicine", "architecture",
    ),
    "unit": (
        "meters", "kilometers", "miles", "feet", "yards", "inches", "centimeters", "millimeters",
        "nautical miles", "furlongs", "leagues", "micrometers", "decimeters", "hectometers", "chains",
    ),
    "place": (
        "museum", "park", "cafe", "library", "pharmacy", "gym", "cinema", "zoo", "aquarium",
        "market", "theater", "gallery", "stadium", "beach", "hospital", "bookstore", "playground",
        "botanical garden", "castle", "temple", "harbor", "brewery", "spa",
    ),
    "room": (
        "kitchen", "bedroom", "bathroom", "living room", "garage", "office", "hallway", "basement",
        "attic", "nursery", "dining room", "guest room", "laundry room", "studio", "porch", "sunroom",
    ),
    "activity": (
        "running", "cycling", "swimming", "rowing", "hiking", "yoga", "pilates", "boxing",
        "climbing", "skiing", "skating", "dancing", "tennis", "squash", "walking", "surfing",
        "karate", "crossfit", "spinning", "badminton",
    ),
    "tag": (
        "work", "home", "errands", "family", "garden work", "school", "shopping", "paperwork",
        "chores", "hobby", "fitness", "side project", "volunteering", "repairs", "bills", "reading",
    ),
}

_FIRST = (
    "Maria", "Tom", "Anna", "Omar", "Lena", "Ravi", "Sofia", "Kenji", "Ines", "Lucas", "Aisha",
    "Pavel", "Chloe", "Diego", "Nora", "Felix", "Yuki", "Hana", "Ivan", "Leila", "Marco", "Elif",
    "Jonas", "Priya", "Samuel", "Zara", "Mateo", "Greta", "Tariq", "Olga", "Noah", "Mei",
)
_LAST = (
    "Chen", "Lopez", "Berg", "Novak", "Silva", "Khan", "Meyer", "Rossi", "Tanaka", "Dubois",
    "Okafor", "Kowalski", "Garcia", "Nilsen", "Haddad", "Petrov", "Moreau", "Kim", "Costa", "Weber",
    "Singh", "Ito", "Larsen", "Murphy", "Sato", "Ahmed", "Fischer", "Ward", "Santos", "Popescu",
)
_MAIL_DOMAINS = ("example.com", "mail.org", "post.net", "inbox.io")
_TITLE_A = (
    "Budget", "Design", "Team", "Project", "Client", "Product", "Quarterly", "Weekly", "Sales",
    "Hiring", "Launch", "Strategy", "Marketing", "Board", "Research", "Travel", "Garden", "Book club",
)
_TITLE_B = (
    "review", "sync", "planning", "lunch", "workshop", "kickoff", "retro", "demo", "call", "update",
    "briefing", "check-in", "dinner", "notes",
)
_SONG_A = (
    "Silent", "Golden", "Broken", "Electric", "Midnight", "Crimson", "Velvet", "Wild", "Lonely",
    "Endless", "Hidden", "Bright", "Frozen", "Burning", "Paper", "Neon",
)
_SONG_B = (
    "River", "Hour", "Heart", "Sky", "Road", "Garden", "Echo", "Dream", "Ocean", "Light", "Fire",
    "Shadow", "Mountain", "Letter", "Window", "Train",
)
_MOVIE_A = ("Secret", "Return", "Legend", "Night", "Rise", "Fall", "Song", "Ghost", "King", "Last Summer", "Map", "Voyage")
_MOVIE_B = (
    "Avalon", "the North", "the Sea", "Midnight", "the Desert", "Tomorrow", "the Stars", "Winter",
    "the Forest", "the Valley", "Atlantis", "the Moon",
)
_STREET_NAMES = (
    "Oak", "Maple", "Cedar", "Pine", "Elm", "Birch", "Willow", "Park", "Lake", "Hill", "River",
    "Mill", "Church", "King", "Queen", "Station", "Market", "Harbor",
)
_STREET_KINDS = ("Street", "Road", "Avenue", "Lane", "Drive", "Way")
_VENUE_A = (
    "The Golden", "The Silver", "The Blue", "The Green", "The Rusty", "The Hungry", "The Happy",
    "The Little", "The Old", "The Lucky", "The Copper", "The Red",
)
_VENUE_B = ("Fork", "Spoon", "Table", "Kettle", "Lantern", "Oven", "Olive", "Barrel", "Anchor", "Pepper", "Lemon", "Plate")
_ROOM_KINDS = ("Room", "Hall", "Studio", "Suite", "Lab", "Lounge")
_PRODUCT_A = ("steel", "wool", "leather", "glass", "cotton", "bamboo", "ceramic", "wooden", "silk", "linen", "copper", "canvas")
_PRODUCT_B = ("bottle", "scarf", "wallet", "vase", "lamp", "chair", "mug", "bag", "jacket", "notebook", "clock", "basket")
_SENTENCE_A = (
    "Where is", "I love", "Please open", "Please close", "We need", "I lost", "Can you see",
    "Bring me", "Look at", "I like", "How far is", "Let us visit",
)
_SENTENCE_B = (
    "old bridge", "train station", "blue door", "small museum", "red car", "city map", "hotel key",
    "front gate", "big window", "coffee shop", "green park", "night market", "east tower", "last bus",
    "cheap ticket", "quiet beach",
)
_COUPON_WORDS = ("SPRING", "SUMMER", "WINTER", "AUTUMN", "SAVE", "DEAL", "BONUS", "HELLO", "WELCOME", "FLASH", "MEGA", "SUPER")
_SYLLABLES = ("ka", "lo", "mi", "ra", "tu", "sen", "vo", "li", "na", "pe", "do", "ri", "su", "ma", "te", "zo")


def _gen_person(rng: random.Random) -> str:
    return f"{rng.choice(_FIRST)} {rng.choice(_LAST)}"


def _gen_email(rng: random.Random) -> str:
    return f"{rng.choice(_FIRST).lower()}.{rng.choice(_LAST).lower()}@{rng.choice(_MAIL_DOMAINS)}"


def _gen_date(rng: random.Random) -> str:
    return f"{rng.randint(2024, 2027)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"


def _gen_time(rng: random.Random) -> str:
    return f"{rng.randint(6, 22):02d}:{rng.choice((0, 10, 15, 20, 30, 40, 45, 50)):02d}"


def _gen_title(rng: random.Random) -> str:
    return f"{rng.choice(_TITLE_A)} {rng.choice(_TITLE_B)}"


def _gen_song(rng: random.Random) -> str:
    return f"{rng.choice(_SONG_A)} {rng.choice(_SONG_B)}"


def _gen_movie(rng: random.Random) -> str:
    return f"The {rng.choice(_MOVIE_A)} of {rng.choice(_MOVIE_B)}"


def _gen_street(rng: random.Random) -> str:
    return f"{rng.randint(1, 199)} {rng.choice(_STREET_NAMES)} {rng.choice(_STREET_KINDS)}"


def _gen_restaurant(rng: random.Random) -> str:
    return f"{rng.choice(_VENUE_A)} {rng.choice(_VENUE_B)}"


def _gen_venue(rng: random.Random) -> str:
    return f"{rng.choice(_ROOM_KINDS)} {rng.randint(1, 60)}"


def _gen_seat(rng: random.Random) -> str:
    return f"{rng.choice('ABCDEFGHJKLMN')}{rng.randint(1, 30)}"


def _gen_product(rng: random.Random) -> str:
    return f"{rng.choice(_PRODUCT_A)} {rng.choice(_PRODUCT_B)}"


def _gen_sentence(rng: random.Random) -> str:
    return f"{rng.choice(_SENTENCE_A)} the {rng.choice(_SENTENCE_B)}"


def _gen_tracking(rng: random.Random) -> str:
    letters = "".join(rng.choice("ABCDEFGHJKLMNPRSTUVWXZ") for _ in range(2))
    return f"{letters}{rng.randint(100000, 999999)}"


def _gen_coupon(rng: random.Random) -> str:
    return f"{rng.choice(_COUPON_WORDS)}{rng.randint(10, 99)}"


# Large generated spaces are partitioned by hashing the finished value (crc32 % 10 -> bucket).
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


@lru_cache(maxsize=None)
def _pool_splits() -> dict[str, str]:
    owner: dict[str, str] = {}
    assigned: dict[str, str] = {}
    for pool_name, items in POOLS.items():
        for item in items:
            if item in owner:
                raise AssertionError(f"{item!r} is in two value pools: {owner[item]} and {pool_name}")
            owner[item] = pool_name
        for index, item in enumerate(sorted(items, key=lambda text: (_crc("pool:" + text), text))):
            assigned[item] = _BUCKETS[index % len(_BUCKETS)]
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
    the crc32-sorted pool; any other string or number to ``_BUCKETS[crc32(json text) % 10]``.
    """
    key = value_key(value)
    if key is None:
        return None
    pooled = _pool_splits().get(key)
    if pooled is not None:
        return pooled
    return _BUCKETS[_crc("value:" + key) % len(_BUCKETS)]


@lru_cache(maxsize=None)
def _ints_in_split(lo: int, hi: int, split: str) -> tuple[int, ...]:
    values = tuple(v for v in range(lo, hi + 1) if value_split(v) == split)
    if len(values) < 2:
        raise AssertionError(f"integer range {lo}..{hi} has fewer than 2 values for split {split}")
    return values


# --------------------------------------------------------------------------------------------
# Domains: what a function does, its parameters, how users ask for it, what it returns
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Param:
    """One parameter of a domain. ``required``: True always, False optional, None decided per function."""

    name: str
    type: str  # string | enum | integer | number | boolean | array | object
    desc: str
    phrases: tuple[str, ...] = ()  # "{v}" = the value's text; objects use their members' names
    source: str | None = None  # pool or generator name (string / enum / array items)
    lo: float = 0
    hi: float = 0
    decimals: int = 0  # number: 0 -> whole numbers
    required: bool | None = False
    alt: tuple[str, ...] = ()  # other names a function may give this parameter
    false_phrases: tuple[str, ...] = ()  # boolean: how the user says "no"
    items: str = "string"  # array: "string" (from source) or "number" (lo..hi, decimals)
    min_items: int = 1
    max_items: int = 3
    members: tuple["Param", ...] = ()  # object members
    differs_from: str | None = None  # resample until unlike this (canonical) parameter's value


def S(name, desc, phrases, source, *, required=False, alt=(), differs_from=None) -> Param:
    return Param(name, "string", desc, tuple(phrases), source, required=required, alt=tuple(alt), differs_from=differs_from)


def E(name, desc, phrases, pool, *, required=False, alt=(), differs_from=None) -> Param:
    return Param(name, "enum", desc, tuple(phrases), pool, required=required, alt=tuple(alt), differs_from=differs_from)


def I(name, desc, phrases, lo, hi, *, required=False, alt=()) -> Param:  # noqa: E743
    return Param(name, "integer", desc, tuple(phrases), lo=lo, hi=hi, required=required, alt=tuple(alt))


def N(name, desc, phrases, lo, hi, decimals, *, required=False, alt=()) -> Param:
    return Param(name, "number", desc, tuple(phrases), lo=lo, hi=hi, decimals=decimals, required=required, alt=tuple(alt))


def B(name, desc, true_phrases, false_phrases, *, alt=()) -> Param:
    return Param(name, "boolean", desc, tuple(true_phrases), false_phrases=tuple(false_phrases), alt=tuple(alt))


def A(name, desc, phrases, source, *, required=False, alt=(), items="string", lo=0, hi=0, decimals=0, min_items=1, max_items=3) -> Param:
    return Param(
        name, "array", desc, tuple(phrases), source, lo=lo, hi=hi, decimals=decimals, required=required,
        alt=tuple(alt), items=items, min_items=min_items, max_items=max_items,
    )


def O(name, desc, phrases, members, *, required=False, alt=()) -> Param:
    return Param(name, "object", desc, tuple(phrases), required=required, alt=tuple(alt), members=tuple(members))


@dataclass(frozen=True)
class Domain:
    key: str
    verbs: tuple[str, ...]
    nouns: tuple[str, ...]  # may hold spaces: "stock price" -> name get_stock_price
    descriptions: tuple[str, ...]  # "{Verb} the {noun} ...", "{Verb} {a} {noun} ..." (a/an)
    params: tuple[Param, ...]
    result: Callable[[dict, random.Random, str], dict]  # (canonical args, rng, noun) -> function result
    clauses: tuple[str, ...]  # summary clauses over args, result fields and {noun}


_CONDITIONS = ("sunny", "cloudy", "rainy", "windy", "foggy", "snowy", "clear", "stormy")
_AIRLINES = ("Skyline Air", "Blue Jet", "Polar Wings", "Sunrise Airways", "Coastal Air", "Nimbus Air")
_HOTELS = ("Hotel Aurora", "Hotel Meridian", "Hotel Harbor View", "Hotel Lindenhof", "Hotel Solaris", "Hotel Cascade")
_RECIPES = ("Spicy Bowl", "Garden Stew", "Quick Skillet", "Sunday Bake", "Fresh Salad", "Warm Soup")
_PLACES = ("Central Square", "Old Town Hall", "Riverside Walk", "Hilltop View", "Lantern Yard", "Market Lane")
_PARCEL_STATES = ("in transit", "out for delivery", "delivered", "at the depot", "held at customs")


def _code(rng: random.Random, prefix: str) -> str:
    return f"{prefix}{rng.randint(1000, 9999)}"


def _money(x: float) -> float:
    return round(x + 0.0, 2)


def _made_up_sentence(rng: random.Random) -> str:
    words = ("".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 3))) for _ in range(rng.randint(2, 4)))
    return " ".join(words).capitalize()


def _made_up_password(rng: random.Random, length: int) -> str:
    return "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(min(length, 12)))


def _statistic(noun: str, numbers: list[float]) -> float:
    ordered = sorted(numbers)
    middle = len(ordered) // 2
    if noun == "median":
        value = ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2
    elif noun == "sum":
        value = sum(ordered)
    else:
        value = sum(ordered) / len(ordered)
    return round(value, 2)


DOMAINS: tuple[Domain, ...] = (
    Domain(
        "weather", ("get", "check", "fetch", "show"), ("weather", "forecast", "temperature"),
        ("{Verb} the {noun} for a city", "{Verb} the current {noun} in a city"),
        (
            S("city", "City name", ("in {v}", "for {v}"), "city", required=True, alt=("location", "place")),
            I("days", "Number of days", ("for the next {v} days", "over {v} days"), 2, 40, alt=("num_days",)),
            B("include_wind", "Include wind speed", ("with wind speed", "including the wind"), ("without wind speed", "excluding the wind")),
        ),
        lambda a, r, n: {"temperature": r.randint(-9, 38), "condition": r.choice(_CONDITIONS)},
        ("the {noun} in {city} is {condition} at {temperature} degrees", "it is {temperature} degrees and {condition} in {city}"),
    ),
    Domain(
        "currency", ("convert", "exchange", "change"), ("currency", "money", "cash"),
        ("{Verb} the {noun} from one currency to another", "{Verb} an amount of {noun} between currencies"),
        (
            N("amount", "Amount to convert", ("{v}", "of {v}", "worth {v}"), 5, 5000, 2, required=True, alt=("value",)),
            S("from_currency", "Currency code to convert from", ("from {v}",), "currency", required=True, alt=("source_currency", "base")),
            S("to_currency", "Currency code to convert to", ("to {v}", "into {v}"), "currency", required=True,
              alt=("target_currency", "target"), differs_from="from_currency"),
        ),
        lambda a, r, n: (lambda rate: {"converted_amount": _money(a["amount"] * rate), "rate": rate})(round(r.uniform(0.05, 9.0), 3)),
        ("{amount} {from_currency} is {converted_amount} {to_currency}", "at a rate of {rate} you get {converted_amount} {to_currency}"),
    ),
    Domain(
        "restaurant", ("book", "reserve", "request"), ("table", "restaurant", "dinner"),
        ("{Verb} {a} {noun} at a restaurant", "{Verb} the {noun} for a group"),
        (
            S("restaurant", "Restaurant name", ("at {v}",), "restaurant", required=True, alt=("venue",)),
            I("guests", "Number of guests", ("for {v} people", "for {v} guests"), 2, 40, required=True, alt=("party_size", "people")),
            S("date", "Date as YYYY-MM-DD", ("on {v}",), "date", required=None),
            S("time", "Time as HH:MM", ("at {v}",), "time"),
            B("outdoor", "Outdoor seating", ("with outdoor seating", "on the terrace"), ("with indoor seating", "inside")),
        ),
        lambda a, r, n: {"confirmation": _code(r, "RES"), "status": "confirmed"},
        ("your {noun} at {restaurant} for {guests} is {status} with code {confirmation}",
         "the booking code is {confirmation} for {guests} guests at {restaurant}"),
    ),
    Domain(
        "email", ("send", "write", "draft"), ("email", "message", "note"),
        ("{Verb} {a} {noun} to someone", "{Verb} the {noun} to a recipient"),
        (
            S("to", "Recipient email address", ("to {v}",), "email", required=True, alt=("recipient", "address")),
            S("subject", "Subject line", ('with the subject "{v}"', 'titled "{v}"'), "title", required=True, alt=("title",)),
            A("cc", "Addresses to copy", ("with {v} in copy", "copying {v}"), "email", max_items=2),
            B("urgent", "Mark as urgent", ("marked as urgent", "as high priority"), ("as not urgent", "with normal priority")),
        ),
        lambda a, r, n: {"status": "sent", "message_id": _code(r, "MSG")},
        ("the {noun} to {to} was {status} as {message_id}", "your {noun} \"{subject}\" has been {status}"),
    ),
    Domain(
        "calendar", ("create", "schedule", "add"), ("event", "meeting", "appointment"),
        ("{Verb} {a} {noun} in the calendar", "{Verb} a calendar {noun}"),
        (
            S("title", "Title of the entry", ('called "{v}"', 'named "{v}"'), "title", required=True, alt=("name", "summary")),
            S("date", "Date as YYYY-MM-DD", ("on {v}",), "date", required=True),
            S("start_time", "Start time as HH:MM", ("at {v}", "starting at {v}"), "time", alt=("time",)),
            I("duration_minutes", "Length in minutes", ("for {v} minutes", "lasting {v} minutes"), 15, 240, alt=("duration",)),
            A("attendees", "People to invite", ("with {v}", "inviting {v}"), "person"),
            O("location", "Where it happens", ("at {venue} in {city}", "in {venue}, {city}"),
              (S("venue", "Room or hall", (), "venue", required=True), S("city", "City", (), "city", required=True))),
        ),
        lambda a, r, n: {"event_id": _code(r, "EV"), "status": "scheduled"},
        ("\"{title}\" is {status} on {date}", "the {noun} \"{title}\" on {date} has the id {event_id}"),
    ),
    Domain(
        "translation", ("translate", "interpret", "localize"), ("text", "sentence", "phrase"),
        ("{Verb} the {noun} into another language", "{Verb} {a} {noun} between languages"),
        (
            S("text", "Text to translate", ('"{v}"',), "sentence", required=True, alt=("source_text",)),
            E("target_language", "Language to translate into", ("into {v}", "to {v}"), "language", required=True, alt=("to_language", "target")),
            E("source_language", "Language of the text", ("from {v}",), "language", alt=("from_language",), differs_from="target_language"),
            B("formal", "Use a formal tone", ("in a formal tone", "formally"), ("in a casual tone", "informally")),
        ),
        lambda a, r, n: {"translation": _made_up_sentence(r)},
        ("in {target_language} \"{text}\" is \"{translation}\"", "the translation into {target_language} is \"{translation}\""),
    ),
    Domain(
        "tip", ("calculate", "compute", "estimate"), ("tip", "gratuity", "service charge"),
        ("{Verb} the {noun} for a bill", "{Verb} the {noun} on a restaurant bill"),
        (
            N("bill_amount", "Bill total", ("for a bill of {v}", "on a {v} bill"), 10, 900, 2, required=True, alt=("bill", "total")),
            I("tip_percentage", "Tip in percent", ("at {v} percent", "with {v} percent"), 5, 35, required=True, alt=("percent", "percentage")),
            I("split_between", "Number of people paying", ("split between {v} people", "shared by {v} people"), 2, 30, alt=("people",)),
        ),
        lambda a, r, n: {"tip_amount": _money(a["bill_amount"] * a["tip_percentage"] / 100),
                      "total_amount": _money(a["bill_amount"] * (1 + a["tip_percentage"] / 100))},
        ("the {noun} is {tip_amount} and the total comes to {total_amount}", "you should leave {tip_amount}, making {total_amount} in total"),
    ),
    Domain(
        "recipes", ("search", "find", "suggest"), ("recipes", "dishes", "meals"),
        ("{Verb} {noun} by ingredients", "{Verb} the {noun} that use given ingredients"),
        (
            A("ingredients", "Ingredients to use", ("with {v}", "using {v}"), "ingredient", required=True, alt=("items",)),
            E("cuisine", "Kind of food", ("in {v} style", "like {v}"), "cuisine", alt=("style",)),
            I("max_minutes", "Maximum cooking time", ("under {v} minutes", "ready in {v} minutes"), 10, 120, alt=("max_time",)),
            B("vegetarian", "Only vegetarian", ("that are vegetarian", "without meat"), ("with meat", "that are not vegetarian")),
        ),
        lambda a, r, n: {"count": r.randint(2, 40), "top_recipe": r.choice(_RECIPES)},
        ("I found {count} {noun}, the best is {top_recipe}", "there are {count} {noun} and {top_recipe} is the top pick"),
    ),
    Domain(
        "music", ("play", "queue", "stream"), ("song", "track", "album"),
        ("{Verb} {a} {noun} by title", "{Verb} the {noun} on the speaker"),
        (
            S("title", "Title to play", ('"{v}"', 'called "{v}"'), "song", required=True, alt=("name", "song_title")),
            S("artist", "Artist name", ("by {v}",), "person"),
            E("genre", "Music genre", ("in the {v} genre",), "genre"),
            B("shuffle", "Shuffle playback", ("on shuffle", "with shuffle on"), ("without shuffle", "in order")),
            I("volume", "Volume from 10 to 100", ("at volume {v}",), 10, 100),
        ),
        lambda a, r, n: {"status": "playing", "duration_seconds": r.randint(120, 420)},
        ("\"{title}\" is now {status}", "now {status}: \"{title}\", {duration_seconds} seconds long"),
    ),
    Domain(
        "alarm", ("set", "create", "program"), ("alarm", "reminder", "alert"),
        ("{Verb} {a} {noun} for a time", "{Verb} the {noun} at a given time"),
        (
            S("time", "Time as HH:MM", ("for {v}", "at {v}"), "time", required=True, alt=("at",)),
            S("label", "Label to show", ('labeled "{v}"', 'with the label "{v}"'), "title"),
            I("snooze_minutes", "Snooze length in minutes", ("with {v} minutes of snooze", "snoozing {v} minutes"), 2, 30, alt=("snooze",)),
            B("vibrate", "Vibrate", ("with vibration",), ("without vibration", "silently")),
        ),
        lambda a, r, n: {"alarm_id": _code(r, "AL"), "status": "set"},
        ("the {noun} for {time} is {status}", "your {noun} is {status} for {time} with id {alarm_id}"),
    ),
    Domain(
        "food_order", ("order", "buy", "request"), ("pizza", "takeout", "lunch"),
        ("{Verb} {a} {noun} for delivery", "{Verb} {noun} from a local shop"),
        (
            A("toppings", "Toppings", ("with {v}", "topped with {v}"), "ingredient", required=True, alt=("items",)),
            I("quantity", "How many", ("quantity {v}", "in a batch of {v}"), 2, 30, alt=("count",)),
            O("delivery_address", "Where to deliver", ("delivered to {street}, {city}", "to {street} in {city}"),
              (S("street", "Street address", (), "street", required=True), S("city", "City", (), "city", required=True)),
              alt=("address",)),
            B("cutlery", "Include cutlery", ("with cutlery", "including cutlery"), ("without cutlery", "with no cutlery")),
        ),
        lambda a, r, n: {"order_id": _code(r, "ORD"), "eta_minutes": r.randint(15, 70)},
        ("your {noun} order {order_id} arrives in {eta_minutes} minutes", "order {order_id} is placed and will arrive in {eta_minutes} minutes"),
    ),
    Domain(
        "stocks", ("get", "check", "track"), ("stock price", "share price", "stock quote"),
        ("{Verb} the {noun} of a company", "{Verb} the latest {noun}"),
        (
            S("symbol", "Ticker symbol", ("for {v}", "of {v}"), "ticker", required=True, alt=("ticker",)),
            E("exchange", "Stock exchange", ("on the {v} exchange", "on {v}"), "exchange", alt=("market",)),
            B("include_history", "Include price history", ("with price history", "including history"), ("without history", "with no history")),
        ),
        lambda a, r, n: {"price": _money(r.uniform(5, 900)), "change_percent": round(r.uniform(-6, 6), 2)},
        ("{symbol} trades at {price}, a change of {change_percent} percent", "the {noun} of {symbol} is {price}"),
    ),
    Domain(
        "flights", ("search", "find", "book"), ("flights", "flight", "airfare"),
        ("{Verb} {noun} between two cities", "{Verb} the {noun} for a trip"),
        (
            S("origin", "Departure city", ("from {v}",), "city", required=True, alt=("departure", "from_city")),
            S("destination", "Arrival city", ("to {v}",), "city", required=True, alt=("arrival", "to_city"), differs_from="origin"),
            S("date", "Departure date as YYYY-MM-DD", ("on {v}", "departing {v}"), "date", required=True, alt=("departure_date",)),
            I("passengers", "Number of passengers", ("for {v} passengers",), 1, 40, alt=("travelers",)),
            B("nonstop", "Only nonstop flights", ("nonstop only", "with no layovers"), ("with layovers allowed", "allowing stops")),
        ),
        lambda a, r, n: {"airline": r.choice(_AIRLINES), "price": _money(r.uniform(60, 1500)), "flight_number": _code(r, "FL")},
        ("{airline} flies from {origin} to {destination} for {price}", "the best option is {flight_number} with {airline} at {price}"),
    ),
    Domain(
        "hotel", ("book", "reserve", "find"), ("hotel", "room", "stay"),
        ("{Verb} {a} {noun} in a city", "{Verb} the {noun} for some nights"),
        (
            S("city", "City name", ("in {v}",), "city", required=True, alt=("location",)),
            S("check_in", "Arrival date as YYYY-MM-DD", ("from {v}", "checking in {v}"), "date", required=True, alt=("arrival_date",)),
            I("nights", "Number of nights", ("for {v} nights",), 1, 30, required=True, alt=("num_nights",)),
            I("guests", "Number of guests", ("for {v} guests",), 1, 40),
            N("max_price", "Highest price per night", ("under {v} per night", "below {v} a night"), 40, 900, 0, alt=("budget",)),
            B("breakfast", "Breakfast included", ("with breakfast", "breakfast included"), ("without breakfast", "room only")),
        ),
        lambda a, r, n: {"hotel": r.choice(_HOTELS), "price_per_night": r.randint(45, 600)},
        ("{hotel} in {city} costs {price_per_night} per night", "I found {hotel} at {price_per_night} a night for {nights} nights"),
    ),
    Domain(
        "loan", ("calculate", "compute", "estimate"), ("loan payment", "mortgage payment", "installment"),
        ("{Verb} the monthly {noun} of a loan", "{Verb} the {noun} for a loan"),
        (
            N("principal", "Loan amount", ("on a loan of {v}", "for {v} borrowed"), 1000, 900000, 0, required=True, alt=("amount", "loan_amount")),
            N("annual_rate", "Yearly interest rate in percent", ("at {v} percent interest", "with a rate of {v} percent"),
              0.5, 15, 2, required=True, alt=("interest_rate", "rate")),
            I("years", "Loan term in years", ("over {v} years", "for {v} years"), 1, 40, required=True, alt=("term_years",)),
        ),
        lambda a, r, n: (lambda m: {"monthly_payment": m, "total_paid": _money(m * 12 * a["years"])})(
            _money(a["principal"] * (a["annual_rate"] / 1200) / (1 - (1 + a["annual_rate"] / 1200) ** (-12 * a["years"])))),
        ("the {noun} is {monthly_payment} per month", "you would pay {monthly_payment} a month and {total_paid} in total"),
    ),
    Domain(
        "parcel", ("track", "locate", "check"), ("package", "parcel", "shipment"),
        ("{Verb} {a} {noun} by tracking number", "{Verb} where the {noun} is"),
        (
            S("tracking_number", "Tracking number", ("{v}", "with number {v}", "number {v}"), "tracking", required=True, alt=("tracking_id", "code")),
            E("carrier", "Shipping company", ("shipped with {v}", "sent via {v}"), "carrier"),
            B("notify", "Send status notifications", ("and notify me of changes", "with notifications"), ("without notifications",)),
        ),
        lambda a, r, n: {"status": r.choice(_PARCEL_STATES), "estimated_delivery": _gen_date(r)},
        ("the {noun} {tracking_number} is {status}", "{tracking_number} is {status} and should arrive on {estimated_delivery}"),
    ),
    Domain(
        "news", ("get", "fetch", "read"), ("news", "headlines", "articles"),
        ("{Verb} the latest {noun} on a topic", "{Verb} {noun} about a topic"),
        (
            E("topic", "Topic", ("about {v}", "on {v}"), "topic", required=True, alt=("category", "subject")),
            E("language", "Language of the articles", ("in {v}",), "language"),
            I("limit", "Maximum number of items", ("limited to {v} items", "top {v}"), 2, 50, alt=("count", "max_results")),
        ),
        lambda a, r, n: {"count": r.randint(3, 60), "top_headline": f"New {a['topic']} report: {r.choice(_SONG_A)} {r.choice(_SONG_B)}"},
        ("there are {count} {noun} on {topic}, led by \"{top_headline}\"", "the top story on {topic} is \"{top_headline}\""),
    ),
    Domain(
        "cinema", ("buy", "book", "reserve"), ("movie tickets", "cinema tickets", "film tickets"),
        ("{Verb} {noun} for a film", "{Verb} the {noun} for a showing"),
        (
            S("movie", "Film title", ('for "{v}"', 'to see "{v}"'), "movie", required=True, alt=("title", "film")),
            I("tickets", "Number of tickets", ("for {v} people", "for a group of {v}"), 1, 40, required=True, alt=("quantity", "count")),
            S("city", "City", ("in {v}",), "city"),
            S("showtime", "Show time as HH:MM", ("at {v}",), "time"),
            A("seats", "Seat codes", ("in seats {v}",), "seat"),
        ),
        lambda a, r, n: {"booking_code": _code(r, "TIX"), "total_price": _money(a["tickets"] * r.uniform(6, 18))},
        ("{tickets} tickets for \"{movie}\" cost {total_price}", "your {noun} for \"{movie}\" are booked with code {booking_code}"),
    ),
    Domain(
        "password", ("generate", "create", "make"), ("password", "passphrase", "pin code"),
        ("{Verb} a random {noun}", "{Verb} a secure {noun}"),
        (
            I("length", "Number of characters", ("with {v} characters", "{v} characters long"), 6, 64, required=True, alt=("size", "num_characters")),
            B("include_symbols", "Use symbols", ("with symbols", "including symbols"), ("without symbols", "with no symbols")),
            B("include_numbers", "Use digits", ("with numbers", "including digits"), ("without numbers", "with no digits")),
        ),
        lambda a, r, n: {"password": _made_up_password(r, a["length"]), "strength": r.choice(("strong", "very strong", "medium"))},
        ("your new {noun} is {password}", "here is a {strength} {noun}: {password}"),
    ),
    Domain(
        "distance", ("convert", "change", "express"), ("distance", "length", "measurement"),
        ("{Verb} {a} {noun} between units", "{Verb} the {noun} from one unit to another"),
        (
            N("value", "Number to convert", ("of {v}", "{v}"), 0.5, 9000, 1, required=True, alt=("amount",)),
            E("from_unit", "Unit to convert from", ("from {v}", "given in {v}"), "unit", required=True, alt=("source_unit",)),
            E("to_unit", "Unit to convert to", ("to {v}", "into {v}"), "unit", required=True, alt=("target_unit",), differs_from="from_unit"),
        ),
        lambda a, r, n: {"result": round(a["value"] * r.uniform(0.01, 50), 3)},
        ("{value} {from_unit} is {result} {to_unit}", "that {noun} equals {result} {to_unit}"),
    ),
    Domain(
        "taxi", ("book", "call", "order"), ("taxi", "ride", "cab"),
        ("{Verb} {a} {noun} between two addresses", "{Verb} the {noun} for a pickup"),
        (
            S("pickup", "Pickup address", ("from {v}", "picking me up at {v}"), "street", required=True, alt=("pickup_address", "start")),
            S("destination", "Drop-off address", ("to {v}", "going to {v}"), "street", required=True, alt=("dropoff", "end"), differs_from="pickup"),
            I("passengers", "Number of passengers", ("for {v} passengers",), 1, 40),
            S("pickup_time", "Pickup time as HH:MM", ("at {v}",), "time", alt=("time",)),
        ),
        lambda a, r, n: {"driver": _gen_person(r), "eta_minutes": r.randint(2, 25)},
        ("{driver} will pick you up in {eta_minutes} minutes", "your {noun} with {driver} arrives in {eta_minutes} minutes"),
    ),
    Domain(
        "tasks", ("add", "create", "log"), ("task", "todo item", "chore"),
        ("{Verb} {a} {noun} to the list", "{Verb} the {noun} in the planner"),
        (
            S("title", "What to do", ('"{v}"', 'called "{v}"'), "title", required=True, alt=("name",)),
            S("due_date", "Due date as YYYY-MM-DD", ("due {v}", "by {v}"), "date", alt=("due",)),
            A("tags", "Tags", ("tagged {v}", "with tags {v}"), "tag", max_items=2),
            N("estimate_hours", "Estimated hours", ("taking {v} hours", "estimated at {v} hours"), 0.5, 40, 1, alt=("hours",)),
        ),
        lambda a, r, n: {"task_id": _code(r, "T"), "status": "created"},
        ("the {noun} \"{title}\" is {status}", "I added \"{title}\" as {task_id}"),
    ),
    Domain(
        "discount", ("calculate", "apply", "compute"), ("discount", "sale price", "markdown"),
        ("{Verb} the {noun} for a product", "{Verb} {a} {noun} on a price"),
        (
            N("original_price", "Price before discount", ("for a price of {v}", "on {v}"), 5, 5000, 2, required=True, alt=("price",)),
            I("discount_percent", "Discount in percent", ("at {v} percent off", "with {v} percent off"), 5, 80, required=True, alt=("percent",)),
            S("coupon_code", "Coupon code", ("with coupon {v}", "using code {v}"), "coupon", alt=("coupon",)),
        ),
        lambda a, r, n: {"final_price": _money(a["original_price"] * (1 - a["discount_percent"] / 100)),
                      "savings": _money(a["original_price"] * a["discount_percent"] / 100)},
        ("the price after the {noun} is {final_price}", "you save {savings} and pay {final_price}"),
    ),
    Domain(
        "places", ("find", "search", "locate"), ("nearby places", "attractions", "spots"),
        ("{Verb} {noun} of a kind in a city", "{Verb} the {noun} around a city"),
        (
            S("city", "City name", ("in {v}", "around {v}"), "city", required=True, alt=("location",)),
            E("category", "Kind of place", ("of type {v}", "like a {v}"), "place", required=True, alt=("type", "kind")),
            N("radius_km", "Search radius in km", ("within {v} km",), 0.5, 50, 1, alt=("radius",)),
            B("open_now", "Only places open now", ("that are open now",), ("even if closed", "open or closed")),
        ),
        lambda a, r, n: {"count": r.randint(1, 30), "top": r.choice(_PLACES)},
        ("there are {count} {category} places in {city}, {top} is the closest", "the closest {category} in {city} is at {top}"),
    ),
    Domain(
        "thermostat", ("set", "adjust", "change"), ("thermostat", "heating", "climate"),
        ("{Verb} the {noun} in a room", "{Verb} the {noun} to a temperature"),
        (
            E("room", "Room", ("in the {v}", "for the {v}"), "room", required=True, alt=("zone",)),
            N("degrees", "Target temperature", ("to {v} degrees",), 15, 30, 1, required=True, alt=("temperature", "target")),
            B("eco_mode", "Eco mode", ("in eco mode",), ("with eco mode off",)),
        ),
        lambda a, r, n: {"status": "updated", "previous": round(r.uniform(14, 28), 1)},
        ("the {noun} in the {room} is {status} to {degrees} degrees", "the {room} went from {previous} to {degrees} degrees"),
    ),
    Domain(
        "workout", ("log", "record", "save"), ("workout", "exercise", "training session"),
        ("{Verb} {a} {noun} in the fitness diary", "{Verb} the {noun} with its duration"),
        (
            E("activity", "Kind of exercise", ("of {v}", "for {v}"), "activity", required=True, alt=("sport",)),
            I("minutes", "Duration in minutes", ("lasting {v} minutes", "for {v} minutes"), 5, 180, required=True, alt=("duration",)),
            N("distance_km", "Distance in km", ("covering {v} km",), 0.5, 100, 1, alt=("distance",)),
            S("date", "Date as YYYY-MM-DD", ("on {v}",), "date"),
        ),
        lambda a, r, n: {"calories": r.randint(40, 1500), "streak_days": r.randint(1, 60)},
        ("your {activity} burned {calories} calories", "logged {minutes} minutes of {activity}, your streak is {streak_days} days"),
    ),
    Domain(
        "statistics", ("calculate", "compute", "find"), ("average", "median", "sum"),
        ("{Verb} the {noun} of some numbers", "{Verb} the {noun} of a list of numbers"),
        (
            A("numbers", "The numbers", ("of {v}", "for {v}"), None, required=True, alt=("values",),
              items="number", lo=1, hi=999, decimals=1, min_items=2, max_items=4),
            S("label", "Label for the result", ('labeled "{v}"',), "title"),
        ),
        lambda a, r, n: {"result": _statistic(n, a["numbers"])},
        ("the {noun} is {result}", "the {noun} of {numbers} is {result}"),
    ),
    Domain(
        "invoice", ("create", "generate", "issue"), ("invoice", "receipt", "statement"),
        ("{Verb} {a} {noun} for a customer", "{Verb} the {noun} to a customer"),
        (
            O("customer", "Who pays", ("for {name} at {email}", "to {name} ({email})", "for {name}", "to {name}"),
              (S("name", "Full name", (), "person", required=True), S("email", "Email address", (), "email", required=False)),
              required=True, alt=("client",)),
            N("amount", "Amount due", ("of {v}", "totaling {v}"), 10, 20000, 2, required=True, alt=("total",)),
            A("items", "Products billed", ("covering {v}",), "product"),
            S("due_date", "Due date as YYYY-MM-DD", ("due {v}",), "date", alt=("due",)),
        ),
        lambda a, r, n: {"invoice_number": _code(r, "INV"), "status": "issued"},
        ("{noun} {invoice_number} for {amount} is {status}", "I {status} {noun} {invoice_number} for {name}"),
    ),
)

# ---- phrasing -------------------------------------------------------------------------------
REQUEST_TEMPLATES = (
    "{Verb} the {noun} {args}.",
    "Please {verb} the {noun} {args}.",
    "Can you {verb} the {noun} {args}?",
    "Could you {verb} the {noun} {args} for me?",
    "I need to {verb} the {noun} {args}.",
    "I'd like you to {verb} the {noun} {args}.",
    "Hey, {verb} the {noun} {args}, please.",
    "Would you {verb} the {noun} {args}?",
    "Help me {verb} the {noun} {args}.",
    "Quick one: {verb} the {noun} {args}.",
    "I want to {verb} the {noun} {args}. Thanks!",
    "{Verb} the {noun} {args}, thank you.",
)
REQUEST_PREFIXES = (
    "Hi there.", "Good morning!", "Hello!", "I have a question.", "Okay, next thing.",
    "I'm planning my week.", "Hope you're well.", "One more request.",
)
REFUSALS = (
    "Sorry, I can't {verb} the {noun}: none of the available functions can do that.",
    "I'm unable to {verb} the {noun} because no available function supports it.",
    "None of my available functions can {verb} the {noun}, so I can't help with that.",
    "Unfortunately I have no function to {verb} the {noun}.",
    "I don't have a function that can {verb} the {noun}. Is there anything else I can help with?",
    "I can't {verb} the {noun} with the functions I have, sorry.",
)
REFUSALS_NO_FUNCTIONS = (
    "I have no functions available, so I can't {verb} the {noun}.",
    "Sorry, without any functions I am not able to {verb} the {noun}.",
    "I can't {verb} the {noun} because no functions are available to me.",
    "No functions are available right now, so I cannot {verb} the {noun}.",
    "Unfortunately I have no tools to {verb} the {noun}.",
)
SUMMARY_FRAMES = (
    "{Clause}.",
    "Here is what I found: {clause}.",
    "Done! {Clause}.",
    "I checked it for you: {clause}.",
    "According to the result, {clause}.",
    "All set. {Clause}.",
    "Thanks for waiting. {Clause}.",
)
CHITCHAT: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "greet": (
        ("Hi!", "Hello there.", "Good morning!", "Hey, how are you?", "Hi, nice to meet you.", "Good evening!"),
        ("Hello! How can I help you today?", "Hi! What can I do for you?", "Hello! I'm here to help."),
    ),
    "thanks": (
        ("Thanks!", "Thank you so much.", "Great, thanks for the help.", "Cheers, that was useful.", "Thanks a lot!"),
        ("You're welcome!", "Happy to help!", "Any time. Let me know if you need anything else."),
    ),
    "bye": (
        ("Bye!", "Goodbye.", "See you later.", "That's all for today.", "I'm done, bye."),
        ("Goodbye! Have a great day.", "See you soon!", "Bye! Take care."),
    ),
    "identity": (
        ("Who are you?", "What are you?", "Are you a robot?", "What is your name?", "Tell me about yourself."),
        ("I am Invoker, an assistant that can call functions to help you.",
         "I'm Invoker, a helpful assistant that uses functions when they fit your request."),
    ),
    "abilities": (
        ("What can you do?", "How can you help me?", "What functions do you have?", "Which tools can you use?", "What are you able to do?"),
        ("I can call these functions for you: {functions}.", "Right now I can use {functions}."),
    ),
    "joke": (
        ("Tell me a joke.", "Say something funny.", "Do you know any jokes?", "Make me laugh.", "I need a joke."),
        ("Why did the computer go to the doctor? It had a virus!",
         "I would tell you a UDP joke, but you might not get it.",
         "Why do programmers prefer dark mode? Because light attracts bugs."),
    ),
}
NO_FUNCTIONS_ABILITIES = (
    "I have no functions available right now, but I'm happy to chat.",
    "No functions are available at the moment, so I can only answer in text.",
)
SYSTEM_MESSAGES = (
    "You are a helpful assistant.",
    "Keep your answers short.",
    "Always answer politely.",
    "You are the assistant of a small travel agency.",
    "You help users of a personal productivity app.",
    "Answer in plain English.",
)


# --------------------------------------------------------------------------------------------
# Functions: built compositionally, split by name
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Prop:
    name: str  # the name this function gives the parameter
    spec: Param
    required: bool
    enum: tuple[str, ...] = ()


@dataclass(frozen=True)
class FunctionSpec:
    name: str
    split: str
    domain: Domain
    verb: str
    noun: str
    props: tuple[Prop, ...]
    schema: dict = field(hash=False, compare=False)


def _camel(word: str) -> str:
    return word[:1].upper() + word[1:]


def _fields(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


@lru_cache(maxsize=None)
def _name_splits() -> dict[str, tuple[str, Domain, str, str]]:
    names: dict[str, tuple[str, Domain, str, str]] = {}
    for domain in DOMAINS:
        combos = [(verb, noun) for verb in domain.verbs for noun in domain.nouns]
        combos.sort(key=lambda vn: (_crc("fn:" + _fname(*vn)), _fname(*vn)))
        for index, (verb, noun) in enumerate(combos):
            name = _fname(verb, noun)
            if name in names:
                raise AssertionError(f"function name {name!r} is built by two domains")
            names[name] = (_BUCKETS[index % len(_BUCKETS)], domain, verb, noun)
    return names


def _fname(verb: str, noun: str) -> str:
    return f"{verb}_{noun.replace(' ', '_')}"


def function_split(name: str) -> str | None:
    """The split a generated function name belongs to (``None`` if not a generated name)."""
    entry = _name_splits().get(name)
    return entry[0] if entry else None


@lru_cache(maxsize=None)
def function_specs(split: str) -> tuple[FunctionSpec, ...]:
    """Every function the generator may offer in ``split``, in a fixed order."""
    _check_split(split)
    specs = [_build_function(name, *entry) for name, entry in _name_splits().items() if entry[0] == split]
    return tuple(sorted(specs, key=lambda spec: spec.name))


def _build_function(name: str, split: str, domain: Domain, verb: str, noun: str) -> FunctionSpec:
    rng = random.Random("function:" + name)  # a function's schema depends on its name only
    props: list[Prop] = []
    for param in domain.params:
        if param.required is False and rng.random() < 0.3:
            continue  # this function does not offer the optional parameter at all
        required = param.required if param.required is not None else rng.random() < 0.5
        pname = rng.choice((param.name,) + param.alt) if param.alt and rng.random() < 0.4 else param.name
        enum: tuple[str, ...] = ()
        if param.type == "enum":
            part = pool_part(param.source, split)
            enum = tuple(rng.sample(part, min(len(part), rng.randint(3, 5))))
        props.append(Prop(pname, param, bool(required), enum))
    if rng.random() < 0.25:  # some functions list their parameters in another order
        rng.shuffle(props)
    properties = {prop.name: _prop_schema(prop, rng) for prop in props}
    parameters = {"type": "object", "properties": properties, "required": [p.name for p in props if p.required]}
    article = "an" if noun[0] in "aeiou" else "a"
    description = rng.choice(domain.descriptions).format(Verb=_camel(verb), verb=verb, noun=noun, a=article)
    schema = {"name": name, "description": description, "parameters": parameters}
    return FunctionSpec(name, split, domain, verb, noun, tuple(props), schema)


def _prop_schema(prop: Prop, rng: random.Random) -> dict:
    return _param_schema(prop.spec, rng, enum=prop.enum)


def _param_schema(param: Param, rng: random.Random, *, enum: tuple[str, ...] = ()) -> dict:
    kind = param.type
    if kind == "enum":
        schema: dict[str, Any] = {"type": "string", "enum": list(enum)}
    elif kind == "array":
        schema = {"type": "array", "items": {"type": "number" if param.items == "number" else "string"}}
    elif kind == "object":
        members = {m.name: _param_schema(m, rng) for m in param.members}
        schema = {"type": "object", "properties": members, "required": [m.name for m in param.members if m.required]}
    else:
        schema = {"type": kind}
    if rng.random() < 0.8:  # most parameters are described, some are not
        schema["description"] = param.desc
    return schema


# --------------------------------------------------------------------------------------------
# Values
# --------------------------------------------------------------------------------------------
def _draw_string(source: str, rng: random.Random, split: str) -> str:
    if source in POOLS:
        return rng.choice(pool_part(source, split))
    generate = GENERATORS[source]
    for _ in range(10_000):
        value = generate(rng)
        if value_split(value) == split:
            return value
    raise AssertionError(f"generator {source!r} yields no value for split {split}")


def _draw_number(lo: float, hi: float, decimals: int, rng: random.Random, split: str) -> int | float:
    if decimals == 0 and hi - lo <= 5000:
        return rng.choice(_ints_in_split(math.ceil(lo), math.floor(hi), split))
    if decimals == 0:
        for _ in range(10_000):
            value = rng.randint(math.ceil(lo), math.floor(hi))
            if value_split(value) == split:
                return value
    scale = 10**decimals
    for _ in range(10_000):
        units = rng.randint(int(lo * scale), int(hi * scale))
        if units % 10 == 0:  # keep exactly `decimals` digits so the text reads as json.dumps writes it
            continue
        value = round(units / scale, decimals)
        if value_split(value) == split:
            return value
    raise AssertionError(f"no number in {lo}..{hi} for split {split}")


def _draw_value(param: Param, rng: random.Random, split: str, enum: tuple[str, ...]) -> Any:
    kind = param.type
    if kind == "string":
        return _draw_string(param.source, rng, split)
    if kind == "enum":
        return rng.choice(enum)
    if kind == "integer":
        return _draw_number(param.lo, param.hi, 0, rng, split)
    if kind == "number":
        decimals = param.decimals if rng.random() < 0.85 else 0
        return _draw_number(param.lo, param.hi, decimals, rng, split)
    if kind == "boolean":
        return rng.random() < 0.5
    if kind == "array":
        count = rng.randint(param.min_items, param.max_items)
        items: list[Any] = []
        while len(items) < count:
            if param.items == "number":
                item = _draw_number(param.lo, param.hi, param.decimals if rng.random() < 0.5 else 0, rng, split)
            else:
                item = _draw_string(param.source, rng, split)
            if item not in items:
                items.append(item)
        return items
    if kind == "object":
        value = {}
        for member in param.members:
            if member.required or rng.random() < 0.5:
                value[member.name] = _draw_value(member, rng, split, ())
        return value
    raise AssertionError(f"unknown parameter type {kind}")


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        parts = [_text(item) for item in value]
        return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    return json.dumps(value)


def _phrase(param: Param, value: Any, rng: random.Random) -> str:
    if param.type == "boolean":
        return rng.choice(param.phrases if value else param.false_phrases)
    if param.type == "object":
        fitting = [t for t in param.phrases if _fields(t) == set(value)]
        return rng.choice(fitting).format(**{key: _text(item) for key, item in value.items()})
    return rng.choice(param.phrases).format(v=_text(value))


def _sample_call(spec: FunctionSpec, rng: random.Random) -> tuple[dict, dict, list[str]]:
    """-> (arguments in schema order, the same keyed by canonical parameter name, phrases)."""
    arguments: dict[str, Any] = {}
    canonical: dict[str, Any] = {}
    phrases: list[str] = []
    for prop in spec.props:
        if not prop.required and rng.random() >= OPTIONAL_ARG_RATE:
            continue
        param = prop.spec
        value = _draw_value(param, rng, spec.split, prop.enum)
        for _ in range(50):
            if param.differs_from is None or canonical.get(param.differs_from) != value:
                break
            value = _draw_value(param, rng, spec.split, prop.enum)
        else:
            continue  # could not differ (tiny enum): leave the optional value out
        arguments[prop.name] = value
        canonical[param.name] = value
        phrases.append(_phrase(param, value, rng))
    if rng.random() < 0.3:
        rng.shuffle(phrases)
    return arguments, canonical, phrases


def _request_text(spec: FunctionSpec, phrases: list[str], rng: random.Random) -> str:
    template = rng.choice(REQUEST_TEMPLATES)
    text = template.format(verb=spec.verb, Verb=_camel(spec.verb), noun=spec.noun, args=" ".join(phrases))
    text = " ".join(text.split()).replace(" .", ".").replace(" ?", "?").replace(" ,", ",")
    if rng.random() < 0.2:
        text = f"{rng.choice(REQUEST_PREFIXES)} {text}"
    return text


def _call_message(name: str, arguments: dict) -> dict:
    return {"role": "assistant", "content": None, "function_call": {"name": name, "arguments": json.dumps(arguments)}}


def _summary(spec: FunctionSpec, canonical: dict, result: dict, rng: random.Random) -> str:
    values = {"noun": spec.noun, "verb": spec.verb}
    for key, value in canonical.items():
        if isinstance(value, dict):
            values.update({k: _text(v) for k, v in value.items()})
        elif not isinstance(value, bool):
            values[key] = _text(value)
    values.update({key: _text(value) for key, value in result.items()})
    fitting = [c for c in spec.domain.clauses if _fields(c) <= set(values)]
    clause = rng.choice(fitting).format(**values)
    return rng.choice(SUMMARY_FRAMES).format(clause=clause, Clause=_camel(clause))


# --------------------------------------------------------------------------------------------
# Conversations
# --------------------------------------------------------------------------------------------
def generate_conversations(*, split: Split, n: int, seed: int = 0) -> list[dict]:
    """``n`` synthetic conversations for ``split``; the same ``(split, n, seed)`` gives the same list.

    Record ``i`` is drawn from its own ``random.Random`` seeded with ``(split, seed, i)``, so a longer
    list starts with the shorter one. Kinds: call ≈55 %, no_call ≈25 % (some with no functions at
    all), followup ≈20 %; about 15 % carry a system message.
    """
    _check_split(split)
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    return [_conversation(split, seed, index) for index in range(n)]


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}; got {split!r}")


def _conversation(split: str, seed: int, index: int) -> dict:
    rng = random.Random(f"invoker-synth:{split}:{seed}:{index}")
    roll = rng.random()
    (_, call_share), (_, no_call_share), _ = KIND_SHARES
    kind = "call" if roll < call_share else "no_call" if roll < call_share + no_call_share else "followup"
    specs = function_specs(split)
    system = rng.choice(SYSTEM_MESSAGES) if rng.random() < 0.15 else None
    greeting = rng.random() < 0.1

    prior: list[dict] = []
    if kind == "no_call":
        offered, turns = _no_call_turns(specs, rng)
        # an answer that lists the functions must keep them all; a refusal keeps at least one
        keep = {spec.name for spec in offered} if _lists_functions(turns[-1]["content"], offered) else set()
        min_functions = 1 if offered else 0
    else:
        target = rng.choice(specs)
        offered = _with_distractors(target, specs, rng, rng.randint(0, 2))
        if rng.random() < 0.08:
            prior = _prior_exchange(offered, target, rng)
        arguments, canonical, phrases = _sample_call(target, rng)
        turns = [{"role": "user", "content": _request_text(target, phrases, rng)}, _call_message(target.name, arguments)]
        if kind == "followup":
            result = target.domain.result(canonical, rng, target.noun)
            turns.append({"role": "function", "name": target.name, "content": json.dumps(result)})
            turns.append({"role": "assistant", "content": _summary(target, canonical, result, rng)})
        keep = {target.name}
        min_functions = 1
    if greeting and not prior:
        asks, answers = CHITCHAT["greet"]
        prior = [{"role": "user", "content": rng.choice(asks)}, {"role": "assistant", "content": rng.choice(answers)}]

    record = {"id": f"{split}-{index:05d}", "split": split, "kind": kind, "functions": [], "messages": []}
    _fit_budget(record, offered, keep, min_functions, system, prior, turns)
    record["functions"] = copy.deepcopy(record["functions"])  # never hand out the cached schemas
    return record


def _lists_functions(answer: str, offered: list[FunctionSpec]) -> bool:
    return any(spec.name in answer for spec in offered)


def _with_distractors(target: FunctionSpec, specs: tuple[FunctionSpec, ...], rng: random.Random, count: int) -> list[FunctionSpec]:
    chosen = [target]
    domains = {target.domain.key}
    for spec in rng.sample(specs, len(specs)):
        if len(chosen) > count:
            break
        if spec.domain.key not in domains:
            chosen.append(spec)
            domains.add(spec.domain.key)
    rng.shuffle(chosen)
    return chosen


def _no_call_turns(specs: tuple[FunctionSpec, ...], rng: random.Random) -> tuple[list[FunctionSpec], list[dict]]:
    roll = rng.random()
    offered: list[FunctionSpec] = []
    if roll < 0.75:  # functions are offered, none fits
        first = rng.choice(specs)
        offered = _with_distractors(first, specs, rng, rng.randint(0, 2))
    if roll < 0.55 or 0.75 <= roll < 0.9:  # a request for something no offered function does
        taken = {spec.domain.key for spec in offered}
        wanted = rng.choice([spec for spec in specs if spec.domain.key not in taken])
        _, _, phrases = _sample_call(wanted, rng)
        refusals = REFUSALS if offered else REFUSALS_NO_FUNCTIONS
        answer = rng.choice(refusals).format(verb=wanted.verb, noun=wanted.noun)
        return offered, [{"role": "user", "content": _request_text(wanted, phrases, rng)}, {"role": "assistant", "content": answer}]
    intent = rng.choice(sorted(CHITCHAT))
    asks, answers = CHITCHAT[intent]
    if intent == "abilities":
        names = [spec.name for spec in offered]
        answer = rng.choice(answers).format(functions=_text(names)) if names else rng.choice(NO_FUNCTIONS_ABILITIES)
    else:
        answer = rng.choice(answers)
    return offered, [{"role": "user", "content": rng.choice(asks)}, {"role": "assistant", "content": answer}]


def _prior_exchange(offered: list[FunctionSpec], target: FunctionSpec, rng: random.Random) -> list[dict]:
    """A finished call to another offered function before the request that matters."""
    others = [spec for spec in offered if spec is not target]
    if not others:
        return []
    spec = rng.choice(others)
    arguments, canonical, phrases = _sample_call(spec, rng)
    result = spec.domain.result(canonical, rng, spec.noun)
    return [
        {"role": "user", "content": _request_text(spec, phrases, rng)},
        _call_message(spec.name, arguments),
        {"role": "function", "name": spec.name, "content": json.dumps(result)},
        {"role": "assistant", "content": _summary(spec, canonical, result, rng)},
    ]


def _fit_budget(
    record: dict, offered: list[FunctionSpec], keep: set[str], min_functions: int,
    system: str | None, prior: list[dict], turns: list[dict],
) -> None:
    """Fill ``record``; while its prompt is too long drop distractors, the system message, then
    the earlier exchange (``prior``)."""
    functions = list(offered)
    while True:
        needed = keep | {m["function_call"]["name"] for m in prior if m.get("function_call")}
        record["functions"] = [spec.schema for spec in functions]
        record["messages"] = ([{"role": "system", "content": system}] if system else []) + prior + turns
        if len(approximate_prompt(record)) <= MAX_PROMPT_CHARS:
            return
        droppable = [spec for spec in functions if spec.name not in needed]
        if droppable and len(functions) > min_functions:
            functions.remove(droppable[-1])
        elif system:
            system = None
        elif prior:
            prior = []
        else:
            return


# --------------------------------------------------------------------------------------------
# Measuring: an approximation of Invoker's prompt rendering (invoker.prompt is authoritative)
# --------------------------------------------------------------------------------------------
def approximate_prompt(record: dict, *, include_target: bool = False) -> str:
    """Render ``record`` roughly as Invoker's prompt does, to measure lengths without invoker.prompt.

    Header with one ```json block per function (or ``None``), the fixed system text, an optional
    ``SYSTEM:`` line, then ``USER:``/``ASSISTANT:``/``FUNCTION:`` turns and a final ``ASSISTANT:``.
    With ``include_target`` the target turn and ``</s>`` are appended (a whole training sequence).
    """
    parts = ["Available Functions:"]
    parts += [f"\n```json\n{json.dumps(function)}\n```" for function in record["functions"]] or ["\nNone"]
    parts.append("\n\n" + INVOKER_SYSTEM_TEXT)
    messages = record["messages"]
    history, target = messages[:-1], messages[-1]
    for message in history:
        parts.append("\n" + _approximate_turn(message))
    parts.append("\nASSISTANT:")
    if include_target:
        parts.append(" " + _approximate_turn(target).removeprefix("ASSISTANT: ") + "</s>")
    return "".join(parts)


def _approximate_turn(message: dict) -> str:
    role = message["role"]
    if role == "assistant":
        body = {"content": message.get("content"), "function_call": message.get("function_call")}
        return f"ASSISTANT: ```{json.dumps(body)}```"
    if role == "function":
        return f"FUNCTION: ```{json.dumps({'name': message.get('name'), 'content': message.get('content')})}```"
    return f"{role.upper()}: {message.get('content')}"
