"""Metrics on hand-made predictions: each rule of docs/EVAL.md, one at a time."""

from __future__ import annotations

import json

import pytest

from invoker.parse import ParsedCompletion
from pipelines.metrics import RATE_KEYS, arguments_match, score_case, summarize, values_equal

GET_TIME = {
    "name": "get_time",
    "description": "Get the current time",
    "parameters": {
        "type": "object",
        "properties": {
            "location": {"type": "string"},
            "format": {"type": "string", "enum": ["12-hour", "24-hour"], "default": "24-hour"},
            "offset": {"type": "number"},
            "utc": {"type": "boolean"},
            "tags": {"type": "array", "items": {"type": "string"}},
            "place": {
                "type": "object",
                "properties": {"city": {"type": "string"}, "zoom": {"type": "integer", "default": 1}},
                "required": ["city"],
            },
        },
        "required": ["location"],
    },
}
SEND = {"name": "send_email", "parameters": {"type": "object", "properties": {"to": {"type": "string"}}, "required": ["to"]}}


def record(kind="call", *, call=None, text=None, functions=(GET_TIME, SEND)):
    target = {"role": "assistant", "content": text, "function_call": call} if call else {"role": "assistant", "content": text}
    return {"id": "r1", "split": "eval", "kind": kind, "functions": list(functions),
            "messages": [{"role": "user", "content": "what time is it?"}, target]}


def call_record(arguments: dict, name="get_time"):
    return record(call={"name": name, "arguments": json.dumps(arguments)})


def called(name, arguments):
    args = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return ParsedCompletion(kind="function_call", name=name, arguments=args, raw="...")


TEXT = ParsedCompletion(kind="content", content="It is noon.", raw="...")
GARBAGE = ParsedCompletion(kind="invalid", error="no_json_block", detail="no block", raw="blah")


# --- call_accuracy -----------------------------------------------------------------------------


def test_exact_call_is_right():
    s = score_case(call_record({"location": "Paris"}), called("get_time", {"location": "Paris"}))
    assert (s.name_correct, s.call_correct, s.json_valid, s.schema_valid, s.output_valid) == (True, True, True, True, True)
    assert s.relevance_correct is None


def test_numbers_compare_numerically():
    s = score_case(call_record({"location": "Paris", "offset": 3}), called("get_time", {"location": "Paris", "offset": 3.0}))
    assert s.call_correct


def test_bools_are_not_numbers():
    s = score_case(call_record({"location": "Paris", "utc": True}), called("get_time", {"location": "Paris", "utc": 1}))
    assert s.name_correct and not s.call_correct
    assert not values_equal(1, True) and not values_equal(False, 0) and values_equal(True, True)


def test_strings_are_exact():
    s = score_case(call_record({"location": "Paris"}), called("get_time", {"location": "paris"}))
    assert not s.call_correct
    assert not values_equal("3", 3)


def test_arrays_compare_in_order():
    rec = call_record({"location": "Paris", "tags": ["a", "b"]})
    assert score_case(rec, called("get_time", {"location": "Paris", "tags": ["a", "b"]})).call_correct
    assert not score_case(rec, called("get_time", {"location": "Paris", "tags": ["b", "a"]})).call_correct
    assert not score_case(rec, called("get_time", {"location": "Paris", "tags": ["a"]})).call_correct


def test_extra_optional_key_at_its_default_is_fine():
    s = score_case(call_record({"location": "Paris"}), called("get_time", {"location": "Paris", "format": "24-hour"}))
    assert s.call_correct


def test_extra_optional_key_off_its_default_is_wrong():
    s = score_case(call_record({"location": "Paris"}), called("get_time", {"location": "Paris", "format": "12-hour"}))
    assert not s.call_correct and s.schema_valid


def test_extra_optional_key_without_a_default_is_wrong():
    assert not score_case(call_record({"location": "Paris"}), called("get_time", {"location": "Paris", "utc": False})).call_correct


def test_unknown_extra_key_is_wrong():
    s = score_case(call_record({"location": "Paris"}), called("get_time", {"location": "Paris", "mood": "happy"}))
    assert not s.call_correct
    assert s.schema_valid  # the schema does not forbid extra properties; the metric does


def test_missing_expected_key_is_wrong():
    s = score_case(call_record({"location": "Paris", "format": "12-hour"}), called("get_time", {"location": "Paris"}))
    assert not s.call_correct and s.schema_valid


def test_missing_required_key_fails_the_schema():
    s = score_case(call_record({"location": "Paris"}), called("get_time", {"format": "12-hour"}))
    assert (s.name_correct, s.call_correct, s.json_valid, s.schema_valid) == (True, False, True, False)


