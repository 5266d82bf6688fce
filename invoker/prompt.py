"""Invoker's prompt format: OpenAI-style messages and functions -> prompt text (without BOS).

The first-turn prompt is byte-identical to the original ``InvokerPipeline.format_message``
(jeffrey-fong/Invoker) for ASCII input. History is written in the model's own output format
(valid JSON), a deliberate fix of the original. ``invoker/chat_template.jinja`` renders exactly the
same text; docs/PROMPT-FORMAT.md explains the format and every decision.
"""

from __future__ import annotations

import json
from typing import Any

from invoker.json_values import JSONValueError, check_json_value

SYSTEM_PROMPT = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions. "
    "The assistant calls functions with appropriate input when necessary."
)
FUNCTIONS_HEADER = "Available Functions:"
GENERATION_PROMPT = "\nASSISTANT:"
ROLES = ("system", "user", "assistant", "function", "tool")
PARAMETER_KEYS_FIRST = ("type", "properties", "required")


class PromptError(ValueError):
    """A message has a shape the prompt cannot express; ``field`` says where."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def to_json(value: Any) -> str:
    """JSON as the prompt writes it: json.dumps defaults, but non-ASCII kept as is (like the template)."""
    return json.dumps(value, ensure_ascii=False)


def render_prompt(
    messages: list[dict], *, functions: list[dict] | None = None, add_generation_prompt: bool = True
) -> str:
    """Messages (+ validated function defs) -> Invoker prompt text, without BOS."""
    _check_message_list(messages)
    parts = [render_functions_block(functions), "\n\n", SYSTEM_PROMPT]
    parts += [_render_message(messages, index=index) for index in range(len(messages))]
    if add_generation_prompt:
        parts.append(GENERATION_PROMPT)
    return "".join(parts)


def render_functions_block(functions: list[dict] | None) -> str:
    """The "Available Functions:" header: one ```json block per function, or "None"."""
    if not functions:
        return f"{FUNCTIONS_HEADER}\nNone"
    blocks = [f"\n```json\n{to_json(_canonical_function(function))}\n```" for function in functions]
    return FUNCTIONS_HEADER + "".join(blocks)


def render_assistant_turn(*, content: str | None, function_call: dict | None) -> str:
    """The model's own output for one turn, e.g. ```{"content": null, "function_call": {...}}``` (no EOS)."""
    if content is not None and not isinstance(content, str):
        raise PromptError("content", f"must be a string or null, got {type(content).__name__}")
    if function_call is not None:
        _check_function_call(function_call, field="function_call")
    elif content is None:
        raise PromptError("content", "an assistant turn needs content or a function_call")
    return _assistant_turn(content=content, function_call=function_call)


def render_function_result(*, name: str, content: str | None) -> str:
    """A function's result as the prompt shows it: ```{"name": "...", "content": "..."}```."""
    return "```" + to_json({"name": name, "content": content}) + "```"


def _canonical_function(function: dict) -> dict:
    """Key order name, description, parameters{type, properties, required, rest}; as the template does."""
    ordered: dict[str, Any] = {"name": function.get("name")}
    if function.get("description") is not None:
        ordered["description"] = function["description"]
    parameters = function.get("parameters")
    if parameters is None:
        parameters = {"type": "object", "properties": {}}
    if isinstance(parameters, dict):
        first = {key: parameters[key] for key in PARAMETER_KEYS_FIRST if key in parameters}
        rest = {key: value for key, value in parameters.items() if key not in PARAMETER_KEYS_FIRST}
        parameters = {**first, **rest}
    ordered["parameters"] = parameters
    return ordered


def _assistant_turn(*, content: str | None, function_call: dict | None) -> str:
    call = None
    if function_call is not None:
        call = {"name": function_call["name"], "arguments": _arguments_string(function_call.get("arguments"))}
    return "```" + to_json({"content": content, "function_call": call}) + "```"


def _arguments_string(arguments: str | dict) -> str:
    return arguments if isinstance(arguments, str) else to_json(arguments)


def _check_message_list(messages: Any) -> None:
    if not isinstance(messages, list):
        raise PromptError("messages", "must be a list of messages")
    if not messages:
        raise PromptError("messages", "must contain at least one message")
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            raise PromptError(f"messages[{index}]", "must be an object")
        try:
            check_json_value(message, field=f"messages[{index}]")  # text a tokenizer cannot encode, NaN, nesting
        except JSONValueError as err:
            raise PromptError(err.field, err.message) from None
        role = message.get("role")
        if role not in ROLES:
            raise PromptError(f"messages[{index}].role", f"unknown role {role!r}; expected one of {', '.join(ROLES)}")


def _render_message(messages: list[dict], *, index: int) -> str:
    message = messages[index]
    field = f"messages[{index}]"
    role = message["role"]
    if role in ("system", "user"):
        return f"\n{role.upper()}: {_required_text(message, field=field)}"
    if role == "assistant":
        return _render_assistant(message, field=field)
    if role == "function":
        name = _function_message_name(message, field=field)
        return "\nFUNCTION: " + render_function_result(name=name, content=_text(message, field=field))
    name = _tool_message_name(messages, index=index)
    return "\nFUNCTION: " + render_function_result(name=name, content=_text(message, field=field))


def _render_assistant(message: dict, *, field: str) -> str:
    content = _text(message, field=field)
    tool_calls = message.get("tool_calls")
    if tool_calls:
        calls = _tool_call_functions(tool_calls, field=f"{field}.tool_calls")
        contents = [content] + [None] * (len(calls) - 1)  # the message's text goes with its first call
        turns = [_assistant_turn(content=text, function_call=call) for text, call in zip(contents, calls)]
        return "".join(f"\nASSISTANT: {turn}" for turn in turns)
    function_call = message.get("function_call")
    if function_call is not None:
        _check_function_call(function_call, field=f"{field}.function_call")
    elif content is None:
        raise PromptError(field, "an assistant message needs content, function_call or tool_calls")
    return f"\nASSISTANT: {_assistant_turn(content=content, function_call=function_call)}"


def _tool_call_functions(tool_calls: Any, *, field: str) -> list[dict]:
    if not isinstance(tool_calls, list):
        raise PromptError(field, "must be a list of tool calls")
    functions = []
    for index, tool_call in enumerate(tool_calls):
        call_field = f"{field}[{index}]"
        if not isinstance(tool_call, dict):
            raise PromptError(call_field, "must be an object")
        if tool_call.get("type", "function") != "function":
            raise PromptError(f"{call_field}.type", f"must be 'function', got {tool_call.get('type')!r}")
        _check_function_call(tool_call.get("function"), field=f"{call_field}.function")
        functions.append(tool_call["function"])
    return functions


def _check_function_call(function_call: Any, *, field: str) -> None:
    if not isinstance(function_call, dict):
        raise PromptError(field, "must be an object with name and arguments")
    if not isinstance(function_call.get("name"), str):
        raise PromptError(f"{field}.name", "must be a string")
    if not isinstance(function_call.get("arguments"), (str, dict)):
        raise PromptError(f"{field}.arguments", "must be a JSON string or an object")


def _function_message_name(message: dict, *, field: str) -> str:
    name = message.get("name")
    if not isinstance(name, str):
        raise PromptError(f"{field}.name", "a function message needs the function's name")
    return name


def _tool_message_name(messages: list[dict], *, index: int) -> str:
    """The name of the tool call this result answers (last earlier match wins), else the message's name."""
    message = messages[index]
    call_id = message.get("tool_call_id")
    name = None
    for earlier in messages[:index]:
        if earlier["role"] != "assistant":
            continue
        for tool_call in earlier.get("tool_calls") or []:
            if call_id is not None and tool_call.get("id") == call_id:
                name = tool_call["function"]["name"]
    name = name if name is not None else message.get("name")
    if not isinstance(name, str):
        raise PromptError(
            f"messages[{index}].tool_call_id", f"no earlier assistant tool call has id {call_id!r} and no name is given"
        )
    return name


def _required_text(message: dict, *, field: str) -> str:
    text = _text(message, field=field)
    if text is None:
        raise PromptError(f"{field}.content", f"is required for role {message['role']!r}")
    return text


def _text(message: dict, *, field: str) -> str | None:
    """Message content as text: a string, None, or text parts joined with newlines."""
    content = message.get("content")
    if content is None or isinstance(content, str):
        return content
    if not isinstance(content, list):
        kind = type(content).__name__
        raise PromptError(f"{field}.content", f"must be a string, null or a list of text parts, got {kind}")
    return "\n".join(_part_text(part, field=f"{field}.content[{n}]") for n, part in enumerate(content))


def _part_text(part: Any, *, field: str) -> str:
    if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
        raise PromptError(field, "only {'type': 'text', 'text': ...} parts are supported")
    return part["text"]
