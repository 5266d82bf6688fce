"""Schema-constrained decoding: a grammar for Invoker's whole answer, arguments shaped by JSON Schema.

Invoker answers with one JSON object in a fence, and writes ``arguments`` as a JSON *string* whose
text is itself JSON::

     ```{"content": null, "function_call": {"name": "get_time", "arguments": "{\\"location\\": \\"Paris\\"}"}}```

So the grammar for the arguments is the grammar of the schema-valid JSON text, *escaped once*: every
literal is written as it appears inside a JSON string (``"`` → ``\\"``, ``\\`` → ``\\\\``), and the
character rules of inner strings are the escaped forms of JSON string characters. The result is one
GBNF grammar (llama.cpp's grammar format) for the answer:

- ``auto``: text (``{"content": "…", "function_call": null}``) or a call to one of the functions; the
  answer's fixed opening (`` ```{"content":``, the same in both) is *prefilled* into the prompt, the
  model commits at `` null`` vs `` "``, and from there the call's name and its arguments are
  constrained (without a grammar nothing is prefilled: the model may answer in plain text);
- ``required`` / a named function: the answer's fixed start is *prefilled* into the prompt (the model
  continues after ``"name": "`` or after ``"arguments": "``), and the grammar covers the rest;
- no functions offered (or ``none``): text only.

Engines: llama.cpp applies the GBNF itself (GGUF runtime); for the transformers runtime,
``Vocabulary``/``GrammarMatcher`` run the same GBNF through llguidance (converted by llguidance's own
``gbnf_to_lark``), producing a token mask per step. docs/SERVER.md explains the design.

What the grammar enforces of a JSON Schema: ``type`` (one or a list), ``enum``, ``const``, object
``properties`` in their declared order with ``required`` ones present and no undeclared keys unless
``additionalProperties`` allows them, array ``items``/``minItems``/``maxItems``, string
``minLength``/``maxLength``, ``anyOf``/``oneOf`` (as alternatives), local ``$ref``. Other keywords
(``pattern``, ``format``, numeric bounds, ``uniqueItems``…) are not enforced: the grammar is then looser
than the schema and they are listed in ``AnswerGrammar.unenforced`` so the caller can re-validate.
JSON text is canonical ``json.dumps`` (separators ``", "``/``": "``, non-ASCII kept), as the model was
trained; numbers are bounded in length (16 digits, 3 exponent digits) so a small model cannot loop on
digits forever.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import referencing.exceptions

from invoker.json_schema import PatternTimeout, pattern_budget, resolve_local_ref, schema_validator, validation_errors

ANSWER_START = '```{"content": '
OPENING = ANSWER_START.rstrip()  # every answer's fixed opening, cut where a pre-token ends (before the space)
CALL_START = ANSWER_START + 'null, "function_call": {"name": "'
ANSWER_END = "```"
TEXT_END = ', "function_call": null}' + ANSWER_END
LEADING_SPACE = " "  # the prompt ends with "ASSISTANT:"; the model's answer starts with a space
MAX_DIGITS = 16
MAX_EXPONENT_DIGITS = 3
MAX_REPEAT = 1000  # largest minLength/maxLength/minItems/maxItems written into a grammar (llama.cpp refuses > 2000)
SCHEMA_KEYWORDS_ENFORCED = frozenset({
    "type", "enum", "const", "properties", "required", "additionalProperties", "items", "minItems",
    "maxItems", "minLength", "maxLength", "anyOf", "oneOf", "$ref", "$defs", "definitions",
    # annotations: nothing to enforce
    "title", "description", "default", "examples", "$schema", "$id", "$comment", "deprecated",
    "readOnly", "writeOnly",
})


_LITERALS_AND_CLASSES = re.compile(r'"(?:[^"\\]|\\.)*"|\[(?:[^\]\\]|\\.)*\]')
_RULE_NAME = re.compile(r"[a-zA-Z][a-zA-Z0-9-]*")


class ConstraintError(ValueError):
    """A function schema the grammar cannot express at all (e.g. an enum no value of which is valid)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class AnswerGrammar:
    """What the model is asked to write: ``prefill`` goes at the end of the prompt, ``grammar`` (GBNF)
    constrains what the model generates after it. ``unenforced`` names the schema keywords the grammar
    does not check (``functions[0].parameters.properties.date.format``)."""

    prefill: str
    grammar: str
    unenforced: tuple[str, ...] = ()


