"""The bundled model's rotation: the same function, every quantized matrix moved off its old grid."""

from __future__ import annotations

import pytest
import torch

from invoker.rotate import random_orthogonal, rotate_llama

QUANTIZED = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def random_llama(*, kv_heads: int, bias: bool = False, tied: bool = True):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=300, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                         num_attention_heads=8, num_key_value_heads=kv_heads, attention_bias=bias, mlp_bias=bias,
                         tie_word_embeddings=tied)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():  # norms away from 1 and biases away from 0, as in a trained model
        for name, parameter in model.named_parameters():
            if name.endswith("norm.weight"):
                parameter.uniform_(0.5, 1.5)
            elif name.endswith("bias"):
                parameter.uniform_(-0.5, 0.5)
    return model


PROMPTS = torch.randint(0, 300, (4, 24), generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize(("kv_heads", "bias", "tied"), [(2, False, True), (8, False, False), (4, True, True)])
def test_logits_stay_the_same_on_several_prompts(kv_heads, bias, tied):
    model = random_llama(kv_heads=kv_heads, bias=bias, tied=tied)
    with torch.no_grad():
        before = model(PROMPTS).logits
        after = rotate_llama(model, seed=0)(PROMPTS).logits
    assert (after - before).abs().max().item() < 1e-4
    assert before.abs().max().item() > 0.1  # the check compares real logits, not zeros


def test_a_saved_rotated_model_loads_back_untied_with_the_same_logits(tmp_path):
    from transformers import LlamaForCausalLM

    model = rotate_llama(random_llama(kv_heads=2), seed=0)
    model.save_pretrained(tmp_path)
    loaded = LlamaForCausalLM.from_pretrained(tmp_path).eval()
    assert loaded.config.tie_word_embeddings is False
    assert not torch.equal(loaded.lm_head.weight, loaded.model.embed_tokens.weight)
    with torch.no_grad():
        assert torch.equal(loaded(PROMPTS).logits, model(PROMPTS).logits)


def test_every_quantized_matrix_is_mixed_along_its_axis_and_the_same_seed_mixes_it_the_same_way():
    model, twin, other = random_llama(kv_heads=2), random_llama(kv_heads=2), random_llama(kv_heads=2)
    original = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    rotate_llama(model, seed=0)
    rotate_llama(twin, seed=0)
    rotate_llama(other, seed=1)
    for name, tensor in model.state_dict().items():
        if name.rsplit(".", 2)[-2] in QUANTIZED:
            before = original[name]
            # every new weight combines many old ones: none equals a multiple of its old value
            ratio = (tensor / before).flatten()
            assert ratio.std().item() > 1.0, name
            assert torch.equal(tensor, twin.state_dict()[name]) and not torch.equal(tensor, other.state_dict()[name])
            # a rotation keeps the matrix's size along the rotated axis (norm folding aside: o/down have none)
            if name.rsplit(".", 2)[-2] in ("o_proj", "down_proj"):
                assert torch.allclose(torch.linalg.matrix_norm(tensor), torch.linalg.matrix_norm(before), rtol=1e-5)
    for name, tensor in model.state_dict().items():
        if name.endswith("norm.weight"):
            assert torch.equal(tensor, torch.ones_like(tensor)), name  # folded into the linears that read them


def test_the_rotation_is_orthogonal_and_seeded():
    q = random_orthogonal(64, seed=3)
    assert torch.allclose(q @ q.T, torch.eye(64, dtype=torch.float64), atol=1e-12)
    assert torch.equal(q, random_orthogonal(64, seed=3)) and not torch.equal(q, random_orthogonal(64, seed=4))
