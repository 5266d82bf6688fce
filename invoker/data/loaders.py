"""Read function-calling conversations from files or the Hugging Face Hub as Invoker records.

Every source becomes the same record shape (docs/DATA.md): ``{"id", "split", "kind", "functions",
"messages"}`` whose last message is the target assistant turn. A conversation with several
assistant turns becomes one record per assistant turn (each with everything before it as context),
ids suffixed ``-1``, ``-2``, ... Records already in Invoker's own shape (they carry ``id`` and
``kind``) are kept whole.

Accepted shapes, detected per record with ``format="auto"``:

- ``openai``: ``{"messages": [...], "functions": [...]}`` or ``{"messages": [...], "tools": [...]}``;
  assistant ``tool_calls`` become one ``function_call`` turn each (followed by its result),
  ``tool`` results become ``function`` results.
- ``glaive`` (glaiveai/glaive-function-calling-v2): ``{"system": "SYSTEM: ... {function json} ...",
  "chat": "USER: ... ASSISTANT: <functioncall> {...} <|endoftext|> FUNCTION RESPONSE: ..."}``.
- ``toolbench`` (OpenBMB/ToolBench, also ShareGPT-style): ``{"conversations": [{"from", "value"}]}``
  with the API list in the system turn and ``Action:`` / ``Action Input:`` in assistant turns.

Bad input raises ``DataError`` naming the file and line (or dataset row) and the field. Reading the
files and datasets themselves is ``invoker.data.sources``.
"""

from __future__ import annotations

import ast
import copy
import json
import os
import re
from typing import Any, Literal

from invoker.data.sources import DataError, read_jsonl, rows, write_jsonl

FORMATS = ("auto", "openai", "glaive", "toolbench")
KINDS = ("call", "no_call", "followup")
NAME_PATTERN = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")

__all__ = ["DataError", "FORMATS", "convert_row", "load_conversations", "read_jsonl", "write_jsonl"]


# --------------------------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------------------------
def load_conversations(
    source: str | os.PathLike,
    *,
    format: str = "auto",
    split: str | None = None,
    limit: int | None = None,
    on_error: Literal["raise", "skip"] = "raise",
) -> list[dict]:
    """Load conversations from a ``.jsonl``/``.json`` file, a directory of them, or a Hub dataset id.

    ``split``: for a Hub dataset, the split to load (default ``"train"``); for local files, records
    that name their own split are kept only when it matches, the others are labeled with it
    (default ``"train"``). ``limit`` caps the number of records returned (a Hub dataset is then
    streamed). ``on_error="skip"`` drops unusable rows instead of raising ``DataError``.
    """
    if format not in FORMATS:
        raise DataError(str(source), f"unknown format {format!r}; expected one of {', '.join(FORMATS)}")
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    records: list[dict] = []
    if limit == 0:
        return records
    for where, default_id, row in rows(source, split=split, limit=limit):
        try:
            if isinstance(row, DataError):
                raise row
            converted = convert_row(row, format=format, where=where, default_id=default_id, split=split)
        except DataError:
            if on_error == "skip":
                continue
            raise
        for record in converted:
            records.append(record)
            if limit is not None and len(records) >= limit:
                return records
    return records


def convert_row(
    row: Any, *, format: str = "auto", where: str = "<record>", default_id: str = "record", split: str | None = None
) -> list[dict]:
    """One source row -> Invoker records (one per assistant turn; ``[]`` if ``split`` filters it out)."""
    if not isinstance(row, dict):
        raise DataError(where, f"expected a JSON object, got {_json_type(row)}")
    shape = _detect(row, where) if format == "auto" else format
    own_split = row.get("split")
    if own_split is not None and not isinstance(own_split, str):
        raise DataError(where, f"must be a string, got {_json_type(own_split)}", field="split")
    if own_split is not None and split is not None and own_split != split:
        return []
    label = own_split or (split.split("[")[0] if split else "train")
    base_id = row.get("id")
    base_id = str(base_id) if base_id not in (None, "") else default_id
    if shape == "openai":
        functions = _functions_of_openai_row(row, where)
        messages = _openai_messages(row.get("messages"), where)
        if "kind" in row and "id" in row:  # already an Invoker record: keep it whole
            return [_native_record(row, base_id, label, functions, messages, where)]
    elif shape == "glaive":
        functions, messages = _glaive(row, where)
    elif shape == "toolbench":
        functions, messages = _toolbench(row, where)
    else:
        raise DataError(where, f"unknown format {shape!r}")
    return _records_per_target(messages, functions, base_id=base_id, split=label, where=where)


