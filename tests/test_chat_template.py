"""The Jinja chat template renders exactly bos_token + render_prompt(...), in every engine we target.

Engines: transformers' ``apply_chat_template`` (through a tiny in-memory tokenizer), and
llama-cpp-python's ``Jinja2ChatFormatter`` environment reproduced with plain jinja2 (an
ImmutableSandboxedEnvironment with trim_blocks, lstrip_blocks, loopcontrols and a pass-through
``generation`` tag; variables messages, functions, function_call, tools, tool_choice, bos_token,
eos_token, add_generation_prompt, raise_exception, strftime_now). A plain jinja2 Environment without
trim/lstrip shows the template does not depend on those settings.
"""

import functools
import json
from datetime import datetime

import jinja2
import jinja2.ext
import pytest
from jinja2.sandbox import ImmutableSandboxedEnvironment

from invoker.chat_template import CHAT_TEMPLATE, write_chat_template
from invoker.functions import validate_functions
from invoker.prompt import render_prompt
from samples import GET_TIME

BOS, EOS = "<s>", "</s>"

GET_WEATHER = {
    "name": "get_weather",
    "description": "Get the weather for a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer", "minimum": 1, "maximum": 7}},
        "required": ["city"],
    },
}
BOOK_TRIP = {
    "name": "book_trip",
    "description": "Book a trip <with> 'quotes' & \"double quotes\"\nover two lines",
    "parameters": {
        "type": "object",
        "properties": {
            "travellers": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0}},
                    "required": ["name"],
                },
                "minItems": 1,
            },
            "class": {"type": "string", "enum": ["economy", "business", None]},
            "budget": {"type": ["number", "null"], "default": 1500.5, "exclusiveMaximum": 1e6},
            "refundable": {"type": "boolean", "default": False},
            "flexible": {"const": True},
            "meta": {"type": "object", "properties": {}, "additionalProperties": {"type": "string"}},
            "empty_list": {"type": "array", "items": {}, "examples": [[]]},
        },
        "required": ["travellers"],
        "additionalProperties": False,
    },
}
NO_PARAMETERS = {"name": "ping"}
NON_ASCII = {
    "name": "meteo",
    "description": "Météo à Zürich ☀ — 天气 🌦",
    "parameters": {"type": "object", "properties": {"ville": {"type": "string", "description": "ex. Genève"}}},
}

def user(content):
    return {"role": "user", "content": content}


def assistant(content=None, **fields):
    return {"role": "assistant", "content": content, **fields}


def call(name, arguments):
    return {"name": name, "arguments": arguments}


def tool_call(call_id, name, arguments):
    return {"id": call_id, "type": "function", "function": call(name, arguments)}


def result(name, content):
    return {"role": "function", "name": name, "content": content}


def parts(*texts):
    return [{"type": "text", "text": text} for text in texts]


ASK_TIME = user("Can you check what is the time in Singapore?")
CALL_TIME = assistant(function_call=call("get_time", '{"location": "Singapore", "format": "12-hour"}'))
TIME_RESULT = result("get_time", '{"time": "08:00 AM"}')
TRICKY_TEXT = (
    'quote " backslash \\ slash / newline \n tab \t cr \r bell \x07 esc \x1b del \x7f nbsp \xa0 zwsp \u200b '
    "line-sep \u2028 é 中 😀 {{ x }} {% if %}"
)
EVERY_CHARACTER = "".join(map(chr, range(0x3000))) + "\U0001f600\U0001d11e"
TRIP_ARGUMENTS = {
    "travellers": [{"name": "Ann", "age": 30}, {"name": "Bo"}],
    "class": "economy",
    "budget": None,
    "refundable": True,
    "ratio": 0.25,
}
ECHO = {
    "name": "echo",
    "description": EVERY_CHARACTER,
    "parameters": {"type": "object", "properties": {EVERY_CHARACTER: {}}},
}