def answer_prefill(*, choice: str, name: str | None = None, constrained: bool = False) -> str:
    """The fixed start of the answer for a tool choice: for auto and none, the opening the grammar
    forces anyway when ``constrained``, else ``""`` (a free model may answer in plain text); up to the
    function name's opening quote (required); up to the arguments' opening quote (a named function).

    Prefilled text costs one batched prompt step instead of a decode step per token, and is tokenized
    with the prompt, as in training. The opening stops before ' "' / ' null': in byte-level BPE the
    space and the quote that follow belong to one pre-token, which the model writes."""
    if choice in ("auto", "none"):
        return LEADING_SPACE + OPENING if constrained else ""
    if choice == "required":
        return LEADING_SPACE + CALL_START
    if choice == "function":
        if not name:
            raise ValueError("choice 'function' needs the function's name")
        return LEADING_SPACE + CALL_START + json_string_body(name) + '", "arguments": "'
    raise ValueError(f"unknown tool choice {choice!r}; expected auto, none, required or function")


def answer_grammar(functions: Sequence[dict], *, choice: str = "auto", name: str | None = None) -> AnswerGrammar:
    """The answer's prefill and the GBNF grammar of the rest, for validated function definitions.

    ``choice``: ``auto`` (text or a call), ``none`` (text only), ``required`` (a call to any of the
    functions) or ``function`` (a call to ``name``). With no functions, ``auto`` means text only.
    """
    builder = _GrammarBuilder()
    prefill = answer_prefill(choice=choice, name=name, constrained=True)
    offered = [] if choice == "none" else list(functions)
    with pattern_budget():  # every enum value of every function checked against its patterns: one budget
        if choice == "function":
            index = _function_index(offered, name=name)
            root = f"{builder.arguments(offered[index], index=index)} {gbnf_literal(_call_end())}"
        elif choice == "required":
            if not offered:
                raise ConstraintError("tool_choice", "'required' needs at least one function")
            root = builder.named_calls(offered)
        else:
            root = _answer_root(builder, offered)
    builder.define("root", root)
    unenforced = tuple(dict.fromkeys(builder.unenforced))
    return AnswerGrammar(prefill=prefill, grammar=builder.render(), unenforced=unenforced)


def _answer_root(builder: "_GrammarBuilder", functions: list[dict]) -> str:
    """What follows the prefilled opening (auto, none): `` "`` and text, or `` null`` and a call."""
    text = builder.define("text", f"json-string {gbnf_literal(TEXT_END)}")
    start = gbnf_literal(ANSWER_START[len(OPENING):])
    if not functions:
        return f"{start} {text}"
    calls = builder.define("call", f'{gbnf_literal(CALL_START[len(ANSWER_START):])} {builder.named_calls(functions)}')
    return f"{start} ({text} | {calls})"


def _call_end() -> str:
    return '"}}' + ANSWER_END


def _function_index(functions: list[dict], *, name: str | None) -> int:
    for index, function in enumerate(functions):
        if function["name"] == name:
            return index
    raise ConstraintError("tool_choice", f"function {name!r} is not among the functions")


# --- GBNF text ---------------------------------------------------------------------------------


def json_string_body(text: str) -> str:
    """``text`` as it is written between the quotes of a JSON string (json.dumps, non-ASCII kept)."""
    return json.dumps(text, ensure_ascii=False)[1:-1]


