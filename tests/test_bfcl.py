"""BFCL suites: loading BFCL's files as eval records, the BFCL-rule scorer, and its agreement with
BFCL's own AST checker (``bfcl_eval/eval_checker/ast_eval/ast_checker.py``) on the shipped data."""

from __future__ import annotations

import copy
import importlib
import importlib.util
import json
import sys
import types
from collections import Counter
from pathlib import Path

import pytest

from invoker.parse import parse_completion
from invoker.runtimes import Chunk, GenerationParams
from pipelines.bfcl import INSTALL_HINT, accepted_value, live_split, load_bfcl_suite, package_data_dir, satisfiable
from pipelines.eval import evaluate, load_suite
from pipelines.metrics import score_case

SIMPLE_ENTRY = {
    "id": "simple_python_0",
    "question": [[{"role": "user", "content": "Area of a triangle with base 10 and height 5?"}]],
    "function": [
        {
            "name": "geometry.triangle_area",
            "description": "Area of a triangle.",
            "parameters": {
                "type": "dict",
                "properties": {
                    "base": {"type": "integer", "description": "The base."},
                    "height": {"type": "float", "description": "The height."},
                    "unit": {"type": "string", "description": "Unit of length."},
                    "corners": {"type": "tuple", "items": {"type": "integer"}, "description": "Corner ids."},
                    "style": {"type": "dict", "properties": {"color": {"type": "string"}}, "description": "Style."},
                    "tag": {"type": "any", "description": "Free tag."},
                },
                "required": ["base", "height"],
            },
        }
    ],
}
SIMPLE_ANSWER = {"id": "simple_python_0", "ground_truth": [{"geometry.triangle_area": {"base": [10], "height": [5.0], "unit": ["cm", "centimeters", ""]}}]}
IRRELEVANCE_ENTRY = {
    "id": "irrelevance_0",
    "question": [[{"role": "user", "content": "Who wrote Hamlet?"}]],
    "function": [{"name": "math.sum", "description": "Sum numbers.", "parameters": {"type": "dict", "properties": {"numbers": {"type": "array", "items": {"type": "float"}, "description": "Numbers."}}, "required": ["numbers"]}}],
}


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")


@pytest.fixture
def data_dir(tmp_path):
    """A directory laid out like bfcl_eval/data, with one simple and one irrelevance entry."""
    _write_jsonl(tmp_path / "BFCL_v4_simple_python.json", [SIMPLE_ENTRY])
    _write_jsonl(tmp_path / "possible_answer" / "BFCL_v4_simple_python.json", [SIMPLE_ANSWER])
    _write_jsonl(tmp_path / "BFCL_v4_irrelevance.json", [IRRELEVANCE_ENTRY])
    return tmp_path


def _call_text(name: str, arguments: dict) -> str:
    return "```" + json.dumps({"content": None, "function_call": {"name": name, "arguments": json.dumps(arguments)}}) + "```"


def test_a_bfcl_entry_becomes_an_eval_record_with_json_schema(data_dir):
    (record,) = load_suite(f"bfcl:simple@{data_dir}")
    (function,) = record["functions"]
    properties = function["parameters"]["properties"]
    assert function["name"] == "geometry_triangle_area"  # BFCL's rule for OpenAI-style names: '.' -> '_'
    assert function["description"] == "Area of a triangle. Note that the provided function is in Python 3 syntax."
    assert function["parameters"]["type"] == "object" and function["parameters"]["required"] == ["base", "height"]
    assert properties["base"] == {"type": "integer", "description": "The base."}
    assert properties["height"] == {"type": "number", "description": "The height. This is a float type value.", "format": "float"}
    assert properties["corners"] == {"type": "array", "items": {"type": "integer"}, "description": "Corner ids."}
    assert properties["style"]["type"] == "object" and properties["style"]["properties"] == {"color": {"type": "string"}}
    assert properties["tag"]["type"] == "string"  # BFCL's "any" is sent as a string
    assert record["kind"] == "call" and record["split"] == "eval"
    assert record["messages"][0] == {"role": "user", "content": "Area of a triangle with base 10 and height 5?"}
    # the target is the shortest call BFCL accepts: optional "unit" may be omitted ("" among its values)
    call = record["messages"][-1]["function_call"]
    assert call["name"] == "geometry_triangle_area" and json.loads(call["arguments"]) == {"base": 10, "height": 5.0}
    assert record["answers"] == {"base": [10], "height": [5.0], "unit": ["cm", "centimeters", ""]}


