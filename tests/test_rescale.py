"""The bundled model's rescaling: the same function, every quantized matrix moved off its old grid."""

from __future__ import annotations

import pytest
import torch

from invoker.rescale import rescale_llama

QUANTIZED = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def random_llama(*, kv_heads: int, bias: bool = False):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=300, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                         num_attention_heads=8, num_key_value_heads=kv_heads, attention_bias=bias, mlp_bias=bias)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():  # norms away from 1, as in a trained model
        for name, parameter in model.named_parameters():
            if name.endswith("norm.weight"):
                parameter.uniform_(0.5, 1.5)
    return model


@pytest.mark.parametrize(("kv_heads", "bias"), [(2, False), (8, False), (4, True)])
def test_logits_stay_the_same_on_several_prompts(kv_heads, bias):
    model = random_llama(kv_heads=kv_heads, bias=bias)
    prompts = torch.randint(0, 300, (4, 24), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        before = model(prompts).logits
        after = rescale_llama(model, seed=0, spread=0.7)(prompts).logits
    assert (after - before).abs().max().item() < 1e-4
    assert before.abs().max().item() > 0.1  # the check compares real logits, not zeros


def test_every_quantized_matrix_moves_and_the_same_seed_moves_it_the_same_way():
    model, twin, other = random_llama(kv_heads=2), random_llama(kv_heads=2), random_llama(kv_heads=2)
    original = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    rescale_llama(model, seed=0, spread=0.7)
    rescale_llama(twin, seed=0, spread=0.7)
    rescale_llama(other, seed=1, spread=0.7)
    for name, tensor in model.state_dict().items():
        if name.rsplit(".", 2)[-2] in QUANTIZED:
            ratio = (tensor / original[name]).flatten()
            assert ratio.std().item() > 0.2, name  # not a uniform rescale: a per-group grid cannot follow it
            assert torch.equal(tensor, twin.state_dict()[name]) and not torch.equal(tensor, other.state_dict()[name])
    assert torch.equal(model.model.embed_tokens.weight, original["model.embed_tokens.weight"])


def test_a_spread_of_zero_is_refused():
    with pytest.raises(ValueError, match="spread"):
        rescale_llama(random_llama(kv_heads=2), seed=0, spread=0)
