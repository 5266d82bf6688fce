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

The life cycle of a stream (queue, slots, cancellation, errors) is ``invoker.runtimes.parallel``'s; an
error in ``llama_decode`` also forgets every slot's cache.
"""

from __future__ import annotations

import weakref

from invoker.runtimes.llamacpp_batch import BatchContext, decode, fill, read_prompt, shared_prefix
from invoker.runtimes.parallel import Request, StreamScheduler


class ParallelDecoder(StreamScheduler):
    """Runs the streams of one ``LlamaCppRuntime`` together (see the module docstring)."""

    def __init__(self, runtime, *, slots: int) -> None:
        import llama_cpp

        self.runtime = runtime
        self.context = BatchContext(runtime.llama.model, sequences=slots, cells=slots * runtime.context_length,
                                     threads=runtime.threads)
        self._batch = llama_cpp.llama_batch_init(max(self.context.n_batch, slots), 0, 1)  # every decode reuses it
        weakref.finalize(self, llama_cpp.llama_batch_free, self._batch)
        self._cached: list[list[int]] = [[] for _ in range(slots)]  # the tokens whose cells each sequence holds
        self._used = [-1] * slots  # when each slot last took a stream (a count of admissions)
        self._admissions = 0
        super().__init__(slots=slots, token_bytes=runtime._token_bytes, context_length=runtime.context_length,
                         name="llama.cpp-parallel")

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

    def _reset(self) -> None:
        for slot in range(self.slots):  # what a failed decode left in the cache is unknown
            self._forget(slot, 0)

    def _start(self, request: Request) -> None:
        request.state = self.runtime._new_sampler(request.params)
        shared = shared_prefix(self._cached[request.slot], request.prompt_ids)
        self._forget(request.slot, shared)
        index = read_prompt(self.context.ctx, self._batch, request.prompt_ids[shared:], sequence=request.slot,
                             n_batch=self.context.n_batch, position=shared)
        self._cached[request.slot] = list(request.prompt_ids)
        self._take(request, index)

    def _step(self, running: list[Request]) -> None:
        fill(self._batch, [(r.last, len(r.prompt_ids) + r.count - 1, r.slot, True) for r in running])
        for request in running:
            self._cached[request.slot].append(request.last)
        decode(self.context.ctx, self._batch)
        for index, request in enumerate(running):
            self._take(request, index)

    def _take(self, request: Request, index: int) -> None:
        """Draw ``request``'s next token from output ``index`` of the last decode, and emit it."""
        import llama_cpp

        token = self.runtime._sample(request.state, ctx=self.context.ctx, index=index)
        self._emit(request, token, is_eos=llama_cpp.llama_vocab_is_eog(self.runtime._vocab, token))

    def _closed(self, request: Request) -> None:
        """Its sampler goes; its cells stay for a later prompt to share."""
        if request.state is not None:
            request.state.close()

    def _forget(self, slot: int, keep: int) -> None:
        """Drop ``slot``'s cells from position ``keep`` on."""
        import llama_cpp

        llama_cpp.llama_memory_seq_rm(llama_cpp.llama_get_memory(self.context.ctx), slot, keep, -1)
        del self._cached[slot][keep:]
