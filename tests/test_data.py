"""The synthetic conversation generator and the conversation loaders (invoker/data)."""

from __future__ import annotations

import json
import re
import sys
import types
from collections import Counter
from functools import lru_cache
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from invoker.data import DataError, load_conversations, read_jsonl, write_jsonl
from invoker.data import synth
from invoker.data.synth import SPLITS, approximate_prompt, function_specs, generate_conversations, value_key, value_split

NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
KINDS = {"call", "no_call", "followup"}


@lru_cache(maxsize=None)
def _records(split: str, n: int = 600) -> tuple[dict, ...]:
    return tuple(generate_conversations(split=split, n=n))


@lru_cache(maxsize=None)
def _validator(name: str, parameters_json: str) -> Draft202012Validator:
    return Draft202012Validator(json.loads(parameters_json))


def _leaves(value):
    if isinstance(value, dict):
        for item in value.values():
            yield from _leaves(item)
    elif isinstance(value, list):
        for item in value:
            yield from _leaves(item)
    else:
        yield value


def _calls(record):
    """(function_call message, the user text it answers) for every call in the record."""
    for index, message in enumerate(record["messages"]):
        if message.get("function_call"):
            user = [m for m in record["messages"][:index] if m["role"] == "user"][-1]["content"]
            yield message["function_call"], user


# ---- generator: determinism and shape -------------------------------------------------------------
def test_generation_is_deterministic_and_prefix_stable():
    first = generate_conversations(split="eval", n=50, seed=3)
    assert first == generate_conversations(split="eval", n=50, seed=3)
    assert first[:20] == generate_conversations(split="eval", n=20, seed=3)
    assert first != generate_conversations(split="eval", n=50, seed=4)
    assert json.loads(json.dumps(first)) == first  # JSON-serializable as is


def test_records_follow_the_contract():
    for split in SPLITS:
        for index, record in enumerate(_records(split)):
            assert record["id"] == f"{split}-{index:05d}"
            assert record["split"] == split and record["kind"] in KINDS
            assert set(record) == {"id", "split", "kind", "functions", "messages"}
            roles = [m["role"] for m in record["messages"]]
            assert "system" not in roles[1:]
            target = record["messages"][-1]
            assert target["role"] == "assistant"
            if record["kind"] == "call":
                assert target["content"] is None and set(target["function_call"]) == {"name", "arguments"}
            else:
                assert isinstance(target["content"], str) and target["content"] and "function_call" not in target
            if record["kind"] == "followup":
                assert roles[-4:] == ["user", "assistant", "function", "assistant"]
                assert record["messages"][-2]["name"] == record["messages"][-3]["function_call"]["name"]
                json.loads(record["messages"][-2]["content"])


def test_kind_proportions_and_variety():
    records = generate_conversations(split="train", n=1000)
    kinds = Counter(record["kind"] for record in records)
    assert 0.50 <= kinds["call"] / 1000 <= 0.60
    assert 0.20 <= kinds["no_call"] / 1000 <= 0.30
    assert 0.15 <= kinds["followup"] / 1000 <= 0.25
    assert 20 <= sum(not record["functions"] for record in records) <= 150  # some offer no function
    assert 80 <= sum(record["messages"][0]["role"] == "system" for record in records) <= 250
    assert Counter(len(record["functions"]) for record in records if record["kind"] == "call").keys() >= {1, 2, 3}
    assert sum(len(record["messages"]) > 4 for record in records) > 30  # some multi-turn context
    assert len(synth.REQUEST_TEMPLATES) >= 5 and len(synth.REFUSALS) >= 5 and len(synth.SUMMARY_FRAMES) >= 5
    assert all(len(asks) >= 5 for asks, _ in synth.CHITCHAT.values())
    calls = [r for r in records if r["kind"] == "call"]
    assert len({r["messages"][-2]["content"] for r in calls}) == len(calls)  # no repeated request


def test_prompts_stay_compact():
    lengths = [len(approximate_prompt(record)) for split in SPLITS for record in _records(split)]
    assert max(lengths) <= synth.MAX_PROMPT_CHARS
    assert sum(lengths) / len(lengths) < 1400