def test_an_irrelevance_entry_expects_text(data_dir):
    (record,) = load_suite(f"bfcl:irrelevance@{data_dir}")
    assert record["kind"] == "no_call" and "answers" not in record
    assert record["messages"][-1] == {"role": "assistant", "content": ""}
    assert record["functions"][0]["parameters"]["properties"]["numbers"]["items"] == {"type": "number", "format": "float"}


@pytest.mark.parametrize(
    ("arguments", "correct"),
    [
        ({"base": 10, "height": 5.0}, True),
        ({"base": 10, "height": 5}, True),  # an int is accepted for a float
        ({"base": 10, "height": 5.0, "unit": "Centi-Meters"}, True),  # strings: case, spaces, ,./-_*^ ignored
        ({"base": 10, "height": 5.0, "unit": "inches"}, False),  # not among the possible values
        ({"base": 10.0, "height": 5.0}, False),  # a float is not accepted for an integer
        ({"base": 10}, False),  # a required parameter missing
        ({"base": 10, "height": 5.0, "tag": "x"}, False),  # a parameter the answers do not list
        ({"base": 10, "height": 5.0, "size": 1}, False),  # a parameter the function does not have
    ],
)
def test_bfcl_records_are_scored_by_bfcl_rules(data_dir, arguments, correct):
    (record,) = load_suite(f"bfcl:simple@{data_dir}")
    parsed = parse_completion(_call_text("geometry_triangle_area", arguments), functions=record["functions"])
    assert score_case(record, parsed).call_correct is correct


def test_without_answers_the_strict_rule_applies(data_dir):
    (record,) = load_suite(f"bfcl:simple@{data_dir}")
    parsed = parse_completion(_call_text("geometry_triangle_area", {"base": 10, "height": 5.0, "unit": "CM"}), functions=record["functions"])
    assert score_case(record, parsed).call_correct is True
    del record["answers"]
    assert score_case(record, parsed).call_correct is False


class CannedRuntime:
    format, runtime, model_path, context_length = "fp16", "canned", Path("canned"), 4096

    def __init__(self, answers):
        self.answers = list(answers)

    def count_tokens(self, text):
        return len(text.split()) + 1

    def stream(self, prompt, params):
        yield Chunk(text=self.answers.pop(0), finish_reason="stop", prompt_tokens=self.count_tokens(prompt), completion_tokens=1)


def test_evaluate_reports_bfcl_scores(data_dir):
    records = load_suite(f"bfcl:simple@{data_dir}") * 2 + load_suite(f"bfcl:irrelevance@{data_dir}")
    runtime = CannedRuntime([
        _call_text("geometry_triangle_area", {"base": 10, "height": 5, "unit": "CM"}),
        _call_text("geometry_triangle_area", {"base": 10, "height": 5.5}),
        '```{"content": "Shakespeare.", "function_call": null}```',
    ])
    summary = evaluate(runtime=runtime, records=records, params=GenerationParams(temperature=0.0, max_tokens=8), progress=False)
    assert summary["call_accuracy"] == 0.5 and summary["n_expected_calls"] == 2
    assert summary["relevance_accuracy"] == 1.0 and summary["n_no_call"] == 1