CASES = {
    "user_only_no_functions": ([user("Hello!")], None),
    "field_notes_get_time": ([ASK_TIME], [GET_TIME]),
    "system_message": ([{"role": "system", "content": "Answer in French."}, ASK_TIME], [GET_TIME]),
    "several_functions": ([user("Plan my trip")], [GET_TIME, GET_WEATHER, BOOK_TRIP, NO_PARAMETERS]),
    "assistant_text_history": ([user("Hi"), assistant("Hello! How can I help?"), user("Tell a joke")], None),
    "function_call_arguments_string": ([ASK_TIME, CALL_TIME], [GET_TIME]),
    "function_call_arguments_object": (
        [ASK_TIME, {"role": "assistant", "function_call": call("get_time", {"location": "Singapore", "format": "24h"})}],
        [GET_TIME],
    ),
    "function_result_json_content": ([ASK_TIME, CALL_TIME, TIME_RESULT], [GET_TIME]),
    "function_result_plain_text": ([ASK_TIME, CALL_TIME, result("get_time", "It is 08:00 AM.")], [GET_TIME]),
    "function_result_tricky_text": ([ASK_TIME, CALL_TIME, result("get_time", TRICKY_TEXT)], [GET_TIME]),
    "every_character_everywhere": (
        [
            user(EVERY_CHARACTER),
            assistant(function_call=call("echo", {EVERY_CHARACTER: EVERY_CHARACTER})),
            result("echo", EVERY_CHARACTER),
            assistant(EVERY_CHARACTER),
        ],
        [ECHO],
    ),
    "function_result_null_and_empty": (
        [ASK_TIME, CALL_TIME, result("get_time", None), result("get_time", "")],
        [GET_TIME],
    ),
    "tool_calls_and_tool_results": (
        [
            user("Time and weather in Oslo?"),
            assistant(
                tool_calls=[
                    tool_call("call_1", "get_time", '{"location": "Oslo"}'),
                    tool_call("call_2", "get_weather", {"city": "Oslo", "days": 2}),
                ]
            ),
            {"role": "tool", "tool_call_id": "call_2", "content": '{"forecast": ["sun", "rain"]}'},
            {"role": "tool", "tool_call_id": "call_1", "content": "10:00"},
            assistant("It is 10:00; sun then rain."),
        ],
        [GET_TIME, GET_WEATHER],
    ),
    "tool_call_with_content_and_name_fallback": (
        [
            ASK_TIME,
            assistant("Let me look.", tool_calls=[tool_call("a", "get_time", "{}")]),
            {"role": "tool", "tool_call_id": "a", "name": "ignored_when_id_matches", "content": "08:00"},
            {"role": "tool", "name": "get_time", "content": "09:00"},
        ],
        [GET_TIME],
    ),
    "assistant_content_and_function_call": (
        [ASK_TIME, assistant("Sure.", function_call=call("get_time", '{"location": "Singapore"}'))],
        [GET_TIME],
    ),
    "multi_turn": (
        [
            {"role": "system", "content": "Be brief."},
            ASK_TIME,
            CALL_TIME,
            TIME_RESULT,
            assistant("The time in Singapore is 08:00 AM."),
            user("And the weather there tomorrow?"),
            assistant(function_call=call("get_weather", '{"city": "Singapore", "days": 1}')),
            result("get_weather", "Thunderstorms, 31°C"),
            assistant("Thunderstorms, 31 °C."),
            user("Thanks!"),
        ],
        [GET_TIME, GET_WEATHER],
    ),
    "nested_array_enum_schema": (
        [user("Book economy for Ann (30) and Bo"), assistant(function_call=call("book_trip", TRIP_ARGUMENTS))],
        [BOOK_TRIP],
    ),
    "non_ascii_text": (
        [
            user("Quel temps fait-il à Genève ? 天气怎么样？ 🌦"),
            assistant(function_call=call("meteo", {"ville": "Genève"})),
            result("meteo", "Ensoleillé ☀, 22 °C — 晴"),
            assistant("Il fait beau à Genève ☀."),
        ],
        [NON_ASCII],
    ),
    "content_parts_list": (
        [
            {"role": "system", "content": parts("Part A")},
            user(parts("First part", "second part")),
            assistant(parts("Calling."), tool_calls=[tool_call("t", "ping", "{}")]),
            {"role": "tool", "tool_call_id": "t", "content": parts("pong", '"ok"')},
        ],
        [NO_PARAMETERS],
    ),
    "template_syntax_in_text": ([user("{{ bos_token }} {% for x in y %} {# c #} ```json\n{}\n```")], [GET_TIME]),
    "empty_strings": ([{"role": "system", "content": ""}, user(""), assistant(""), user(" ")], None),
}


