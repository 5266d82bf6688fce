"""Generation off the event loop, and Server-Sent Events in OpenAI's chunk shape.

``GenerationThread`` runs ``runtime.stream(prompt, params)`` on a thread of its own (the event loop
keeps answering ``/health`` and other clients) and hands the chunks to the loop through an asyncio
queue. ``stop()`` asks it to end: it closes the runtime's stream at the next chunk, which stops
generation (the Runtime contract). ``on_exit`` runs on the loop when the thread is done — the
admission slot is released then, when the model is really free, not when the client left.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Callable

from invoker.runtimes import Chunk, GenerationParams, Runtime

DONE = "data: [DONE]\n\n"


class GenerationThread:
    def __init__(self, *, runtime: Runtime, prompt: str, params: GenerationParams, on_exit: Callable[[], None]) -> None:
        self._runtime = runtime
        self._prompt = prompt
        self._params = params
        self._on_exit = on_exit
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue = asyncio.Queue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="invoker-generation", daemon=True)
        self.stopped_early = False

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    async def chunks(self) -> AsyncIterator[Chunk]:
        """The runtime's chunks, in order; re-raises what the runtime raised. Chunks that queued up while
        the consumer was busy come out joined into one (a fast model is not slowed to one event per token)."""
        while True:
            kind, value = await self._queue.get()
            while kind == "chunk" and value.finish_reason is None and not self._queue.empty():
                next_kind, next_value = self._queue.get_nowait()
                if next_kind != "chunk":
                    yield value
                    kind, value = next_kind, next_value
                    break
                value = Chunk(text=value.text + next_value.text, finish_reason=next_value.finish_reason,
                              prompt_tokens=next_value.prompt_tokens, completion_tokens=next_value.completion_tokens)
            if kind == "chunk":
                yield value
            elif kind == "error":
                raise value
            else:
                return

    def _run(self) -> None:
        try:
            stream = self._runtime.stream(self._prompt, self._params)
            try:
                for chunk in stream:
                    self._send("chunk", chunk)
                    if self._stop.is_set():
                        self.stopped_early = chunk.finish_reason is None
                        break
            finally:
                close = getattr(stream, "close", None)
                if close is not None:
                    close()
            self._send("end", None)
        except Exception as err:  # handed to the loop, raised there as the request's error
            self._send("error", err)
        finally:
            self._call_on_loop(self._on_exit)

    def _send(self, kind: str, value) -> None:
        self._call_on_loop(self._queue.put_nowait, (kind, value))

    def _call_on_loop(self, function, *args) -> None:
        try:
            self._loop.call_soon_threadsafe(function, *args)
        except RuntimeError:  # the loop is closed: the server is shutting down
            pass


def sse(data: dict) -> str:
    """One Server-Sent Event carrying a JSON object (with ``\\uXXXX`` escapes when it holds a lone surrogate,
    which UTF-8 cannot carry: a model can write the escape ``\\ud800``)."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = json.dumps(data, ensure_ascii=True, separators=(",", ":"))
    return f"data: {text}\n\n"


def chunk_payload(*, completion_id: str, created: int, model: str, delta: dict, finish_reason: str | None = None) -> dict:
    return {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
    }


def usage_payload(*, completion_id: str, created: int, model: str, usage: dict) -> dict:
    return {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [],
        "usage": usage,
    }
