"""Concurrent streams for the transformers runtime: continuous batching over one left-padded KV cache.

A stream that gets a slot has its prompt read alone, into a cache of its own, and its first token drawn.
Its cache then joins the batch's: both are left-padded to the longer of the two and stacked, with an
attention mask that hides the padding and position ids per row, as ``generate_batch`` does. Every step
feeds each running stream's last token as one batch of one-token rows, and each stream draws its next
token from its own row of logits with its own sampler and grammar (``TransformersRuntime._pick``), as a
single stream does. A stream that ends leaves the batch (``batch_select_indices``), and columns no
remaining row attends to are dropped. The life cycle of a stream (queue, slots, cancellation, errors)
is ``invoker.runtimes.parallel``'s.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from invoker.runtimes.parallel import Request, StreamScheduler
from invoker.runtimes.transformers_decoding import new_cache, new_sampler


class BatchedDecoder(StreamScheduler):
    """Runs the streams of one ``TransformersRuntime`` together (see the module docstring)."""

    def __init__(self, runtime, *, slots: int) -> None:
        self.runtime = runtime
        self._rows: list[Request] = []  # the batch's rows, in cache order
        self._cache = None
        self._mask: torch.Tensor | None = None  # [rows, columns]: 1 where a row has a token
        super().__init__(slots=slots, token_bytes=runtime._token_bytes, context_length=runtime.context_length,
                         name="transformers-parallel")

    def _start(self, request: Request) -> None:
        runtime = self.runtime
        request.state = (new_sampler(request.params), request.state)  # the grammar matcher ``stream`` built
        cache = new_cache(runtime.model)
        with torch.inference_mode():
            ids = torch.tensor([request.prompt_ids], dtype=torch.long, device=runtime.device)
            logits = runtime.model(input_ids=ids, past_key_values=cache, use_cache=True, logits_to_keep=1).logits
            token = runtime._pick(logits[0, -1], request.params, *request.state)
        self._join(request, cache)
        self._emit(request, token, is_eos=token in runtime._eos_ids)

    def _join(self, request: Request, cache) -> None:
        """Stack ``request``'s cache (its prompt) under the batch's, both left-padded to the same width."""
        length = len(request.prompt_ids)
        if not self._rows:
            self._rows, self._cache = [request], cache
            self._mask = torch.ones((1, length), dtype=torch.long)
            return
        width = max(self._mask.shape[1], length)
        for ours, theirs in zip(self._cache.layers, cache.layers):
            ours.keys = torch.cat([_pad_left(ours.keys, width), _pad_left(theirs.keys, width)])
            ours.values = torch.cat([_pad_left(ours.values, width), _pad_left(theirs.values, width)])
        row = torch.cat([torch.zeros(width - length, dtype=torch.long), torch.ones(length, dtype=torch.long)])
        self._mask = torch.cat([F.pad(self._mask, (width - self._mask.shape[1], 0)), row[None]])
        self._rows.append(request)

    def _step(self, running: list[Request]) -> None:
        runtime, rows = self.runtime, list(self._rows)
        self._mask = torch.cat([self._mask, torch.ones((len(rows), 1), dtype=torch.long)], dim=1)
        with torch.inference_mode():
            logits = runtime.model(
                input_ids=torch.tensor([[row.last] for row in rows], dtype=torch.long, device=runtime.device),
                attention_mask=self._mask.to(runtime.device),
                position_ids=torch.tensor([[len(row.prompt_ids) + row.count - 1] for row in rows], device=runtime.device),
                past_key_values=self._cache, use_cache=True, logits_to_keep=1).logits
            # a stream cancelled since this step began only has its row computed
            picks = [(row, runtime._pick(logits[index, -1], row.params, *row.state))
                     for index, row in enumerate(rows) if row in running]
        for row, token in picks:
            self._emit(row, token, is_eos=token in runtime._eos_ids)

    def _closed(self, request: Request) -> None:
        """Its row leaves the batch, and the columns no remaining row uses go too."""
        if request not in self._rows:  # it ended before joining (no budget, or its prompt failed)
            return
        keep = [index for index, row in enumerate(self._rows) if row is not request]
        self._rows = [self._rows[index] for index in keep]
        if not self._rows:
            self._cache = self._mask = None
            return
        self._cache.batch_select_indices(torch.tensor(keep, dtype=torch.long, device=self.runtime.device))
        self._mask = self._mask[keep]
        first = int(self._mask.any(dim=0).long().argmax())  # the first column a remaining row attends to
        if first:
            for layer in self._cache.layers:
                layer.keys, layer.values = layer.keys[:, :, first:], layer.values[:, :, first:]
            self._mask = self._mask[:, first:]

    def _reset(self) -> None:
        self._rows, self._cache, self._mask = [], None, None


def _pad_left(tensor: torch.Tensor, width: int) -> torch.Tensor:
    """``tensor`` ([batch, heads, columns, dim]) with zero columns in front, ``width`` columns in all."""
    return F.pad(tensor, (0, 0, width - tensor.shape[2], 0))
