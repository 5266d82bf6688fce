"""Training-record augmentation (invoker.data.augment): made-up names consistent everywhere they occur,
and per-record schemas that still hold every call."""

from __future__ import annotations

import json
import random

from invoker.data.augment import made_up_identifier, rename_record, vary_schemas
from invoker.data.synth import generate_conversations
from invoker.functions import validate_arguments, validate_functions

RECORDS = generate_conversations(split="train", n=1000, seed=3)


def test_renamed_calls_still_fit_their_renamed_schemas():
    rng = random.Random(0)
    renamed_functions = renamed_parameters = 0
    for original in RECORDS:
        record = rename_record(original, rng, function_rate=1.0, parameter_rate=1.0)
        functions = {f["name"]: f for f in validate_functions(record["functions"])}
        before = {f["name"] for f in original["functions"]}
        renamed_functions += bool(functions) and not (set(functions) & before)
        for message in record["messages"]:
            call = message.get("function_call")
            if call:
                assert call["name"] in functions
                arguments = json.loads(call["arguments"])
                assert validate_arguments(arguments, function=functions[call["name"]]) == []
                renamed_parameters += any(key not in json.dumps(original) for key in arguments)
            if message["role"] == "function":
                assert message["name"] in functions
    assert renamed_functions > 800 and renamed_parameters > 300


def test_rates_zero_change_nothing_and_the_input_is_never_modified():
    snapshot = json.dumps(RECORDS)
    rng = random.Random(1)
    assert [rename_record(r, rng, function_rate=0.0, parameter_rate=0.0) for r in RECORDS] == RECORDS
    [rename_record(r, rng, function_rate=1.0, parameter_rate=1.0) for r in RECORDS]
    assert json.dumps(RECORDS) == snapshot


def test_names_quoted_in_answers_follow_the_rename():
    rng = random.Random(2)
    listing = [r for r in RECORDS if r["kind"] == "no_call" and any(f["name"] in r["messages"][-1]["content"] for f in r["functions"])]
    assert listing, "the generator lists function names in some answers"
    for original in listing:
        record = rename_record(original, rng, function_rate=1.0, parameter_rate=0.0)
        answer = record["messages"][-1]["content"]
        assert not any(f["name"] in answer for f in original["functions"])
        assert any(f["name"] in answer for f in record["functions"])


def test_parameters_without_a_description_keep_their_names():
    rng = random.Random(4)
    for original in RECORDS:
        record = rename_record(original, rng, function_rate=0.0, parameter_rate=1.0)
        for before, after in zip(original["functions"], record["functions"]):
            for (old_key, schema), new_key in zip(before["parameters"]["properties"].items(), after["parameters"]["properties"]):
                if not (schema.get("description") or schema.get("enum")):
                    assert new_key == old_key


def test_made_up_identifiers_are_valid_function_names():
    rng = random.Random(5)
    names = {made_up_identifier(rng) for _ in range(500)}
    assert len(names) > 450
    for name in names:
        validate_functions([{"name": name, "parameters": {"type": "object", "properties": {}}}])


def test_varied_schemas_keep_required_and_used_parameters_and_drop_or_reorder_the_rest():
    rng = random.Random(6)
    dropped = reordered = 0
    for original in RECORDS:
        record = vary_schemas(original, rng, rate=1.0)
        functions = {f["name"]: f for f in validate_functions(record["functions"])}
        for message in record["messages"]:
            call = message.get("function_call")
            if call:  # every call still fits its (smaller) schema
                assert validate_arguments(json.loads(call["arguments"]), function=functions[call["name"]]) == []
        for before, after in zip(original["functions"], record["functions"]):
            old, new = before["parameters"]["properties"], after["parameters"]["properties"]
            assert set(new) <= set(old) and all(new[key] == old[key] for key in new)
            assert set(before["parameters"].get("required", ())) <= set(new)
            assert after["parameters"].get("required", []) == [k for k in new if k in before["parameters"].get("required", ())]
            dropped += len(old) - len(new)
            reordered += list(new) != [k for k in old if k in new]
        assert record["messages"] == original["messages"]
    assert dropped > 300 and reordered > 300


def test_varied_schemas_at_rate_zero_change_nothing_and_never_modify_the_input():
    snapshot = json.dumps(RECORDS)
    rng = random.Random(7)
    assert [vary_schemas(r, rng, rate=0.0) for r in RECORDS] == RECORDS
    [vary_schemas(r, rng, rate=1.0) for r in RECORDS]
    assert json.dumps(RECORDS) == snapshot