# --------------------------------------------------------------------------------------------
# Shapes
# --------------------------------------------------------------------------------------------
def _detect(row: dict, where: str) -> str:
    if "messages" in row:
        return "openai"
    if "chat" in row:
        return "glaive"
    if "conversations" in row:
        return "toolbench"
    keys = ", ".join(sorted(map(str, row))) or "none"
    raise DataError(
        where,
        f"unrecognized record (keys: {keys}); expected 'messages' (OpenAI style), 'system' + 'chat' "
        "(glaive) or 'conversations' (ToolBench)",
    )


def _records_per_target(messages: list[dict], functions: list[dict], *, base_id: str, split: str, where: str) -> list[dict]:
    targets = [
        index for index, message in enumerate(messages)
        if message["role"] == "assistant" and any(m["role"] == "user" for m in messages[:index])
    ]
    if not targets:
        raise DataError(where, "no assistant turn after a user turn, so nothing to learn from", field="messages")
    records = []
    for number, index in enumerate(targets, start=1):
        context = copy.deepcopy(messages[: index + 1])
        records.append({
            "id": base_id if len(targets) == 1 else f"{base_id}-{number}",
            "split": split,
            "kind": _kind_of(context),
            "functions": copy.deepcopy(functions),
            "messages": context,
        })
    return records


def _kind_of(messages: list[dict]) -> str:
    if messages[-1].get("function_call"):
        return "call"
    if len(messages) > 1 and messages[-2]["role"] == "function":
        return "followup"
    return "no_call"


def _native_record(row: dict, base_id: str, split: str, functions: list[dict], messages: list[dict], where: str) -> dict:
    kind = row.get("kind")
    if kind not in KINDS:
        raise DataError(where, f"must be one of {', '.join(KINDS)}, got {kind!r}", field="kind")
    if messages[-1]["role"] != "assistant":
        raise DataError(where, "the last message must be the target assistant turn", field=f"messages[{len(messages) - 1}].role")
    record = {"id": base_id, "split": split, "kind": kind, "functions": functions, "messages": messages}
    answers = row.get("answers")
    if answers is not None:  # accepted values per argument, scored by BFCL's rules (pipelines.metrics)
        if not (isinstance(answers, dict) and all(isinstance(values, list) and values for values in answers.values())):
            raise DataError(where, "must map each argument name to a non-empty list of accepted values", field="answers")
        if messages[-1].get("function_call") is None:
            raise DataError(where, "only a record whose target is a function call has accepted values", field="answers")
        record["answers"] = answers
    return record


# ---- OpenAI style ------------------------------------------------------------------------------
def _functions_of_openai_row(row: dict, where: str) -> list[dict]:
    if row.get("functions") is not None:
        return normalize_functions(row["functions"], where=where, field="functions")
    if row.get("tools") is not None:
        return normalize_functions(row["tools"], where=where, field="tools")
    return []


