"""The OpenAI-compatible HTTP app: ``create_app(runtime=..., settings=...)``.

Routes (each chat/models route also answers without the ``/v1`` prefix, as the original Invoker
clients use ``api_base`` without it):

- ``POST /v1/chat/completions`` — functions/tools, streaming, constrained calls (serve_minimal.completion);
- ``GET /v1/models`` — the one served model;
- ``GET /health`` — liveness plus the queue's state, never behind the API key or the queue;
- ``GET /metrics`` — Prometheus text (serve_minimal.metrics).

Everything the app needs is passed in; nothing is global, so tests build as many apps as they like.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import AsyncIterator

from fastapi import Depends, FastAPI, Request
from fastapi.responses import Response, StreamingResponse

from invoker.runtimes import Chunk, Runtime
from serve_minimal.completion import AnswerBuilder, CompletionPlan, completion_id, log_answer, plan_completion
from serve_minimal.errors import APIError, SafeJSONResponse, bad_request, error_body, install_error_handlers
from serve_minimal.limits import AdmissionQueue, ApiKeyGate, BodySizeLimit, Planner, free_memory_trimmer, redact_access_log
from serve_minimal.metrics import RequestCounter, ServerMetrics
from serve_minimal.schemas import (
    ChatCompletion,
    ChatCompletionRequest,
    ErrorResponse,
    Health,
    ModelCard,
    ModelList,
)
from serve_minimal.settings import ServerSettings
from serve_minimal.streaming import DONE, GenerationThread, chunk_payload, sse, usage_payload

logger = logging.getLogger("serve_minimal")

ERROR_RESPONSES = {status: {"model": ErrorResponse} for status in (400, 401, 404, 413, 429, 500)}
CHAT_RESPONSES = {
    200: {"description": "a chat completion (JSON), or with stream: true, SSE chunks ending with data: [DONE]",
          "content": {"text/event-stream": {"schema": {"type": "string"}}}},
    **ERROR_RESPONSES,
}


class Server:
    """What the routes share: the runtime, the settings, the admission queue and the metrics."""

    def __init__(self, *, runtime: Runtime, settings: ServerSettings) -> None:
        self.runtime = runtime
        self.settings = settings
        self.queue = AdmissionQueue(
            slots=concurrency_for(runtime, asked=settings.max_concurrency),
            max_waiting=settings.max_queue,
            max_wait_seconds=settings.queue_timeout,
        )
        self.planner = Planner(limit=self.queue.slots + settings.max_queue)
        self.metrics = ServerMetrics()
        self.started = int(time.time())
        self._trim = free_memory_trimmer()

    async def admit(self) -> None:
        self.metrics.waiting.inc()
        try:
            await self.queue.acquire()
        except APIError as err:
            self.metrics.rejected.labels(reason=err.code).inc()
            raise
        finally:
            self.metrics.waiting.dec()
        self.metrics.running.inc()

    def release(self) -> None:
        self.metrics.running.dec()
        self.queue.release()
        if self.queue.running == 0 and self._trim is not None:
            # Idle: give the memory the generations freed back to the OS, off the event loop.
            asyncio.get_running_loop().run_in_executor(None, self._trim)


def concurrency_for(runtime: Runtime, *, asked: int) -> int:
    """``asked``, capped by what the runtime can run at once. A runtime that batches streams on request
    (llama.cpp and transformers: ``run_parallel``) is asked for that many; otherwise its optional ``max_concurrent_streams``
    caps it."""
    if asked > 1 and hasattr(runtime, "run_parallel"):
        runtime.run_parallel(asked)
    limit = getattr(runtime, "max_concurrent_streams", None)
    if limit is not None and asked > limit:
        logger.warning("the %s runtime runs at most %d generation(s) at once; max concurrency %d -> %d",
                       runtime.runtime, limit, asked, limit)
        return limit
    return asked


def create_app(*, runtime: Runtime, settings: ServerSettings) -> FastAPI:
    server = Server(runtime=runtime, settings=settings)
    app = FastAPI(
        title="invoker-pack serve_minimal",
        summary="OpenAI-compatible chat completions with function calling for Invoker models",
        version="0.1.0",
    )
    app.state.server = server
    redact_access_log()
    install_error_handlers(app)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes, timeout=settings.body_timeout)
    if settings.api_key is not None:
        app.add_middleware(ApiKeyGate, api_key=settings.api_key)
    app.add_middleware(RequestCounter, metrics=server.metrics)  # the last added runs first: counts every answer
    for prefix in ("/v1", ""):
        app.add_api_route(f"{prefix}/chat/completions", chat_completions, methods=["POST"],
                          response_model=ChatCompletion, responses=CHAT_RESPONSES, include_in_schema=bool(prefix))
        app.add_api_route(f"{prefix}/models", list_models, methods=["GET"], response_model=ModelList,
                          responses=ERROR_RESPONSES, include_in_schema=bool(prefix))
    app.add_api_route("/health", health, methods=["GET"], response_model=Health)
    app.add_api_route("/metrics", metrics, methods=["GET"], responses=ERROR_RESPONSES, response_class=Response)
    return app


# --- dependencies ------------------------------------------------------------------------------


def get_server(request: Request) -> Server:
    return request.app.state.server


# --- routes ------------------------------------------------------------------------------------


async def health(server: Server = Depends(get_server)) -> Health:
    runtime = server.runtime
    return Health(model=server.settings.model_name, format=runtime.format, runtime=runtime.runtime,
                  running=server.queue.running, waiting=server.queue.waiting)


async def metrics(server: Server = Depends(get_server)) -> Response:
    return Response(server.metrics.render(), media_type=server.metrics.content_type)


async def list_models(server: Server = Depends(get_server)) -> ModelList:
    return ModelList(data=[ModelCard(id=server.settings.model_name, created=server.started)])


async def chat_completions(body: ChatCompletionRequest, request: Request, server: Server = Depends(get_server)):
    started = time.perf_counter()
    # Validating functions, rendering, tokenizing and building the grammar take milliseconds (a hostile schema's
    # pattern work at most MAX_PATTERN_SECONDS): off the loop, on the planner's bounded threads.
    plan = await server.planner.run(
        functools.partial(plan_completion, body, runtime=server.runtime, constrained=server.settings.constrained))
    run = GenerationRun(server=server, plan=plan, request=request)
    planned = time.perf_counter()
    await run.open()
    builder = AnswerBuilder(plan)
    timing = {"Server-Timing": server_timing(plan=planned - started, queue=run.admitted - planned, first_token=run.first_token)}
    if plan.stream:
        return StreamingResponse(stream_answer(run=run, builder=builder), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no", **timing})
    try:
        return SafeJSONResponse(await collect_answer(run=run, builder=builder), headers=timing)
    finally:
        run.close()


def server_timing(**seconds: float) -> str:
    """The W3C ``Server-Timing`` header of a completion: where the time before its first chunk went, in ms —
    ``plan`` (validating, rendering, tokenizing, building the grammar), ``queue`` (waiting for a slot) and
    ``first-token`` (from admission to the runtime's first chunk: reading the prompt and the first token).
    Only what happened before the headers left can be in a header; the rest is in ``/metrics``."""
    return ", ".join(f"{name.replace('_', '-')};dur={1000 * value:.1f}" for name, value in seconds.items())


# --- one generation ----------------------------------------------------------------------------


class GenerationRun:
    """An admitted generation: its thread, a watcher that stops it when the client leaves, timings."""

    def __init__(self, *, server: Server, plan: CompletionPlan, request: Request) -> None:
        self.server = server
        self.plan = plan
        self.request = request
        self.id = completion_id()
        self.created = int(time.time())
        self.last: Chunk | None = None
        self._first: Chunk | None = None
        self._chunks: AsyncIterator[Chunk] | None = None
        self._thread: GenerationThread | None = None
        self._watcher: asyncio.Task | None = None
        self._gone = asyncio.Event()
        self.admitted = 0.0  # perf_counter() when it got its slot
        self.first_token = 0.0  # seconds from then to the runtime's first chunk

    async def open(self) -> None:
        """Wait for a slot, start generating, and wait for the first chunk, so that an error raised
        before any output (a grammar the engine refuses, a prompt the runtime rejects) is a proper
        HTTP error, not a broken stream. A client that leaves while queued gives its place up."""
        self._watcher = asyncio.create_task(self._watch_disconnect())
        try:
            await self._admit_while_connected()
        except BaseException:
            self._watcher.cancel()
            raise
        self.admitted = time.perf_counter()
        self._thread = GenerationThread(runtime=self.server.runtime, prompt=self.plan.prompt,
                                        params=self.plan.params, on_exit=self.server.release)
        self._thread.start()
        if self._gone.is_set():
            self._thread.stop()
        self._chunks = self._thread.chunks()
        try:
            self._first = await anext(self._chunks)
        except ValueError as err:
            self.close()
            raise bad_request(str(err), param=getattr(err, "field", None), code="invalid_request") from None
        except BaseException:
            self.close()
            raise
        self.first_token = time.perf_counter() - self.admitted
        self.server.metrics.first_token.observe(self.first_token)

    async def _admit_while_connected(self) -> None:
        admission = asyncio.create_task(self.server.admit())
        gone = asyncio.create_task(self._gone.wait())
        await asyncio.wait({admission, gone}, return_when=asyncio.FIRST_COMPLETED)
        gone.cancel()
        if not admission.done():
            admission.cancel()
            await asyncio.gather(admission, return_exceptions=True)
        if admission.cancelled() or admission.exception() is not None:
            if admission.cancelled():
                raise APIError(499, "the client closed the request while it waited for a slot", code="client_closed")
            raise admission.exception()

    async def chunks(self) -> AsyncIterator[Chunk]:
        chunk = self._first
        while chunk is not None:
            self.last = chunk
            yield chunk
            chunk = await anext(self._chunks, None)

    def usage(self) -> dict:
        prompt = self.last.prompt_tokens if self.last and self.last.finish_reason else self.plan.prompt_tokens
        completion = self.last.completion_tokens if self.last and self.last.finish_reason else 0
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    def finish_reason(self) -> str:
        return self.last.finish_reason if self.last and self.last.finish_reason else "stop"

    def record(self, *, finish_reason: str) -> None:
        usage = self.usage()
        metrics = self.server.metrics
        metrics.prompt_tokens.inc(usage["prompt_tokens"])
        metrics.completion_tokens.inc(usage["completion_tokens"])
        metrics.completions.labels(finish_reason=finish_reason).inc()
        metrics.latency.observe(time.perf_counter() - self.admitted)

    def close(self) -> None:
        """Stop generating (if still running) and stop watching the client. Idempotent."""
        if self._thread is not None:
            self._thread.stop()
        if self._watcher is not None:
            self._watcher.cancel()

    async def _watch_disconnect(self) -> None:
        while (await self.request.receive())["type"] != "http.disconnect":
            pass
        self._gone.set()
        if self._thread is not None and (self.last is None or self.last.finish_reason is None):
            self.server.metrics.cancelled.inc()
            logger.info("%s: client disconnected; generation stopped", self.id)
            self._thread.stop()


async def collect_answer(*, run: GenerationRun, builder: AnswerBuilder) -> dict:
    builder.start()
    async for chunk in run.chunks():
        builder.feed(chunk.text)
    # Validating the call's arguments against the client's schema: off the loop, like every validation.
    _, answer = await asyncio.to_thread(builder.finish, finish_reason=run.finish_reason())
    log_answer(request_id=run.id, plan=run.plan, answer=answer)
    _count_answer(run, answer)
    run.record(finish_reason=answer.finish_reason)
    message = answer.message(style=run.plan.style)
    return {
        "id": run.id,
        "object": "chat.completion",
        "created": run.created,
        "model": run.server.settings.model_name,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": answer.finish_reason}],
        "usage": run.usage(),
    }


async def stream_answer(*, run: GenerationRun, builder: AnswerBuilder) -> AsyncIterator[str]:
    """SSE chunks: the first carries the role, then content or call deltas, a final chunk with
    ``finish_reason``, optional usage, ``[DONE]``. The role goes out as soon as the model's first token
    exists, alone (``{"role": "assistant"}``): whether the answer is text or a call is known only after
    Invoker's wrapper (```` ```{"content": ````, ~8 tokens). When the prefill already decided it (a forced
    call's name), the role rides on that first delta, with ``content: null`` as OpenAI's call chunks have."""
    model = run.server.settings.model_name
    role_sent = said = False

    def event(delta: dict, finish_reason: str | None = None) -> str:
        nonlocal role_sent, said
        said = said or bool(delta)
        if not role_sent:
            role = {"role": "assistant", "content": "" if finish_reason else None}
            delta, role_sent = {**role, **delta}, True
        return sse(chunk_payload(completion_id=run.id, created=run.created, model=model, delta=delta,
                                 finish_reason=finish_reason))

    try:
        decided = builder.start()
        if not decided:
            role_sent = True
            yield sse(chunk_payload(completion_id=run.id, created=run.created, model=model, delta={"role": "assistant"}))
        for delta in decided:
            yield event(delta)
        async for chunk in run.chunks():
            for delta in builder.feed(chunk.text):
                yield event(delta)
        deltas, answer = await asyncio.to_thread(builder.finish, finish_reason=run.finish_reason())
        for delta in deltas:
            yield event(delta)
        if not said and answer.call_name is None:  # nothing came (cut before the wrapper ended): content is ""
            yield event({"content": ""})
        log_answer(request_id=run.id, plan=run.plan, answer=answer)
        _count_answer(run, answer)
        run.record(finish_reason=answer.finish_reason)
        yield event({}, answer.finish_reason)
        if run.plan.include_usage:
            yield sse(usage_payload(completion_id=run.id, created=run.created, model=model, usage=run.usage()))
        yield DONE
    except Exception:  # after the headers went out, an error can only be reported in the stream
        logger.exception("%s: generation failed mid-stream", run.id)
        yield sse(error_body(message="generation failed (see the server log)", type="server_error", code="internal_error"))
    finally:
        run.close()


def _count_answer(run: GenerationRun, answer) -> None:
    if answer.invalid:
        run.server.metrics.invalid_outputs.inc()
    if answer.schema_errors:
        run.server.metrics.schema_invalid_calls.inc()