def gbnf_literal(text: str) -> str:
    """A GBNF string literal matching exactly ``text``."""
    out = []
    for char in text:
        if char in '"\\':
            out.append("\\" + char)
        elif char == "\n":
            out.append("\\n")
        elif char == "\r":
            out.append("\\r")
        elif char == "\t":
            out.append("\\t")
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\x{ord(char):02X}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


# Plain JSON: a JSON string as the model writes "content" (any valid escape; raw non-ASCII).
_PLAIN_RULES = {
    "json-string": '"\\"" json-char* "\\""',
    "json-char": '[^"\\\\\\x00-\\x1F] | "\\\\" (["\\\\/bfnrt] | "u" hex hex hex hex)',
    "hex": "[0-9a-fA-F]",
}

# The same JSON, escaped once (written inside the "arguments" string). Inner `"` is written `\"`,
# an inner escape `\n` is written `\\n`, inner `\"` is written `\\\"`, inner `\\` is written `\\\\`.
_ESCAPED_RULES = {
    "esc-string": '"\\\\\\"" esc-char* "\\\\\\""',
    "esc-char": '[^"\\\\\\x00-\\x1F] | "\\\\\\\\" ([/bfnrt] | "\\\\\\"" | "\\\\\\\\" | "u" hex hex hex hex)',
    "esc-number": '"-"? esc-uint ("." [0-9]{1,%d})? ([eE] [-+]? [0-9]{1,%d})?' % (MAX_DIGITS, MAX_EXPONENT_DIGITS),
    "esc-integer": '"-"? esc-uint',
    "esc-uint": '"0" | [1-9] [0-9]{0,%d}' % (MAX_DIGITS - 1),
    "esc-boolean": '"true" | "false"',
    "esc-null": '"null"',
    "esc-value": "esc-object | esc-array | esc-string | esc-number | esc-boolean | esc-null",
    "esc-object": '"{" (esc-member (", " esc-member)*)? "}"',
    "esc-member": 'esc-string ": " esc-value',
    "esc-array": '"[" (esc-value (", " esc-value)*)? "]"',
}


def _escape_literal(text: str) -> str:
    """A GBNF literal for ``text`` (inner JSON) as written inside the arguments string."""
    return gbnf_literal(json_string_body(text))


