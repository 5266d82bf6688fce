"""The ctypes batch layer of llama.cpp that ``generate_batch`` (``invoker.runtimes.llamacpp_runtime``) and the
concurrent streams (``invoker.runtimes.llamacpp_parallel``) both decode through: a context of several sequences
sharing one unified KV cache, filling a ``llama_batch``, decoding it, reading a prompt into one sequence in
chunks, and how much of a prompt a sequence's cache already holds. It imports neither of them.
"""

from __future__ import annotations

import weakref


class BatchContext:
    """A llama.cpp context of its own for ``generate_batch`` or the ``ParallelDecoder``: ``sequences`` sequences
    sharing one unified KV cache of ``cells`` cells (rounded up to 256), freed with its owner or by ``close``."""

    def __init__(self, model, *, sequences: int, cells: int, threads: int) -> None:
        import llama_cpp

        params = llama_cpp.llama_context_default_params()
        params.n_ctx = -(-cells // 256) * 256
        params.n_batch = params.n_ubatch = 512
        params.n_seq_max = sequences
        params.kv_unified = True
        params.n_threads = params.n_threads_batch = threads
        ctx = llama_cpp.llama_init_from_model(model, params)
        if not ctx:
            raise RuntimeError(f"llama.cpp could not create a context of {params.n_ctx} cells for {sequences} sequences")
        self.ctx, self.sequences, self.cells, self.n_batch = ctx, sequences, int(params.n_ctx), int(params.n_batch)
        self._finalizer = weakref.finalize(self, llama_cpp.llama_free, ctx)

    def close(self) -> None:
        self._finalizer()


def fill(batch, entries: list[tuple[int, int, int, bool]]) -> None:
    """Put (token, position, sequence, wants logits) entries into ``batch``."""
    batch.n_tokens = len(entries)
    for i, (token, position, sequence, logits) in enumerate(entries):
        batch.token[i], batch.pos[i], batch.n_seq_id[i], batch.logits[i] = token, position, 1, logits
        batch.seq_id[i][0] = sequence


def read_prompt(ctx, batch, ids: list[int], *, sequence: int, n_batch: int, position: int = 0) -> int:
    """Decode ``ids`` into ``sequence`` from ``position`` on, in chunks of ``n_batch`` (``batch`` holds at least that
    many), logits at the last token only; returns that token's output index in the last decode."""
    for start in range(0, len(ids), n_batch):
        chunk = ids[start : start + n_batch]
        fill(batch, [(token, position + start + i, sequence, start + i == len(ids) - 1) for i, token in enumerate(chunk)])
        decode(ctx, batch)
    return (len(ids) - 1) % n_batch


def shared_prefix(cached: list[int], ids: list[int]) -> int:
    """How many leading tokens of ``ids`` the KV cache holding ``cached`` already has, leaving at least the last
    token of ``ids`` to decode (its logits give the next token)."""
    shared = 0
    for old, new in zip(cached, ids):
        if old != new:
            break
        shared += 1
    return min(shared, len(ids) - 1)


def decode(ctx, batch) -> None:
    import llama_cpp

    code = llama_cpp.llama_decode(ctx, batch)
    if code != 0:
        raise RuntimeError(f"llama_decode failed ({code}) on a batch of {batch.n_tokens} tokens")
