"""Golden renderings of Invoker's prompt.

The first-turn strings are written by hand from the original ``InvokerPipeline.format_message``
(jeffrey-fong/Invoker @ a0ea16d): they must match it byte for byte. History turns follow our
documented fix (the model's own output format, valid JSON).
"""

import json

import pytest

from invoker.prompt import (
    SYSTEM_PROMPT,
    PromptError,
    render_assistant_turn,
    render_function_result,
    render_prompt,
)
from samples import GET_TIME

SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "
    "detailed, and polite answers to the user's questions. The assistant calls functions with appropriate "
    "input when necessary."
)

GET_TIME_LINE = (
    '{"name": "get_time", "description": "Get the current time", "parameters": {"type": "object", "properties": '
    '{"location": {"type": "string", "description": "The city and state, e.g. New York City, NY"}, "format": '
    '{"type": "string", "enum": ["12-hour", "24-hour"]}}, "required": ["location"]}}'
)
GET_WEATHER = {
    "name": "get_weather",
    "description": "Get the weather for a city",
    "parameters": {
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            "days": {"type": "integer", "minimum": 1, "maximum": 7},
        },
        "required": ["city", "days"],
    },
}
GET_WEATHER_LINE = (
    '{"name": "get_weather", "description": "Get the weather for a city", "parameters": {"type": "object", '
    '"properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}, '
    '"days": {"type": "integer", "minimum": 1, "maximum": 7}}, "required": ["city", "days"]}}'
)
SEND_EMAIL = {
    "name": "send_email",
    "description": "Send an email",
    "parameters": {
        "type": "object",
        "properties": {"to": {"type": "array", "items": {"type": "string"}}, "urgent": {"type": "boolean"}},
        "required": [],
    },
}
SEND_EMAIL_LINE = (
    '{"name": "send_email", "description": "Send an email", "parameters": {"type": "object", "properties": '
    '{"to": {"type": "array", "items": {"type": "string"}}, "urgent": {"type": "boolean"}}, "required": []}}'
)
ASK_TIME = {"role": "user", "content": "Can you check what is the time in Singapore?"}


def test_system_prompt_is_the_original_text():
    assert SYSTEM_PROMPT == SYSTEM


def test_field_notes_example_is_byte_identical():
    expected = (
        "Available Functions:\n"
        "```json\n"
        f"{GET_TIME_LINE}\n"
        "```\n"
        "\n"
        f"{SYSTEM}\n"
        "USER: Can you check what is the time in Singapore?\n"
        "ASSISTANT:"
    )
    assert render_prompt([ASK_TIME], functions=[GET_TIME]) == expected


def test_no_functions_renders_none():
    expected = f"Available Functions:\nNone\n\n{SYSTEM}\nUSER: Hello!\nASSISTANT:"
    assert render_prompt([{"role": "user", "content": "Hello!"}]) == expected
    assert render_prompt([{"role": "user", "content": "Hello!"}], functions=None) == expected
    # the original printed a bare header for an empty list; we treat [] as "no functions"
    assert render_prompt([{"role": "user", "content": "Hello!"}], functions=[]) == expected


def test_several_functions_one_block_each():
    expected = (
        "Available Functions:\n"
        f"```json\n{GET_TIME_LINE}\n```\n"
        f"```json\n{GET_WEATHER_LINE}\n```\n"
        f"```json\n{SEND_EMAIL_LINE}\n```\n"
        "\n"
        f"{SYSTEM}\n"
        "USER: What's the weather in Oslo for 3 days?\n"
        "ASSISTANT:"
    )
    messages = [{"role": "user", "content": "What's the weather in Oslo for 3 days?"}]
    assert render_prompt(messages, functions=[GET_TIME, GET_WEATHER, SEND_EMAIL]) == expected


def test_system_message_becomes_a_system_line_after_the_fixed_text():
    messages = [{"role": "system", "content": "Answer in French."}, ASK_TIME]
    expected = (
        f"Available Functions:\n```json\n{GET_TIME_LINE}\n```\n\n{SYSTEM}\n"
        "SYSTEM: Answer in French.\n"
        "USER: Can you check what is the time in Singapore?\n"
        "ASSISTANT:"
    )
    assert render_prompt(messages, functions=[GET_TIME]) == expected


def test_first_turn_user_text_is_written_raw():
    messages = [{"role": "user", "content": 'Say "hi"\n\tand {braces} \\ backslash'}]
    assert render_prompt(messages).endswith('\nUSER: Say "hi"\n\tand {braces} \\ backslash\nASSISTANT:')