class _GrammarBuilder:
    """Collects GBNF rules; ``arguments`` compiles one function's parameters schema."""

    def __init__(self) -> None:
        self.rules: dict[str, str] = {}
        self.unenforced: list[str] = []
        self._refs: dict[str, str] = {}
        self._root_schema: dict = {}
        self._prefix = ""

    def define(self, name: str, body: str) -> str:
        self.rules[name] = body
        return name

    def render(self) -> str:
        """The grammar text: ``root`` first, then every rule reachable from it."""
        rules = {**self.rules, **_PLAIN_RULES, **_ESCAPED_RULES}
        reachable = _reachable(rules, start="root")
        names = ["root"] + [name for name in rules if name != "root" and name in reachable]
        return "".join(f"{name} ::= {rules[name]}\n" for name in names)

    def named_calls(self, functions: list[dict]) -> str:
        """Alternatives ``NAME", "arguments": "ARGS"}}```` over the functions (after the name's opening quote)."""
        alternatives = []
        for index, function in enumerate(functions):
            head = gbnf_literal(json_string_body(function["name"]) + '", "arguments": "')
            alternatives.append(f"{head} {self.arguments(function, index=index)} {gbnf_literal(_call_end())}")
        return self.define("calls", " | ".join(alternatives))

    def arguments(self, function: dict, *, index: int) -> str:
        """The rule for one function's arguments, escaped (the text between the arguments' quotes)."""
        rule = f"f{index}-args"
        if rule in self.rules:
            return rule
        self._root_schema = function.get("parameters") or {"type": "object", "properties": {}}
        self._prefix = f"f{index}"
        self._refs = {}
        self.rules[rule] = ""  # reserve the name (a $ref may point back at the root)
        self.rules[rule] = self._value(self._root_schema, rule=rule, field=f"functions[{index}].parameters")
        return rule

    # --- schema -> rule body --------------------------------------------------------------

    def _value(self, schema: Any, *, rule: str, field: str) -> str:
        if schema is True or schema == {}:
            return "esc-value"
        if schema is False:
            raise ConstraintError(field, "the schema `false` accepts no value")
        if not isinstance(schema, dict):
            raise ConstraintError(field, f"must be a JSON Schema object, got {type(schema).__name__}")
        self._note_unenforced(schema, field=field)
        if "$ref" in schema:
            return self._ref(schema, rule=rule, field=field)
        if "const" in schema or "enum" in schema:
            return self._choices(schema, field=field)
        for keyword in ("anyOf", "oneOf"):
            if isinstance(schema.get(keyword), list) and schema[keyword]:
                return self._alternatives(schema, keyword=keyword, rule=rule, field=field)
        types = schema.get("type")
        if isinstance(types, list):
            if not types:
                raise ConstraintError(f"{field}.type", "an empty list of types accepts no value")
            bodies = [self._typed({**schema, "type": kind}, rule=f"{rule}-{kind}", field=field) for kind in types]
            return " | ".join(f"({body})" for body in bodies)
        return self._typed(schema, rule=rule, field=field)

    def _typed(self, schema: dict, *, rule: str, field: str) -> str:
        kind = schema.get("type")
        if kind is None:
            return self._untyped(schema, rule=rule, field=field)
        if kind == "string":
            return self._string(schema, field=field)
        if kind == "integer":
            return "esc-integer"
        if kind == "number":
            return "esc-number"
        if kind == "boolean":
            return "esc-boolean"
        if kind == "null":
            return "esc-null"
        if kind == "array":
            return self._array(schema, rule=rule, field=field)
        if kind == "object":
            return self._object(schema, rule=rule, field=field)
        raise ConstraintError(f"{field}.type", f"unknown type {kind!r}")

    def _untyped(self, schema: dict, *, rule: str, field: str) -> str:
        """No ``type``: infer object/array from their keywords, else any JSON value."""
        if "properties" in schema or "additionalProperties" in schema:
            return self._object(schema, rule=rule, field=field)
        if "items" in schema:
            return self._array(schema, rule=rule, field=field)
        return "esc-value"

    def _string(self, schema: dict, *, field: str) -> str:
        low, high = self._bounds(schema, field=field, low_key="minLength", high_key="maxLength")
        if low == 0 and high is None:
            return "esc-string"
        quote = gbnf_literal('\\"')
        if high == 0:
            return f"{quote} {quote}"
        return f"{quote} esc-char{{{low},{'' if high is None else high}}} {quote}"

    def _array(self, schema: dict, *, rule: str, field: str) -> str:
        items = schema.get("items", True)
        item = self.define(f"{rule}-item", self._value(items, rule=f"{rule}-item", field=f"{field}.items"))
        low, high = self._bounds(schema, field=field, low_key="minItems", high_key="maxItems")
        if high == 0:
            return '"[]"'
        if low == 0 and high is None:
            return f'"[" ({item} (", " {item})*)? "]"'
        if high == 1:
            return f'"[" {item} "]"' if low > 0 else f'"[" {item}? "]"'
        rest = f'(", " {item}){{{max(low - 1, 0)},{"" if high is None else high - 1}}}'
        return f'"[" {item} {rest} "]"' if low > 0 else f'"[" ({item} {rest})? "]"'

    def _bounds(self, schema: dict, *, field: str, low_key: str, high_key: str) -> tuple[int, int | None]:
        """(low, high) of a length or item count, as the grammar writes them: a lower bound over
        ``MAX_REPEAT`` or above the upper one is an error; an upper bound over ``MAX_REPEAT`` is left to the
        validation after generation (the grammar does not bound it)."""
        low, high = int(schema.get(low_key, 0)), schema.get(high_key)
        high = None if high is None else int(high)
        if low > MAX_REPEAT:
            raise ConstraintError(f"{field}.{low_key}", f"{low} is more than the {MAX_REPEAT} a constrained call supports")
        if high is not None and low > high:
            raise ConstraintError(f"{field}.{low_key}", f"{low} is more than {high_key} {high}: no value satisfies both")
        if high is not None and high > MAX_REPEAT:
            self.unenforced.append(f"{field}.{high_key}")
            high = None
        return low, high

    def _object(self, schema: dict, *, rule: str, field: str) -> str:
        properties = schema.get("properties")
        additional = schema.get("additionalProperties")
        if properties is None and additional is None:
            return "esc-object"  # {"type": "object"} alone: any object
        properties = properties or {}
        required = set(schema.get("required") or [])
        members = []
        for number, (key, sub_schema) in enumerate(properties.items()):
            value = self.define(f"{rule}-p{number}", self._value(
                sub_schema, rule=f"{rule}-p{number}", field=f"{field}.properties.{key}"
            ))
            members.append((f"{_escape_literal(json.dumps(key, ensure_ascii=False) + ': ')} {value}", key in required))
        if additional not in (None, False):
            extra_value = self._value(additional, rule=f"{rule}-extra", field=f"{field}.additionalProperties")
            extra = self.define(f"{rule}-extra", f'esc-string ": " ({extra_value})')
            members.append((f"{extra} ({gbnf_literal(', ')} {extra})*", False))
        return f'"{{" {self._members(members, rule=rule)} "}}"'

    def _members(self, members: list[tuple[str, bool]], *, rule: str) -> str:
        """Members in order, required ones always, optional ones maybe, ", " between present ones.

        ``first_i``: members i.. with none written yet; ``then_i``: members i.. after one was written.
        """
        if not members:
            return '""'
        count = len(members)
        for i in range(count - 1, -1, -1):
            member, is_required = members[i]
            then_next = f"{rule}-then{i + 1}" if i + 1 < count else '""'
            first_next = f"{rule}-first{i + 1}" if i + 1 < count else '""'
            if is_required:
                self.define(f"{rule}-then{i}", f'", " {member} {then_next}')
                self.define(f"{rule}-first{i}", f"{member} {then_next}")
            else:
                self.define(f"{rule}-then{i}", f'(", " {member})? {then_next}')
                self.define(f"{rule}-first{i}", f"{member} {then_next} | {first_next}")
        return f"({rule}-first0)"

    def _choices(self, schema: dict, *, field: str) -> str:
        values = [schema["const"]] if "const" in schema else schema["enum"]
        if not isinstance(values, list) or not values:
            raise ConstraintError(f"{field}.enum", "must be a non-empty list")
        rest = {key: value for key, value in schema.items() if key not in ("const", "enum")}
        validator = schema_validator(self._root_schema, schema=rest) if rest else None
        valid = [value for value in values if validator is None or _accepts(validator, value)]
        if not valid:
            raise ConstraintError(f"{field}.enum", "no listed value satisfies the rest of the schema")
        literals = {_escape_literal(json.dumps(value, ensure_ascii=False)) for value in valid}
        return " | ".join(sorted(literals))

    def _alternatives(self, schema: dict, *, keyword: str, rule: str, field: str) -> str:
        siblings = {key: value for key, value in schema.items() if key != keyword}
        bodies = []
        for number, option in enumerate(schema[keyword]):
            merged = {**siblings, **option} if isinstance(option, dict) else option
            name = f"{rule}-alt{number}"
            bodies.append(self.define(name, self._value(merged, rule=name, field=f"{field}.{keyword}[{number}]")))
        return " | ".join(bodies)

    def _ref(self, schema: dict, *, rule: str, field: str) -> str:
        ref = schema["$ref"]
        target = _resolve_local_ref(self._root_schema, ref)
        if target is None:
            self.unenforced.append(f"{field}.$ref")
            return "esc-value"
        if ref not in self._refs:
            name = f"{self._prefix}-ref{len(self._refs)}"
            self._refs[ref] = name
            self.rules[name] = ""
            self.rules[name] = self._value(target, rule=name, field=f"{field}.$ref")
        return self._refs[ref]

    def _note_unenforced(self, schema: dict, *, field: str) -> None:
        for keyword in schema:
            if keyword not in SCHEMA_KEYWORDS_ENFORCED:
                self.unenforced.append(f"{field}.{keyword}")


