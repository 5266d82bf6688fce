"""BFCL suites: the Berkeley Function Calling Leaderboard's single-turn Python categories as eval records.

``bfcl:simple``, ``bfcl:multiple`` and ``bfcl:irrelevance`` (and their ``live_`` counterparts, whose
train side by ``live_split`` the bundled model is trained on) read the test data the ``bfcl-eval``
package ships (``bfcl_eval/data``, Apache-2.0), or the same files from a directory the user names
(``bfcl:simple@/path/to/data``). Each entry becomes one record of our eval format with BFCL's
function docs mapped to JSON Schema, and — for the categories with ground truth — an ``answers``
field: per argument, the values BFCL accepts. ``pipelines.metrics.score_case`` scores such records
with ``answers_match``, which follows the rules of BFCL's AST checker
(``bfcl_eval/eval_checker/ast_eval/ast_checker.py``); tests/test_bfcl.py checks the two agree.
Rules and figures: docs/EVAL.md, section "BFCL suites".
"""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import json
import re
from pathlib import Path
from typing import Any

from invoker.functions import FunctionSchemaError, validate_functions

# The non-live categories stay evaluation only; the live ones (real user-contributed functions) are
# also training data for the bundled model, split by function set (``live_split``).
CATEGORIES = ("simple", "multiple", "irrelevance", "live_simple", "live_multiple", "live_irrelevance")
LIVE_CATEGORIES = tuple(category for category in CATEGORIES if category.startswith("live_"))
LIVE_DEV_SHARE = 5  # one function set in 5 of each live category is held out ("dev"), the rest is "train"
SUITES = tuple(f"bfcl:{category}" for category in CATEGORIES)
INSTALL_HINT = "pip install --no-deps bfcl-eval==2026.3.23"
# The data file of each category: BFCL_v<N>_<stem>.json, newest N first; possible answers live under
# possible_answer/ with the same file name (irrelevance has none, by design).
FILE_STEMS = {"simple": ("simple_python", "simple"), "multiple": ("multiple",), "irrelevance": ("irrelevance",),
              "live_simple": ("live_simple",), "live_multiple": ("live_multiple",), "live_irrelevance": ("live_irrelevance",)}
RECORD_KINDS = {category: "no_call" if category.endswith("irrelevance") else "call" for category in CATEGORIES}
# BFCL appends this to every function description of its Python categories, for every model.
PYTHON_HINT = " Note that the provided function is in Python 3 syntax."
FLOAT_HINT = " This is a float type value."
# BFCL type names -> JSON Schema types, as bfcl_eval/constants/type_mappings.py (GORILLA_TO_OPENAPI)
# maps them for function-calling APIs; an unknown or missing type becomes "string" there too.
JSON_TYPES = {
    "integer": "integer",
    "number": "number",
    "float": "number",
    "string": "string",
    "boolean": "boolean",
    "bool": "boolean",
    "array": "array",
    "list": "array",
    "dict": "object",
    "object": "object",
    "tuple": "array",
    "any": "string",
}
# The Python type BFCL's checker wants for a value of each JSON Schema type (its PYTHON_TYPE_MAPPING:
# float -> float, tuple -> list, any -> str, dict -> dict).
PYTHON_TYPES = {"string": str, "integer": int, "number": float, "boolean": bool, "array": list, "object": dict}
# BFCL's string normalisation: drop spaces and , . / - _ * ^, lowercase, single quotes -> double.
_IGNORED_CHARACTERS = re.compile(r"[ ,./\-_*^]")
_NO_TYPE = object()


class BfclDataError(ValueError):
    """BFCL data missing or not in the expected shape; the message names the file and entry."""


def parse_suite_name(name: str) -> tuple[str, Path | None]:
    """``bfcl:simple`` -> ("simple", None); ``bfcl:simple@/data`` -> ("simple", Path("/data"))."""
    spec = name[len("bfcl:") :] if name.startswith("bfcl:") else name
    category, _, data_dir = spec.partition("@")
    if category not in CATEGORIES:
        raise BfclDataError(f"unknown BFCL suite {name!r}; choose one of: {', '.join(SUITES)} (optionally @DATA_DIR)")
    return category, (Path(data_dir) if data_dir else None)


def load_bfcl_suite(category: str, *, data_dir: Path | None = None, limit: int | None = None) -> list[dict]:
    """The eval records of one BFCL category (the first ``limit`` entries, in BFCL's order)."""
    data_file = find_data_file(category, data_dir=data_dir or package_data_dir())
    entries = read_entries(data_file)[:limit]
    has_answers = RECORD_KINDS[category] == "call"
    answers = read_answers(data_file.parent / "possible_answer" / data_file.name) if has_answers else {}
    records = []
    for entry in entries:
        where = f"{data_file}: entry {entry.get('id')!r}"
        if has_answers and entry.get("id") not in answers:
            raise BfclDataError(f"{where}: no possible answer in possible_answer/{data_file.name}")
        records.append(bfcl_record(entry, ground_truth=answers.get(entry.get("id")), kind=RECORD_KINDS[category], where=where))
    return records