# ---- generator: schemas and arguments -------------------------------------------------------------
def test_every_function_is_a_valid_json_schema_object_with_varied_shapes():
    seen_types = Counter()
    optional = 0
    for split in SPLITS:
        for spec in function_specs(split):
            function = spec.schema
            assert list(function) == ["name", "description", "parameters"]
            assert NAME.match(function["name"]) and function["description"].startswith(spec.verb.capitalize())
            parameters = function["parameters"]
            assert list(parameters) == ["type", "properties", "required"] and parameters["type"] == "object"
            Draft202012Validator.check_schema(parameters)
            assert parameters["required"] and set(parameters["required"]) <= set(parameters["properties"])
            optional += len(parameters["properties"]) - len(parameters["required"])
            for schema in parameters["properties"].values():
                kind = "enum" if "enum" in schema else schema["type"]
                if kind == "array":
                    kind = f"array[{schema['items']['type']}]"
                seen_types[kind] += 1
                if "enum" in schema:
                    assert all(value_split(member) == split for member in schema["enum"])
    assert seen_types.keys() >= {"string", "enum", "integer", "number", "boolean", "array[string]", "array[number]", "object"}
    assert optional > 100
    assert all(len(function_specs(split)) >= 40 for split in SPLITS)


def test_calls_validate_and_copy_values_verbatim_from_the_request():
    for split in SPLITS:
        for record in _records(split):
            offered = {function["name"]: function for function in record["functions"]}
            for call, user in _calls(record):
                function = offered[call["name"]]
                arguments = json.loads(call["arguments"])
                assert call["arguments"] == json.dumps(arguments)
                properties = function["parameters"]["properties"]
                _validator(function["name"], json.dumps(function["parameters"])).validate(arguments)
                assert set(function["parameters"]["required"]) <= set(arguments)
                assert list(arguments) == [name for name in properties if name in arguments]  # schema order
                for value in _leaves(arguments):
                    if not isinstance(value, bool):
                        assert (value if isinstance(value, str) else json.dumps(value)) in user, (value, user)
            if record["kind"] == "call":
                assert record["messages"][-1]["function_call"]["name"] in offered


def test_optional_parameters_appear_only_sometimes_and_booleans_both_ways():
    mentioned, booleans = Counter(), Counter()
    for record in _records("train"):
        offered = {function["name"]: function for function in record["functions"]}
        for call, _ in _calls(record):
            parameters = offered[call["name"]]["parameters"]
            for name, value in json.loads(call["arguments"]).items():
                mentioned[name in parameters["required"]] += 1
                if isinstance(value, bool):
                    booleans[value] += 1
    assert mentioned[False] > 50 and mentioned[True] > 3 * mentioned[False] // 2
    assert booleans[True] > 10 and booleans[False] > 10


def test_followup_summaries_mention_the_result():
    followups = [record for split in SPLITS for record in _records(split) if record["kind"] == "followup"]
    assert len(followups) > 200
    for record in followups:
        result = json.loads(record["messages"][-2]["content"])
        texts = [value if isinstance(value, str) else json.dumps(value) for value in result.values()]
        assert any(text in record["messages"][-1]["content"] for text in texts), record


def test_no_call_answers_name_what_cannot_be_done():
    no_calls = [record for record in _records("eval") if record["kind"] == "no_call"]
    assert len(no_calls) > 100
    for record in no_calls:
        assert all(m["role"] in ("system", "user", "assistant") for m in record["messages"])
        answer = record["messages"][-1]["content"]
        for spec in function_specs("eval"):  # a refusal never names an offered function's verb + noun
            if f"{spec.verb} the {spec.noun}" in answer:
                assert spec.name not in {f["name"] for f in record["functions"]}


# ---- generator: split disjointness --------------------------------------------------------------
def test_splits_share_no_function_name():
    names = {split: {spec.name for spec in function_specs(split)} for split in SPLITS}
    assert not names["train"] & names["calibration"] and not names["train"] & names["eval"]
    assert not names["calibration"] & names["eval"]
    for split in SPLITS:
        for record in _records(split):
            assert {function["name"] for function in record["functions"]} <= names[split]
            assert all(synth.function_split(function["name"]) == split for function in record["functions"])