def _resolve_local_ref(root: dict, ref: Any) -> Any:
    """The sub-schema a local ``#/...`` JSON pointer names, or None."""
    try:
        return copy.deepcopy(resolve_local_ref(root, ref))
    except LookupError:
        return None


def _accepts(validator, value: Any) -> bool:
    """Whether an enum value satisfies the rest of its schema; when that cannot be decided in time, it is
    kept (the grammar is looser, and the arguments are validated after generation)."""
    try:
        return not validation_errors(validator, value)
    except (PatternTimeout, RecursionError, referencing.exceptions.Unresolvable):
        return True


def _reachable(rules: dict[str, str], *, start: str) -> set[str]:
    """Names of the rules reachable from ``start`` (unused library rules are left out)."""
    reachable, frontier = {start}, [start]
    while frontier:
        for name in _rule_names(rules.get(frontier.pop(), "")):
            if name in rules and name not in reachable:
                reachable.add(name)
                frontier.append(name)
    return reachable


def _rule_names(body: str) -> list[str]:
    """The rule names a GBNF body mentions (string literals and character classes removed)."""
    outside = _LITERALS_AND_CLASSES.sub(" ", body)
    return _RULE_NAME.findall(outside)


# --- token masks through llguidance (the transformers runtime) ----------------------------------


