"""The streaming parser: same answer whatever the chunking, and the same verdict as invoker.parse."""

from __future__ import annotations

import json
import random

import pytest

from invoker.parse import parse_completion
from invoker.stream_parse import ArgumentsDelta, CallStart, ContentDelta, StreamParser


def call(name, arguments, *, content=None):
    args = json.dumps(arguments, ensure_ascii=False)
    return " ```" + json.dumps({"content": content, "function_call": {"name": name, "arguments": args}}, ensure_ascii=False) + "```"


def text(content):
    return " ```" + json.dumps({"content": content, "function_call": None}, ensure_ascii=False) + "```"


def run(chunks):
    """(content, names, arguments, verdict kind) from feeding ``chunks`` one by one."""
    parser = StreamParser()
    events = []
    for chunk in chunks:
        events += parser.feed(chunk)
    last, parsed = parser.finish()
    events += last
    content = "".join(e.text for e in events if isinstance(e, ContentDelta))
    names = [e.name for e in events if isinstance(e, CallStart)]
    arguments = "".join(e.text for e in events if isinstance(e, ArgumentsDelta))
    return content, names, arguments, parsed


TRICKY_ARGUMENTS = {
    "location": 'Say "hi" \\ back\\slash \\" end',
    "note": "line1\nline2\ttab \u0001 ctrl",
    "city": "Zürich café 東京 😀",
    "nested": {"a": [1, 2.5, -3e-05, True, None], "b": {"c": "}]{[\""}},
}

OUTPUTS = {
    "call": call("get_time", {"location": "Singapore", "format": "12-hour"}),
    "call_tricky": call("get_time", TRICKY_ARGUMENTS),
    "call_ascii_escaped": " ```" + json.dumps({"content": None, "function_call": {"name": "f", "arguments": json.dumps(TRICKY_ARGUMENTS)}}) + "```",
    "call_with_content": call("f", {"x": 1}, content="Let me check."),
    "call_object_arguments": ' ```{"content": null, "function_call": {"name": "f", "arguments": {"a": [1, {"b": "c}"}], "n": -1.5e3, "t": true}}}```',
    "call_keys_reversed": ' ```{"function_call": {"arguments": "{\\"x\\": 1}", "name": "f"}, "content": null}```',
    "json_tag_and_spaces": '```json\n{ "content" : null ,\n "function_call" : { "name" : "f" , "arguments" : "{}" } }\n```',
    "text": text('Hello "world" \\ \n 😀 é'),
    "text_unicode_escapes": ' ```{"content": "smile \\ud83d\\ude00 \\u00e9 \\/", "function_call": null}```',
    "preamble": 'Sure! ```{"content": "ok", "function_call": null}``` trailing words',
    "extra_keys": ' ```{"content": "a", "extra": {"content": "not me", "arguments": [1]}, "function_call": null}```',
    "eos_marker": text("done") + "</s>",
    "plain_text": "I cannot find a function for that.</s>",
    "truncated_call": call("get_time", {"location": "Singapore"}).split("apore")[0],
    "truncated_text": text("a long answer that is cut")[:-20],
}


@pytest.mark.parametrize("name", sorted(OUTPUTS))
def test_every_chunking_gives_the_same_events(name):
    output = OUTPUTS[name]
    whole = run([output])
    assert run(list(output)) == whole  # one character at a time
    for cut in range(1, len(output)):
        assert run([output[:cut], output[cut:]]) == whole, cut
    rng = random.Random(name)
    for _ in range(50):
        cuts = sorted(rng.sample(range(1, len(output)), k=min(8, len(output) - 1)))
        chunks = [output[i:j] for i, j in zip([0, *cuts], [*cuts, len(output)])]
        assert run(chunks) == whole


@pytest.mark.parametrize("name", sorted(OUTPUTS))
def test_streamed_answer_agrees_with_parse_completion(name):
    output = OUTPUTS[name]
    content, names, arguments, parsed = run([output])
    assert parsed == parse_completion(output)
    if parsed.kind == "function_call":
        assert names == [parsed.name]
        assert json.loads(arguments) == json.loads(parsed.arguments)
        assert content == (parsed.content or "")
    elif parsed.kind == "content":
        assert names == [] and arguments == ""
        assert content == parsed.content


def test_tricky_arguments_stream_exactly_as_written():
    content, names, arguments, parsed = run(list(OUTPUTS["call_tricky"]))
    assert names == ["get_time"]
    assert arguments == json.dumps(TRICKY_ARGUMENTS, ensure_ascii=False)
    assert json.loads(arguments) == TRICKY_ARGUMENTS


def test_arguments_written_as_an_object_stream_as_its_json_text():
    _, names, arguments, parsed = run(list(OUTPUTS["call_object_arguments"]))
    assert names == ["f"]
    assert arguments == '{"a": [1, {"b": "c}"}], "n": -1.5e3, "t": true}'
    assert parsed.kind == "function_call"


def test_name_comes_before_arguments_even_when_written_after_them():
    parser = StreamParser()
    events = parser.feed(OUTPUTS["call_keys_reversed"])
    assert events == [CallStart("f"), ArgumentsDelta('{"x": 1}')]


def test_content_streams_before_the_answer_is_complete():
    parser = StreamParser()
    assert parser.feed(' ```{"content": "Hel') == [ContentDelta("Hel")]
    assert parser.feed('lo \\') == [ContentDelta("lo ")]  # the escape is held until complete
    assert parser.feed('"x\\ud83d') == [ContentDelta('"x')]  # a high surrogate waits for its pair
    assert parser.feed('\\ude00"') == [ContentDelta("😀")]


def test_plain_text_without_a_json_block_is_content_at_the_end():
    parser = StreamParser()
    assert parser.feed("I cannot ") == []
    assert parser.feed("help.</s>") == []
    events, parsed = parser.finish()
    assert events == [ContentDelta("I cannot help.")]
    assert parsed.kind == "invalid" and parsed.error == "no_json_block"


def test_keys_named_content_inside_other_values_are_not_content():
    content, names, arguments, _ = run(list(OUTPUTS["extra_keys"]))
    assert (content, names, arguments) == ("a", [], "")


def test_truncated_call_streams_what_was_written_and_is_invalid():
    content, names, arguments, parsed = run(list(OUTPUTS["truncated_call"]))
    assert names == ["get_time"]
    assert arguments == '{"location": "Sing'
    assert parsed.kind == "invalid"


def test_random_arguments_round_trip_through_any_chunking():
    rng = random.Random(7)
    alphabet = 'ab "\\/\n\t\u0007é😀{}[]:,'
    for _ in range(60):
        arguments = {
            "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 6))): "".join(
                rng.choice(alphabet) for _ in range(rng.randint(0, 12))
            )
            for _ in range(rng.randint(1, 3))
        }
        output = call("f", arguments)
        cuts = sorted(rng.sample(range(1, len(output)), k=10))
        chunks = [output[i:j] for i, j in zip([0, *cuts], [*cuts, len(output)])]
        _, names, streamed, parsed = run(chunks)
        assert names == ["f"] and json.loads(streamed) == arguments
        assert json.loads(parsed.arguments) == arguments
