"""The generator's domains: what each kind of function does, its parameters, how users ask, what it returns.

A ``Domain`` is declared once and yields many functions: every verb × noun (``fetch_forecast``,
``check_weather``), split between train, calibration and eval by name (``invoker.data.synth``). Its
parameters are declared with the constructors below — one per JSON type — whose ``phrases`` say how a
user mentions the value (``"{v}"`` is the value's text). ``result`` makes the function's answer from
the canonical arguments; ``clauses`` are what the assistant's summary says about it. The words the
domains draw from are data (``vocabulary.toml``).
"""

from __future__ import annotations

import random
import string
from collections.abc import Callable
from dataclasses import dataclass

from invoker.data.vocabulary import GENERATORS, PARTS, RESULT_WORDS


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


def string_param(name, desc, phrases, source, *, required=False, alt=(), differs_from=None) -> Param:
    return Param(name, "string", desc, tuple(phrases), source, required=required, alt=tuple(alt),
                 differs_from=differs_from)


def enum_param(name, desc, phrases, pool, *, required=False, alt=(), differs_from=None) -> Param:
    return Param(name, "enum", desc, tuple(phrases), pool, required=required, alt=tuple(alt), differs_from=differs_from)


def integer_param(name, desc, phrases, lo, hi, *, required=False, alt=()) -> Param:
    return Param(name, "integer", desc, tuple(phrases), lo=lo, hi=hi, required=required, alt=tuple(alt))


def number_param(name, desc, phrases, lo, hi, decimals, *, required=False, alt=()) -> Param:
    return Param(name, "number", desc, tuple(phrases), lo=lo, hi=hi, decimals=decimals, required=required,
                 alt=tuple(alt))


def boolean_param(name, desc, true_phrases, false_phrases, *, alt=()) -> Param:
    return Param(name, "boolean", desc, tuple(true_phrases), false_phrases=tuple(false_phrases), alt=tuple(alt))


def array_param(name, desc, phrases, source, *, required=False, alt=(), items="string", lo=0, hi=0, decimals=0,
                min_items=1, max_items=3) -> Param:
    return Param(
        name, "array", desc, tuple(phrases), source, lo=lo, hi=hi, decimals=decimals, required=required,
        alt=tuple(alt), items=items, min_items=min_items, max_items=max_items,
    )


def object_param(name, desc, phrases, members, *, required=False, alt=()) -> Param:
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


def _code(rng: random.Random, prefix: str) -> str:
    return f"{prefix}{rng.randint(1000, 9999)}"


def _money(x: float) -> float:
    return round(x + 0.0, 2)


