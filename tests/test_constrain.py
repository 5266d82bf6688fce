"""Schema-constrained decoding: the answer grammar accepts exactly well-formed, schema-valid answers.

The grammar is exercised through llguidance (the engine of the transformers runtime) with a byte-level
vocabulary, so acceptance is checked character by character, and random walks through the grammar
show that whatever a model picks, the answer parses and its arguments validate.
"""

from __future__ import annotations

import json
import random
import re

import llguidance
import pytest

from invoker.constrain import (
    CALL_START,
    ConstraintError,
    Vocabulary,
    answer_grammar,
    answer_prefill,
    gbnf_literal,
)
from invoker.functions import functions_from_tools, validate_arguments, validate_functions
from invoker.parse import parse_completion

EOS = 256


class _ByteTokenizer:
    """One token per byte plus EOS: acceptance of a text is then acceptance of its bytes."""

    eos_token_id = EOS
    bos_token_id = None
    special_token_ids = [EOS]
    tokens = [bytes([i]) for i in range(256)] + [b"\xff<eos>"]

    def __call__(self, text):
        return list(text.encode() if isinstance(text, str) else text)


@pytest.fixture(scope="module")
def vocab():
    tokenizer = llguidance.LLTokenizer(llguidance.TokenizerWrapper(_ByteTokenizer()), n_vocab=EOS + 1, eos_token=EOS)
    return Vocabulary(tokenizer=tokenizer, size=EOS + 1)


def accepts(vocab, grammar: str, text: str) -> bool:
    matcher = vocab.matcher(grammar)
    for byte in text.encode():
        if not matcher.allowed()[byte]:
            return False
        matcher.accept(byte)
    return bool(matcher.allowed()[EOS])


def random_walk(vocab, grammar: str, rng: random.Random, *, limit: int = 600) -> str | None:
    """Pick random allowed bytes (EOS rarely) until the grammar ends; None if it ran past ``limit``."""
    matcher = vocab.matcher(grammar)
    out = bytearray()
    for _ in range(limit):
        allowed = matcher.allowed().nonzero()[0].tolist()
        choices = [t for t in allowed if t != EOS]
        if EOS in allowed and (not choices or rng.random() < 0.3):
            return out.decode()
        token = rng.choice(choices)
        matcher.accept(token)
        out.append(token)
    return None


GET_TIME = {
    "name": "get_time",
    "description": "Get the current time",
    "parameters": {
        "type": "object",
        "properties": {
            "location": {"type": "string"},
            "format": {"type": "string", "enum": ["12-hour", "24-hour"]},
        },
        "required": ["location"],
    },
}


def call_text(name, arguments):
    body = {"content": None, "function_call": {"name": name, "arguments": json.dumps(arguments, ensure_ascii=False)}}
    return " ```" + json.dumps(body, ensure_ascii=False) + "```"


def accepts_answer(vocab, answer, output: str) -> bool:
    """``output`` (the whole answer) is its prefill followed by what the grammar accepts."""
    return output.startswith(answer.prefill) and accepts(vocab, answer.grammar, output[len(answer.prefill):])


def content_text(content):
    return " ```" + json.dumps({"content": content, "function_call": None}, ensure_ascii=False) + "```"


# --- what the grammar accepts ----------------------------------------------------------------


@pytest.mark.parametrize("arguments", [
    {"location": "Singapore"},
    {"location": "Singapore", "format": "12-hour"},
    {"location": 'He said "hi" \\o/ \n\t end'},
    {"location": "Zürich 東京 😀"},
    {"location": ""},
])
def test_auto_accepts_the_models_own_call_format(vocab, arguments):
    assert accepts_answer(vocab, answer_grammar(validate_functions([GET_TIME])), call_text("get_time", arguments))


@pytest.mark.parametrize("content", ["Hello!", 'quotes " and \\ and \n newlines', "😀 é", ""])
def test_auto_accepts_text_answers(vocab, content):
    assert accepts_answer(vocab, answer_grammar(validate_functions([GET_TIME])), content_text(content))


def test_auto_and_none_prefill_the_opening_both_answers_share(vocab):
    functions = validate_functions([GET_TIME])
    for answer in (answer_grammar(functions), answer_grammar(functions, choice="none"), answer_grammar([])):
        assert answer.prefill == ' ```{"content":'
        assert content_text("x").startswith(answer.prefill) and call_text("get_time", {}).startswith(answer.prefill)
        assert vocab.matcher(answer.grammar).allowed().nonzero()[0].tolist() == [ord(" ")]  # then ' "' or ' null'