def test_splits_share_no_argument_value():
    values = {}
    for split in SPLITS:
        values[split] = set()
        for record in _records(split):
            for call, _ in _calls(record):
                for value in _leaves(json.loads(call["arguments"])):
                    if not isinstance(value, bool):
                        assert value_split(value) == split
                        values[split].add(value_key(value))
        assert len(values[split]) > 300
    assert not values["train"] & values["calibration"]
    assert not values["train"] & values["eval"]
    assert not values["calibration"] & values["eval"]


def test_value_pools_are_disjoint_and_every_split_gets_a_share():
    owner = {}
    for pool, items in synth.POOLS.items():
        assert len(set(items)) == len(items), pool
        for item in items:
            assert item.lower() not in owner, (item, pool, owner.get(item.lower()))
            owner[item.lower()] = pool
        for split in SPLITS:
            assert len(synth.pool_part(pool, split)) >= 3, (pool, split)


# ---- loaders ------------------------------------------------------------------------------------
WEATHER = {
    "name": "get_weather",
    "description": "Get the weather",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


def _write_lines(path, rows):
    path.write_text("".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows), encoding="utf-8")
    return path


def test_generated_records_round_trip_through_jsonl(tmp_path):
    records = generate_conversations(split="calibration", n=40)
    path = write_jsonl(records, tmp_path / "out" / "calibration.jsonl")
    assert read_jsonl(path) == records
    assert load_conversations(path) == records
    assert load_conversations(path, split="eval") == []  # records carrying another split are filtered out
    assert load_conversations(path, limit=7) == records[:7]


def test_openai_style_with_functions_and_with_tools(tmp_path):
    functions_row = {
        "functions": [WEATHER],
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Weather in Oslo?"},
            {"role": "assistant", "content": None, "function_call": {"name": "get_weather", "arguments": {"city": "Oslo"}}},
            {"role": "function", "name": "get_weather", "content": {"temperature": 3}},
            {"role": "assistant", "content": "It is 3 degrees in Oslo."},
            {"role": "user", "content": "Thanks!"},
            {"role": "assistant", "content": [{"type": "text", "text": "You're welcome!"}]},
        ],
    }
    tools_row = {
        "id": "t1",
        "tools": [{"type": "function", "function": WEATHER}],
        "messages": [
            {"role": "user", "content": "Weather in Oslo and Lima?"},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "a", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Oslo\"}"}},
                {"id": "b", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Lima\"}"}},
            ]},
            {"role": "tool", "tool_call_id": "a", "content": "{\"temperature\": 3}"},
            {"role": "tool", "tool_call_id": "b", "content": "{\"temperature\": 22}"},
            {"role": "assistant", "content": "Oslo 3, Lima 22."},
        ],
    }
    path = _write_lines(tmp_path / "chats.jsonl", [functions_row, tools_row])
    records = load_conversations(path)
    assert [(r["id"], r["kind"]) for r in records] == [
        ("chats-00001-1", "call"), ("chats-00001-2", "followup"), ("chats-00001-3", "no_call"),
        ("t1-1", "call"), ("t1-2", "call"), ("t1-3", "followup"),
    ]
    assert records[0]["messages"][-1]["function_call"] == {"name": "get_weather", "arguments": "{\"city\": \"Oslo\"}"}
    assert records[1]["messages"][-2] == {"role": "function", "name": "get_weather", "content": "{\"temperature\": 3}"}
    assert records[2]["messages"][-1]["content"] == "You're welcome!"
    assert all(r["split"] == "train" and r["functions"] == [WEATHER] for r in records)
    roles = [m["role"] for m in records[5]["messages"]]
    assert roles == ["user", "assistant", "function", "assistant", "function", "assistant"]  # calls interleaved with results
    assert records[5]["messages"][4] == {"role": "function", "name": "get_weather", "content": "{\"temperature\": 22}"}
    assert load_conversations(path, split="eval")[0]["split"] == "eval"