def live_split(entry_id: str) -> str:
    """"dev" or "train" for a live entry, by its function set: BFCL's live ids read
    ``<category>_<index>-<function set>-<n>``, and every entry of one set lands on the same side, so
    the dev side's functions are never trained on."""
    category, _, numbers = entry_id.rpartition("_")
    parts = numbers.split("-")
    if category not in LIVE_CATEGORIES or len(parts) != 3 or not all(part.isdigit() for part in parts):
        raise BfclDataError(f"{entry_id!r} is not a BFCL live id (<live category>_<index>-<function set>-<n>)")
    digest = hashlib.sha256(f"{category}:{parts[1]}".encode()).digest()
    return "dev" if int.from_bytes(digest[:8], "big") % LIVE_DEV_SHARE == 0 else "train"


def load_live_side(category: str, *, side: str, data_dir: Path | None = None) -> list[dict]:
    """The records of one live category on one side ("train" or "dev") of ``live_split``."""
    if category not in LIVE_CATEGORIES or side not in ("train", "dev"):
        raise BfclDataError(f"no {side!r} side of {category!r}: live categories are {', '.join(LIVE_CATEGORIES)}, sides train and dev")
    return [record for record in load_bfcl_suite(category, data_dir=data_dir) if live_split(record["id"]) == side]