@pytest.mark.parametrize(
    ("suite", "message"),
    [
        ("bfcl:parallel", "unknown BFCL suite 'bfcl:parallel'; choose one of: bfcl:simple, bfcl:multiple, bfcl:irrelevance"),
        ("bfcl:simple@{missing}", "{missing}: no such directory"),
        ("bfcl:multiple@{data}", r"{data}: no BFCL_v<N>_multiple.json"),
    ],
)
def test_bad_bfcl_suites_fail_naming_what_is_wrong(data_dir, tmp_path, suite, message):
    names = {"missing": str(tmp_path / "missing"), "data": str(data_dir)}
    with pytest.raises(ValueError) as error:
        load_suite(suite.format(**names))
    assert message.format(**names) in str(error.value)


@pytest.mark.parametrize(
    ("entry", "answer", "message"),
    [
        ({**SIMPLE_ENTRY, "question": [[{"role": "user", "content": "a"}], [{"role": "user", "content": "b"}]]}, SIMPLE_ANSWER, "question must be one turn"),
        (SIMPLE_ENTRY, {"id": "simple_python_0", "ground_truth": [{"geometry.triangle_area": {"base": 10}}]}, "a list of accepted values"),
        (SIMPLE_ENTRY, {"id": "simple_python_0", "ground_truth": [{"math.sum": {"base": [10]}}]}, "calls 'math.sum', which is not among"),
        ({**SIMPLE_ENTRY, "id": "simple_python_9"}, SIMPLE_ANSWER, "entry 'simple_python_9': no possible answer"),
    ],
)
def test_malformed_entries_fail_naming_the_entry(tmp_path, entry, answer, message):
    _write_jsonl(tmp_path / "BFCL_v4_simple_python.json", [entry])
    _write_jsonl(tmp_path / "possible_answer" / "BFCL_v4_simple_python.json", [answer])
    with pytest.raises(ValueError, match="BFCL_v4_simple_python.json") as error:
        load_suite(f"bfcl:simple@{tmp_path}")
    assert message in str(error.value)


def test_missing_possible_answers_are_named(data_dir):
    (data_dir / "possible_answer" / "BFCL_v4_simple_python.json").unlink()
    with pytest.raises(ValueError, match=r"possible_answer/BFCL_v4_simple_python.json: no such file"):
        load_suite(f"bfcl:simple@{data_dir}")


# --- agreement with BFCL's own checker, on the data bfcl-eval ships ----------------------------------

CHECKER_MODEL = "invoker-pack"  # a model name for BFCL's checker: one whose names had '.' replaced by '_'


@pytest.fixture(scope="module")
def bfcl():
    """BFCL's AST checker and ``is_empty_output``, imported with the vendor-SDK module stubbed out."""
    if importlib.util.find_spec("bfcl_eval") is None:
        pytest.skip(f"bfcl-eval is not installed ({INSTALL_HINT})")
    config = types.ModuleType("bfcl_eval.constants.model_config")
    config.MODEL_CONFIG_MAPPING = {CHECKER_MODEL: types.SimpleNamespace(underscore_to_dot=True)}
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(sys.modules, "bfcl_eval.constants.model_config", config)
        checker = importlib.import_module("bfcl_eval.eval_checker.ast_eval.ast_checker")
        enums = importlib.import_module("bfcl_eval.constants.enums")
        utils = importlib.import_module("bfcl_eval.utils")
        yield types.SimpleNamespace(ast_checker=checker.ast_checker, python=enums.Language.PYTHON, is_empty_output=utils.is_empty_output)
    for name in [name for name in sys.modules if name.startswith("bfcl_eval")]:
        del sys.modules[name]


def _bfcl_file(category: str) -> tuple[list[dict], dict]:
    stem = {"simple": "simple_python"}.get(category, category)
    data = package_data_dir()
    entries = [json.loads(line) for line in (data / f"BFCL_v4_{stem}.json").read_text().splitlines()]
    answers_file = data / "possible_answer" / f"BFCL_v4_{stem}.json"
    answers = {row["id"]: row["ground_truth"] for row in map(json.loads, answers_file.read_text().splitlines())} if answers_file.exists() else {}
    return entries, answers


