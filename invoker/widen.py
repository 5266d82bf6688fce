"""Widen a Llama checkpoint with zeros so its matrix dimensions suit the quantizers, without changing what it computes.

Llama-2-13B's dimensions (5120, 13824) are multiples of 256, so GGUF k-quants apply to every
tensor and GPTQ/AWQ use groups of 128. A small base such as SmolLM2-135M (hidden 576, 9 query
heads, 3 KV heads of 64) is not: llama.cpp silently falls back to Q5_0/Q5_1/Q8_0 for its tensors.
``widen_llama`` pads the hidden size (576 → 768), the query heads (9 → 12) and the KV heads
(3 → 4) with zeros, keeping ``head_dim``:

- new embedding columns, new rows of every residual write (``o_proj``, ``down_proj``) and new
  columns of every residual read are zero, so the extra hidden dimensions stay zero;
- query heads keep their KV groups (9/3 = 12/4 = 3 per group) and the new heads read a zero KV
  head and write through zero ``o_proj`` columns;
- RMSNorm averages over the wider vector, so each norm weight is scaled by sqrt(old/new) and
  ``rms_norm_eps`` by old/new: ``x / sqrt(mean_new(x²) + eps') * w' == x / sqrt(mean_old(x²) + eps) * w``.

The padded dimensions also receive zero gradients, so fine-tuning keeps them zero.
"""

from __future__ import annotations

import math

import torch


class WidenError(ValueError):
    """The requested shape cannot hold the model, or would change its grouping."""


def widen_llama(model, *, hidden_size: int, num_heads: int, num_kv_heads: int):
    """A new ``LlamaForCausalLM`` (fp32) computing the same function as ``model`` at the wider shape."""
    from transformers import LlamaConfig, LlamaForCausalLM

    old = model.config
    head_dim = getattr(old, "head_dim", None) or old.hidden_size // old.num_attention_heads
    _check_shape(old, head_dim=head_dim, hidden_size=hidden_size, num_heads=num_heads, num_kv_heads=num_kv_heads)
    config = LlamaConfig.from_dict({
        **{key: value for key, value in old.to_dict().items() if key != "quantization_config"},
        "hidden_size": hidden_size,
        "num_attention_heads": num_heads,
        "num_key_value_heads": num_kv_heads,
        "head_dim": head_dim,
        "rms_norm_eps": old.rms_norm_eps * old.hidden_size / hidden_size,
        "torch_dtype": "float32",
    })
    norm_scale = math.sqrt(old.hidden_size / hidden_size)
    state = {}
    for name, tensor in model.state_dict().items():
        state[name] = _widen_tensor(name, tensor.float(), hidden=hidden_size, q_rows=num_heads * head_dim,
                                    kv_rows=num_kv_heads * head_dim, norm_scale=norm_scale)
    wide = LlamaForCausalLM(config)
    missing, unexpected = wide.load_state_dict(state, strict=False)
    if unexpected or [name for name in missing if name != "lm_head.weight"]:
        raise WidenError(f"state dict does not fit the widened model: missing {missing}, unexpected {unexpected}")
    if config.tie_word_embeddings:
        wide.tie_weights()
    wide.generation_config = model.generation_config
    return wide.eval()


def _check_shape(config, *, head_dim: int, hidden_size: int, num_heads: int, num_kv_heads: int) -> None:
    if hidden_size < config.hidden_size or num_heads < config.num_attention_heads or num_kv_heads < config.num_key_value_heads:
        raise WidenError("widening cannot shrink a dimension")
    if num_heads * head_dim != hidden_size:
        raise WidenError(f"{num_heads} heads of {head_dim} do not make hidden size {hidden_size}")
    old_group = config.num_attention_heads // config.num_key_value_heads
    if num_heads % num_kv_heads or num_heads // num_kv_heads != old_group:
        raise WidenError(f"{num_heads}/{num_kv_heads} heads would change the {old_group} query heads per KV head")


def _pad(tensor: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    out = torch.zeros(shape, dtype=tensor.dtype)
    out[tuple(slice(0, size) for size in tensor.shape)] = tensor
    return out


def _widen_tensor(name: str, tensor: torch.Tensor, *, hidden: int, q_rows: int, kv_rows: int, norm_scale: float) -> torch.Tensor:
    leaf = name.rsplit(".", 2)[-2] if name.endswith(".weight") else name
    if name.endswith("norm.weight"):
        return _pad(tensor * norm_scale, (hidden,))
    if leaf in ("embed_tokens", "lm_head"):
        return _pad(tensor, (tensor.shape[0], hidden))
    if leaf == "q_proj":
        return _pad(tensor, (q_rows, hidden))
    if leaf in ("k_proj", "v_proj"):
        return _pad(tensor, (kv_rows, hidden))
    if leaf == "o_proj":
        return _pad(tensor, (hidden, q_rows))
    if leaf in ("gate_proj", "up_proj"):
        return _pad(tensor, (tensor.shape[0], hidden))
    if leaf == "down_proj":
        return _pad(tensor, (hidden, tensor.shape[1]))
    if tensor.dim() == 0 or "rotary" in name:
        return tensor
    raise WidenError(f"no widening rule for tensor {name} {tuple(tensor.shape)}")
