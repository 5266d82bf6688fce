"""Made-up function and parameter names for training records, so that copying from the prompt pays.

The generator names functions ``<verb>_<noun>`` after words the request repeats, and a model can
learn those few hundred names by heart. Renaming them to invented words (``velmora_drask``,
``kindoTrel``) in some records forces the model to choose by the *description* and to copy the
name and the parameter names from the offered schema, which is what it must do on functions it
has never seen. A record is renamed consistently: schemas, ``required``, every ``function_call``
(its name and its argument keys), function results, and function names quoted in the
assistant's text.

The generator also gives each function one fixed schema (which optional parameters it offers, in
which order), so a model can learn a name's parameter list by heart and fill a parameter the
request never mentioned. ``vary_schemas`` gives each record its own version of every offered
schema: optional parameters no call in the record uses are dropped at random and the parameters
are reordered, so only the schema in the prompt says what a call may carry.
"""

from __future__ import annotations

import copy
import json
import random
import re

_ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr", "gr", "kl", "pl", "st", "tr", "sk", "sh", "ch")
_VOWELS = ("a", "e", "i", "o", "u", "ai", "ou", "ea")
_CODAS = ("", "", "", "n", "r", "l", "s", "k", "m", "x", "sh", "nd")
_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


def made_up_word(rng: random.Random, *, syllables: tuple[int, int] = (2, 3)) -> str:
    """A pronounceable invented word such as ``velmora``: no meaning to memorise."""
    count = rng.randint(*syllables)
    return "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) for _ in range(count)) + rng.choice(_CODAS)


def made_up_identifier(rng: random.Random) -> str:
    """An invented identifier in one of the styles real APIs use: snake_case, camelCase, kebab-case."""
    words = [made_up_word(rng) for _ in range(rng.choice((1, 2, 2, 3)))]
    style = rng.random()
    if style < 0.6:
        name = "_".join(words)
    elif style < 0.85:
        name = words[0] + "".join(word.capitalize() for word in words[1:])
    else:
        name = "-".join(words)
    if rng.random() < 0.1:
        name += str(rng.randint(2, 9))
    return name[:64]


def rename_record(record: dict, rng: random.Random, *, function_rate: float, parameter_rate: float) -> dict:
    """A copy of ``record`` with, at rate ``function_rate``, every function renamed to a made-up name
    and, at rate ``parameter_rate`` per function, its top-level parameters that carry a description
    or an enum renamed too."""
    record = copy.deepcopy(record)
    functions = record.get("functions") or []
    taken = {function["name"] for function in functions}
    names: dict[str, str] = {}
    if functions and rng.random() < function_rate:
        for function in functions:
            names[function["name"]] = _fresh(rng, taken)
    parameters: dict[str, dict[str, str]] = {}
    for function in functions:
        properties = function.get("parameters", {}).get("properties") or {}
        if properties and rng.random() < parameter_rate:
            used = set(properties)
            parameters[function["name"]] = {
                key: _fresh(rng, used) if _self_describing(schema) else key for key, schema in properties.items()
            }
    for function in functions:
        _rename_schema(function, parameters.get(function["name"], {}))
        function["name"] = names.get(function["name"], function["name"])
    for message in record["messages"]:
        _rename_message(message, names, parameters)
    return record


def vary_schemas(record: dict, rng: random.Random, *, rate: float, drop: float = 0.5) -> dict:
    """A copy of ``record`` in which, at rate ``rate``, every offered function loses each optional parameter
    that no call in the record uses (each with probability ``drop``) and has its parameters shuffled."""
    record = copy.deepcopy(record)
    functions = record.get("functions") or []
    if not functions or rng.random() >= rate:
        return record
    used: dict[str, set[str]] = {}
    for message in record["messages"]:
        call = message.get("function_call")
        if call:
            used.setdefault(call["name"], set()).update(json.loads(call["arguments"]))
    for function in functions:
        parameters = function.get("parameters") or {}
        properties = parameters.get("properties") or {}
        required = set(parameters.get("required") or ())
        keep = [key for key in properties
                if key in required or key in used.get(function["name"], ()) or rng.random() >= drop]
        rng.shuffle(keep)
        if properties:
            parameters["properties"] = {key: properties[key] for key in keep}
        if "required" in parameters:
            parameters["required"] = [key for key in keep if key in required]
    return record


def _self_describing(schema: dict) -> bool:
    """A parameter whose schema says what it is for without its name (a renamed one must stay learnable)."""
    return bool(schema.get("description") or schema.get("enum"))


def _fresh(rng: random.Random, taken: set[str]) -> str:
    while True:
        name = made_up_identifier(rng)
        if name not in taken and _NAME.match(name):
            taken.add(name)
            return name


def _rename_schema(function: dict, mapping: dict[str, str]) -> None:
    if not mapping:
        return
    parameters = function["parameters"]
    parameters["properties"] = {mapping[key]: value for key, value in parameters["properties"].items()}
    if "required" in parameters:
        parameters["required"] = [mapping[key] for key in parameters["required"]]


def _rename_message(message: dict, names: dict[str, str], parameters: dict[str, dict[str, str]]) -> None:
    call = message.get("function_call")
    if call:
        mapping = parameters.get(call["name"], {})
        if mapping:
            arguments = json.loads(call["arguments"])
            call["arguments"] = json.dumps({mapping.get(key, key): value for key, value in arguments.items()})
        call["name"] = names.get(call["name"], call["name"])
    if message.get("role") == "function" and message.get("name") in names:
        message["name"] = names[message["name"]]
    if message.get("role") == "assistant" and isinstance(message.get("content"), str):
        for old, new in names.items():
            message["content"] = re.sub(rf"\b{re.escape(old)}\b", new, message["content"])