def test_wrong_type_fails_the_schema():
    s = score_case(call_record({"location": "Paris"}), called("get_time", {"location": 7}))
    assert (s.call_correct, s.schema_valid) == (False, False)


def test_nested_objects_use_the_same_rule():
    rec = call_record({"location": "x", "place": {"city": "Paris"}})
    assert score_case(rec, called("get_time", {"location": "x", "place": {"city": "Paris", "zoom": 1.0}})).call_correct
    assert not score_case(rec, called("get_time", {"location": "x", "place": {"city": "Paris", "zoom": 2}})).call_correct
    assert not score_case(rec, called("get_time", {"location": "x", "place": {}})).call_correct


def test_wrong_function():
    s = score_case(call_record({"location": "Paris"}), called("send_email", {"to": "Paris"}))
    assert (s.name_correct, s.call_correct, s.json_valid, s.schema_valid) == (False, False, True, True)


def test_text_instead_of_a_call():
    s = score_case(call_record({"location": "Paris"}), TEXT)
    assert (s.name_correct, s.call_correct, s.json_valid, s.schema_valid, s.output_valid) == (False, False, None, None, True)


def test_invalid_arguments_json_is_an_attempt_with_invalid_json():
    parsed = ParsedCompletion(kind="invalid", name="get_time", error="invalid_arguments_json", detail="x", raw="...")
    s = score_case(call_record({"location": "Paris"}), parsed)
    assert (s.name_correct, s.call_correct, s.json_valid, s.schema_valid, s.output_valid) == (False, False, False, False, False)


def test_unknown_function_counts_as_an_attempt():
    parsed = ParsedCompletion(kind="invalid", name="get_tiem", arguments='{"location": "Paris"}', error="unknown_function", raw="...")
    s = score_case(call_record({"location": "Paris"}), parsed)
    assert (s.name_correct, s.json_valid, s.schema_valid) == (False, True, False)


def test_garbage_is_no_attempt():
    s = score_case(call_record({"location": "Paris"}), GARBAGE)
    assert (s.name_correct, s.call_correct, s.json_valid, s.schema_valid, s.output_valid) == (False, False, None, None, False)


# --- text expected -----------------------------------------------------------------------------


def test_no_call_answered_in_text_is_relevant():
    s = score_case(record("no_call", text="I cannot do that."), TEXT)
    assert (s.name_correct, s.call_correct, s.relevance_correct, s.json_valid) == (True, None, True, None)


def test_no_call_answered_with_a_call_is_irrelevant():
    s = score_case(record("no_call", text="Sorry."), called("get_time", {"location": "Paris"}))
    assert (s.name_correct, s.relevance_correct, s.json_valid, s.schema_valid) == (False, False, True, True)


def test_followup_text_counts_for_names_not_relevance():
    s = score_case(record("followup", text="It is 08:00 AM."), TEXT)
    assert (s.name_correct, s.relevance_correct) == (True, None)


# --- summarize ---------------------------------------------------------------------------------


def test_summary_rates_and_denominators():
    scores = [
        score_case(call_record({"location": "Paris"}), called("get_time", {"location": "Paris"})),
        score_case(call_record({"location": "Paris"}), called("get_time", {"location": 3})),
        score_case(call_record({"location": "Paris"}), GARBAGE),
        score_case(record("no_call", text="No."), TEXT),
    ]
    summary = summarize(scores)
    assert summary["n"] == 4
    assert summary["name_accuracy"] == 3 / 4
    assert summary["call_accuracy"] == 1 / 3
    assert summary["json_valid_rate"] == 1.0
    assert summary["schema_valid_rate"] == 1 / 2
    assert summary["relevance_accuracy"] == 1.0
    assert summary["output_valid_rate"] == 3 / 4
    assert (summary["n_expected_calls"], summary["n_attempted_calls"], summary["n_no_call"]) == (3, 2, 1)
    assert summary["kinds"] == {"call": 3, "no_call": 1}


def test_empty_denominators_are_none():
    summary = summarize([score_case(record("no_call", text="No."), TEXT)])
    assert summary["call_accuracy"] is None and summary["json_valid_rate"] is None and summary["schema_valid_rate"] is None
    empty = summarize([])
    assert empty["n"] == 0 and all(empty[key] is None for key in RATE_KEYS)


@pytest.mark.parametrize(
    "expected, predicted, ok",
    [({}, {}, True), ({"a": None}, {"a": None}, True), ({"a": None}, {"a": 0}, False), ({"a": 1}, {"a": "1"}, False)],
)
def test_arguments_match_edge_cases(expected, predicted, ok):
    assert arguments_match(expected, predicted, schema=None) is ok