class IgnoreGenerationTags(jinja2.ext.Extension):
    """Like llama-cpp-python's: ``{% generation %}...{% endgeneration %}`` renders its body."""

    tags = {"generation"}

    def parse(self, parser):
        parser.stream.skip(1)
        return parser.parse_statements(("name:endgeneration",), drop_needle=True)


@functools.cache
def llama_cpp_template() -> jinja2.Template:
    environment = ImmutableSandboxedEnvironment(
        loader=jinja2.BaseLoader(),
        trim_blocks=True,
        lstrip_blocks=True,
        extensions=[IgnoreGenerationTags, jinja2.ext.loopcontrols],
    )
    return environment.from_string(CHAT_TEMPLATE)


@functools.cache
def plain_template() -> jinja2.Template:
    return jinja2.Environment().from_string(CHAT_TEMPLATE)


def raise_value_error(message):
    raise ValueError(message)


def render_llama_cpp(messages, *, functions=None, tools=None, add_generation_prompt=True) -> str:
    """What Jinja2ChatFormatter.__call__ renders (llama-cpp-python 0.3.x)."""
    return llama_cpp_template().render(
        messages=messages,
        eos_token=EOS,
        bos_token=BOS,
        raise_exception=raise_value_error,
        add_generation_prompt=add_generation_prompt,
        functions=functions,
        function_call=None,
        tools=tools,
        tool_choice=None,
        strftime_now=lambda fmt: datetime.now().strftime(fmt),
    )


def as_tools(functions):
    return None if functions is None else [{"type": "function", "function": function} for function in functions]


@pytest.fixture(scope="module")
def hf_tokenizer():
    tokenizers = pytest.importorskip("tokenizers")
    transformers = pytest.importorskip("transformers")
    vocab = {"<unk>": 0, BOS: 1, EOS: 2}
    backend = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token=BOS, eos_token=EOS, unk_token="<unk>"
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def render_transformers(tokenizer, messages, *, add_generation_prompt=True, **variables) -> str:
    return tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=add_generation_prompt, **variables
    )


def expected(messages, functions, *, add_generation_prompt=True) -> str:
    return BOS + render_prompt(messages, functions=functions, add_generation_prompt=add_generation_prompt)


def test_corpus_is_valid_and_renders_like_its_validated_form():
    assert len(CASES) >= 15
    for messages, functions in CASES.values():
        if functions is not None:
            validated = validate_functions(functions)
            assert render_prompt(messages, functions=validated) == render_prompt(messages, functions=functions)


@pytest.mark.parametrize("case", CASES)
def test_llama_cpp_with_functions(case):
    messages, functions = CASES[case]
    assert render_llama_cpp(messages, functions=functions) == expected(messages, functions)


@pytest.mark.parametrize("case", CASES)
def test_llama_cpp_with_tools(case):
    messages, functions = CASES[case]
    assert render_llama_cpp(messages, tools=as_tools(functions)) == expected(messages, functions)


@pytest.mark.parametrize("case", CASES)
def test_transformers_with_tools(case, hf_tokenizer):
    messages, functions = CASES[case]
    rendered = render_transformers(hf_tokenizer, messages, tools=as_tools(functions))
    assert rendered == expected(messages, functions)