def _openai_messages(raw: Any, where: str, field: str = "messages") -> list[dict]:
    if not isinstance(raw, list) or not raw:
        raise DataError(where, "must be a non-empty list of messages", field=field)
    out: list[dict] = []
    tool_names: dict[str, str] = {}
    consumed: set[int] = set()
    for index, message in enumerate(raw):
        if index in consumed:
            continue
        here = f"{field}[{index}]"
        if not isinstance(message, dict):
            raise DataError(where, f"must be an object, got {_json_type(message)}", field=here)
        role = message.get("role")
        if role in ("system", "user"):
            out.append({"role": role, "content": _text_content(message.get("content"), where, f"{here}.content")})
        elif role == "assistant":
            calls = _assistant_calls(message, where, here, tool_names)
            if not calls:
                content = _text_content(
                    message.get("content"), where, f"{here}.content", missing="an assistant message needs content or a function call"
                )
                out.append({"role": "assistant", "content": content})
                continue
            # Invoker makes one call per turn: interleave parallel tool calls with their results.
            results = _following_tool_results(raw, index, len(calls))
            for call_id, call in calls:
                out.append({"role": "assistant", "content": None, "function_call": call})
                if len(calls) > 1 and call_id in results:
                    result_index = results[call_id]
                    consumed.add(result_index)
                    result = raw[result_index]
                    out.append({
                        "role": "function",
                        "name": call["name"],
                        "content": _result_content(result.get("content"), where, f"{field}[{result_index}].content"),
                    })
        elif role in ("function", "tool"):
            name = message.get("name")
            if name is None and role == "tool":
                name = tool_names.get(message.get("tool_call_id"))
                if name is None:
                    raise DataError(where, f"{message.get('tool_call_id')!r} matches no earlier tool call", field=f"{here}.tool_call_id")
            if not isinstance(name, str) or not name:
                raise DataError(where, "a function result needs the function's name", field=f"{here}.name")
            out.append({"role": "function", "name": name, "content": _result_content(message.get("content"), where, f"{here}.content")})
        else:
            raise DataError(where, f"unknown role {role!r} (expected system, user, assistant, function or tool)", field=f"{here}.role")
    return out


def _assistant_calls(message: dict, where: str, here: str, tool_names: dict[str, str]) -> list[tuple[str | None, dict]]:
    calls: list[tuple[str | None, dict]] = []
    if message.get("function_call") is not None:
        calls.append((None, _function_call(message["function_call"], where, f"{here}.function_call")))
    tool_calls = message.get("tool_calls") or []
    if not isinstance(tool_calls, list):
        raise DataError(where, f"must be a list, got {_json_type(tool_calls)}", field=f"{here}.tool_calls")
    for number, tool_call in enumerate(tool_calls):
        field = f"{here}.tool_calls[{number}]"
        if not isinstance(tool_call, dict) or not isinstance(tool_call.get("function"), dict):
            raise DataError(where, "must be an object with a 'function' object", field=field)
        call = _function_call(tool_call["function"], where, f"{field}.function")
        if tool_call.get("id") is not None:
            tool_names[str(tool_call["id"])] = call["name"]
        calls.append((str(tool_call["id"]) if tool_call.get("id") is not None else None, call))
    return calls


def _following_tool_results(raw: list, index: int, count: int) -> dict[str, int]:
    found: dict[str, int] = {}
    for later in range(index + 1, min(len(raw), index + 1 + count)):
        message = raw[later]
        if not isinstance(message, dict) or message.get("role") != "tool" or message.get("tool_call_id") is None:
            break
        found[str(message["tool_call_id"])] = later
    return found


def _function_call(call: Any, where: str, field: str) -> dict:
    if not isinstance(call, dict):
        raise DataError(where, f"must be an object, got {_json_type(call)}", field=field)
    name = call.get("name")
    if not isinstance(name, str) or not name:
        raise DataError(where, "a function call needs a name", field=f"{field}.name")
    return {"name": name, "arguments": _arguments(call.get("arguments", {}), where, f"{field}.arguments")}


def _arguments(arguments: Any, where: str, field: str) -> str:
    """Arguments as ``json.dumps`` of a JSON object (key order kept)."""
    if isinstance(arguments, str):
        if not arguments.strip():
            arguments = {}
        else:
            try:
                arguments = json.loads(arguments)
            except json.JSONDecodeError as error:
                raise DataError(where, f"not valid JSON: {error.msg} (column {error.colno})", field=field) from None
    if not isinstance(arguments, dict):
        raise DataError(where, f"must be a JSON object, got {_json_type(arguments)}", field=field)
    return json.dumps(arguments)


def _text_content(content: Any, where: str, field: str, *, missing: str | None = None) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI content parts
        texts = [part.get("text") for part in content if isinstance(part, dict) and part.get("type") == "text"]
        if len(texts) == len(content) and all(isinstance(text, str) for text in texts):
            return "".join(texts)
        raise DataError(where, "only text content parts are supported", field=field)
    if content is None:
        raise DataError(where, missing or "is missing", field=field)
    raise DataError(where, f"must be a string, got {_json_type(content)}", field=field)