def package_data_dir() -> Path:
    """``bfcl_eval/data`` of the installed bfcl-eval package (located without importing it)."""
    spec = importlib.util.find_spec("bfcl_eval")
    if spec is None or not spec.submodule_search_locations:
        raise BfclDataError(
            f"the bfcl-eval package is not installed: `{INSTALL_HINT}`, "
            "or name a directory holding BFCL's data files: bfcl:simple@/path/to/bfcl_eval/data"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def find_data_file(category: str, *, data_dir: Path) -> Path:
    """The newest ``BFCL_v<N>_<stem>.json`` of ``category`` in ``data_dir``."""
    if not data_dir.is_dir():
        raise BfclDataError(f"{data_dir}: no such directory (expected BFCL's data directory)")
    for stem in FILE_STEMS[category]:
        pattern = re.compile(rf"BFCL_v(\d+)_{stem}\.json")
        found = [(int(match.group(1)), path) for path in data_dir.iterdir() if (match := pattern.fullmatch(path.name))]
        if found:
            return max(found)[1]
    names = " or ".join(f"BFCL_v<N>_{stem}.json" for stem in FILE_STEMS[category])
    raise BfclDataError(f"{data_dir}: no {names} (expected BFCL's data directory)")


def read_entries(path: Path) -> list[dict]:
    """BFCL's JSON-lines file: one object per line."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as error:
        raise BfclDataError(f"{path}: cannot read: {error.strerror or error}") from None
    entries = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as error:
            raise BfclDataError(f"{path}:{number}: malformed JSON: {error.msg}") from None
        if not isinstance(entry, dict):
            raise BfclDataError(f"{path}:{number}: expected a JSON object")
        entries.append(entry)
    return entries


def read_answers(path: Path) -> dict[str, dict]:
    """Possible answers by entry id: ``{id: {function_name: {param: [accepted values]}}}`` (one call)."""
    if not path.is_file():
        raise BfclDataError(f"{path}: no such file (BFCL's possible answers)")
    answers = {}
    for entry in read_entries(path):
        calls = entry.get("ground_truth")
        if not (isinstance(calls, list) and len(calls) == 1 and isinstance(calls[0], dict) and len(calls[0]) == 1):
            raise BfclDataError(f"{path}: entry {entry.get('id')!r}: ground_truth must hold exactly one call")
        (arguments,) = calls[0].values()
        if not (isinstance(arguments, dict) and all(isinstance(values, list) for values in arguments.values())):
            raise BfclDataError(f"{path}: entry {entry.get('id')!r}: the call must map each argument to a list of accepted values")
        answers[entry.get("id")] = calls[0]
    return answers


def bfcl_record(entry: dict, *, ground_truth: dict | None, kind: str, where: str) -> dict:
    """One BFCL entry -> {id, split, kind, functions, messages[, answers]} (see docs/EVAL.md)."""
    if not isinstance(entry.get("id"), str):
        raise BfclDataError(f"{where}: id must be a string")
    question = entry.get("question")
    if not (isinstance(question, list) and len(question) == 1 and isinstance(question[0], list) and question[0]):
        raise BfclDataError(f"{where}: question must be one turn (a list of messages)")
    if not all(isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in question[0]):
        raise BfclDataError(f"{where}: each message of the question must have a string role and content")
    docs = entry.get("function")
    if not isinstance(docs, list) or not (docs or kind == "no_call"):  # an irrelevance entry may offer none
        raise BfclDataError(f"{where}: function must be a non-empty list of function docs")
    try:
        functions = validate_functions([json_schema_function(doc) for doc in docs])
    except (FunctionSchemaError, KeyError, TypeError, AttributeError) as error:
        raise BfclDataError(f"{where}: function docs do not map to valid JSON Schema: {error}") from None
    messages = [{"role": message["role"], "content": message["content"]} for message in question[0]]
    record = {"id": entry["id"], "split": "eval", "kind": kind, "functions": functions, "messages": messages}
    if ground_truth is None:
        # no reference text exists: only the kind of answer (text, not a call) is scored
        messages.append({"role": "assistant", "content": ""})
        return record
    (bfcl_name, answers), = ground_truth.items()
    function = next((fn for fn in functions if fn["name"] == function_name(bfcl_name)), None)
    if function is None:
        raise BfclDataError(f"{where}: the possible answer calls {bfcl_name!r}, which is not among the entry's functions")
    arguments = minimal_arguments(answers, schema=function["parameters"])
    messages.append(
        {"role": "assistant", "content": None, "function_call": {"name": function["name"], "arguments": json.dumps(arguments)}}
    )
    record["answers"] = copy.deepcopy(answers)
    return record


def satisfiable(record: dict) -> bool:
    """Whether some call passes ``record``'s possible answers: a few live entries list no accepted value for
    an argument, or answers with an argument the function does not have (e.g. live_multiple_964-207-0);
    BFCL's checker fails every output there. Training skips them; the suites keep them, as BFCL does."""
    call = record["messages"][-1].get("function_call")
    function = next((fn for fn in record["functions"] if call and fn["name"] == call["name"]), None)
    if function is None or "answers" not in record:
        return False
    properties = function["parameters"].get("properties") or {}
    answers = record["answers"]
    return (all(values and name in properties for name, values in answers.items())
            and all(name in answers for name in function["parameters"].get("required") or []))


def function_name(name: str) -> str:
    """BFCL's rule for APIs that forbid dots in names (OpenAI: ^[a-zA-Z0-9_-]{1,64}$): '.' -> '_'."""
    return name.replace(".", "_")


def json_schema_function(doc: dict) -> dict:
    """A BFCL function doc as a function definition with a JSON Schema, as BFCL sends it to FC APIs."""
    return {
        "name": function_name(doc["name"]),
        "description": (doc.get("description") or "") + PYTHON_HINT,
        "parameters": {**json_schema(doc.get("parameters") or {}), "type": "object"},
    }


def json_schema(schema: dict) -> dict:
    """A BFCL (Python-typed) schema node as JSON Schema, recursively through properties and items.

    Types map by ``JSON_TYPES`` (unknown or missing -> "string"); a ``float`` also gets
    ``"format": "float"`` and " This is a float type value." after its description, as BFCL does.
    Other keys (description, enum, default, required, optional, ...) are kept as they are.
    """
    mapped: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "type":
            mapped["type"] = JSON_TYPES.get(value, "string")
        elif key == "properties" and isinstance(value, dict):
            mapped["properties"] = {name: json_schema(sub) for name, sub in value.items()}
        elif key == "items" and isinstance(value, dict):
            mapped["items"] = json_schema(value)
        else:
            mapped[key] = copy.deepcopy(value)
    mapped.setdefault("type", "string")
    if schema.get("type") == "float":
        mapped["format"] = "float"
        if isinstance(mapped.get("description"), str):
            mapped["description"] += FLOAT_HINT
    return mapped


def minimal_arguments(answers: dict, *, schema: dict) -> dict:
    """The shortest call BFCL accepts, given the function's ``parameters`` schema: each argument at its
    first accepted value; optional ones whose accepted values include "" (BFCL's mark for "may be
    omitted") are left out."""
    required = schema.get("required") or []
    properties = schema.get("properties") or {}
    return {
        name: accepted_value(values, schema=properties.get(name) or {})
        for name, values in answers.items()
        if not ("" in values and name not in required)
    }


def accepted_value(values: list, *, schema: dict) -> Any:
    """The first of an argument's accepted values ("" if there is no other). An accepted dict (or list
    of dicts) lists accepted values per key in turn, one level deep: those become their first value."""
    value = next((option for option in values if option != ""), "")
    if schema.get("type") == "object" and isinstance(value, dict):
        return _first_values(value)
    if (schema.get("items") or {}).get("type") == "object" and isinstance(value, list):
        return [_first_values(item) if isinstance(item, dict) else item for item in value]
    return value


def _first_values(option: dict) -> dict:
    return {key: next((v for v in values if v != ""), "") for key, values in option.items() if "" not in values}


# --- scoring: the rules of BFCL's AST checker, for one call -----------------------------------------


def answers_match(arguments: dict, *, answers: dict, schema: dict) -> bool:
    """Whether call ``arguments`` are accepted under BFCL's rules, given the function's JSON Schema
    (``parameters``) and ``answers`` (per argument, the accepted values; "" = may be omitted).

    Every required parameter present; no parameter outside the schema or the answers; each value of
    the type BFCL expects and among the accepted values (strings compared after ``normalize``; an int
    accepted for a float); a parameter left out only if "" is among its accepted values.
    """
    properties = schema.get("properties") or {}
    if any(name not in arguments for name in schema.get("required") or []):
        return False
    for name, value in arguments.items():
        if name not in properties or name not in answers:
            return False
        if not value_accepted(value, accepted=answers[name], schema=properties[name]):
            return False
    return all(name in arguments or "" in accepted for name, accepted in answers.items())


def value_accepted(value: Any, *, accepted: list, schema: dict) -> bool:
    """One argument against its accepted values (BFCL: type check, then a comparison by type)."""
    expected = PYTHON_TYPES.get(schema.get("type"), str)
    item_type = PYTHON_TYPES.get((schema.get("items") or {}).get("type"), str) if expected is list and "items" in schema else None
    if expected is float and type(value) is int:
        value = float(value)
    answer_type = _answer_type(accepted)
    # An accepted value of another type than the schema's stands for a variable name (BFCL: "is_variable"):
    # it is then compared as it is, without normalisation.
    is_variable = answer_type is not _NO_TYPE and answer_type is not expected
    if type(value) is expected:
        if item_type is not None and not _items_typed(value, accepted=accepted, item_type=item_type):
            return False
    elif answer_type is _NO_TYPE or type(value) is not answer_type:
        return False
    else:
        is_variable = True
    if is_variable:
        return value in accepted
    if expected is dict:
        return _dict_accepted(value, accepted=accepted)
    if expected is list and item_type is dict:
        return _dict_list_accepted(value, accepted=accepted)
    if expected is str:
        return normalize(value) in [normalize(option) for option in accepted if type(option) is str]
    if expected is list:
        return _normalized_items(value) in [_normalized_items(option) for option in accepted]
    return value in accepted


def normalize(text: str) -> str:
    """BFCL's string comparison form: "April 1, 2024" and "april 1 2024" both become "april12024"."""
    return _IGNORED_CHARACTERS.sub("", text).lower().replace("'", '"')


def _answer_type(accepted: list) -> Any:
    """The type of the first accepted value that is not "" (``_NO_TYPE`` when there is none)."""
    return next((type(option) for option in accepted if option != ""), _NO_TYPE)


def _items_typed(value: list, *, accepted: list, item_type: type) -> bool:
    """BFCL's one-level item type check: some accepted value that is not a list, or a list whose
    item type (or ``item_type``) every item of ``value`` has."""
    for option in accepted:
        if type(option) is not list:
            return True
        option_type = _answer_type(option)
        if all(type(item) is item_type or type(item) is option_type for item in value):
            return True
    return False


def _normalized_items(values: Any) -> list:
    """A list (or an accepted value: a list, or "") with its string items normalized."""
    return [normalize(item) if type(item) is str else item for item in values]


def _dict_accepted(value: dict, *, accepted: list) -> bool:
    """A dict argument: some accepted dict has every key of ``value`` with an accepted (normalized)
    value, and every key it has that ``value`` lacks may be omitted ("" among its values)."""
    for option in accepted:
        if option == "":
            continue
        if _dict_matches(value, option=option):
            return True
    return False


def _dict_matches(value: Any, *, option: Any) -> bool:
    if not (isinstance(value, dict) and isinstance(option, dict)):
        return False
    for key, item in value.items():
        if key not in option:
            return False
        item = normalize(item) if type(item) is str else item
        if item not in _normalized_items(option[key]):
            return False
    return all(key in value or "" in values for key, values in option.items())


def _dict_list_accepted(value: list, *, accepted: list) -> bool:
    """A list of dicts: some accepted list of the same length whose dicts match one by one, in order."""
    for option in accepted:
        if len(option) == len(value) and all(_dict_matches(item, option=expected) for item, expected in zip(value, option)):
            return True
    return False