@pytest.mark.parametrize("case", CASES)
def test_transformers_with_functions_kwarg(case, hf_tokenizer):
    messages, functions = CASES[case]
    rendered = render_transformers(hf_tokenizer, messages, functions=functions)
    assert rendered == expected(messages, functions)


@pytest.mark.parametrize("case", CASES)
def test_plain_environment_without_trim_settings(case):
    messages, functions = CASES[case]
    rendered = plain_template().render(
        messages=messages, functions=functions, bos_token=BOS, add_generation_prompt=True
    )
    assert rendered == expected(messages, functions)


@pytest.mark.parametrize("case", ["function_call_arguments_string", "multi_turn", "tool_calls_and_tool_results"])
def test_without_generation_prompt(case, hf_tokenizer):
    messages, functions = CASES[case]
    want = expected(messages, functions, add_generation_prompt=False)
    assert not want.endswith("ASSISTANT:")
    assert render_llama_cpp(messages, functions=functions, add_generation_prompt=False) == want
    assert render_transformers(hf_tokenizer, messages, tools=as_tools(functions), add_generation_prompt=False) == want


def test_raw_function_defs_render_like_validated_ones(hf_tokenizer):
    raw = {
        "parameters": {
            "required": ["city"],
            "additionalProperties": False,
            "properties": {"city": {"type": "string"}},
            "type": "object",
        },
        "description": "Weather",
        "name": "weather",
        "strict": True,
    }
    messages = [{"role": "user", "content": "Weather in Oslo?"}]
    want = expected(messages, validate_functions([raw]))
    assert render_llama_cpp(messages, tools=as_tools([raw])) == want
    assert render_transformers(hf_tokenizer, messages, tools=as_tools([raw])) == want


def test_functions_take_precedence_over_tools():
    messages = [{"role": "user", "content": "Hi"}]
    rendered = render_llama_cpp(messages, functions=[GET_TIME], tools=as_tools([GET_WEATHER]))
    assert rendered == expected(messages, [GET_TIME])


@pytest.mark.parametrize(
    "messages",
    [
        [{"role": "bot", "content": "hi"}],
        [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}],
        [{"role": "user", "content": "x"}, {"role": "tool", "tool_call_id": "nope", "content": "8"}],
        [{"role": "user", "content": "x"}, {"role": "assistant", "content": None}],
    ],
)
def test_bad_messages_raise_in_both_engines(messages, hf_tokenizer):
    with pytest.raises(ValueError):
        render_prompt(messages)
    with pytest.raises(ValueError):
        render_llama_cpp(messages)
    with pytest.raises(jinja2.TemplateError):
        hf_tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def test_template_avoids_tojson_and_starts_with_bos():
    assert "tojson" not in CHAT_TEMPLATE.replace("{#", "\0").split("#}", 1)[-1]
    assert render_llama_cpp([{"role": "user", "content": "x"}]).startswith(BOS + "Available Functions:")
    assert not CHAT_TEMPLATE.endswith("\n")


def test_write_chat_template_updates_config_and_writes_jinja(tmp_path):
    config = {"model_max_length": 4096, "bos_token": BOS, "chat_template": "old", "add_bos_token": True}
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    write_chat_template(tmp_path)
    written = json.loads((tmp_path / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert written == {**config, "chat_template": CHAT_TEMPLATE}
    assert list(written) == list(config)
    assert (tmp_path / "chat_template.jinja").read_text(encoding="utf-8") == CHAT_TEMPLATE
    assert sorted(path.name for path in tmp_path.iterdir()) == ["chat_template.jinja", "tokenizer_config.json"]


def test_write_chat_template_without_config_and_twice(tmp_path):
    write_chat_template(str(tmp_path))
    write_chat_template(tmp_path)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert config == {"chat_template": CHAT_TEMPLATE}
    assert (tmp_path / "chat_template.jinja").stat().st_mode & 0o777 == 0o644
