"""A chat-completion request, from OpenAI shape to a generation plan, and from output to an answer.

No HTTP here: ``plan_completion`` checks a request and turns it into a prompt, sampling parameters and
(optionally) a grammar; ``AnswerBuilder`` turns the generated text into OpenAI deltas while it streams
and into the final message, by the same rules for streaming and non-streaming answers.

Tool choice (docs/SERVER.md):
- ``auto`` (the default with functions): the model decides; constrained, its call must be well-formed.
- ``none``: the prompt is rendered *without* functions ("Available Functions: None"), as the model was
  trained for conversations with nothing to call, so it answers in text; no call is ever returned.
- ``required`` / a named function: the answer's fixed start is prefilled into the prompt (so it works
  with constraints off, too); constrained, the rest of the call follows the grammar.
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass, field

from invoker.constrain import ConstraintError, answer_grammar, answer_prefill
from invoker.functions import FunctionSchemaError, functions_from_tools, validate_arguments, validate_functions
from invoker.json_schema import pattern_budget
from invoker.json_values import JSONValueError, check_json_value
from invoker.prompt import PromptError, render_prompt
from invoker.runtimes import GenerationParams, Runtime
from invoker.stream_parse import ArgumentsDelta, CallStart, ContentDelta, StreamParser
from serve_minimal.errors import bad_request
from serve_minimal.schemas import DEFAULT_TEMPERATURE, ChatCompletionRequest

logger = logging.getLogger("serve_minimal")


@dataclass(frozen=True)
class CompletionPlan:
    prompt: str  # rendered conversation + prefill
    prefill: str  # the answer's fixed start (already in the prompt)
    params: GenerationParams
    functions: list[dict]  # validated functions offered to the model ([] for none)
    style: str | None  # "functions" (legacy function_call) | "tools" | None (no calls can be returned)
    choice: str  # auto | none | required | function
    prompt_tokens: int
    stream: bool
    include_usage: bool
    unenforced: tuple[str, ...] = ()


def plan_completion(request: ChatCompletionRequest, *, runtime: Runtime, constrained: bool) -> CompletionPlan:
    """Check ``request`` and build its plan; every problem is an ``APIError`` (400) naming the field. All the
    pattern matching its schemas cause shares one time budget (``pattern_budget``)."""
    with pattern_budget():
        return _plan(request, runtime=runtime, constrained=constrained)


def _plan(request: ChatCompletionRequest, *, runtime: Runtime, constrained: bool) -> CompletionPlan:
    check_values(request)
    check_supported(request)
    functions, style = offered_functions(request)
    choice, name = tool_choice(request, functions=functions, style=style)
    offered = [] if choice == "none" else functions
    conversation = render_conversation(request, functions=offered)
    use_grammar = constrained if request.constrained is None else request.constrained
    if use_grammar:
        grammar = build_grammar(offered, choice=choice, name=name, style=style)
        prefill, grammar_text, unenforced = grammar.prefill, grammar.grammar, grammar.unenforced
    else:
        prefill, grammar_text, unenforced = answer_prefill(choice=choice, name=name), None, ()
    prompt = conversation + prefill
    prompt_tokens = runtime.count_tokens(prompt)
    max_tokens = completion_budget(request, prompt_tokens=prompt_tokens, context_length=runtime.context_length)
    params = generation_params(request, max_tokens=max_tokens, grammar=grammar_text)
    return CompletionPlan(
        prompt=prompt,
        prefill=prefill,
        params=params,
        functions=offered,
        style=style if choice != "none" else None,
        choice=choice,
        prompt_tokens=prompt_tokens,
        stream=bool(request.stream),
        include_usage=bool(request.stream_options and request.stream_options.include_usage),
        unenforced=unenforced,
    )


def check_values(request: ChatCompletionRequest) -> None:
    """Every string and key of the request is valid Unicode (no lone surrogate, which no tokenizer can
    encode), every number finite, nothing nested over ``MAX_JSON_DEPTH`` levels — before any of it is used."""
    try:
        check_json_value(request.model_dump(exclude_unset=True), field="")
    except JSONValueError as err:
        raise bad_request(str(err), param=err.field, code="invalid_value") from None


def check_supported(request: ChatCompletionRequest) -> None:
    """Combinations the request schema cannot express. (Parameters we cannot honour beyond their
    neutral value — n, penalties, logprobs, logit_bias — are bounded in the schema itself.)"""
    if request.functions is not None and request.tools is not None:
        raise bad_request("give either functions (legacy) or tools, not both", param="tools", code="conflicting_parameters")
    if request.function_call is not None and request.functions is None:
        raise bad_request("function_call needs functions", param="function_call", code="missing_required_parameter")
    if request.tool_choice is not None and request.tools is None:
        raise bad_request("tool_choice needs tools", param="tool_choice", code="missing_required_parameter")
    if request.stream_options is not None and not request.stream:
        raise bad_request("stream_options needs stream: true", param="stream_options", code="missing_required_parameter")
    if request.max_tokens is not None and request.max_completion_tokens not in (None, request.max_tokens):
        raise bad_request("max_tokens and max_completion_tokens differ; give one", param="max_completion_tokens",
                          code="conflicting_parameters")


def offered_functions(request: ChatCompletionRequest) -> tuple[list[dict], str | None]:
    """Validated function definitions and how calls are answered ("functions" | "tools" | None)."""
    try:
        if request.tools is not None:
            return functions_from_tools(request.tools), "tools"
        if request.functions is not None:
            return validate_functions(request.functions), "functions"
    except FunctionSchemaError as err:
        raise bad_request(str(err), param=err.field, code="invalid_function") from None
    return [], None


def tool_choice(request: ChatCompletionRequest, *, functions: list[dict], style: str | None) -> tuple[str, str | None]:
    """(auto | none | required | function, the forced function's name)."""
    raw = request.tool_choice if style == "tools" else request.function_call
    param = "tool_choice" if style == "tools" else "function_call"
    if raw is None:
        return ("auto" if functions else "none"), None
    if isinstance(raw, str):
        if raw != "none" and not functions:
            raise bad_request(f"{param}: {raw!r} needs at least one function", param=param, code="invalid_value")
        return raw, None
    name = raw.function.name if style == "tools" else raw.name
    if name not in {function["name"] for function in functions}:
        known = ", ".join(function["name"] for function in functions) or "none"
        raise bad_request(f"{param}: function {name!r} is not among the functions ({known})", param=param, code="invalid_value")
    return "function", name


def render_conversation(request: ChatCompletionRequest, *, functions: list[dict]) -> str:
    messages = [message_dict(message) for message in request.messages]
    try:
        return render_prompt(messages, functions=functions or None)
    except PromptError as err:
        raise bad_request(str(err), param=err.field, code="invalid_value") from None


def message_dict(message) -> dict:
    """A request message as the prompt renderer takes it (``developer`` is a system message)."""
    data = message.model_dump(exclude_none=True)
    if data["role"] == "developer":
        data["role"] = "system"
    return data


def build_grammar(functions: list[dict], *, choice: str, name: str | None, style: str | None):
    try:
        return answer_grammar(functions, choice=choice, name=name)
    except ConstraintError as err:
        field = err.field
        if style == "tools" and field.startswith("functions["):
            index, rest = field[len("functions[") :].split("]", 1)
            field = f"tools[{index}].function{rest}"
        raise bad_request(f"{field}: {err.message} (or send constrained: false)", param=field, code="invalid_function") from None


def completion_budget(request: ChatCompletionRequest, *, prompt_tokens: int, context_length: int) -> int:
    """``max_tokens``, or the rest of the context; a prompt or a request over the context is a 400."""
    if prompt_tokens >= context_length:
        raise bad_request(
            f"messages: the prompt is {prompt_tokens} tokens; the model's context is {context_length} tokens, "
            "which leaves no room for an answer",
            param="messages",
            code="context_length_exceeded",
        )
    asked = request.max_tokens if request.max_tokens is not None else request.max_completion_tokens
    if asked is None:
        return context_length - prompt_tokens
    if prompt_tokens + asked > context_length:
        param = "max_tokens" if request.max_tokens is not None else "max_completion_tokens"
        raise bad_request(
            f"{param}: the model's context is {context_length} tokens; the prompt takes {prompt_tokens} and "
            f"{asked} were asked for the answer ({prompt_tokens + asked} in all). Ask for at most "
            f"{context_length - prompt_tokens}.",
            param=param,
            code="context_length_exceeded",
        )
    return asked


def generation_params(request: ChatCompletionRequest, *, max_tokens: int, grammar: str | None) -> GenerationParams:
    stop = [request.stop] if isinstance(request.stop, str) else list(request.stop or [])
    try:
        return GenerationParams(
            temperature=DEFAULT_TEMPERATURE if request.temperature is None else request.temperature,
            top_p=1.0 if request.top_p is None else request.top_p,
            max_tokens=max_tokens,
            stop=tuple(stop),
            seed=request.seed,
            grammar=grammar,
        )
    except ValueError as err:
        raise bad_request(str(err), code="invalid_value") from None


# --- output -> answer --------------------------------------------------------------------------


@dataclass
class Answer:
    """The final message of one completion."""

    content: str | None
    call_name: str | None
    call_arguments: str | None
    finish_reason: str
    call_id: str | None = None
    invalid: str | None = None  # parse error code when the output was not valid Invoker output
    schema_errors: list[str] = field(default_factory=list)

    def message(self, *, style: str | None) -> dict:
        message = {"role": "assistant", "content": self.content}
        if self.call_name is not None and style == "functions":
            message["function_call"] = {"name": self.call_name, "arguments": self.call_arguments or ""}
        elif self.call_name is not None and style == "tools":
            call = {"name": self.call_name, "arguments": self.call_arguments or ""}
            message["tool_calls"] = [{"id": self.call_id, "type": "function", "function": call}]
        return message


class AnswerBuilder:
    """One completion's output -> OpenAI deltas (streaming) and the final ``Answer`` (both modes)."""

    def __init__(self, plan: CompletionPlan) -> None:
        self.plan = plan
        self.call_id = "call_" + uuid.uuid4().hex[:24]
        self._parser = StreamParser(functions=plan.functions or None)
        self._content: list[str] = []
        self._arguments: list[str] = []
        self._call_name: str | None = None
        self._prefill_events = self._parser.feed(plan.prefill) if plan.prefill else []

    def start(self) -> list[dict]:
        """The deltas the prefill already decided (e.g. a forced call's name)."""
        return self._deltas(self._prefill_events)

    def feed(self, text: str) -> list[dict]:
        return self._deltas(self._parser.feed(text))

    def finish(self, *, finish_reason: str) -> tuple[list[dict], Answer]:
        events, parsed = self._parser.finish()
        deltas = self._deltas(events)
        calls_allowed = self.plan.style is not None
        content = "".join(self._content)
        if calls_allowed and parsed.kind == "function_call":
            answer = Answer(content=parsed.content, call_name=parsed.name, call_arguments=parsed.arguments,
                            finish_reason=self._call_finish_reason())
        elif calls_allowed and self._call_name is not None:
            complete = parsed.error == "unknown_function"  # a whole call, to a function not offered
            arguments = parsed.arguments if complete and parsed.arguments is not None else "".join(self._arguments)
            answer = Answer(content=content or None, call_name=self._call_name, call_arguments=arguments,
                            finish_reason=self._call_finish_reason() if complete else finish_reason)
        else:
            answer = Answer(content=content, call_name=None, call_arguments=None, finish_reason=finish_reason)
        answer.call_id = self.call_id
        if answer.finish_reason != "length":  # output cut by max_tokens is unfinished, not invalid
            answer.invalid = parsed.error if parsed.kind == "invalid" else None
            answer.schema_errors = self._schema_errors(answer)
        return deltas, answer

    def _call_finish_reason(self) -> str:
        return "tool_calls" if self.plan.style == "tools" else "function_call"

    def _schema_errors(self, answer: Answer) -> list[str]:
        if answer.call_name is None:
            return []
        function = next((f for f in self.plan.functions if f["name"] == answer.call_name), None)
        if function is None:
            return [f"{answer.call_name!r} is not among the functions"]
        try:
            arguments = json.loads(answer.call_arguments or "")
        except json.JSONDecodeError as err:
            return [f"arguments: not valid JSON ({err})"]
        except RecursionError:
            return ["arguments: nested too deeply to parse"]
        return validate_arguments(arguments, function=function)

    def _deltas(self, events) -> list[dict]:
        deltas = []
        for event in events:
            if isinstance(event, ContentDelta):
                self._content.append(event.text)
                deltas.append({"content": event.text})
            elif self.plan.style is None:
                continue  # no call can be returned (none, or no functions): the call is dropped
            elif isinstance(event, CallStart):
                self._call_name = event.name
                deltas.append(self._call_delta(name=event.name, arguments=""))
            elif isinstance(event, ArgumentsDelta):
                self._arguments.append(event.text)
                deltas.append(self._call_delta(name=None, arguments=event.text))
        return deltas

    def _call_delta(self, *, name: str | None, arguments: str) -> dict:
        function = {"name": name, "arguments": arguments} if name is not None else {"arguments": arguments}
        if self.plan.style == "functions":
            return {"function_call": function}
        call = {"index": 0, "function": function}
        if name is not None:
            call = {"index": 0, "id": self.call_id, "type": "function", "function": function}
        return {"tool_calls": [call]}


def completion_id() -> str:
    return "chatcmpl-" + uuid.uuid4().hex


def log_answer(*, request_id: str, plan: CompletionPlan, answer: Answer) -> None:
    if answer.invalid:
        logger.warning("%s: the model's output is not valid Invoker output (%s)", request_id, answer.invalid)
    if answer.schema_errors:
        loose = f" (keywords the grammar does not enforce: {', '.join(plan.unenforced)})" if plan.unenforced else ""
        logger.warning("%s: call arguments do not match the schema: %s%s", request_id, "; ".join(answer.schema_errors), loose)
