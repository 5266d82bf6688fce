"""Synthetic function-calling conversations for training, calibrating and evaluating Invoker models.

The bundled model, small and fine-tuned on a CPU, has to learn from this data to call functions, so the
data is rich in *shape* but learnable by *copying*:

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

What the records are made of is declared elsewhere: the domains (verbs, nouns, parameters, results)
in ``invoker.data.domains``, every word and phrase in ``vocabulary.toml`` (read by
``invoker.data.vocabulary``, which also splits the values). This module composes them.
"""

from __future__ import annotations

import copy
import json
import math
import random
import string
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Literal

from invoker.data.domains import DOMAINS, Domain, Param
from invoker.data.vocabulary import (
    BUCKETS,
    CHITCHAT,
    GENERATORS,
    PHRASES,
    POOLS,
    crc,
    ints_in_split,
    pool_part,
    value_key,
    value_split,
)
from invoker.prompt import SYSTEM_PROMPT

__all__ = ["SPLITS", "approximate_prompt", "function_specs", "function_split", "generate_conversations",
           "pool_part", "value_key", "value_split"]

Split = Literal["train", "calibration", "eval"]
SPLITS: tuple[str, ...] = ("train", "calibration", "eval")
KIND_SHARES = (("call", 0.55), ("no_call", 0.25), ("followup", 0.20))
MAX_PROMPT_CHARS = 1800
OPTIONAL_ARG_RATE = 0.35  # chance that a call mentions (and so passes) an optional parameter
REQUEST_TEMPLATES = PHRASES["request_templates"]
REQUEST_PREFIXES = PHRASES["request_prefixes"]
REFUSALS = PHRASES["refusals"]
REFUSALS_NO_FUNCTIONS = PHRASES["refusals_no_functions"]
SUMMARY_FRAMES = PHRASES["summary_frames"]
NO_FUNCTIONS_ABILITIES = PHRASES["no_functions_abilities"]
SYSTEM_MESSAGES = PHRASES["system_messages"]


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
        combos.sort(key=lambda vn: (crc("fn:" + _fname(*vn)), _fname(*vn)))
        for index, (verb, noun) in enumerate(combos):
            name = _fname(verb, noun)
            if name in names:
                raise AssertionError(f"function name {name!r} is built by two domains")
            names[name] = (BUCKETS[index % len(BUCKETS)], domain, verb, noun)
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
        return rng.choice(ints_in_split(math.ceil(lo), math.floor(hi), split))
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
    parts.append("\n\n" + SYSTEM_PROMPT)
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

