"""Widening a Llama with zeros (invoker.widen) keeps its outputs, on small random models."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from invoker.widen import WidenError, widen_llama


def random_llama(*, hidden=96, heads=3, kv_heads=1, tied=True, seed=0) -> LlamaForCausalLM:
    config = LlamaConfig(vocab_size=300, hidden_size=hidden, intermediate_size=160, num_hidden_layers=2,
                         num_attention_heads=heads, num_key_value_heads=kv_heads, head_dim=32,
                         max_position_embeddings=256, rms_norm_eps=1e-5, tie_word_embeddings=tied)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
        for module in model.modules():  # RMSNorm weights start at 1: make them informative
            if hasattr(module, "variance_epsilon"):
                module.weight.data.uniform_(0.5, 1.5)
    return model.eval()


@pytest.mark.parametrize("tied", [True, False])
def test_widened_model_computes_the_same_logits(tied):
    model = random_llama(tied=tied)
    wide = widen_llama(model, hidden_size=192, num_heads=6, num_kv_heads=2)
    assert (wide.config.hidden_size, wide.config.num_attention_heads, wide.config.num_key_value_heads) == (192, 6, 2)
    assert wide.config.rms_norm_eps == pytest.approx(1e-5 * 96 / 192)
    ids = torch.randint(0, 300, (3, 17), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        before, after = model(ids).logits, wide(ids).logits
    assert torch.allclose(before, after, atol=1e-4), (before - after).abs().max()
    assert torch.equal(before.argmax(-1), after.argmax(-1))


def test_padding_stays_zero_and_tied_weights_stay_tied():
    wide = widen_llama(random_llama(), hidden_size=192, num_heads=6, num_kv_heads=2)
    assert wide.lm_head.weight.data_ptr() == wide.model.embed_tokens.weight.data_ptr()
    assert not wide.model.embed_tokens.weight[:, 96:].any()
    layer = wide.model.layers[0]
    assert not layer.self_attn.q_proj.weight[96:].any() and not layer.self_attn.k_proj.weight[32:].any()
    assert not layer.self_attn.o_proj.weight[96:].any() and not layer.mlp.down_proj.weight[96:].any()


def test_widening_never_changes_the_query_groups():
    with pytest.raises(WidenError, match="query heads per KV head"):
        widen_llama(random_llama(), hidden_size=192, num_heads=6, num_kv_heads=3)
    with pytest.raises(WidenError, match="do not make hidden size"):
        widen_llama(random_llama(), hidden_size=200, num_heads=6, num_kv_heads=2)
    with pytest.raises(WidenError, match="cannot shrink"):
        widen_llama(random_llama(), hidden_size=64, num_heads=2, num_kv_heads=1)


def test_widened_model_survives_save_and_load(tmp_path):
    model = random_llama()
    widen_llama(model, hidden_size=192, num_heads=6, num_kv_heads=2).save_pretrained(tmp_path)
    loaded = LlamaForCausalLM.from_pretrained(tmp_path).eval()
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, loaded(ids).logits, atol=1e-4)
