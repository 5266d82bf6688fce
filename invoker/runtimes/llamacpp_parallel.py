"""Concurrent streams for the llama.cpp runtime: continuous batching over one multi-sequence context.

One decode thread owns a llama.cpp context of ``slots`` sequences sharing a unified KV cache of
``slots`` × the model's context, so any request that fits the model fits beside the others. A
stream waits for a free slot (first come, first served), then its prompt is read into its sequence. Then every step decodes one token of every running stream in one ``llama_decode``, and each
stream draws its next token from its own row of logits with its own sampler chain and grammar, as
a single stream does (``LlamaCppRuntime._sample``). Decoding on CPU is bound by reading the weights,
so a step for four streams costs far less than four steps for one.

A slot keeps the KV cells of its last stream when that stream ends, and a new stream takes the free
slot whose cached tokens share the longest prefix with its prompt (llama.cpp's server keeps slots the same way): a
repeated system prompt and function list, or the history of a multi-turn chat, is not read again.

A stream's chunks reach its consumer through a queue; closing the stream (the client left) frees its
slot before the next step. An error in ``llama_decode`` ends every running stream with it and
forgets every slot's cache.
"""

from __future__ import annotations

import queue
import threading
import weakref
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field

from invoker.runtimes.base import Chunk, GenerationParams, RowText
from invoker.runtimes.llamacpp_runtime import _BatchContext, _decode, _fill, _read_prompt, shared_prefix

_END = object()


@dataclass
class _Request:
    prompt_ids: list[int]
    params: GenerationParams
    budget: int
    out: queue.Queue = field(default_factory=queue.Queue)
    cancelled: threading.Event = field(default_factory=threading.Event)
    slot: int = -1
    sampler: object = None
    text: RowText | None = None
    count: int = 0
    last: int = 0


class ParallelDecoder:
    """Runs the streams of one ``LlamaCppRuntime`` together (see the module docstring)."""

    def __init__(self, runtime, *, slots: int) -> None:
        import llama_cpp

        self.runtime = runtime
        self.slots = slots
        self.context = _BatchContext(runtime.llama.model, sequences=slots, cells=slots * runtime.context_length,
                                     threads=runtime.threads)
        self._batch = llama_cpp.llama_batch_init(max(self.context.n_batch, slots), 0, 1)  # every decode reuses it
        weakref.finalize(self, llama_cpp.llama_batch_free, self._batch)
        self._lock = threading.Condition()
        self._pending: deque[_Request] = deque()
        self._running: dict[int, _Request] = {}
        self._cached: list[list[int]] = [[] for _ in range(slots)]  # the tokens whose cells each sequence holds
        self._used = [-1] * slots  # when each slot last took a stream (a count of admissions)
        self._admissions = 0
        self._thread = threading.Thread(target=self._loop, name="llama.cpp-parallel", daemon=True)
        self._thread.start()

    def stream(self, prompt_ids: list[int], params: GenerationParams) -> Iterator[Chunk]:
        budget = min(params.max_tokens, self.runtime.context_length - len(prompt_ids))
        request = _Request(prompt_ids=prompt_ids, params=params, budget=budget)
        with self._lock:
            self._pending.append(request)
            self._lock.notify()
        return self._chunks(request)

    def _chunks(self, request: _Request) -> Iterator[Chunk]:
        try:
            while (item := request.out.get()) is not _END:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            request.cancelled.set()
            with self._lock:
                self._lock.notify()

    # --- the decode thread ------------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            for request in self._admit():
                self._guarded(self._start, request)
            if self._running:
                self._guarded(self._step)

    def _admit(self) -> list[_Request]:
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

    def _slot_for(self, prompt_ids: list[int]) -> int:
        """The free slot whose cache holds the longest prefix of the prompt, if that prefix is at least half
        of the prompt (a repeated request) or half of the cache (the next turn of that slot's chat); else
        the free slot used least recently, so a cache another conversation may come back to is not
        overwritten for a few shared tokens (a system prompt's first words)."""
        def worth(slot: int) -> tuple[int, int]:
            shared = shared_prefix(self._cached[slot], prompt_ids)
            useful = 2 * shared >= min(len(prompt_ids), len(self._cached[slot]))
            return (shared if useful else 0), -self._used[slot]

        slot = max((slot for slot in range(self.slots) if slot not in self._running), key=worth)
        self._admissions += 1
        self._used[slot] = self._admissions
        return slot

    def _guarded(self, work, *args) -> None:
        try:
            work(*args)
        except Exception as err:  # every running stream ends with the error; the decoder goes on serving
            with self._lock:
                for request in list(self._running.values()):
                    request.out.put(err)
                    self._release(request)
                for slot in range(self.slots):  # what a failed decode left in the cache is unknown
                    self._forget(slot, 0)

    def _start(self, request: _Request) -> None:
        runtime = self.runtime
        request.sampler = runtime._new_sampler(request.params)
        request.text = RowText(runtime._token_bytes, request.params.stop)
        if request.budget < 1:
            self._finish(request, "length")
            return
        shared = shared_prefix(self._cached[request.slot], request.prompt_ids)
        self._forget(request.slot, shared)
        index = _read_prompt(self.context.ctx, self._batch, request.prompt_ids[shared:], sequence=request.slot,
                             n_batch=self.context.n_batch, position=shared)
        self._cached[request.slot] = list(request.prompt_ids)
        self._take(request, index)

    def _step(self) -> None:
        running = [request for request in self._running.values() if not request.cancelled.is_set()]
        if not running:
            return
        _fill(self._batch, [(r.last, len(r.prompt_ids) + r.count - 1, r.slot, True) for r in running])
        for request in running:
            self._cached[request.slot].append(request.last)
        _decode(self.context.ctx, self._batch)
        for index, request in enumerate(running):
            self._take(request, index)

    def _take(self, request: _Request, index: int) -> None:
        """Draw ``request``'s next token from output ``index`` of the last decode, and emit it."""
        import llama_cpp

        token = self.runtime._sample(request.sampler, ctx=self.context.ctx, index=index)
        request.count += 1
        request.last = token
        if llama_cpp.llama_vocab_is_eog(self.runtime._vocab, token) and not request.params.ignore_eos:
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

    def _finish(self, request: _Request, reason: str) -> None:
        request.out.put(request.text.final(finish_reason=reason, prompt_tokens=len(request.prompt_ids),
                                           completion_tokens=request.count))
        with self._lock:
            self._release(request)

    def _release(self, request: _Request) -> None:
        """Free ``request``'s slot and sampler; its cells stay for a later prompt to share (the lock is held)."""
        if self._running.get(request.slot) is not request:
            return
        del self._running[request.slot]
        if request.sampler is not None:
            request.sampler.close()
        request.out.put(_END)


    def _forget(self, slot: int, keep: int) -> None:
        """Drop ``slot``'s cells from position ``keep`` on."""
        import llama_cpp

        llama_cpp.llama_memory_seq_rm(llama_cpp.llama_get_memory(self.context.ctx), slot, keep, -1)
        del self._cached[slot][keep:]
