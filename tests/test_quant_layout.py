"""The classic 4-bit layouts bit by bit, and the layer-by-layer walk GPTQ and AWQ share.

The bit-level expectations are written out by hand from the layouts' definitions (AutoGPTQ's v1
packing, AutoAWQ's GEMM interleave), not computed by our unpacker, so a packing bug cannot agree
with itself. End-to-end checks against the ecosystem's loader are in test_gptq.py / test_awq.py.
"""

from __future__ import annotations

import pytest
import torch

from convert._packing import QuantizedLinear, pack_awq, pack_gptq, unpack_awq, unpack_gptq


def _linear(*, out_features=16, in_features=64, group_size=32, g_idx=None, zero=None, seed=0) -> QuantizedLinear:
    generator = torch.Generator().manual_seed(seed)
    groups = in_features // group_size
    zeros = torch.randint(1, 16, (groups, out_features), generator=generator) if zero is None else torch.full((groups, out_features), zero)
    return QuantizedLinear(
        codes=torch.randint(0, 16, (out_features, in_features), generator=generator).to(torch.uint8),
        scales=(torch.rand(groups, out_features, generator=generator) + 0.01).to(torch.float16),
        zeros=zeros.to(torch.uint8),
        g_idx=(torch.arange(in_features) // group_size).to(torch.int32) if g_idx is None else g_idx,
        bits=4,
    )


def _as_uint32(word: torch.Tensor) -> int:
    return int(word) & 0xFFFFFFFF


def test_gptq_qweight_packs_eight_consecutive_input_rows_low_nibble_first():
    linear = _linear(zero=8)
    codes = linear.codes.clone()
    codes[0, :8] = torch.tensor([0, 1, 2, 3, 4, 5, 6, 7], dtype=torch.uint8)
    codes[1, 8:16] = torch.tensor([15, 14, 13, 12, 11, 10, 9, 8], dtype=torch.uint8)
    packed = pack_gptq(QuantizedLinear(codes=codes, scales=linear.scales, zeros=linear.zeros, g_idx=linear.g_idx, bits=4))
    assert packed["qweight"].dtype == torch.int32 and packed["qweight"].shape == (64 // 8, 16)
    assert _as_uint32(packed["qweight"][0, 0]) == 0x76543210  # input rows 0..7 of output column 0
    assert _as_uint32(packed["qweight"][1, 1]) == 0x89ABCDEF  # rows 8..15 of column 1: top nibble set -> negative int32
    assert int(packed["qweight"][1, 1]) < 0


def test_gptq_qzeros_store_zero_minus_one_along_the_output_axis():
    packed = pack_gptq(_linear(zero=8))
    assert packed["qzeros"].dtype == torch.int32 and packed["qzeros"].shape == (2, 16 // 8)
    assert {_as_uint32(w) for w in packed["qzeros"].flatten()} == {0x77777777}
    assert packed["scales"].dtype == torch.float16 and packed["scales"].shape == (2, 16)
    assert packed["g_idx"].dtype == torch.int32 and packed["g_idx"].shape == (64,)


def test_gptq_refuses_a_zero_point_of_zero_which_v1_cannot_store():
    with pytest.raises(ValueError, match="zero point of 0"):
        pack_gptq(_linear(zero=0))


def test_gptq_round_trip_keeps_an_act_order_g_idx():
    g_idx = (torch.randperm(64, generator=torch.Generator().manual_seed(1)) // 32).to(torch.int32)
    linear = _linear(g_idx=g_idx)
    back = unpack_gptq(pack_gptq(linear), bits=4)
    assert torch.equal(back.codes, linear.codes)
    assert torch.equal(back.zeros, linear.zeros)
    assert torch.equal(back.scales, linear.scales)
    assert torch.equal(back.g_idx, g_idx)
    assert torch.equal(back.dequantize(), linear.dequantize())


def test_awq_qweight_interleaves_eight_output_columns_in_awq_order():
    linear = _linear()
    codes = linear.codes.clone()
    codes[:8, 0] = torch.tensor([0, 1, 2, 3, 4, 5, 6, 7], dtype=torch.uint8)  # output columns 0..7 of input row 0
    zeros = linear.zeros.clone()
    zeros[0, :8] = torch.tensor([8, 9, 10, 11, 12, 13, 14, 15], dtype=torch.uint8)
    packed = pack_awq(QuantizedLinear(codes=codes, scales=linear.scales, zeros=zeros, g_idx=linear.g_idx, bits=4), group_size=32)
    assert packed["qweight"].dtype == torch.int32 and packed["qweight"].shape == (64, 16 // 8)
    assert _as_uint32(packed["qweight"][0, 0]) == 0x75316420  # fields hold columns 0,2,4,6,1,3,5,7
    assert packed["qzeros"].shape == (2, 16 // 8)
    assert _as_uint32(packed["qzeros"][0, 0]) == 0xFDB9ECA8  # zeros stored as they are (no v1 offset)
    assert packed["scales"].dtype == torch.float16 and packed["scales"].shape == (2, 16)
    assert set(packed) == {"qweight", "qzeros", "scales"}


def test_awq_round_trip_is_exact():
    linear = _linear(zero=None)
    back = unpack_awq(pack_awq(linear, group_size=32), group_size=32)
    assert torch.equal(back.codes, linear.codes)
    assert torch.equal(back.zeros, linear.zeros)
    assert torch.equal(back.dequantize(), linear.dequantize())


def test_awq_refuses_groups_that_are_not_contiguous():
    g_idx = (torch.randperm(64, generator=torch.Generator().manual_seed(2)) // 32).to(torch.int32)
    with pytest.raises(ValueError, match="contiguous"):
        pack_awq(_linear(g_idx=g_idx), group_size=32)


def test_dequantize_is_scale_times_code_minus_zero_of_the_column_group():
    linear = _linear(out_features=8, in_features=64, group_size=32)
    weight = linear.dequantize()
    o, i = 3, 40  # input column 40 is in group 1
    expected = float(linear.scales[1, o].float()) * (int(linear.codes[o, i]) - int(linear.zeros[1, o]))
    assert float(weight[o, i]) == pytest.approx(expected, rel=1e-6)


@pytest.mark.e2e
def test_layer_by_layer_forward_reproduces_the_model(tiny_random_model):
    """The streaming walk (one decoder layer at a time, weights read per layer) computes what the model computes."""
    from transformers import AutoModelForCausalLM

    from convert.checkpoint import CheckpointReader, LayerRunner, embed_samples, load_decoder_layer, model_config

    samples = [[1, 5, 9, 13, 200, 7, 3], [1, 42, 43, 44]]
    config = model_config(tiny_random_model)
    weights = CheckpointReader(tiny_random_model)
    runner = LayerRunner(config=config, device=torch.device("cpu"))
    hidden = embed_samples(weights=weights, samples=samples, architecture=runner.architecture)
    for index in range(config.num_hidden_layers):
        hidden = runner.forward(load_decoder_layer(config=config, index=index, weights=weights, device="cpu"), hidden)
    model = AutoModelForCausalLM.from_pretrained(str(tiny_random_model), dtype=torch.float32)
    with torch.inference_mode():
        for ids, states in zip(samples, hidden):
            expected = model.model(input_ids=torch.tensor([ids])).last_hidden_state
            ours = model.model.norm(states)
            torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-4)