@pytest.mark.parametrize("output", [
    call_text("get_time", {"format": "12-hour"}),  # required property missing
    call_text("get_time", {"location": "x", "format": "13-hour"}),  # not in the enum
    call_text("get_time", {"location": 5}),  # wrong type
    call_text("get_time", {"location": "x", "unit": "c"}),  # undeclared property
    call_text("get_time", {"format": "12-hour", "location": "x"}),  # properties out of declared order
    call_text("get_weather", {"location": "x"}),  # not an offered function
    ' ```{"content": null, "function_call": {"name": "get_time", "arguments": "{\\"location\\":\\"x\\"}"}}```',  # not json.dumps spacing
    ' ```{"content": null, "function_call": {"name": "get_time", "arguments": {"location": "x"}}}```',  # object, not string
    ' ```{"content": null, "function_call": {"name": "get_time", "arguments": "{\\"location\\": \\"x"}}```',  # unterminated
    content_text("hi") + " more",  # text after the fence
])
def test_auto_rejects_malformed_or_invalid_calls(vocab, output):
    answer = answer_grammar(validate_functions([GET_TIME]))
    assert output.startswith(answer.prefill)
    assert not accepts_answer(vocab, answer, output)


def test_none_and_no_functions_allow_text_only(vocab):
    functions = validate_functions([GET_TIME])
    for answer in (answer_grammar(functions, choice="none"), answer_grammar([])):
        assert accepts_answer(vocab, answer, content_text("fine"))
        assert not accepts_answer(vocab, answer, call_text("get_time", {"location": "x"}))


def test_forced_function_prefills_up_to_the_arguments(vocab):
    functions = validate_functions([GET_TIME, {"name": "other", "parameters": {"type": "object", "properties": {}}}])
    answer = answer_grammar(functions, choice="function", name="get_time")
    full = call_text("get_time", {"location": "Paris"})
    assert answer.prefill == ' ```{"content": null, "function_call": {"name": "get_time", "arguments": "'
    assert accepts_answer(vocab, answer, full)
    assert not accepts(vocab, answer.grammar, call_text("other", {})[len(answer.prefill):])


def test_required_prefills_up_to_the_name_and_allows_any_function(vocab):
    functions = validate_functions([GET_TIME, {"name": "other", "parameters": {"type": "object", "properties": {}}}])
    answer = answer_grammar(functions, choice="required")
    assert answer.prefill == " " + CALL_START
    for output in (call_text("get_time", {"location": "x"}), call_text("other", {})):
        assert accepts_answer(vocab, answer, output)
    assert not accepts(vocab, answer.grammar, content_text("no")[len(answer.prefill):])


def test_prefill_is_the_grammar_prefill_and_without_constraints_prefills_calls_only():
    functions = validate_functions([GET_TIME])
    for choice in ("auto", "none", "required", "function"):
        grammar_prefill = answer_grammar(functions, choice=choice, name="get_time").prefill
        assert answer_prefill(choice=choice, name="get_time", constrained=True) == grammar_prefill
    for choice in ("required", "function"):
        assert answer_prefill(choice=choice, name="get_time") == answer_grammar(functions, choice=choice, name="get_time").prefill
    for choice in ("auto", "none"):  # free text stays possible without a grammar
        assert answer_prefill(choice=choice) == ""


# --- random walks: whatever is picked, the call parses and validates ----------------------------


SCHEMAS = {
    "flat": GET_TIME["parameters"],
    "no_parameters": {"type": "object", "properties": {}},
    "optional_before_required": {
        "type": "object",
        "properties": {"a": {"type": "integer"}, "b": {"type": "boolean"}, "c": {"type": "null"}, "d": {"type": "number"}},
        "required": ["b", "d"],
    },
    "nested": {
        "type": "object",
        "properties": {
            "user": {"type": "object", "properties": {"name": {"type": "string", "maxLength": 5},
                                                      "tags": {"type": "array", "items": {"type": "string", "enum": ["x", "y"]}}},
                     "required": ["name"]},
            "ids": {"type": "array", "items": {"type": "integer"}, "minItems": 1, "maxItems": 3},
        },
        "required": ["user", "ids"],
    },
    "choices": {
        "type": "object",
        "properties": {
            "mixed": {"enum": [1, "one", None, True, {"k": "v"}]},
            "either": {"anyOf": [{"type": "string", "minLength": 2, "maxLength": 3}, {"type": "integer"}]},
            "typed": {"type": ["string", "null"]},
            "fixed": {"const": 'a "quoted" \\ value'},
        },
        "required": ["mixed", "either", "typed", "fixed"],
    },
    "bounds": {
        "type": "object",
        "properties": {
            "one": {"type": "array", "items": {"type": "boolean"}, "minItems": 1, "maxItems": 1},
            "at_most_one": {"type": "array", "items": {"type": "null"}, "maxItems": 1},
            "none": {"type": "array", "maxItems": 0},
            "empty": {"type": "string", "maxLength": 0},
            "long": {"type": "string", "minLength": 3},
        },
        "required": ["one", "at_most_one", "none", "empty", "long"],
    },
    "free_form": {
        "type": "object",
        "properties": {"meta": {"type": "object"}, "anything": {}, "extra": {"type": "object", "additionalProperties": {"type": "integer"}}},
        "required": ["meta", "anything", "extra"],
    },
    "recursive_ref": {
        "type": "object",
        "properties": {"tree": {"$ref": "#/$defs/node"}},
        "required": ["tree"],
        "$defs": {"node": {"type": "object", "properties": {"v": {"type": "integer"}, "kids": {"type": "array", "items": {"$ref": "#/$defs/node"}, "maxItems": 2}}, "required": ["v"]}},
    },
}