def _result_content(content: Any, where: str, field: str) -> str:
    if isinstance(content, str):
        return content
    if content is None:
        raise DataError(where, "a function result needs content", field=field)
    return json.dumps(content)


def normalize_functions(functions: Any, *, where: str, field: str = "functions") -> list[dict]:
    """Function definitions (or OpenAI ``tools``) -> ``[{"name", "description"?, "parameters"}]``.

    Lighter than ``invoker.functions.validate_functions`` (no meta-schema pass) so that loading a
    100k-row dataset stays fast; the names and the parameters' outline are checked.
    """
    if not isinstance(functions, list):
        raise DataError(where, f"must be a list of function definitions, got {_json_type(functions)}", field=field)
    normalized: list[dict] = []
    seen: set[str] = set()
    for index, function in enumerate(functions):
        here = f"{field}[{index}]"
        if isinstance(function, dict) and function.get("type") == "function" and isinstance(function.get("function"), dict):
            function, here = function["function"], f"{here}.function"
        if not isinstance(function, dict):
            raise DataError(where, f"must be an object, got {_json_type(function)}", field=here)
        name = function.get("name")
        if name is None:
            raise DataError(where, "a function needs a name", field=f"{here}.name")
        if not isinstance(name, str) or not NAME_PATTERN.match(name):
            raise DataError(where, f"{name!r} must be 1 to 64 characters of a-z, A-Z, 0-9, '_' or '-'", field=f"{here}.name")
        if name in seen:
            raise DataError(where, f"duplicate function name {name!r}", field=f"{here}.name")
        seen.add(name)
        entry: dict[str, Any] = {"name": name}
        description = function.get("description")
        if description is not None:
            if not isinstance(description, str):
                raise DataError(where, f"must be a string, got {_json_type(description)}", field=f"{here}.description")
            entry["description"] = description
        entry["parameters"] = _parameters(function.get("parameters"), where, f"{here}.parameters")
        normalized.append(entry)
    return normalized


def _parameters(parameters: Any, where: str, field: str) -> dict:
    if parameters is None:
        return {"type": "object", "properties": {}}
    if not isinstance(parameters, dict):
        raise DataError(where, f"must be a JSON Schema object, got {_json_type(parameters)}", field=field)
    kind = parameters.get("type", "object")
    if kind != "object":
        raise DataError(where, f"must be 'object', got {kind!r}", field=f"{field}.type")
    properties = parameters.get("properties", {})
    if not isinstance(properties, dict) or not all(isinstance(schema, dict) for schema in properties.values()):
        raise DataError(where, "must map parameter names to schema objects", field=f"{field}.properties")
    ordered: dict[str, Any] = {"type": "object", "properties": copy.deepcopy(properties)}
    if "required" in parameters:
        required = parameters["required"]
        if not isinstance(required, list) or not all(isinstance(name, str) for name in required):
            raise DataError(where, "must be a list of parameter names", field=f"{field}.required")
        for number, name in enumerate(required):
            if name not in properties:
                raise DataError(where, f"{name!r} is not one of the properties", field=f"{field}.required[{number}]")
        ordered["required"] = list(required)
    for key, value in parameters.items():
        if key not in ("type", "properties", "required", "optional"):  # ToolBench's "optional" is not JSON Schema
            ordered[key] = copy.deepcopy(value)
    return ordered


# ---- glaive-function-calling-v2 ------------------------------------------------------------------
_GLAIVE_MARKER = re.compile(r"(?:^|\n)[ \t]*(SYSTEM|USER|ASSISTANT|FUNCTION RESPONSE):[ \t]?")
_GLAIVE_BOILERPLATE = (
    "You are a helpful assistant with access to the following functions. Use them if required -",
    "You are a helpful assistant, with no access to external functions.",
)
_GLAIVE_CALL = re.compile(r"\{\s*\"name\"\s*:\s*\"(?P<name>[^\"]*)\"\s*,\s*\"arguments\"\s*:\s*'(?P<arguments>.*)'\s*\}\s*$", re.S)