def _made_up_sentence(rng: random.Random) -> str:
    syllables = PARTS["syllables"]
    words = ("".join(rng.choice(syllables) for _ in range(rng.randint(2, 3))) for _ in range(rng.randint(2, 4)))
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
            string_param("city", "City name", ("in {v}", "for {v}"), "city", required=True, alt=("location", "place")),
            integer_param("days", "Number of days", ("for the next {v} days", "over {v} days"), 2, 40,
                          alt=("num_days",)),
            boolean_param("include_wind", "Include wind speed", ("with wind speed", "including the wind"),
                          ("without wind speed", "excluding the wind")),
        ),
        lambda a, r, n: {"temperature": r.randint(-9, 38), "condition": r.choice(RESULT_WORDS["conditions"])},
        ("the {noun} in {city} is {condition} at {temperature} degrees",
         "it is {temperature} degrees and {condition} in {city}"),
    ),
    Domain(
        "currency", ("convert", "exchange", "change"), ("currency", "money", "cash"),
        ("{Verb} the {noun} from one currency to another", "{Verb} an amount of {noun} between currencies"),
        (
            number_param("amount", "Amount to convert", ("{v}", "of {v}", "worth {v}"), 5, 5000, 2, required=True,
                         alt=("value",)),
            string_param("from_currency", "Currency code to convert from", ("from {v}",), "currency", required=True,
                         alt=("source_currency", "base")),
            string_param("to_currency", "Currency code to convert to", ("to {v}", "into {v}"), "currency",
                         required=True, alt=("target_currency", "target"), differs_from="from_currency"),
        ),
        lambda a, r, n: (lambda rate: {"converted_amount": _money(a["amount"] * rate), "rate": rate})(
            round(r.uniform(0.05, 9.0), 3)),
        ("{amount} {from_currency} is {converted_amount} {to_currency}",
         "at a rate of {rate} you get {converted_amount} {to_currency}"),
    ),
    Domain(
        "restaurant", ("book", "reserve", "request"), ("table", "restaurant", "dinner"),
        ("{Verb} {a} {noun} at a restaurant", "{Verb} the {noun} for a group"),
        (
            string_param("restaurant", "Restaurant name", ("at {v}",), "restaurant", required=True, alt=("venue",)),
            integer_param("guests", "Number of guests", ("for {v} people", "for {v} guests"), 2, 40, required=True,
                          alt=("party_size", "people")),
            string_param("date", "Date as YYYY-MM-DD", ("on {v}",), "date", required=None),
            string_param("time", "Time as HH:MM", ("at {v}",), "time"),
            boolean_param("outdoor", "Outdoor seating", ("with outdoor seating", "on the terrace"),
                          ("with indoor seating", "inside")),
        ),
        lambda a, r, n: {"confirmation": _code(r, "RES"), "status": "confirmed"},
        ("your {noun} at {restaurant} for {guests} is {status} with code {confirmation}",
         "the booking code is {confirmation} for {guests} guests at {restaurant}"),
    ),
    Domain(
        "email", ("send", "write", "draft"), ("email", "message", "note"),
        ("{Verb} {a} {noun} to someone", "{Verb} the {noun} to a recipient"),
        (
            string_param("to", "Recipient email address", ("to {v}",), "email", required=True,
                         alt=("recipient", "address")),
            string_param("subject", "Subject line", ('with the subject "{v}"', 'titled "{v}"'), "title", required=True,
                         alt=("title",)),
            array_param("cc", "Addresses to copy", ("with {v} in copy", "copying {v}"), "email", max_items=2),
            boolean_param("urgent", "Mark as urgent", ("marked as urgent", "as high priority"),
                          ("as not urgent", "with normal priority")),
        ),
        lambda a, r, n: {"status": "sent", "message_id": _code(r, "MSG")},
        ("the {noun} to {to} was {status} as {message_id}", "your {noun} \"{subject}\" has been {status}"),
    ),
    Domain(
        "calendar", ("create", "schedule", "add"), ("event", "meeting", "appointment"),
        ("{Verb} {a} {noun} in the calendar", "{Verb} a calendar {noun}"),
        (
            string_param("title", "Title of the entry", ('called "{v}"', 'named "{v}"'), "title", required=True,
                         alt=("name", "summary")),
            string_param("date", "Date as YYYY-MM-DD", ("on {v}",), "date", required=True),
            string_param("start_time", "Start time as HH:MM", ("at {v}", "starting at {v}"), "time", alt=("time",)),
            integer_param("duration_minutes", "Length in minutes", ("for {v} minutes", "lasting {v} minutes"), 15, 240,
                          alt=("duration",)),
            array_param("attendees", "People to invite", ("with {v}", "inviting {v}"), "person"),
            object_param("location", "Where it happens", ("at {venue} in {city}", "in {venue}, {city}"),
                         (string_param("venue", "Room or hall", (), "venue", required=True),
                          string_param("city", "City", (), "city", required=True))),
        ),
        lambda a, r, n: {"event_id": _code(r, "EV"), "status": "scheduled"},
        ("\"{title}\" is {status} on {date}", "the {noun} \"{title}\" on {date} has the id {event_id}"),
    ),
    Domain(
        "translation", ("translate", "interpret", "localize"), ("text", "sentence", "phrase"),
        ("{Verb} the {noun} into another language", "{Verb} {a} {noun} between languages"),
        (
            string_param("text", "Text to translate", ('"{v}"',), "sentence", required=True, alt=("source_text",)),
            enum_param("target_language", "Language to translate into", ("into {v}", "to {v}"), "language",
                       required=True, alt=("to_language", "target")),
            enum_param("source_language", "Language of the text", ("from {v}",), "language", alt=("from_language",),
                       differs_from="target_language"),
            boolean_param("formal", "Use a formal tone", ("in a formal tone", "formally"),
                          ("in a casual tone", "informally")),
        ),
        lambda a, r, n: {"translation": _made_up_sentence(r)},
        ("in {target_language} \"{text}\" is \"{translation}\"",
         "the translation into {target_language} is \"{translation}\""),
    ),
    Domain(
        "tip", ("calculate", "compute", "estimate"), ("tip", "gratuity", "service charge"),
        ("{Verb} the {noun} for a bill", "{Verb} the {noun} on a restaurant bill"),
        (
            number_param("bill_amount", "Bill total", ("for a bill of {v}", "on a {v} bill"), 10, 900, 2,
                         required=True, alt=("bill", "total")),
            integer_param("tip_percentage", "Tip in percent", ("at {v} percent", "with {v} percent"), 5, 35,
                          required=True, alt=("percent", "percentage")),
            integer_param("split_between", "Number of people paying",
                          ("split between {v} people", "shared by {v} people"), 2, 30, alt=("people",)),
        ),
        lambda a, r, n: {"tip_amount": _money(a["bill_amount"] * a["tip_percentage"] / 100),
                      "total_amount": _money(a["bill_amount"] * (1 + a["tip_percentage"] / 100))},
        ("the {noun} is {tip_amount} and the total comes to {total_amount}",
         "you should leave {tip_amount}, making {total_amount} in total"),
    ),
    Domain(
        "recipes", ("search", "find", "suggest"), ("recipes", "dishes", "meals"),
        ("{Verb} {noun} by ingredients", "{Verb} the {noun} that use given ingredients"),
        (
            array_param("ingredients", "Ingredients to use", ("with {v}", "using {v}"), "ingredient", required=True,
                        alt=("items",)),
            enum_param("cuisine", "Kind of food", ("in {v} style", "like {v}"), "cuisine", alt=("style",)),
            integer_param("max_minutes", "Maximum cooking time", ("under {v} minutes", "ready in {v} minutes"), 10,
                          120, alt=("max_time",)),
            boolean_param("vegetarian", "Only vegetarian", ("that are vegetarian", "without meat"),
                          ("with meat", "that are not vegetarian")),
        ),
        lambda a, r, n: {"count": r.randint(2, 40), "top_recipe": r.choice(RESULT_WORDS["recipes"])},
        ("I found {count} {noun}, the best is {top_recipe}",
         "there are {count} {noun} and {top_recipe} is the top pick"),
    ),
    Domain(
        "music", ("play", "queue", "stream"), ("song", "track", "album"),
        ("{Verb} {a} {noun} by title", "{Verb} the {noun} on the speaker"),
        (
            string_param("title", "Title to play", ('"{v}"', 'called "{v}"'), "song", required=True,
                         alt=("name", "song_title")),
            string_param("artist", "Artist name", ("by {v}",), "person"),
            enum_param("genre", "Music genre", ("in the {v} genre",), "genre"),
            boolean_param("shuffle", "Shuffle playback", ("on shuffle", "with shuffle on"),
                          ("without shuffle", "in order")),
            integer_param("volume", "Volume from 10 to 100", ("at volume {v}",), 10, 100),
        ),
        lambda a, r, n: {"status": "playing", "duration_seconds": r.randint(120, 420)},
        ("\"{title}\" is now {status}", "now {status}: \"{title}\", {duration_seconds} seconds long"),
    ),
    Domain(
        "alarm", ("set", "create", "program"), ("alarm", "reminder", "alert"),
        ("{Verb} {a} {noun} for a time", "{Verb} the {noun} at a given time"),
        (
            string_param("time", "Time as HH:MM", ("for {v}", "at {v}"), "time", required=True, alt=("at",)),
            string_param("label", "Label to show", ('labeled "{v}"', 'with the label "{v}"'), "title"),
            integer_param("snooze_minutes", "Snooze length in minutes",
                          ("with {v} minutes of snooze", "snoozing {v} minutes"), 2, 30, alt=("snooze",)),
            boolean_param("vibrate", "Vibrate", ("with vibration",), ("without vibration", "silently")),
        ),
        lambda a, r, n: {"alarm_id": _code(r, "AL"), "status": "set"},
        ("the {noun} for {time} is {status}", "your {noun} is {status} for {time} with id {alarm_id}"),
    ),
    Domain(
        "food_order", ("order", "buy", "request"), ("pizza", "takeout", "lunch"),
        ("{Verb} {a} {noun} for delivery", "{Verb} {noun} from a local shop"),
        (
            array_param("toppings", "Toppings", ("with {v}", "topped with {v}"), "ingredient", required=True,
                        alt=("items",)),
            integer_param("quantity", "How many", ("quantity {v}", "in a batch of {v}"), 2, 30, alt=("count",)),
            object_param("delivery_address", "Where to deliver",
                         ("delivered to {street}, {city}", "to {street} in {city}"),
                         (string_param("street", "Street address", (), "street", required=True),
                          string_param("city", "City", (), "city", required=True)),
                         alt=("address",)),
            boolean_param("cutlery", "Include cutlery", ("with cutlery", "including cutlery"),
                          ("without cutlery", "with no cutlery")),
        ),
        lambda a, r, n: {"order_id": _code(r, "ORD"), "eta_minutes": r.randint(15, 70)},
        ("your {noun} order {order_id} arrives in {eta_minutes} minutes",
         "order {order_id} is placed and will arrive in {eta_minutes} minutes"),
    ),
    Domain(
        "stocks", ("get", "check", "track"), ("stock price", "share price", "stock quote"),
        ("{Verb} the {noun} of a company", "{Verb} the latest {noun}"),
        (
            string_param("symbol", "Ticker symbol", ("for {v}", "of {v}"), "ticker", required=True, alt=("ticker",)),
            enum_param("exchange", "Stock exchange", ("on the {v} exchange", "on {v}"), "exchange", alt=("market",)),
            boolean_param("include_history", "Include price history", ("with price history", "including history"),
                          ("without history", "with no history")),
        ),
        lambda a, r, n: {"price": _money(r.uniform(5, 900)), "change_percent": round(r.uniform(-6, 6), 2)},
        ("{symbol} trades at {price}, a change of {change_percent} percent", "the {noun} of {symbol} is {price}"),
    ),
    Domain(
        "flights", ("search", "find", "book"), ("flights", "flight", "airfare"),
        ("{Verb} {noun} between two cities", "{Verb} the {noun} for a trip"),
        (
            string_param("origin", "Departure city", ("from {v}",), "city", required=True,
                         alt=("departure", "from_city")),
            string_param("destination", "Arrival city", ("to {v}",), "city", required=True, alt=("arrival", "to_city"),
                         differs_from="origin"),
            string_param("date", "Departure date as YYYY-MM-DD", ("on {v}", "departing {v}"), "date", required=True,
                         alt=("departure_date",)),
            integer_param("passengers", "Number of passengers", ("for {v} passengers",), 1, 40, alt=("travelers",)),
            boolean_param("nonstop", "Only nonstop flights", ("nonstop only", "with no layovers"),
                          ("with layovers allowed", "allowing stops")),
        ),
        lambda a, r, n: {"airline": r.choice(RESULT_WORDS["airlines"]), "price": _money(r.uniform(60, 1500)),
                         "flight_number": _code(r, "FL")},
        ("{airline} flies from {origin} to {destination} for {price}",
         "the best option is {flight_number} with {airline} at {price}"),
    ),
    Domain(
        "hotel", ("book", "reserve", "find"), ("hotel", "room", "stay"),
        ("{Verb} {a} {noun} in a city", "{Verb} the {noun} for some nights"),
        (
            string_param("city", "City name", ("in {v}",), "city", required=True, alt=("location",)),
            string_param("check_in", "Arrival date as YYYY-MM-DD", ("from {v}", "checking in {v}"), "date",
                         required=True, alt=("arrival_date",)),
            integer_param("nights", "Number of nights", ("for {v} nights",), 1, 30, required=True, alt=("num_nights",)),
            integer_param("guests", "Number of guests", ("for {v} guests",), 1, 40),
            number_param("max_price", "Highest price per night", ("under {v} per night", "below {v} a night"), 40, 900,
                         0, alt=("budget",)),
            boolean_param("breakfast", "Breakfast included", ("with breakfast", "breakfast included"),
                          ("without breakfast", "room only")),
        ),
        lambda a, r, n: {"hotel": r.choice(RESULT_WORDS["hotels"]), "price_per_night": r.randint(45, 600)},
        ("{hotel} in {city} costs {price_per_night} per night",
         "I found {hotel} at {price_per_night} a night for {nights} nights"),
    ),
    Domain(
        "loan", ("calculate", "compute", "estimate"), ("loan payment", "mortgage payment", "installment"),
        ("{Verb} the monthly {noun} of a loan", "{Verb} the {noun} for a loan"),
        (
            number_param("principal", "Loan amount", ("on a loan of {v}", "for {v} borrowed"), 1000, 900000, 0,
                         required=True, alt=("amount", "loan_amount")),
            number_param("annual_rate", "Yearly interest rate in percent",
                         ("at {v} percent interest", "with a rate of {v} percent"),
              0.5, 15, 2, required=True, alt=("interest_rate", "rate")),
            integer_param("years", "Loan term in years", ("over {v} years", "for {v} years"), 1, 40, required=True,
                          alt=("term_years",)),
        ),
        lambda a, r, n: (lambda m: {"monthly_payment": m, "total_paid": _money(m * 12 * a["years"])})(
            _money(a["principal"] * (a["annual_rate"] / 1200)
                   / (1 - (1 + a["annual_rate"] / 1200) ** (-12 * a["years"])))),
        ("the {noun} is {monthly_payment} per month",
         "you would pay {monthly_payment} a month and {total_paid} in total"),
    ),
    Domain(
        "parcel", ("track", "locate", "check"), ("package", "parcel", "shipment"),
        ("{Verb} {a} {noun} by tracking number", "{Verb} where the {noun} is"),
        (
            string_param("tracking_number", "Tracking number", ("{v}", "with number {v}", "number {v}"), "tracking",
                         required=True, alt=("tracking_id", "code")),
            enum_param("carrier", "Shipping company", ("shipped with {v}", "sent via {v}"), "carrier"),
            boolean_param("notify", "Send status notifications", ("and notify me of changes", "with notifications"),
                          ("without notifications",)),
        ),
        lambda a, r, n: {"status": r.choice(RESULT_WORDS["parcel_states"]),
                         "estimated_delivery": GENERATORS["date"](r)},
        ("the {noun} {tracking_number} is {status}",
         "{tracking_number} is {status} and should arrive on {estimated_delivery}"),
    ),
    Domain(
        "news", ("get", "fetch", "read"), ("news", "headlines", "articles"),
        ("{Verb} the latest {noun} on a topic", "{Verb} {noun} about a topic"),
        (
            enum_param("topic", "Topic", ("about {v}", "on {v}"), "topic", required=True, alt=("category", "subject")),
            enum_param("language", "Language of the articles", ("in {v}",), "language"),
            integer_param("limit", "Maximum number of items", ("limited to {v} items", "top {v}"), 2, 50,
                          alt=("count", "max_results")),
        ),
        lambda a, r, n: {"count": r.randint(3, 60),
                         "top_headline": f"New {a['topic']} report: {r.choice(PARTS['song_a'])} {r.choice(PARTS['song_b'])}"},
        ("there are {count} {noun} on {topic}, led by \"{top_headline}\"",
         "the top story on {topic} is \"{top_headline}\""),
    ),
    Domain(
        "cinema", ("buy", "book", "reserve"), ("movie tickets", "cinema tickets", "film tickets"),
        ("{Verb} {noun} for a film", "{Verb} the {noun} for a showing"),
        (
            string_param("movie", "Film title", ('for "{v}"', 'to see "{v}"'), "movie", required=True,
                         alt=("title", "film")),
            integer_param("tickets", "Number of tickets", ("for {v} people", "for a group of {v}"), 1, 40,
                          required=True, alt=("quantity", "count")),
            string_param("city", "City", ("in {v}",), "city"),
            string_param("showtime", "Show time as HH:MM", ("at {v}",), "time"),
            array_param("seats", "Seat codes", ("in seats {v}",), "seat"),
        ),
        lambda a, r, n: {"booking_code": _code(r, "TIX"), "total_price": _money(a["tickets"] * r.uniform(6, 18))},
        ("{tickets} tickets for \"{movie}\" cost {total_price}",
         "your {noun} for \"{movie}\" are booked with code {booking_code}"),
    ),
    Domain(
        "password", ("generate", "create", "make"), ("password", "passphrase", "pin code"),
        ("{Verb} a random {noun}", "{Verb} a secure {noun}"),
        (
            integer_param("length", "Number of characters", ("with {v} characters", "{v} characters long"), 6, 64,
                          required=True, alt=("size", "num_characters")),
            boolean_param("include_symbols", "Use symbols", ("with symbols", "including symbols"),
                          ("without symbols", "with no symbols")),
            boolean_param("include_numbers", "Use digits", ("with numbers", "including digits"),
                          ("without numbers", "with no digits")),
        ),
        lambda a, r, n: {"password": _made_up_password(r, a["length"]),
                         "strength": r.choice(("strong", "very strong", "medium"))},
        ("your new {noun} is {password}", "here is a {strength} {noun}: {password}"),
    ),
    Domain(
        "distance", ("convert", "change", "express"), ("distance", "length", "measurement"),
        ("{Verb} {a} {noun} between units", "{Verb} the {noun} from one unit to another"),
        (
            number_param("value", "Number to convert", ("of {v}", "{v}"), 0.5, 9000, 1, required=True, alt=("amount",)),
            enum_param("from_unit", "Unit to convert from", ("from {v}", "given in {v}"), "unit", required=True,
                       alt=("source_unit",)),
            enum_param("to_unit", "Unit to convert to", ("to {v}", "into {v}"), "unit", required=True,
                       alt=("target_unit",), differs_from="from_unit"),
        ),
        lambda a, r, n: {"result": round(a["value"] * r.uniform(0.01, 50), 3)},
        ("{value} {from_unit} is {result} {to_unit}", "that {noun} equals {result} {to_unit}"),
    ),
    Domain(
        "taxi", ("book", "call", "order"), ("taxi", "ride", "cab"),
        ("{Verb} {a} {noun} between two addresses", "{Verb} the {noun} for a pickup"),
        (
            string_param("pickup", "Pickup address", ("from {v}", "picking me up at {v}"), "street", required=True,
                         alt=("pickup_address", "start")),
            string_param("destination", "Drop-off address", ("to {v}", "going to {v}"), "street", required=True,
                         alt=("dropoff", "end"), differs_from="pickup"),
            integer_param("passengers", "Number of passengers", ("for {v} passengers",), 1, 40),
            string_param("pickup_time", "Pickup time as HH:MM", ("at {v}",), "time", alt=("time",)),
        ),
        lambda a, r, n: {"driver": GENERATORS["person"](r), "eta_minutes": r.randint(2, 25)},
        ("{driver} will pick you up in {eta_minutes} minutes",
         "your {noun} with {driver} arrives in {eta_minutes} minutes"),
    ),
    Domain(
        "tasks", ("add", "create", "log"), ("task", "todo item", "chore"),
        ("{Verb} {a} {noun} to the list", "{Verb} the {noun} in the planner"),
        (
            string_param("title", "What to do", ('"{v}"', 'called "{v}"'), "title", required=True, alt=("name",)),
            string_param("due_date", "Due date as YYYY-MM-DD", ("due {v}", "by {v}"), "date", alt=("due",)),
            array_param("tags", "Tags", ("tagged {v}", "with tags {v}"), "tag", max_items=2),
            number_param("estimate_hours", "Estimated hours", ("taking {v} hours", "estimated at {v} hours"), 0.5, 40,
                         1, alt=("hours",)),
        ),
        lambda a, r, n: {"task_id": _code(r, "T"), "status": "created"},
        ("the {noun} \"{title}\" is {status}", "I added \"{title}\" as {task_id}"),
    ),
    Domain(
        "discount", ("calculate", "apply", "compute"), ("discount", "sale price", "markdown"),
        ("{Verb} the {noun} for a product", "{Verb} {a} {noun} on a price"),
        (
            number_param("original_price", "Price before discount", ("for a price of {v}", "on {v}"), 5, 5000, 2,
                         required=True, alt=("price",)),
            integer_param("discount_percent", "Discount in percent", ("at {v} percent off", "with {v} percent off"), 5,
                          80, required=True, alt=("percent",)),
            string_param("coupon_code", "Coupon code", ("with coupon {v}", "using code {v}"), "coupon",
                         alt=("coupon",)),
        ),
        lambda a, r, n: {"final_price": _money(a["original_price"] * (1 - a["discount_percent"] / 100)),
                      "savings": _money(a["original_price"] * a["discount_percent"] / 100)},
        ("the price after the {noun} is {final_price}", "you save {savings} and pay {final_price}"),
    ),
    Domain(
        "places", ("find", "search", "locate"), ("nearby places", "attractions", "spots"),
        ("{Verb} {noun} of a kind in a city", "{Verb} the {noun} around a city"),
        (
            string_param("city", "City name", ("in {v}", "around {v}"), "city", required=True, alt=("location",)),
            enum_param("category", "Kind of place", ("of type {v}", "like a {v}"), "place", required=True,
                       alt=("type", "kind")),
            number_param("radius_km", "Search radius in km", ("within {v} km",), 0.5, 50, 1, alt=("radius",)),
            boolean_param("open_now", "Only places open now", ("that are open now",),
                          ("even if closed", "open or closed")),
        ),
        lambda a, r, n: {"count": r.randint(1, 30), "top": r.choice(RESULT_WORDS["places"])},
        ("there are {count} {category} places in {city}, {top} is the closest",
         "the closest {category} in {city} is at {top}"),
    ),
    Domain(
        "thermostat", ("set", "adjust", "change"), ("thermostat", "heating", "climate"),
        ("{Verb} the {noun} in a room", "{Verb} the {noun} to a temperature"),
        (
            enum_param("room", "Room", ("in the {v}", "for the {v}"), "room", required=True, alt=("zone",)),
            number_param("degrees", "Target temperature", ("to {v} degrees",), 15, 30, 1, required=True,
                         alt=("temperature", "target")),
            boolean_param("eco_mode", "Eco mode", ("in eco mode",), ("with eco mode off",)),
        ),
        lambda a, r, n: {"status": "updated", "previous": round(r.uniform(14, 28), 1)},
        ("the {noun} in the {room} is {status} to {degrees} degrees",
         "the {room} went from {previous} to {degrees} degrees"),
    ),
    Domain(
        "workout", ("log", "record", "save"), ("workout", "exercise", "training session"),
        ("{Verb} {a} {noun} in the fitness diary", "{Verb} the {noun} with its duration"),
        (
            enum_param("activity", "Kind of exercise", ("of {v}", "for {v}"), "activity", required=True,
                       alt=("sport",)),
            integer_param("minutes", "Duration in minutes", ("lasting {v} minutes", "for {v} minutes"), 5, 180,
                          required=True, alt=("duration",)),
            number_param("distance_km", "Distance in km", ("covering {v} km",), 0.5, 100, 1, alt=("distance",)),
            string_param("date", "Date as YYYY-MM-DD", ("on {v}",), "date"),
        ),
        lambda a, r, n: {"calories": r.randint(40, 1500), "streak_days": r.randint(1, 60)},
        ("your {activity} burned {calories} calories",
         "logged {minutes} minutes of {activity}, your streak is {streak_days} days"),
    ),
    Domain(
        "statistics", ("calculate", "compute", "find"), ("average", "median", "sum"),
        ("{Verb} the {noun} of some numbers", "{Verb} the {noun} of a list of numbers"),
        (
            array_param("numbers", "The numbers", ("of {v}", "for {v}"), None, required=True, alt=("values",),
                        items="number", lo=1, hi=999, decimals=1, min_items=2, max_items=4),
            string_param("label", "Label for the result", ('labeled "{v}"',), "title"),
        ),
        lambda a, r, n: {"result": _statistic(n, a["numbers"])},
        ("the {noun} is {result}", "the {noun} of {numbers} is {result}"),
    ),
    Domain(
        "invoice", ("create", "generate", "issue"), ("invoice", "receipt", "statement"),
        ("{Verb} {a} {noun} for a customer", "{Verb} the {noun} to a customer"),
        (
            object_param("customer", "Who pays",
                         ("for {name} at {email}", "to {name} ({email})", "for {name}", "to {name}"),
                         (string_param("name", "Full name", (), "person", required=True),
                          string_param("email", "Email address", (), "email", required=False)),
                         required=True, alt=("client",)),
            number_param("amount", "Amount due", ("of {v}", "totaling {v}"), 10, 20000, 2, required=True,
                         alt=("total",)),
            array_param("items", "Products billed", ("covering {v}",), "product"),
            string_param("due_date", "Due date as YYYY-MM-DD", ("due {v}",), "date", alt=("due",)),
        ),
        lambda a, r, n: {"invoice_number": _code(r, "INV"), "status": "issued"},
        ("{noun} {invoice_number} for {amount} is {status}", "I {status} {noun} {invoice_number} for {name}"),
    ),
)