@pytest.mark.parametrize("schema_name", sorted(SCHEMAS))
def test_random_walks_through_the_grammar_always_parse_and_validate(vocab, schema_name):
    functions = validate_functions([{"name": "f", "parameters": SCHEMAS[schema_name]}])
    for choice in ("function", "required", "auto"):
        answer = answer_grammar(functions, choice=choice, name="f")
        rng = random.Random(f"{schema_name}-{choice}")
        complete = 0
        for _ in range(25):
            walk = random_walk(vocab, answer.grammar, rng)
            if walk is None:
                continue
            complete += 1
            parsed = parse_completion(answer.prefill + walk, functions=functions)
            assert parsed.kind in ("function_call", "content"), (walk, parsed)
            if choice != "auto":
                assert parsed.kind == "function_call"
            if parsed.kind == "function_call":
                assert validate_arguments(json.loads(parsed.arguments), function=functions[0]) == [], walk
        assert complete >= 10


def test_random_walks_with_many_functions_pick_a_valid_call(vocab):
    functions = functions_from_tools([{"type": "function", "function": {"name": f"fn_{i}", "parameters": SCHEMAS[name]}}
                                      for i, name in enumerate(sorted(SCHEMAS))])
    answer = answer_grammar(functions, choice="required")
    rng = random.Random(3)
    seen = set()
    for _ in range(60):
        walk = random_walk(vocab, answer.grammar, rng)
        if walk is None:
            continue
        parsed = parse_completion(answer.prefill + walk, functions=functions)
        assert parsed.kind == "function_call"
        function = next(f for f in functions if f["name"] == parsed.name)
        assert validate_arguments(json.loads(parsed.arguments), function=function) == []
        seen.add(parsed.name)
    assert len(seen) >= 4


# --- schema handling ---------------------------------------------------------------------------


def test_keywords_the_grammar_does_not_enforce_are_listed():
    functions = validate_functions([{"name": "f", "parameters": {
        "type": "object",
        "properties": {"date": {"type": "string", "format": "date"}, "n": {"type": "integer", "minimum": 1},
                       "code": {"type": "string", "pattern": "^[A-Z]+$", "description": "annotations are fine"}},
    }}])
    answer = answer_grammar(functions)
    assert set(answer.unenforced) == {
        "functions[0].parameters.properties.date.format",
        "functions[0].parameters.properties.n.minimum",
        "functions[0].parameters.properties.code.pattern",
    }


def test_a_schema_no_value_satisfies_is_refused_naming_the_field():
    functions = validate_functions([{"name": "f", "parameters": {
        "type": "object", "properties": {"u": {"type": "string", "enum": [1, 2]}}, "required": ["u"]}}])
    with pytest.raises(ConstraintError) as error:
        answer_grammar(functions)
    assert error.value.field == "functions[0].parameters.properties.u.enum"


@pytest.mark.parametrize(("schema", "field", "contains"), [
    ({"type": "string", "minLength": 100000}, "minLength", "more than the 1000"),
    ({"type": "array", "minItems": 5000}, "minItems", "more than the 1000"),
    ({"type": "string", "minLength": 5, "maxLength": 3}, "minLength", "no value satisfies"),
    ({"type": "array", "minItems": 2, "maxItems": 1}, "minItems", "no value satisfies"),
])
def test_length_bounds_a_grammar_cannot_hold_are_refused_naming_the_field(schema, field, contains):
    """llama.cpp refuses repetitions over 2000 (printing the grammar to stderr), and a lower bound over
    the upper one has no answer: both are errors naming the keyword, before any generation."""
    functions = validate_functions([{"name": "f", "parameters": {"type": "object", "properties": {"u": schema}}}])
    with pytest.raises(ConstraintError) as error:
        answer_grammar(functions)
    assert error.value.field == f"functions[0].parameters.properties.u.{field}" and contains in error.value.message