class Vocabulary:
    """A model's vocabulary as llguidance sees it, for computing grammar masks. Build once per model.

    ``Vocabulary.from_hf_tokenizer`` reads a fast (tokenizer.json) Hugging Face tokenizer; llguidance
    maps ``▁`` to a space and ``<0xNN>`` to bytes, and tokenizes forced text without sentencepiece's
    prefix space (a plain ``tokenizer.encode`` would add one and derail the mask).
    """

    def __init__(self, *, tokenizer, size: int) -> None:
        self._tokenizer = tokenizer
        self.size = size

    @classmethod
    def from_hf_tokenizer(cls, tokenizer, *, size: int, eos_ids: Sequence[int]) -> "Vocabulary":
        import llguidance.hf

        return cls(tokenizer=llguidance.hf.from_tokenizer(tokenizer, n_vocab=size, eos_token=sorted(eos_ids)), size=size)

    def matcher(self, grammar: str) -> "GrammarMatcher":
        return GrammarMatcher(grammar=grammar, tokenizer=self._tokenizer, size=self.size)


class GrammarMatcher:
    """One request's grammar state: ``allowed()`` before sampling, ``accept(token)`` after."""

    def __init__(self, *, grammar: str, tokenizer, size: int) -> None:
        import llguidance

        try:
            lark = llguidance.grammar_from("gbnf", grammar)
        except ValueError as err:
            raise ConstraintError("grammar", str(err)) from None
        self._matcher = llguidance.LLMatcher(tokenizer, lark, log_level=0)
        if self._matcher.is_error():
            raise ConstraintError("grammar", self._matcher.get_error())
        self._size = size

    def allowed(self):
        """A boolean numpy array over the vocabulary: which tokens may come next."""
        import numpy as np

        words = np.frombuffer(self._matcher.compute_bitmask(), dtype=np.uint8)
        if self._matcher.is_error():
            raise RuntimeError(f"grammar engine failed: {self._matcher.get_error()}")
        return np.unpackbits(words, bitorder="little")[: self._size].astype(bool)

    def accept(self, token: int) -> None:
        if not self._matcher.consume_token(token):
            raise RuntimeError(f"grammar rejected token {token}: {self._matcher.get_error()}")

    def is_accepting(self) -> bool:
        return self._matcher.is_accepting()
