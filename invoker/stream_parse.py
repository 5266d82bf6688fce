"""Parse Invoker's output while it streams: content deltas, or a call's name then argument deltas.

The model writes one JSON object in a fence (```{"content": …, "function_call": …}```). ``StreamParser``
is fed the text as it arrives, in chunks cut anywhere (inside a key, an escape, a ``\\uXXXX``, a
surrogate pair), and returns events:

- ``ContentDelta(text)`` — decoded characters of ``"content"``;
- ``CallStart(name)`` — the function's name, once its string is complete;
- ``ArgumentsDelta(text)`` — the arguments as JSON text: the decoded characters of the ``"arguments"``
  string (so ``"{\\"city\\": …"`` streams as ``{"city": …``), or, when the model wrote the arguments
  as an object, that object's own text.

It shares its decisions with ``invoker.parse``: the same fence/start search (``find_json_start``), the
same EOS stripping, and ``finish()`` returns ``parse_completion`` of the whole text as the verdict.
Text before the JSON block is dropped (as ``parse_completion`` drops it); output with no JSON block
at all is streamed, at the end, as content (as ``parse_completion`` reports it in ``content``).
Keys other than ``content``/``function_call``/``name``/``arguments`` are parsed and ignored.
"""

from __future__ import annotations

from dataclasses import dataclass

from invoker.parse import ParsedCompletion, find_json_start, parse_completion, strip_eos

_WHITESPACE = " \t\n\r"
_SIMPLE_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}
_BARE_START = "-0123456789tfn"
_BARE_END = _WHITESPACE + ",]}"
CONTENT_PATH = ("content",)
NAME_PATH = ("function_call", "name")
ARGUMENTS_PATH = ("function_call", "arguments")


@dataclass(frozen=True)
class ContentDelta:
    text: str


@dataclass(frozen=True)
class CallStart:
    name: str


@dataclass(frozen=True)
class ArgumentsDelta:
    text: str


Event = ContentDelta | CallStart | ArgumentsDelta


@dataclass
class _Container:
    kind: str  # "object" | "array"
    path: tuple
    key: str | None = None
    index: int = 0


