"""Function-calling metrics: score one parsed prediction against its record, then summarize.

Pure functions, no model. The definitions are written out in docs/EVAL.md; in short:

- ``name_accuracy`` (all cases): the right kind of answer — the expected function called, or text
  when text was expected.
- ``call_accuracy`` (cases expecting a call): the right function with matching arguments
  (``arguments_match``; for a record with ``answers``, BFCL's rules: ``pipelines.bfcl.answers_match``).
- ``json_valid_rate`` / ``schema_valid_rate`` (cases where the model attempted a call): its
  arguments are a JSON object / validate against the function's JSON Schema.
- ``relevance_accuracy`` (``no_call`` cases): the model answered in text.
- ``output_valid_rate`` (all cases): the output parsed at all.

A rate whose denominator is empty is ``None``, never 0 or 1. ``summarize`` adds each rate's 95 % Wilson
interval and, for the call and name accuracies, every case's outcome (``outcome_string``), so two evals of
the same cases can be compared case by case (``paired_outcomes``; the gate's McNemar test).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any

from invoker.files import sha256_text
from invoker.functions import validate_arguments
from pipelines.bfcl import answers_match
from pipelines.stats import wilson_interval

RATE_KEYS = (
    "name_accuracy",
    "call_accuracy",
    "json_valid_rate",
    "schema_valid_rate",
    "relevance_accuracy",
    "output_valid_rate",
)


@dataclass(frozen=True)
class CaseScore:
    """One case's verdicts; ``None`` means the case does not count for that metric."""

    id: str
    kind: str  # the record's kind: call | no_call | followup
    expected: str  # "function_call" | "content"
    expected_name: str | None
    predicted: str  # the parsed kind: function_call | content | invalid
    predicted_name: str | None
    name_correct: bool
    call_correct: bool | None  # cases expecting a call
    json_valid: bool | None  # cases where a call was attempted
    schema_valid: bool | None  # cases where a call was attempted
    relevance_correct: bool | None  # no_call cases
    output_valid: bool

    def to_dict(self) -> dict:
        return asdict(self)


def score_case(record: dict, parsed: Any) -> CaseScore:
    """Score ``parsed`` (an ``invoker.parse.ParsedCompletion``) against the record's last message."""
    target = record["messages"][-1]
    expected_call = target.get("function_call")
    functions = {fn["name"]: fn for fn in record.get("functions") or []}
    well_formed_call = parsed.kind == "function_call"
    attempted = well_formed_call or (parsed.kind == "invalid" and (parsed.name is not None or parsed.arguments is not None))
    predicted_args = _json_object(parsed.arguments) if attempted else None

    if expected_call is not None:
        same_function = well_formed_call and parsed.name == expected_call["name"]
        name_correct = same_function
        schema = (functions.get(expected_call["name"]) or {}).get("parameters")
        call_correct = (
            same_function
            and predicted_args is not None
            and (
                arguments_match(_json_object(expected_call["arguments"]) or {}, predicted_args, schema=schema)
                if record.get("answers") is None
                # a record listing accepted values per argument (BFCL suites) is scored by BFCL's rules
                else answers_match(predicted_args, answers=record["answers"], schema=schema or {})
            )
        )
    else:
        name_correct = parsed.kind == "content"
        call_correct = None

    schema_valid = None
    if attempted:
        function = functions.get(parsed.name)
        schema_valid = predicted_args is not None and function is not None and not validate_arguments(predicted_args, function=function)

    return CaseScore(
        id=str(record.get("id", "")),
        kind=record.get("kind", "call" if expected_call is not None else "no_call"),
        expected="function_call" if expected_call is not None else "content",
        expected_name=expected_call["name"] if expected_call is not None else None,
        predicted=parsed.kind,
        predicted_name=parsed.name,
        name_correct=name_correct,
        call_correct=call_correct,
        json_valid=(predicted_args is not None) if attempted else None,
        schema_valid=schema_valid,
        relevance_correct=(parsed.kind == "content") if record.get("kind") == "no_call" else None,
        output_valid=parsed.kind != "invalid",
    )


RATE_FIELDS = dict(zip(RATE_KEYS, ("name_correct", "call_correct", "json_valid", "schema_valid", "relevance_correct", "output_valid")))
PAIRED_KEYS = ("call_accuracy", "name_accuracy")  # per-case outcomes kept for the paired test against fp16