GLAIVE_FUNCTIONS = [
    {
        "name": "convert_currency",
        "description": "Convert amount from one currency to another",
        "parameters": {
            "type": "object",
            "properties": {
                "amount": {"type": "number", "description": "The amount to convert"},
                "from_currency": {"type": "string", "description": "The currency to convert from"},
                "to_currency": {"type": "string", "description": "The currency to convert to"},
            },
            "required": ["amount", "from_currency", "to_currency"],
        },
    },
    {"name": "get_news", "description": "Get news", "parameters": {"type": "object", "properties": {}, "required": []}},
]
GLAIVE_ROW = {
    "system": "SYSTEM: You are a helpful assistant with access to the following functions. Use them if required -\n"
    + "\n\n".join(json.dumps(function, indent=4) for function in GLAIVE_FUNCTIONS) + "\n",
    "chat": "USER: Hi, I need to convert 500 US dollars to Euros. Can you help me with that?\n\n\n"
    "ASSISTANT: <functioncall> {\"name\": \"convert_currency\", \"arguments\": "
    "'{\"amount\": 500, \"from_currency\": \"USD\", \"to_currency\": \"EUR\"}'} <|endoftext|>\n\n\n"
    "FUNCTION RESPONSE: {\"converted_amount\": 425.5, \"from_currency\": \"USD\", \"to_currency\": \"EUR\"}\n\n\n"
    "ASSISTANT: Sure, 500 US dollars is approximately 425.50 Euros. <|endoftext|>\n\n\n",
}
GLAIVE_PLAIN = {
    "system": "SYSTEM: You are a helpful assistant, with no access to external functions.",
    "chat": "USER: What is a haiku?\n\n\nASSISTANT: A short Japanese poem of 5-7-5 syllables. <|endoftext|>\n\n\n",
}


GLAIVE_MULTILINE = {
    "system": GLAIVE_ROW["system"],
    "chat": "USER: Say it's fine in French.\n\n\nASSISTANT: Sure. <functioncall> {\"name\": \"get_news\", \"arguments\": '{\n"
    "  \"text\": \"It\\'s fine\",\n  \"lang\": \"fr\"\n}'} <|endoftext|>\n\n\n",
}


def test_glaive_records(tmp_path):
    path = _write_lines(tmp_path / "glaive.jsonl", [GLAIVE_ROW, GLAIVE_PLAIN, GLAIVE_MULTILINE])
    call, followup, plain, multiline = load_conversations(path)
    assert multiline["messages"][-1] == {
        "role": "assistant", "content": None,
        "function_call": {"name": "get_news", "arguments": "{\"text\": \"It's fine\", \"lang\": \"fr\"}"}}
    assert call["functions"] == GLAIVE_FUNCTIONS
    assert call["kind"] == "call" and call["messages"][0]["role"] == "user"
    assert call["messages"][-1]["function_call"] == {
        "name": "convert_currency", "arguments": "{\"amount\": 500, \"from_currency\": \"USD\", \"to_currency\": \"EUR\"}"}
    assert followup["kind"] == "followup"
    assert followup["messages"][-2] == {
        "role": "function", "name": "convert_currency",
        "content": "{\"converted_amount\": 425.5, \"from_currency\": \"USD\", \"to_currency\": \"EUR\"}"}
    assert followup["messages"][-1]["content"] == "Sure, 500 US dollars is approximately 425.50 Euros."
    assert plain["functions"] == [] and plain["kind"] == "no_call" and len(plain["messages"]) == 2


TOOLBENCH_APIS = [
    {
        "name": "get_weather_for_weatherapi",
        "description": "This is the subfunction for tool \"weatherapi\", you can use this tool.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "", "example_value": "Paris"}},
                       "required": ["city"], "optional": []},
    },
    {
        "name": "Finish",
        "description": "If you believe that you have obtained a result that can answer the task, please call this function.",
        "parameters": {"type": "object", "properties": {
            "return_type": {"type": "string", "enum": ["give_answer", "give_up_and_restart"]},
            "final_answer": {"type": "string"}}, "required": ["return_type"]},
    },
]
TOOLBENCH_ROW = {
    "id": "Step 4: What's the weather in Paris?",
    "conversations": [
        {"from": "system", "value": "You are AutoGPT, you can use many tools(functions) to do the following task.\n"
         "Let's Begin!\nTask description: You should use functions to help handle the real time user querys.\n"
         "Specifically, you have access to the following APIs: " + str(TOOLBENCH_APIS)},
        {"from": "user", "value": "\nWhat's the weather in Paris?\nBegin!\n"},
        {"from": "assistant", "value": "\nThought: I should call the weather API.\nAction: get_weather_for_weatherapi\n"
         "Action Input: {\n  \"city\": \"Paris\"\n}"},
        {"from": "function", "value": "{\"error\": \"\", \"response\": \"{'temp': 21}\"}"},
        {"from": "assistant", "value": "\nThought: \nAction: Finish\nAction Input: {\n  \"return_type\": \"give_answer\",\n"
         "  \"final_answer\": \"It is 21 degrees in Paris.\"\n}"},
    ],
}


