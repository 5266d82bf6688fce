"""Concurrent streams on one model: the request life cycle every runtime's batched decoder shares.

A ``StreamScheduler`` owns one decode thread. A stream waits for a free slot (first come, first served),
is started (its prompt read: ``_start``), then advances one token per step together with every other
running stream (``_step``: one forward pass for all of them; decoding on CPU is bound by reading the
weights, so a step for four streams costs far less than four steps for one). Each token goes through
``_emit``: EOS, stop strings, budget and incremental UTF-8, as a single stream does (``RowText``).

A stream's chunks reach its consumer through a queue; closing the stream (the client left) frees its
slot before the next step. An error in a step ends every running stream with it (``_reset`` then
forgets what the failed step left behind) and the decoder goes on serving. The runtimes' decoders:
``invoker.runtimes.llamacpp_parallel`` and ``invoker.runtimes.transformers_parallel``.
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field

from invoker.runtimes.base import Chunk, GenerationParams, RowText

_END = object()


@dataclass(eq=False)  # a stream is itself: compared by identity
class Request:
    """One stream: its prompt, budget, text state and the queue its chunks go to. ``state`` is the decoder's
    own per-stream data (a sampler, a grammar matcher)."""

    prompt_ids: list[int]
    params: GenerationParams
    budget: int
    text: RowText
    out: queue.Queue = field(default_factory=queue.Queue)
    cancelled: threading.Event = field(default_factory=threading.Event)
    slot: int = -1
    state: object = None
    count: int = 0
    last: int = 0


class StreamScheduler:
    """Runs up to ``slots`` streams together (see the module docstring). Subclasses implement ``_start`` and
    ``_step``; ``_slot_for``, ``_closed`` and ``_reset`` are optional hooks."""

    def __init__(self, *, slots: int, token_bytes: list[bytes], context_length: int, name: str) -> None:
        self.slots = slots
        self._token_bytes = token_bytes
        self._context_length = context_length
        self._lock = threading.Condition()
        self._pending: deque[Request] = deque()
        self._running: dict[int, Request] = {}
        threading.Thread(target=self._loop, name=name, daemon=True).start()  # it waits for the first stream

    def stream(self, prompt_ids: list[int], params: GenerationParams, *, state: object = None) -> Iterator[Chunk]:
        """``prompt_ids``' chunks once the stream gets a slot; ``state`` (e.g. a grammar matcher the caller built
        to check the grammar) starts as the request's ``state``."""
        budget = min(params.max_tokens, self._context_length - len(prompt_ids))
        request = Request(prompt_ids=prompt_ids, params=params, budget=budget,
                          text=RowText(self._token_bytes, params.stop), state=state)
        with self._lock:
            self._pending.append(request)
            self._lock.notify()
        return self._chunks(request)

    def _chunks(self, request: Request) -> Iterator[Chunk]:
        try:
            while (item := request.out.get()) is not _END:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            request.cancelled.set()
            with self._lock:
                self._lock.notify()

    # --- what a runtime's decoder provides ------------------------------------------------------------

    def _start(self, request: Request) -> None:
        """Read ``request``'s prompt (its budget is at least one token) and ``_emit`` its first token."""
        raise NotImplementedError

    def _step(self, running: list[Request]) -> None:
        """Decode one token of every stream in ``running`` together and ``_emit`` each."""
        raise NotImplementedError

    def _slot_for(self, prompt_ids: list[int]) -> int:
        """The free slot a new stream takes (the lock is held): the lowest."""
        return min(slot for slot in range(self.slots) if slot not in self._running)

    def _closed(self, request: Request) -> None:
        """``request`` left its slot (finished, cancelled or failed; the lock is held)."""

    def _reset(self) -> None:
        """After a failed step: forget whatever the decoder's state holds (the lock is held)."""

    # --- the decode thread ------------------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            for request in self._admit():
                if request.budget < 1:  # a prompt that fills the context: nothing to generate
                    self._finish(request, "length")
                else:
                    self._guarded(self._start, request)
            running = [request for request in self._running.values() if not request.cancelled.is_set()]
            if running:
                self._guarded(self._step, running)

    def _admit(self) -> list[Request]:
        """Waits for work; returns the requests that get a slot now (cancelled ones are dropped)."""
        with self._lock:
            while True:
                for request in list(self._running.values()):
                    if request.cancelled.is_set():
                        self._release(request)
                while self._pending and self._pending[0].cancelled.is_set():
                    self._pending.popleft()
                admitted = []
                while self._pending and len(self._running) < self.slots:
                    request = self._pending.popleft()
                    request.slot = self._slot_for(request.prompt_ids)
                    self._running[request.slot] = request
                    admitted.append(request)
                if admitted or self._running:
                    return admitted
                self._lock.wait()

    def _guarded(self, work, *args) -> None:
        try:
            work(*args)
        except Exception as err:  # every running stream ends with the error; the decoder goes on serving
            with self._lock:
                for request in list(self._running.values()):
                    request.out.put(err)
                    self._release(request)
                self._reset()

    def _emit(self, request: Request, token: int, *, is_eos: bool) -> None:
        """``request`` generated ``token``: send its text, or finish it (EOS, a stop string, its budget)."""
        request.count += 1
        request.last = token
        if is_eos and not request.params.ignore_eos:
            self._finish(request, "stop")
            return
        text, stopped = request.text.feed(token)
        if stopped:
            self._finish(request, "stop")
            return
        if text:
            request.out.put(Chunk(text=text))
        if request.count >= request.budget:
            self._finish(request, "length")

    def _finish(self, request: Request, reason: str) -> None:
        request.out.put(request.text.final(finish_reason=reason, prompt_tokens=len(request.prompt_ids),
                                           completion_tokens=request.count))
        with self._lock:
            self._release(request)

    def _release(self, request: Request) -> None:
        """Free ``request``'s slot (the lock is held)."""
        if self._running.get(request.slot) is not request:
            return
        del self._running[request.slot]
        self._closed(request)
        request.out.put(_END)


class ParallelStreams:
    """``run_parallel`` for a runtime whose ``_decoder(slots)`` builds its ``StreamScheduler``; its ``stream``
    hands streams to ``_parallel`` once that exists."""

    max_concurrent_streams = 1  # streams at once (the server reads this): 1, or what run_parallel set up
    _parallel: StreamScheduler | None = None

    def run_parallel(self, streams: int) -> int:
        """Serve up to ``streams`` streams at once from now on, their decode steps batched together (the
        runtime's ``_decoder``). Returns how many streams run at once."""
        if streams < 1:
            raise ValueError(f"streams must be >= 1, got {streams}")
        if streams > 1 and self._parallel is None:
            self._parallel = self._decoder(streams)
            self.max_concurrent_streams = streams
        return self.max_concurrent_streams

    def _decoder(self, slots: int) -> StreamScheduler:
        raise NotImplementedError