def summarize(scores: list[CaseScore]) -> dict:
    """Rates over the cases each metric applies to, with their 95 % Wilson intervals, the denominators,
    per-kind counts and, for ``PAIRED_KEYS``, every case's outcome (``outcome_string``)."""
    summary: dict[str, Any] = {"n": len(scores)}
    intervals = {}
    for key, field in RATE_FIELDS.items():
        verdicts = [getattr(s, field) for s in scores if getattr(s, field) is not None]
        summary[key] = sum(verdicts) / len(verdicts) if verdicts else None
        interval = wilson_interval(sum(verdicts), len(verdicts))
        intervals[key] = [round(bound, 4) for bound in interval] if interval else None
    summary["intervals"] = intervals
    summary["outcomes"] = {"cases_sha256": sha256_text("\n".join(s.id for s in scores)),
                           **{key: outcome_string([getattr(s, RATE_FIELDS[key]) for s in scores]) for key in PAIRED_KEYS}}
    summary["n_expected_calls"] = sum(s.expected == "function_call" for s in scores)
    summary["n_attempted_calls"] = sum(s.json_valid is not None for s in scores)
    summary["n_no_call"] = sum(s.relevance_correct is not None for s in scores)
    summary["kinds"] = dict(sorted(Counter(s.kind for s in scores).items()))
    summary["predicted"] = dict(sorted(Counter(s.predicted for s in scores).items()))
    return summary


def outcome_string(verdicts: list[bool | None]) -> str:
    """One character per case: ``1`` right, ``0`` wrong, ``-`` the metric does not apply."""
    return "".join("-" if v is None else "1" if v else "0" for v in verdicts)


def paired_outcomes(variant: dict, reference: dict, key: str) -> tuple[list[bool], list[bool]] | None:
    """(reference, variant) outcomes of ``key`` on the cases both were scored on, from two eval summaries;
    None when either lacks outcomes or they were not scored on the same cases."""
    mine, theirs = variant.get("outcomes") or {}, reference.get("outcomes") or {}
    if not mine.get(key) or mine.get("cases_sha256") != theirs.get("cases_sha256") or len(mine[key]) != len(theirs.get(key) or ""):
        return None
    pairs = [(r == "1", v == "1") for r, v in zip(theirs[key], mine[key]) if r != "-" and v != "-"]
    return [r for r, _ in pairs], [v for _, v in pairs]


def arguments_match(expected: dict, predicted: dict, *, schema: dict | None) -> bool:
    """Every expected key present with an equal value; an extra key only if optional and at its default.

    ``schema`` is the JSON Schema of the object (a function's ``parameters``); nested objects are
    compared by the same rule with their own sub-schema.
    """
    schema = schema or {}
    properties = schema.get("properties") or {}
    required = set(schema.get("required") or [])
    for key, value in expected.items():
        if key not in predicted or not values_equal(value, predicted[key], schema=properties.get(key)):
            return False
    for key in predicted.keys() - expected.keys():
        prop = properties.get(key)
        if prop is None or key in required or "default" not in prop:
            return False
        if not values_equal(prop["default"], predicted[key], schema=prop):
            return False
    return True


def values_equal(expected: Any, predicted: Any, *, schema: dict | None = None) -> bool:
    """Type-aware JSON equality: 3 == 3.0, but True is not 1; strings exact; arrays in order."""
    if isinstance(expected, bool) or isinstance(predicted, bool):
        return isinstance(expected, bool) and isinstance(predicted, bool) and expected == predicted
    if isinstance(expected, (int, float)) or isinstance(predicted, (int, float)):
        return isinstance(expected, (int, float)) and isinstance(predicted, (int, float)) and expected == predicted
    if isinstance(expected, list) or isinstance(predicted, list):
        if not (isinstance(expected, list) and isinstance(predicted, list) and len(expected) == len(predicted)):
            return False
        items = (schema or {}).get("items")
        return all(values_equal(e, p, schema=items if isinstance(items, dict) else None) for e, p in zip(expected, predicted))
    if isinstance(expected, dict) or isinstance(predicted, dict):
        return isinstance(expected, dict) and isinstance(predicted, dict) and arguments_match(expected, predicted, schema=schema)
    return type(expected) is type(predicted) and expected == predicted  # str, None


def _json_object(arguments: Any) -> dict | None:
    """Arguments (a JSON string, or already an object) as a dict, or None if they are not an object."""
    if isinstance(arguments, dict):
        return arguments
    if not isinstance(arguments, str):
        return None
    try:
        value = json.loads(arguments)
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None