def test_toolbench_records(tmp_path):
    path = tmp_path / "toolbench.json"
    path.write_text(json.dumps([TOOLBENCH_ROW], indent=2), encoding="utf-8")
    call, answer = load_conversations(path, format="toolbench")
    assert [f["name"] for f in call["functions"]] == ["get_weather_for_weatherapi"]  # Finish is not a function
    assert "optional" not in call["functions"][0]["parameters"]
    assert call["id"] == "Step 4: What's the weather in Paris?-1"
    assert call["messages"] == [
        {"role": "user", "content": "What's the weather in Paris?\nBegin!"},
        {"role": "assistant", "content": None, "function_call": {"name": "get_weather_for_weatherapi", "arguments": "{\"city\": \"Paris\"}"}},
    ]
    assert answer["kind"] == "followup" and answer["messages"][-1]["content"] == "It is 21 degrees in Paris."
    assert answer["messages"][-2]["name"] == "get_weather_for_weatherapi"


def test_sharegpt_function_call_turns(tmp_path):
    row = {
        "tools": json.dumps([WEATHER]),
        "conversations": [
            {"from": "human", "value": "Weather in Oslo?"},
            {"from": "function_call", "value": json.dumps({"name": "get_weather", "arguments": {"city": "Oslo"}})},
            {"from": "observation", "value": "{\"temperature\": 3}"},
            {"from": "gpt", "value": "It is 3 degrees."},
        ],
    }
    records = load_conversations(_write_lines(tmp_path / "sharegpt.jsonl", [row]))
    assert [r["kind"] for r in records] == ["call", "followup"] and records[0]["functions"] == [WEATHER]