OTHER_TYPE = {int: "7", float: "2.5", str: 12345, bool: "true", list: "a, b", dict: "a=b", type(None): "none"}


def _other_value(value):
    """A value of the same type that the possible answers are unlikely to list."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 1000
    if isinstance(value, str):
        return value + " zebra"
    if isinstance(value, list):
        return value + value[:1] if value else ["zebra"]
    if value is None:  # a live answer may accept null
        return "zebra"
    return {**value, "zebra": 1}


def _spelling_variants(value):
    """Case, space and punctuation variants of the strings in ``value`` (BFCL ignores some of them)."""
    if isinstance(value, str):
        return [value.upper(), f" {value} ", value.replace(" ", "-"), value.replace(" ", ""), value + ".", value.replace("'", '"'), value + "!"]
    if isinstance(value, list) and any(isinstance(item, str) for item in value):
        return [[item.upper() if isinstance(item, str) else item for item in value], [f"{item}!" if isinstance(item, str) else item for item in value]]
    if isinstance(value, dict) and any(isinstance(item, str) for item in value.values()):
        return [{key: item.title() if isinstance(item, str) else item for key, item in value.items()}]
    return []


def _numeric_variants(value):
    """int for float, float for int, bool for int (BFCL accepts only the first, and only when equal)."""
    if isinstance(value, bool):
        return [int(value)]
    if isinstance(value, int):
        return [float(value), True]
    if isinstance(value, float):
        return [int(value), round(value) + 1]
    if isinstance(value, list):
        return [[float(item) if type(item) is int else int(item) if type(item) is float else item for item in value]]
    return []


def _model_outputs(record: dict, answers: dict) -> list[tuple[str, str, dict]]:
    """(label, function name, arguments): the target call and perturbations of it."""
    call = record["messages"][-1]["function_call"]
    name, minimal = call["name"], json.loads(call["arguments"])
    schema = next(fn for fn in record["functions"] if fn["name"] == name)["parameters"]
    # every argument the answers give a value for, each at its first accepted value (a required one even when that is "")
    required = schema.get("required") or []
    full = {param: accepted_value(values, schema=schema["properties"][param]) for param, values in answers.items()
            if param in required or any(value != "" for value in values)}
    outputs = [("minimal", name, minimal), ("full", name, full), ("extra unknown param", name, {**full, "zz_unknown": 1})]
    for param, values in answers.items():
        prop = schema["properties"][param]
        outputs += [("possible value", name, {**minimal, param: accepted_value([value], schema=prop)}) for value in values if value != ""]
        if param not in full:
            continue
        outputs.append(("missing param", name, {key: value for key, value in full.items() if key != param}))
        value = full[param]
        outputs.append(("wrong value", name, {**full, param: _other_value(value)}))
        outputs.append(("wrong type", name, {**full, param: OTHER_TYPE[type(value)]}))
        outputs += [("spelling variant", name, {**full, param: variant}) for variant in _spelling_variants(value)]
        outputs += [("numeric variant", name, {**full, param: variant}) for variant in _numeric_variants(value)]
    for param, prop in schema["properties"].items():
        if param not in answers:
            sample = {"integer": 1, "number": 1.5, "boolean": True, "array": [], "object": {}}.get(prop["type"], "x")
            outputs.append(("extra schema param", name, {**full, param: sample}))
    outputs += [("wrong function", other["name"], full) for other in record["functions"] if other["name"] != name]
    outputs.append(("unlisted function", "not_a_listed_function", full))
    return outputs


@pytest.mark.parametrize("category", ["simple", "multiple", "live_simple", "live_multiple"])
def test_scorer_agrees_with_bfcl_ast_checker(bfcl, category):
    entries, ground_truth = _bfcl_file(category)
    records = {record["id"]: record for record in load_bfcl_suite(category)}
    assert len(records) == len(entries) == {"simple": 400, "multiple": 200, "live_simple": 258, "live_multiple": 1053}[category]
    verdicts, disagreements = Counter(), []
    for entry in entries:
        record = records[entry["id"]]
        if not satisfiable(record):  # BFCL's checker refuses even the target it was written from
            call = record["messages"][-1]["function_call"]
            assert not bfcl.ast_checker(copy.deepcopy(entry["function"]), [{call["name"]: json.loads(call["arguments"])}],
                                        ground_truth[entry["id"]], bfcl.python, category, CHECKER_MODEL)["valid"]
            continue
        for label, name, arguments in _model_outputs(record, record["answers"]):
            decoded = json.loads(json.dumps(arguments))  # what BFCL's FC handlers hand the checker
            theirs = bfcl.ast_checker(copy.deepcopy(entry["function"]), [{name: decoded}], ground_truth[entry["id"]], bfcl.python, category, CHECKER_MODEL)["valid"]
            ours = score_case(record, parse_completion(_call_text(name, arguments), functions=record["functions"])).call_correct
            verdicts[(label, theirs)] += 1
            if ours != theirs:
                disagreements.append((entry["id"], label, name, arguments, theirs))
        text = parse_completion('```{"content": "I cannot do that.", "function_call": null}```', functions=record["functions"])
        assert score_case(record, text).call_correct is False  # BFCL: no call decoded, the entry fails
    assert disagreements == []
    # the outputs exercise both verdicts: every target is accepted (but where no call can pass), most perturbations are not
    passable = sum(map(satisfiable, records.values()))
    assert passable == len(entries) - {"live_simple": 2, "live_multiple": 2}.get(category, 0)
    assert verdicts[("minimal", True)] == verdicts[("full", True)] == passable
    assert sum(n for (label, valid), n in verdicts.items() if valid and label not in ("minimal", "full")) > len(entries)
    assert sum(n for (_, valid), n in verdicts.items() if not valid) > 3 * len(entries)


def test_relevance_agrees_with_bfcl_irrelevance_rule(bfcl):
    """BFCL's irrelevance rule: the entry passes unless a function call decodes from the output.

    One class of outputs disagrees on purpose: text that is not in Invoker's answer format. BFCL (its
    FC handlers read calls from an API field) counts it as "no call", so a pass; our relevance metric
    counts only a well-formed text answer, so it fails there (docs/EVAL.md, "BFCL suites").
    """
    entries, _ = _bfcl_file("irrelevance")
    records = {record["id"]: record for record in load_bfcl_suite("irrelevance")}
    assert len(records) == len(entries) == 240
    disagreements = Counter()
    for entry in entries:
        record = records[entry["id"]]
        outputs = [("text", '```{"content": "I cannot do that.", "function_call": null}```', None)]
        for function in record["functions"]:
            required = {param: "x" for param in function["parameters"].get("required", [])}
            outputs += [("call", _call_text(function["name"], required), [{function["name"]: required}]),
                        ("call without arguments", _call_text(function["name"], {}), [{function["name"]: {}}])]
        outputs += [("unlisted function", _call_text("not_a_listed_function", {}), [{"not_a_listed_function": {}}]),
                    ("not Invoker's format", "I cannot do that.", None)]
        for label, text, decoded in outputs:
            theirs = decoded is None or bfcl.is_empty_output(decoded)
            ours = score_case(record, parse_completion(text, functions=record["functions"])).relevance_correct
            if ours != theirs:
                disagreements[label] += 1
    assert disagreements == {"not Invoker's format": len(entries)}


def test_live_entries_split_by_function_set():
    """Every entry of one function set lands on one side, so the dev side's functions are never trained on."""
    assert live_split("live_simple_3-2-1") == live_split("live_simple_2-2-0")
    sides = Counter(live_split(f"live_multiple_{i}-{i}-0") for i in range(500))
    assert 0.1 < sides["dev"] / 500 < 0.3 and sides["train"] + sides["dev"] == 500
    for bad in ("simple_3", "live_simple_3-2", "live_unknown_1-2-3", "live_simple_a-2-3"):
        with pytest.raises(ValueError, match="not a BFCL live id"):
            live_split(bad)