def test_full_conversation_call_result_summary():
    messages = [
        ASK_TIME,
        {"role": "assistant", "content": None, "function_call": {"name": "get_time", "arguments": '{"location": "Singapore", "format": "12-hour"}'}},
        {"role": "function", "name": "get_time", "content": '{"time": "08:00 AM"}'},
        {"role": "assistant", "content": "The time in Singapore is 08:00 AM."},
        {"role": "user", "content": "Thanks!"},
    ]
    expected = (
        f"Available Functions:\n```json\n{GET_TIME_LINE}\n```\n\n{SYSTEM}\n"
        "USER: Can you check what is the time in Singapore?\n"
        'ASSISTANT: ```{"content": null, "function_call": {"name": "get_time", "arguments": '
        '"{\\"location\\": \\"Singapore\\", \\"format\\": \\"12-hour\\"}"}}```\n'
        'FUNCTION: ```{"name": "get_time", "content": "{\\"time\\": \\"08:00 AM\\"}"}```\n'
        'ASSISTANT: ```{"content": "The time in Singapore is 08:00 AM.", "function_call": null}```\n'
        "USER: Thanks!\n"
        "ASSISTANT:"
    )
    assert render_prompt(messages, functions=[GET_TIME]) == expected


def test_history_turns_are_valid_json_in_the_models_format():
    messages = [
        ASK_TIME,
        {"role": "assistant", "function_call": {"name": "get_time", "arguments": {"location": "Singapore"}}},
        {"role": "function", "name": "get_time", "content": "08:00"},
    ]
    lines = render_prompt(messages, functions=[GET_TIME]).split("\n")
    for line in lines[-3:-1]:
        block = line.split(": ", 1)[1]
        assert block.startswith("```") and block.endswith("```")
        json.loads(block[3:-3])


def test_arguments_as_object_equal_arguments_as_its_json_string():
    as_object = {"role": "assistant", "content": None, "function_call": {"name": "get_time", "arguments": {"location": "Singapore"}}}
    as_string = {"role": "assistant", "content": None, "function_call": {"name": "get_time", "arguments": '{"location": "Singapore"}'}}
    assert render_prompt([ASK_TIME, as_object]) == render_prompt([ASK_TIME, as_string])


def test_string_arguments_are_kept_verbatim():
    message = {"role": "assistant", "function_call": {"name": "f", "arguments": '{"a":1}'}}
    assert '"arguments": "{\\"a\\":1}"' in render_prompt([ASK_TIME, message])


def test_tool_calls_render_one_assistant_turn_each_and_tool_results_find_their_names():
    messages = [
        {"role": "user", "content": "Time and weather in Oslo?"},
        {
            "role": "assistant",
            "content": "Checking both.",
            "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_time", "arguments": '{"location": "Oslo"}'}},
                {"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo", "days": 1}'}},
            ],
        },
        {"role": "tool", "tool_call_id": "call_2", "content": "Sunny"},
        {"role": "tool", "tool_call_id": "call_1", "content": "10:00"},
    ]
    expected_tail = (
        "USER: Time and weather in Oslo?\n"
        'ASSISTANT: ```{"content": "Checking both.", "function_call": {"name": "get_time", "arguments": "{\\"location\\": \\"Oslo\\"}"}}```\n'
        'ASSISTANT: ```{"content": null, "function_call": {"name": "get_weather", "arguments": "{\\"city\\": \\"Oslo\\", \\"days\\": 1}"}}```\n'
        'FUNCTION: ```{"name": "get_weather", "content": "Sunny"}```\n'
        'FUNCTION: ```{"name": "get_time", "content": "10:00"}```\n'
        "ASSISTANT:"
    )
    assert render_prompt(messages, functions=[GET_TIME, GET_WEATHER]).endswith("\n" + expected_tail)


def test_tool_result_falls_back_to_its_name():
    messages = [ASK_TIME, {"role": "tool", "name": "get_time", "content": "08:00"}]
    assert render_prompt(messages).endswith('\nFUNCTION: ```{"name": "get_time", "content": "08:00"}```\nASSISTANT:')


def test_content_parts_are_joined_with_newlines():
    messages = [{"role": "user", "content": [{"type": "text", "text": "Line one"}, {"type": "text", "text": "Line two"}]}]
    assert render_prompt(messages).endswith("\nUSER: Line one\nLine two\nASSISTANT:")


def test_function_result_content_is_a_json_string():
    content = 'He said "hi"\\ then\nleft\t\u00e9\u4e2d\x01'
    assert render_function_result(name="f", content=content) == (
        '```{"name": "f", "content": "He said \\"hi\\"\\\\ then\\nleft\\t\u00e9\u4e2d\\u0001"}```'
    )
    assert render_function_result(name="f", content=None) == '```{"name": "f", "content": null}```'


def test_non_ascii_is_kept_as_is_everywhere():
    function = {"name": "meteo", "description": "Météo à Zürich ☀", "parameters": {"type": "object", "properties": {}}}
    prompt = render_prompt([{"role": "user", "content": "Quel temps à Zürich ?"}], functions=[function])
    assert '{"name": "meteo", "description": "Météo à Zürich ☀", ' in prompt
    assert "\\u" not in prompt


def test_function_keys_are_rendered_in_canonical_order():
    messy = {"parameters": {"required": [], "properties": {}, "type": "object"}, "description": "d", "name": "f"}
    prompt = render_prompt([ASK_TIME], functions=[messy])
    assert '\n{"name": "f", "description": "d", "parameters": {"type": "object", "properties": {}, "required": []}}\n' in prompt


