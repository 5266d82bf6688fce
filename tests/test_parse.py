"""parse_completion turns Invoker's output into content / function_call / invalid, and never raises."""

import json

import pytest

from invoker.parse import ParsedCompletion, parse_completion
from invoker.prompt import render_assistant_turn

FUNCTIONS = [{"name": "get_time", "parameters": {"type": "object", "properties": {"location": {"type": "string"}}}}]
CALL = '```{"content": null, "function_call": {"name": "get_time", "arguments": "{\\"location\\": \\"Singapore\\", \\"format\\": \\"12-hour\\"}"}}```'
ARGUMENTS = '{"location": "Singapore", "format": "12-hour"}'


def test_function_call_in_the_models_format():
    parsed = parse_completion(" " + CALL + "</s>", functions=FUNCTIONS)
    assert parsed == ParsedCompletion(kind="function_call", name="get_time", arguments=ARGUMENTS, raw=" " + CALL + "</s>")


def test_arguments_as_an_object_become_a_json_string():
    text = '```{"content": null, "function_call": {"name": "get_time", "arguments": {"location": "Singapore", "format": "12-hour"}}}```'
    parsed = parse_completion(text)
    assert parsed.kind == "function_call"
    assert parsed.arguments == ARGUMENTS


def test_compact_arguments_are_reserialized_stably():
    text = '```{"content": null, "function_call": {"name": "get_time", "arguments": "{\\"location\\":\\"Genève\\"}"}}```'
    assert parse_completion(text).arguments == '{"location": "Genève"}'


def test_content_answer():
    text = '```{"content": "The time in Singapore is 08:00 AM.", "function_call": null}```</s>'
    parsed = parse_completion(text, functions=FUNCTIONS)
    assert (parsed.kind, parsed.content, parsed.name, parsed.error) == ("content", "The time in Singapore is 08:00 AM.", None, None)


def test_content_without_function_call_key():
    assert parse_completion('```{"content": "Hi"}```').content == "Hi"


@pytest.mark.parametrize(
    "text",
    [
        '```json\n{"content": "Hi", "function_call": null}\n```',
        '```JSON {"content": "Hi", "function_call": null}```',
        '\n\n  ```{"content": "Hi", "function_call": null}```  \n',
        '```{"content": "Hi", "function_call": null}``` </s>',
        '```{"content": "Hi", "function_call": null}',
        '{"content": "Hi", "function_call": null}',
        'Sure! Here you go: ```{"content": "Hi", "function_call": null}``` trailing words',
        'A code fence ```python first```, then ```{"content": "Hi", "function_call": null}```',
    ],
)
def test_tolerated_wrappings(text):
    parsed = parse_completion(text)
    assert (parsed.kind, parsed.content, parsed.raw) == ("content", "Hi", text)


def test_escaped_quotes_and_backticks_inside_strings():
    content = 'He said "use ```code```" \\ done'
    text = render_assistant_turn(content=content, function_call=None)
    assert parse_completion(text).content == content


def test_round_trip_with_the_renderer():
    turn = render_assistant_turn(content=None, function_call={"name": "get_time", "arguments": {"location": "Zürich"}})
    parsed = parse_completion(turn + "</s>", functions=FUNCTIONS)
    assert (parsed.kind, parsed.name, json.loads(parsed.arguments)) == ("function_call", "get_time", {"location": "Zürich"})


def test_content_and_call_together_keep_both():
    text = '```{"content": "Checking.", "function_call": {"name": "get_time", "arguments": "{}"}}```'
    parsed = parse_completion(text)
    assert (parsed.kind, parsed.content, parsed.name, parsed.arguments) == ("function_call", "Checking.", "get_time", "{}")


@pytest.mark.parametrize("arguments", ['"arguments": ""', '"arguments": null', ""])
def test_missing_or_empty_arguments_mean_no_arguments(arguments):
    separator = ", " if arguments else ""
    text = '```{"content": null, "function_call": {"name": "get_time"' + separator + arguments + "}}```"
    assert parse_completion(text).arguments == "{}"


def test_plain_text_is_no_json_block():
    parsed = parse_completion("The time is 8 AM.</s>")
    assert (parsed.kind, parsed.error, parsed.content, parsed.raw) == ("invalid", "no_json_block", "The time is 8 AM.", "The time is 8 AM.</s>")
    assert parsed.detail


@pytest.mark.parametrize("text", ["", "   ", "</s>", "```python\nprint(1)\n```", "``` no json here"])
def test_no_json_block(text):
    assert parse_completion(text).error == "no_json_block"


@pytest.mark.parametrize(
    "text",
    [
        '```{"content": null, "function_call": {"name": "get_time", "arguments": "{\\"loc',
        '```{"content": "Hi", "function_call": null',
        "```{content: Hi}```",
        '```{"content": "Hi", "function_call": None}```',
        '```{"content": "Hi",}```',
        "{oops",
    ],
)
def test_invalid_json(text):
    parsed = parse_completion(text)
    assert (parsed.kind, parsed.error, parsed.raw) == ("invalid", "invalid_json", text)
    assert parsed.detail


@pytest.mark.parametrize(
    "text",
    [
        '```{"text": "Hi"}```',
        '```{"content": null, "function_call": null}```',
        '```{"content": 42, "function_call": null}```',
        '```{"content": null, "function_call": "get_time"}```',
        '```{"content": null, "function_call": {"arguments": "{}"}}```',
        '```{"content": null, "function_call": {"name": "", "arguments": "{}"}}```',
    ],
)
def test_bad_shape(text):
    parsed = parse_completion(text)
    assert (parsed.kind, parsed.error) == ("invalid", "bad_shape")


def test_only_an_object_opens_an_answer():
    assert parse_completion("```[1, 2]```").error == "no_json_block"
    assert parse_completion('```{"content": ["x"]}```').error == "bad_shape"


def test_arguments_invalid_json():
    text = '```{"content": null, "function_call": {"name": "get_time", "arguments": "{\\"location\\": Singapore}"}}```'
    parsed = parse_completion(text, functions=FUNCTIONS)
    assert (parsed.kind, parsed.error, parsed.name, parsed.arguments) == ("invalid", "invalid_arguments_json", "get_time", None)


@pytest.mark.parametrize("arguments", ['"[\\"Singapore\\"]"', '["Singapore"]', '"\\"Singapore\\""', "42"])
def test_arguments_not_an_object(arguments):
    text = '```{"content": null, "function_call": {"name": "get_time", "arguments": ' + arguments + "}}```"
    parsed = parse_completion(text)
    assert (parsed.kind, parsed.error, parsed.name) == ("invalid", "arguments_not_object", "get_time")


def test_unknown_function_keeps_name_and_arguments():
    text = CALL.replace("get_time", "get_weather")
    parsed = parse_completion(text, functions=FUNCTIONS)
    assert (parsed.kind, parsed.error, parsed.name, parsed.arguments) == ("invalid", "unknown_function", "get_weather", ARGUMENTS)
    assert "get_weather" in parsed.detail


def test_any_name_is_accepted_without_functions():
    assert parse_completion(CALL.replace("get_time", "anything")).kind == "function_call"


def test_empty_functions_list_makes_every_call_unknown():
    assert parse_completion(CALL, functions=[]).error == "unknown_function"


@pytest.mark.parametrize("text", [None, 42, b"```{}```"])
def test_never_raises_on_wrong_input_types(text):
    assert parse_completion(text).kind == "invalid"