def _glaive(row: dict, where: str) -> tuple[list[dict], list[dict]]:
    system = row.get("system") or ""
    chat = row.get("chat")
    if not isinstance(system, str):
        raise DataError(where, f"must be a string, got {_json_type(system)}", field="system")
    if not isinstance(chat, str) or not chat.strip():
        raise DataError(where, "must be a non-empty string of USER:/ASSISTANT: turns", field="chat")
    raw_functions, system_text = _glaive_system(system, where)
    functions = normalize_functions(raw_functions, where=where, field="system.functions")
    messages: list[dict] = [{"role": "system", "content": system_text}] if system_text else []
    markers = list(_GLAIVE_MARKER.finditer(chat))
    if not markers or chat[: markers[0].start()].strip():
        raise DataError(where, "must start with a role marker such as 'USER:'", field="chat")
    last_call: str | None = None
    for number, marker in enumerate(markers):
        end = markers[number + 1].start() if number + 1 < len(markers) else len(chat)
        body = chat[marker.end() : end].replace("<|endoftext|>", "").strip()
        role = marker.group(1)
        field = f"chat turn {number + 1} ({role})"
        if role == "USER":
            messages.append({"role": "user", "content": body})
        elif role == "SYSTEM":
            messages.append({"role": "system", "content": body})
        elif role == "ASSISTANT":
            if "<functioncall>" in body:  # any text before the call is dropped: Invoker calls carry no content
                call = _glaive_call(body.split("<functioncall>", 1)[1], where, field)
                messages.append({"role": "assistant", "content": None, "function_call": call})
                last_call = call["name"]
            elif body:
                messages.append({"role": "assistant", "content": body})
            else:
                raise DataError(where, "empty assistant turn", field=field)
        else:
            if last_call is None:
                raise DataError(where, "a function response without an earlier <functioncall>", field=field)
            messages.append({"role": "function", "name": last_call, "content": _normalized_json_text(body)})
    return functions, messages


def _glaive_system(system: str, where: str) -> tuple[list[Any], str | None]:
    text = system.strip().removeprefix("SYSTEM:").strip()
    decoder = json.JSONDecoder()
    functions: list[Any] = []
    rest: list[str] = []
    position = 0
    while True:
        start = text.find("{", position)
        if start < 0:
            rest.append(text[position:])
            break
        rest.append(text[position:start])
        try:
            function, position = decoder.raw_decode(text, start)
        except json.JSONDecodeError as error:
            raise DataError(where, f"a function definition is not valid JSON: {error.msg} (offset {error.pos})", field="system") from None
        functions.append(function)
    leftover = " ".join(" ".join(rest).split())
    for boilerplate in _GLAIVE_BOILERPLATE:
        leftover = leftover.replace(boilerplate, "").strip()
    return functions, leftover or None


def _glaive_call(payload: str, where: str, field: str) -> dict:
    payload = payload.strip()
    try:
        parsed = json.loads(payload)
    except json.JSONDecodeError:
        match = _GLAIVE_CALL.match(payload)  # glaive quotes arguments with '...': not JSON
        if match is None:
            raise DataError(where, f"cannot parse the <functioncall>: {payload[:80]!r}", field=field) from None
        parsed = {"name": match["name"], "arguments": match["arguments"].replace("\\'", "'")}
    return _function_call(parsed, where, f"{field}.functioncall")


def _normalized_json_text(text: str) -> str:
    try:
        return json.dumps(json.loads(text))
    except json.JSONDecodeError:
        return text


# ---- ToolBench / ShareGPT ------------------------------------------------------------------------
_SHAREGPT_ROLES = {
    "system": "system", "user": "user", "human": "user", "assistant": "assistant", "gpt": "assistant",
    "function": "function", "observation": "function", "tool": "function", "function_call": "function_call",
}
_API_LIST_MARKER = "Specifically, you have access to the following APIs:"
_ACTION = re.compile(r"Action:\s*(?P<name>[^\n]+?)\s*\nAction Input:\s*(?P<arguments>.*)", re.S)