def test_without_generation_prompt():
    messages = [ASK_TIME, {"role": "assistant", "content": "Let me check."}]
    prompt = render_prompt(messages, add_generation_prompt=False)
    assert prompt.endswith('\nASSISTANT: ```{"content": "Let me check.", "function_call": null}```')


def test_render_assistant_turn():
    assert render_assistant_turn(content=None, function_call={"name": "get_time", "arguments": '{"location": "Singapore"}'}) == (
        '```{"content": null, "function_call": {"name": "get_time", "arguments": "{\\"location\\": \\"Singapore\\"}"}}```'
    )
    assert render_assistant_turn(content=None, function_call={"name": "get_time", "arguments": {"location": "Singapore"}}) == (
        '```{"content": null, "function_call": {"name": "get_time", "arguments": "{\\"location\\": \\"Singapore\\"}"}}```'
    )
    assert render_assistant_turn(content='It is "8"', function_call=None) == '```{"content": "It is \\"8\\"", "function_call": null}```'


@pytest.mark.parametrize(
    ("content", "function_call", "field"),
    [
        (None, None, "content"),
        (3, None, "content"),
        (None, {"arguments": "{}"}, "function_call.name"),
        (None, {"name": "f", "arguments": ["a"]}, "function_call.arguments"),
        (None, "get_time", "function_call"),
    ],
)
def test_render_assistant_turn_rejects_bad_shapes(content, function_call, field):
    with pytest.raises(PromptError) as caught:
        render_assistant_turn(content=content, function_call=function_call)
    assert caught.value.field == field


@pytest.mark.parametrize(
    ("messages", "field", "fragment"),
    [
        ({"role": "user"}, "messages", "must be a list"),
        ([], "messages", "at least one"),
        ([ASK_TIME, "hi"], "messages[1]", "must be an object"),
        ([ASK_TIME, ASK_TIME, {"role": "bot", "content": "x"}], "messages[2].role", "unknown role 'bot'"),
        ([{"content": "x"}], "messages[0].role", "unknown role None"),
        ([{"role": "user", "content": None}], "messages[0].content", "is required"),
        ([{"role": "system"}], "messages[0].content", "is required"),
        ([{"role": "user", "content": 5}], "messages[0].content", "must be a string"),
        ([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}], "messages[0].content[0]", "text"),
        ([ASK_TIME, {"role": "assistant", "content": None}], "messages[1]", "needs content"),
        ([ASK_TIME, {"role": "assistant", "function_call": {"name": "f"}}], "messages[1].function_call.arguments", "JSON string"),
        ([ASK_TIME, {"role": "assistant", "function_call": {"arguments": "{}"}}], "messages[1].function_call.name", "string"),
        ([ASK_TIME, {"role": "assistant", "tool_calls": {"id": "x"}}], "messages[1].tool_calls", "list"),
        ([ASK_TIME, {"role": "assistant", "tool_calls": [{"type": "code", "function": {}}]}], "messages[1].tool_calls[0].type", "function"),
        ([ASK_TIME, {"role": "assistant", "tool_calls": [{"id": "x"}]}], "messages[1].tool_calls[0].function", "object"),
        ([ASK_TIME, {"role": "function", "content": "8"}], "messages[1].name", "name"),
        ([ASK_TIME, {"role": "tool", "tool_call_id": "call_9", "content": "8"}], "messages[1].tool_call_id", "'call_9'"),
    ],
)
def test_bad_messages_name_the_field(messages, field, fragment):
    with pytest.raises(PromptError) as caught:
        render_prompt(messages)
    assert caught.value.field == field
    assert fragment in caught.value.message
    assert str(caught.value) == f"{field}: {caught.value.message}"


def test_history_extends_the_prompt_by_a_space_and_the_models_turn():
    """A training target is " " + render_assistant_turn(...) (+ EOS) after a prompt ending in "ASSISTANT:"."""
    call = {"name": "get_time", "arguments": '{"location": "Singapore"}'}
    answer = "The time in Singapore is 08:00 AM."
    messages = [ASK_TIME, {"role": "assistant", "content": None, "function_call": call}]
    messages += [{"role": "function", "name": "get_time", "content": "08:00 AM"}, {"role": "assistant", "content": answer}]
    turns = {1: render_assistant_turn(content=None, function_call=call), 3: render_assistant_turn(content=answer, function_call=None)}
    for index, turn in turns.items():
        prompt = render_prompt(messages[:index], functions=[GET_TIME])
        assert prompt + " " + turn == render_prompt(messages[: index + 1], functions=[GET_TIME], add_generation_prompt=False)


def test_text_no_tokenizer_can_encode_is_refused_naming_the_field():
    """A lone surrogate (JSON's "\\ud800") cannot be UTF-8 encoded: the runtimes failed on it."""
    messages = [{"role": "user", "content": "hi"},
                {"role": "user", "content": [{"type": "text", "text": "ok"}, {"type": "text", "text": "\ud800"}]}]
    with pytest.raises(PromptError) as error:
        render_prompt(messages)
    assert error.value.field == "messages[1].content[1].text"
    assert render_prompt([{"role": "user", "content": "Zürich 😀"}]).count("Zürich 😀") == 1
