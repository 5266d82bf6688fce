"""OpenAI chat-completions request and response shapes (pydantic v2; they also make /openapi.json).

Requests are strict: unknown fields, strings where numbers belong, and parameters we cannot honour
are refused with a 400 naming the field, never silently ignored. Function definitions and message
contents are checked by the model's contract (``invoker.functions`` / ``invoker.prompt``), which
names the exact field (``functions[0].parameters.required[1]``); here they are plain objects.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

DEFAULT_TEMPERATURE = 0.5  # the original Invoker server's default, kept
MAX_STOP_STRINGS = 4
MAX_STOP_CHARS = 256  # one stop string (it is matched against every streamed chunk)


def _integral(value: Any) -> Any:
    """JSON Schema counts 60.0 as an integer; accept it as 60 (and nothing else that is not an int)."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


Integer = Annotated[int, BeforeValidator(_integral)]
StopString = Annotated[str, Field(min_length=1, max_length=MAX_STOP_CHARS)]


class _Lenient(BaseModel):
    """Objects clients echo back (messages, calls): extra fields such as ``refusal`` are ignored."""

    model_config = ConfigDict(extra="ignore", strict=True)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class FunctionCall(_Lenient):
    name: str
    arguments: str | dict[str, Any]


class ToolCall(_Lenient):
    id: str | None = None
    type: Literal["function"] = "function"
    function: FunctionCall


class TextPart(_Lenient):
    type: Literal["text"]
    text: str


class ChatMessage(_Lenient):
    role: Literal["system", "developer", "user", "assistant", "function", "tool"]
    content: str | list[TextPart] | None = None
    name: str | None = None
    function_call: FunctionCall | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None


class FunctionName(_Strict):
    name: str


class NamedToolChoice(_Strict):
    type: Literal["function"]
    function: FunctionName


class StreamOptions(_Strict):
    include_usage: bool | None = None


class ResponseFormat(_Strict):
    type: Literal["text"]


class ChatCompletionRequest(_Strict):
    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    functions: list[dict[str, Any]] | None = None
    function_call: Literal["none", "auto"] | FunctionName | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = Field(None, description="accepted; Invoker makes at most one call per answer")
    temperature: float | None = Field(None, ge=0, le=2, description=f"default {DEFAULT_TEMPERATURE}")
    top_p: float | None = Field(None, gt=0, le=1)
    max_tokens: Integer | None = Field(None, ge=1, description="default: the rest of the context")
    max_completion_tokens: Integer | None = Field(None, ge=1, description="same as max_tokens")
    n: Integer | None = Field(None, ge=1, le=1, description="only 1 is supported")
    stop: StopString | Annotated[list[StopString], Field(max_length=MAX_STOP_STRINGS)] | None = None
    seed: Integer | None = None
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    presence_penalty: float | None = Field(None, ge=0, le=0, description="only 0 is supported")
    frequency_penalty: float | None = Field(None, ge=0, le=0, description="only 0 is supported")
    logprobs: Literal[False] | None = Field(None, description="not supported: only false")
    logit_bias: dict[str, float] | None = Field(None, max_length=0, description="not supported: only empty")
    response_format: ResponseFormat | None = None
    user: str | None = None
    constrained: bool | None = Field(
        None, description="invoker-pack extension: constrain calls to the function's JSON Schema (server default: on)"
    )


# --- responses ---------------------------------------------------------------------------------


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ResponseFunctionCall(BaseModel):
    name: str
    arguments: str


class ResponseToolCall(BaseModel):
    id: str
    type: Literal["function"] = "function"
    function: ResponseFunctionCall


class ResponseMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None
    function_call: ResponseFunctionCall | None = None
    tool_calls: list[ResponseToolCall] | None = None


class Choice(BaseModel):
    index: int
    message: ResponseMessage
    finish_reason: Literal["stop", "length", "function_call", "tool_calls"]
    logprobs: None = None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "invoker-pack"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(BaseModel):
    error: ErrorDetail


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    model: str
    format: str
    runtime: str
    running: int
    waiting: int