def _toolbench(row: dict, where: str) -> tuple[list[dict], list[dict]]:
    turns = row.get("conversations")
    if not isinstance(turns, list) or not turns:
        raise DataError(where, "must be a non-empty list of {from, value} turns", field="conversations")
    raw_functions: Any = row.get("functions", row.get("tools"))
    functions_field = "functions" if "functions" in row else "tools"
    if isinstance(raw_functions, str):  # ShareGPT exports keep tools as a JSON string
        try:
            raw_functions = json.loads(raw_functions) if raw_functions.strip() else []
        except json.JSONDecodeError as error:
            raise DataError(where, f"not valid JSON: {error.msg}", field=functions_field) from None
    messages: list[dict] = []
    last_call: str | None = None
    for index, turn in enumerate(turns):
        here = f"conversations[{index}]"
        if not isinstance(turn, dict):
            raise DataError(where, f"must be an object, got {_json_type(turn)}", field=here)
        speaker = turn.get("from")
        role = _SHAREGPT_ROLES.get(speaker) if isinstance(speaker, str) else None
        if role is None:
            raise DataError(where, f"unknown role {speaker!r} (expected system, user, assistant or function)", field=f"{here}.from")
        value = turn.get("value")
        if role == "function" and isinstance(value, (dict, list)):
            value = json.dumps(value)
        if not isinstance(value, str):
            raise DataError(where, f"must be a string, got {_json_type(value)}", field=f"{here}.value")
        if role == "system":
            api_list = _toolbench_api_list(value, where, f"{here}.value")
            if api_list is not None:
                raw_functions, functions_field = api_list, f"{here}.value"  # the ReAct instructions are dropped
            elif value.strip():
                messages.append({"role": "system", "content": value.strip()})
        elif role == "user":
            messages.append({"role": "user", "content": value.strip()})
        elif role == "function_call":
            try:
                call = json.loads(value)
            except json.JSONDecodeError as error:
                raise DataError(where, f"not valid JSON: {error.msg}", field=f"{here}.value") from None
            call = _function_call(call, where, f"{here}.value")
            messages.append({"role": "assistant", "content": None, "function_call": call})
            last_call = call["name"]
        elif role == "assistant":
            action = _ACTION.search(value)
            if action is None:
                text = re.sub(r"^\s*Thought:\s*", "", value).strip()
                if not text:
                    raise DataError(where, "empty assistant turn", field=f"{here}.value")
                messages.append({"role": "assistant", "content": text})
                continue
            name = action["name"].strip()
            arguments_text = action["arguments"].strip().removesuffix("End Action").strip()
            if name == "Finish":  # ToolBench's pseudo-function for the final answer
                answer = _finish_answer(arguments_text, where, f"{here}.value")
                if answer is None:  # give_up_and_restart: nothing after this is a usable target
                    break
                messages.append({"role": "assistant", "content": answer})
                continue
            call = _function_call({"name": name, "arguments": arguments_text}, where, f"{here}.value (Action Input)")
            messages.append({"role": "assistant", "content": None, "function_call": call})
            last_call = name
        else:
            name = turn.get("name") or last_call
            if not name:
                raise DataError(where, "a function result without an earlier action", field=here)
            messages.append({"role": "function", "name": name, "content": value.strip()})
    functions = normalize_functions(raw_functions if raw_functions is not None else [], where=where, field=functions_field)
    return [f for f in functions if f["name"] != "Finish"], messages


def _toolbench_api_list(value: str, where: str, field: str) -> list | None:
    if _API_LIST_MARKER not in value:
        return None
    text = value.split(_API_LIST_MARKER, 1)[1].strip()
    try:
        api_list = ast.literal_eval(text)  # ToolBench writes str(list_of_dicts): a Python literal
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        try:
            api_list = json.loads(text)
        except json.JSONDecodeError:
            raise DataError(where, "the API list is neither a Python nor a JSON literal", field=field) from None
    if not isinstance(api_list, list):
        raise DataError(where, f"the API list must be a list, got {_json_type(api_list)}", field=field)
    return api_list


def _finish_answer(arguments_text: str, where: str, field: str) -> str | None:
    arguments = json.loads(_arguments(arguments_text, where, f"{field} (Finish input)"))
    if arguments.get("return_type") != "give_answer":
        return None
    answer = arguments.get("final_answer")
    if not isinstance(answer, str) or not answer.strip():
        raise DataError(where, "Finish with give_answer needs a final_answer string", field=field)
    return answer.strip()


def _json_type(value: Any) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", int: "integer", float: "number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)