@pytest.mark.parametrize(
    ("lines", "bad_line", "expected"),
    [
        (["{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}, {\"role\": \"assistant\", \"content\": \"yo\"}]}", "{not json"], 2, "malformed JSON"),
        ([{"functions": []}], 1, "unrecognized record"),
        ([{"messages": []}], 1, "messages: must be a non-empty list"),
        ([{"functions": [{"description": "no name"}], "messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]}], 1, "functions[0].name"),
        ([{"messages": [{"role": "user", "content": "x"}, {"role": "robot", "content": "y"}]}], 1, "messages[1].role: unknown role 'robot'"),
        ([{"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": None, "function_call": {"name": "f", "arguments": "{oops"}}]}], 1, "messages[1].function_call.arguments: not valid JSON"),
        ([{"messages": [{"role": "user", "content": "only a question"}]}], 1, "nothing to learn from"),
        ([{"system": "", "chat": "ASSISTANT: hello"}], 1, "no assistant turn after a user turn"),
        ([{"system": "", "chat": "USER: hi\n\n\nFUNCTION RESPONSE: {}"}], 1, "without an earlier <functioncall>"),
        ([{"conversations": [{"from": "user", "value": "x"}, {"from": "alien", "value": "y"}]}], 1, "conversations[1].from: unknown role 'alien'"),
        ([{"conversations": [{"from": "user", "value": "x"}, {"from": "assistant", "value": "Action: f\nAction Input: {bad"}]}], 1, "Action Input"),
    ],
)
def test_bad_input_names_file_line_and_field(tmp_path, lines, bad_line, expected):
    good = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
    path = _write_lines(tmp_path / "bad.jsonl", [good, good, *lines])
    with pytest.raises(DataError) as caught:
        load_conversations(path)
    message = str(caught.value)
    assert message.startswith(f"{path}:{bad_line + 2}: "), message
    assert expected in message
    assert len(load_conversations(path, on_error="skip")) >= 2  # the good rows survive


def test_bad_json_documents_name_the_line(tmp_path):
    path = tmp_path / "rows.json"
    path.write_text("[\n  {\"messages\": [{\"role\": \"user\", \"content\": \"a\"}, {\"role\": \"assistant\", \"content\": \"b\"}]},\n"
                    "  {\"messages\": [{\"role\": \"user\", \"content\": \"a\"}, {\"role\": \"wizard\", \"content\": \"b\"}]}\n]\n")
    with pytest.raises(DataError, match=rf"^{re.escape(str(path))}:3: messages\[1\]\.role"):
        load_conversations(path)
    path.write_text("[\n  {\"messages\": [{\"role\": \"user\", \"content\": \"a\"}, {\"role\": \"assistant\", \"content\": \"b\"}]},\n"
                    "  {\"messages\": [\n}\n]")
    with pytest.raises(DataError, match=rf"^{re.escape(str(path))}:4: malformed JSON"):
        load_conversations(path)
    with pytest.raises(DataError, match="no such file"):
        load_conversations(tmp_path / "missing.jsonl")
    with pytest.raises(DataError, match="unknown format"):
        load_conversations(path, format="csv")


def test_hub_dataset_ids_go_through_datasets(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    asked = {}

    def load_dataset(name, *, split, streaming=False):
        asked.update(name=name, split=split, streaming=streaming)
        return [GLAIVE_ROW, GLAIVE_PLAIN]

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    records = load_conversations("glaiveai/glaive-function-calling-v2", limit=2)
    assert asked == {"name": "glaiveai/glaive-function-calling-v2", "split": "train", "streaming": True}
    assert [r["kind"] for r in records] == ["call", "followup"]
    assert records[0]["id"] == "glaive-function-calling-v2-00000-1"

    def broken(name, **kwargs):
        raise ConnectionError("offline")

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=broken))
    with pytest.raises(DataError, match=r"glaiveai/glaive-function-calling-v2\[test\]: could not load .*ConnectionError: offline"):
        load_conversations("glaiveai/glaive-function-calling-v2", split="test")

    monkeypatch.setitem(sys.modules, "datasets", None)  # not installed
    with pytest.raises(DataError, match="pip install datasets"):
        load_conversations("glaiveai/glaive-function-calling-v2")


def test_accepted_values_survive_loading_and_bad_ones_are_named(tmp_path):
    call = {"role": "assistant", "content": None, "function_call": {"name": "get_time", "arguments": '{"location": "Singapore"}'}}
    record = {"id": "dev-1", "split": "eval", "kind": "call", "functions": [],
              "messages": [{"role": "user", "content": "Time in Singapore?"}, call], "answers": {"location": ["Singapore"]}}
    path = _write_lines(tmp_path / "dev.jsonl", [record])
    assert load_conversations(path, split="eval")[0]["answers"] == {"location": ["Singapore"]}
    for answers, message in (({"location": []}, "non-empty list"), ({"location": "Singapore"}, "non-empty list")):
        with pytest.raises(DataError, match=message):
            load_conversations(_write_lines(tmp_path / "bad.jsonl", [{**record, "answers": answers}]), split="eval")
    text = {**record, "kind": "no_call", "messages": [record["messages"][0], {"role": "assistant", "content": "hi"}]}
    with pytest.raises(DataError, match="only a record whose target is a function call"):
        load_conversations(_write_lines(tmp_path / "bad.jsonl", [text]), split="eval")


def test_the_hand_written_dev_set_scores_its_own_targets_correct():
    """models/tiny-invoker/dev-cases.jsonl: realistic functions written by hand, never trained on."""
    from invoker.parse import parse_completion
    from invoker.prompt import render_assistant_turn
    from pipelines.metrics import score_case

    records = load_conversations(Path(__file__).resolve().parents[1] / "models" / "tiny-invoker" / "dev-cases.jsonl", split="eval")
    assert len(records) == 48 and sum(r["kind"] == "call" for r in records) == 34
    for record in records:
        target = record["messages"][-1]
        score = score_case(record, parse_completion(render_assistant_turn(content=target.get("content"), function_call=target.get("function_call")),
                                                    functions=record["functions"]))
        assert (score.call_correct if record["kind"] == "call" else score.relevance_correct), record["id"]
