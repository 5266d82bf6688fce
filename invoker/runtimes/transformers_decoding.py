"""What one decoding request of the transformers runtime starts from, shared by a single stream
(``invoker.runtimes.transformers_runtime``) and the batched decoder (``invoker.runtimes.transformers_parallel``):
its random generator and a fresh KV cache. It imports neither of them.
"""

from __future__ import annotations

import torch

from invoker.runtimes.base import GenerationParams


def new_sampler(params: GenerationParams) -> torch.Generator:
    """A request's random generator: seeded by ``params.seed``, else from the OS."""
    sampler = torch.Generator(device="cpu")
    if params.seed is None:
        sampler.seed()
    else:
        sampler.manual_seed(params.seed)
    return sampler


def new_cache(model):
    from transformers import DynamicCache

    return DynamicCache(config=model.config)