def test_large_upper_bounds_are_left_to_validation_and_integral_floats_written_as_integers(vocab):
    from invoker.constrain import MAX_REPEAT

    functions = validate_functions([{"name": "f", "parameters": {"type": "object", "properties": {
        "text": {"type": "string", "maxLength": 100000}, "tags": {"type": "array", "maxItems": MAX_REPEAT + 1},
        "code": {"type": "string", "minLength": 2.0, "maxLength": 3.0}}}}])
    answer = answer_grammar(functions, choice="function", name="f")
    assert set(answer.unenforced) == {"functions[0].parameters.properties.text.maxLength",
                                      "functions[0].parameters.properties.tags.maxItems"}
    assert "{2,3}" in answer.grammar and "." not in re.sub(r'"(?:[^"\\]|\\.)*"|\[(?:[^\]\\]|\\.)*\]', "", answer.grammar)
    assert accepts(vocab, answer.grammar, '{\\"code\\": \\"abc\\"}"}}```')
    assert not accepts(vocab, answer.grammar, '{\\"code\\": \\"abcd\\"}"}}```')


def test_forcing_an_unknown_function_is_refused():
    with pytest.raises(ConstraintError, match="'nope' is not among the functions"):
        answer_grammar(validate_functions([GET_TIME]), choice="function", name="nope")


def test_grammar_text_is_valid_gbnf_for_llama_cpp():
    """Rule names are llama.cpp's dashed words, every referenced rule is defined, root comes first."""
    functions = validate_functions([{"name": "my_fn", "parameters": SCHEMAS[name]} for name in ("nested",)] +
                                   [{"name": "other-fn", "parameters": SCHEMAS["recursive_ref"]}])
    grammar = answer_grammar(functions).grammar
    lines = grammar.strip().split("\n")
    assert lines[0].startswith("root ::= ")
    defined = {line.split(" ::= ")[0] for line in lines}
    assert all(re.fullmatch(r"[a-zA-Z0-9-]+", name) for name in defined)
    bodies = " ".join(line.split(" ::= ", 1)[1] for line in lines)
    outside = re.sub(r'"(?:[^"\\]|\\.)*"|\[(?:[^\]\\]|\\.)*\]', " ", bodies)
    assert set(re.findall(r"[a-zA-Z][a-zA-Z0-9-]*", outside)) <= defined


def test_gbnf_literal_escapes_quotes_backslashes_and_control_characters():
    assert gbnf_literal('a"b\\c\nd\x01') == '"a\\"b\\\\c\\nd\\x01"'


# --- real tokenizers: multi-byte tokens, sentencepiece and byte-level spaces ------------------------------


def test_masks_over_either_vocabulary_kind_yield_valid_calls(any_random_model):
    """Random allowed tokens (multi-byte pieces, ``▁`` or ``Ġ`` spaces, byte fallback) still spell a valid call."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(any_random_model))
    vocabulary = Vocabulary.from_hf_tokenizer(tokenizer, size=len(tokenizer), eos_ids=[tokenizer.eos_token_id])
    schema = {"type": "object", "properties": {"location": {"type": "string", "maxLength": 6},
                                               "format": {"type": "string", "enum": ["12-hour", "24-hour"]}},
              "required": ["location"]}
    functions = validate_functions([{"name": "get_time", "parameters": schema}])
    pieces = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    rng = random.Random(0)
    for choice in ("required", "function"):
        answer = answer_grammar(functions, choice=choice, name="get_time")
        for _ in range(8):
            matcher = vocabulary.matcher(answer.grammar)
            ids = []
            while tokenizer.eos_token_id not in (allowed := matcher.allowed().nonzero()[0].tolist()):
                token = rng.choice(allowed)
                matcher.accept(token)
                ids.append(token)
            text = tokenizer.convert_tokens_to_string([pieces[i] for i in ids])
            parsed = parse_completion(answer.prefill + text, functions=functions)
            assert parsed.kind == "function_call", text
            assert validate_arguments(json.loads(parsed.arguments), function=functions[0]) == []


# --- through a runtime and the eval -----------------------------------------------------------


@pytest.mark.e2e
def test_eval_constrained_makes_every_finished_answer_valid(tiny_random_model):
    """A random model under the grammar: every answer that finished parses, every call validates."""
    from invoker.runtimes import GenerationParams, load_runtime
    from pipelines.eval import evaluate, load_suite

    cases = []
    summary = evaluate(runtime=load_runtime(tiny_random_model), records=load_suite("synthetic", limit=4),
                       params=GenerationParams(temperature=1.0, seed=0, max_tokens=160), progress=False,
                       on_case=cases.append, constrained=True)
    assert summary["constrained"] is True
    finished = [case for case in cases if case["finish_reason"] == "stop"]
    assert finished
    for case in finished:
        assert case["parsed"]["kind"] != "invalid", case
        if case["parsed"]["kind"] == "function_call":
            assert case["score"]["json_valid"] and case["score"]["schema_valid"], case