class StreamParser:
    """Incremental parser for one generation; a fresh one per request (it holds that request's state)."""

    def __init__(self, *, functions: list[dict] | None = None) -> None:
        self._functions = functions
        self._text: list[str] = []
        self._seek = ""  # text seen before the JSON block starts
        self._started = False
        self._mode = "value"
        self._stack: list[_Container] = []
        self._string_path: tuple | None = None  # path of the string value being read (None: a key)
        self._key_chars: list[str] = []
        self._hex = ""
        self._high_surrogate = ""
        self._bare = ""
        self._name_chars: list[str] = []
        self._name: str | None = None
        self._pending_arguments: list[str] = []  # arguments seen before the name
        self._json = ""  # the text from the JSON block's "{" on
        self._position = 0  # index in self._json of the character being read
        self._raw_depth: int | None = None  # arguments written as JSON (not a string): stack depth at their start
        self._raw_sent = 0  # index in self._json up to which raw arguments were emitted
        self._events: list[Event] = []

    @property
    def name(self) -> str | None:
        """The called function's name, once its string is complete."""
        return self._name

    def feed(self, text: str) -> list[Event]:
        """Consume the next piece of output; return the events it completes."""
        self._text.append(text)
        if not self._started:
            text = self._find_start(text)
        self._json += text
        for char in text:
            if self._mode in ("done", "error"):
                break
            self._step(char)
            self._position += 1
        self._flush_raw_arguments(self._position)
        return self._take_events()

    def finish(self) -> tuple[list[Event], ParsedCompletion]:
        """End of output: the last events, and ``parse_completion`` of the whole text."""
        if not self._started:
            leftover = strip_eos(self._seek)
            if leftover:
                self._events.append(ContentDelta(leftover))
        elif self._high_surrogate:
            self._emit_chars(self._high_surrogate)
            self._high_surrogate = ""
        return self._take_events(), parse_completion("".join(self._text), functions=self._functions)

    # --- before the JSON block ----------------------------------------------------------------

    def _find_start(self, text: str) -> str:
        """Hold text until the JSON block's "{" is seen; return the text from that "{" on."""
        self._seek += text
        stripped = self._seek.lstrip()
        start = find_json_start(stripped)
        if start is None:
            return ""
        self._started = True
        return stripped[start:]

    # --- the JSON block, one character at a time ------------------------------------------------

    def _step(self, char: str) -> None:
        getattr(self, f"_on_{self._mode}")(char)

    def _on_value(self, char: str) -> None:
        if char in _WHITESPACE:
            return
        path = self._value_path()
        if path == ARGUMENTS_PATH and char != '"':
            self._raw_depth = len(self._stack)
            self._raw_sent = self._position
        if char == '"':
            self._string_path = path
            self._mode = "string"
        elif char == "{":
            self._stack.append(_Container(kind="object", path=path))
            self._mode = "key_or_end"
        elif char == "[":
            self._stack.append(_Container(kind="array", path=path))
            self._mode = "value_or_end"
        elif char in _BARE_START:
            self._bare = char
            self._mode = "bare"
        else:
            self._mode = "error"

    def _on_value_or_end(self, char: str) -> None:
        if char in _WHITESPACE:
            return
        if char == "]":
            self._close_container()
        else:
            self._mode = "value"
            self._on_value(char)

    def _on_key_or_end(self, char: str) -> None:
        if char in _WHITESPACE:
            return
        if char == "}":
            self._close_container()
        else:
            self._mode = "key"
            self._on_key(char)

    def _on_key(self, char: str) -> None:
        if char in _WHITESPACE:
            return
        if char != '"':
            self._mode = "error"
            return
        self._string_path = None
        self._key_chars = []
        self._mode = "string"

    def _on_colon(self, char: str) -> None:
        if char in _WHITESPACE:
            return
        self._mode = "value" if char == ":" else "error"

    def _on_after_value(self, char: str) -> None:
        if char in _WHITESPACE:
            return
        container = self._stack[-1]
        if char == ",":
            if container.kind == "array":
                container.index += 1
                self._mode = "value"
            else:
                self._mode = "key"
        elif (char == "}" and container.kind == "object") or (char == "]" and container.kind == "array"):
            self._close_container()
        else:
            self._mode = "error"

    def _on_bare(self, char: str) -> None:
        """A number or true/false/null: it ends at the first delimiter, which is then read as usual."""
        if char not in _BARE_END:
            self._bare += char
            return
        self._bare = ""
        self._value_done(end=self._position)
        if self._mode not in ("done", "error"):
            self._step(char)

    def _on_string(self, char: str) -> None:
        if char == '"':
            self._end_string()
        elif char == "\\":
            self._mode = "escape"
        else:
            self._string_char(char)

    def _on_escape(self, char: str) -> None:
        if char == "u":
            self._hex = ""
            self._mode = "unicode"
        elif char in _SIMPLE_ESCAPES:
            self._mode = "string"
            self._string_char(_SIMPLE_ESCAPES[char])
        else:
            self._mode = "error"

    def _on_unicode(self, char: str) -> None:
        if char not in "0123456789abcdefABCDEF":
            self._mode = "error"
            return
        self._hex += char
        if len(self._hex) < 4:
            return
        self._mode = "string"
        self._string_char(chr(int(self._hex, 16)))

    # --- values -------------------------------------------------------------------------------

    def _string_char(self, char: str) -> None:
        """One decoded character of the current string; surrogate pairs are joined."""
        if self._high_surrogate:
            high, self._high_surrogate = self._high_surrogate, ""
            if "\udc00" <= char <= "\udfff":
                char = chr(0x10000 + ((ord(high) - 0xD800) << 10) + (ord(char) - 0xDC00))
            else:
                self._emit_chars(high)
        if "\ud800" <= char <= "\udbff":
            self._high_surrogate = char
            return
        self._emit_chars(char)

    def _emit_chars(self, chars: str) -> None:
        path = self._string_path
        if path is None:
            self._key_chars.append(chars)
        elif path == CONTENT_PATH:
            self._events.append(ContentDelta(chars))
        elif path == NAME_PATH:
            self._name_chars.append(chars)
        elif path == ARGUMENTS_PATH:
            self._emit_arguments(chars)

    def _end_string(self) -> None:
        if self._high_surrogate:
            self._emit_chars(self._high_surrogate)
            self._high_surrogate = ""
        if self._string_path is None:
            self._stack[-1].key = "".join(self._key_chars)
            self._mode = "colon"
            return
        if self._string_path == NAME_PATH and self._name is None:
            self._name = "".join(self._name_chars)
            self._events.append(CallStart(self._name))
            if self._pending_arguments:
                self._events.append(ArgumentsDelta("".join(self._pending_arguments)))
                self._pending_arguments = []
        self._value_done(end=self._position + 1)

    def _emit_arguments(self, text: str) -> None:
        if self._name is None:
            self._pending_arguments.append(text)
        else:
            self._events.append(ArgumentsDelta(text))

    def _flush_raw_arguments(self, end: int) -> None:
        """Emit the text of arguments written as JSON (not as a string) up to ``end``."""
        if self._raw_depth is not None and end > self._raw_sent:
            self._emit_arguments(self._json[self._raw_sent : end])
            self._raw_sent = end

    def _close_container(self) -> None:
        self._stack.pop()
        self._value_done(end=self._position + 1)

    def _value_done(self, *, end: int) -> None:
        """A value ended at ``end`` (exclusive): finish raw arguments if it was them; expect what follows."""
        if self._raw_depth is not None and len(self._stack) == self._raw_depth:
            self._flush_raw_arguments(end)
            self._raw_depth = None
        self._mode = "after_value" if self._stack else "done"

    def _value_path(self) -> tuple:
        if not self._stack:
            return ()
        container = self._stack[-1]
        step = container.key if container.kind == "object" else container.index
        return container.path + (step,)

    def _take_events(self) -> list[Event]:
        events = _merge(self._events)
        self._events = []
        return events


def _merge(events: list[Event]) -> list[Event]:
    """Join consecutive deltas of the same kind (one event per kind per feed, not one per character)."""
    merged: list[Event] = []
    for event in events:
        if merged and type(event) is type(merged[-1]) and not isinstance(event, CallStart):
            merged[-1] = type(event)(merged[-1].text + event.text)
        else:
            merged.append(event)
    return merged
