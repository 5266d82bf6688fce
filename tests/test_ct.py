"""compressed-tensors W4A16: GPTQ's solution in the layout llm-compressor writes, read by transformers with no code of ours."""

from __future__ import annotations

import json

import pytest
import torch

from convert import ct, gptq
from convert._packing import QuantizedLinear
from quant_support import assert_generates, convert_calibrated, load_with_transformers, read_tensors


def _solution(*, out_features=16, in_features=256, seed=0) -> QuantizedLinear:
    generator = torch.Generator().manual_seed(seed)
    weight = torch.randn(out_features, in_features, generator=generator)
    inputs = torch.randn(512, in_features, generator=generator)
    return gptq.gptq_quantize(weight=weight, hessian=2 * inputs.T @ inputs / 512, bits=4, group_size=128,
                              act_order=False).quantized


def test_the_library_packs_exactly_gptqs_codes_and_scales():
    from compressed_tensors.compressors.pack_quantized.base import PackedQuantizationCompressor

    quantized = _solution()
    scheme = ct._scheme(ct.parse_variant("w4a16-g128"))
    packed = ct.pack(quantized, scheme=scheme)
    assert packed["weight_packed"].dtype == torch.int32 and packed["weight_packed"].shape == (16, 256 // 8)
    assert packed["weight_scale"].dtype == torch.float16 and packed["weight_scale"].shape == (16, 2)
    assert packed["weight_shape"].tolist() == [16, 256]
    restored = PackedQuantizationCompressor.decompress(dict(packed), scheme)["weight"]  # in the scales' dtype, fp16
    torch.testing.assert_close(restored, quantized.dequantize().to(restored.dtype), rtol=0, atol=0)


def test_act_order_or_asymmetric_solutions_are_refused():
    scheme = ct._scheme(ct.parse_variant("w4a16-g128"))
    quantized = _solution()
    shuffled = QuantizedLinear(codes=quantized.codes, scales=quantized.scales, zeros=quantized.zeros,
                               g_idx=quantized.g_idx.flip(0), bits=4)
    with pytest.raises(ValueError, match="column order"):
        ct.pack(shuffled, scheme=scheme)
    shifted = QuantizedLinear(codes=quantized.codes, scales=quantized.scales, zeros=quantized.zeros - 1,
                              g_idx=quantized.g_idx, bits=4)
    with pytest.raises(ValueError, match="symmetric"):
        ct.pack(shifted, scheme=scheme)


@pytest.mark.parametrize("variant", ["w4a16", "w4a16-g100", "4bit-g128", "W4A16-G128"])
def test_unknown_variants_name_the_valid_ones(variant):
    with pytest.raises(ValueError, match="valid: w4a16-g128, w4a16-g64, w4a16-g32"):
        ct.variant_settings(variant)


@pytest.fixture(scope="module")
def ct_dir(tiny_random_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("ct") / "w4a16-g128"
    return out, convert_calibrated(ct, source=tiny_random_model, out=out, variant="w4a16-g128")


@pytest.mark.e2e
def test_config_is_the_librarys_and_transformers_loads_it_plainly_with_exactly_our_weights(ct_dir):
    from compressed_tensors.quantization import QuantizationConfig

    out, details = ct_dir
    quantization = json.loads((out / "config.json").read_text())["quantization_config"]
    assert quantization["quant_method"] == "compressed-tensors" and quantization["format"] == "pack-quantized"
    parsed = QuantizationConfig.model_validate(quantization)
    weights = parsed.config_groups["group_0"].weights
    assert (weights.num_bits, weights.group_size, weights.symmetric, weights.strategy) == (4, 128, True, "group")
    assert parsed.ignore == ["lm_head"] and details["tools"]["compressed-tensors"] == "0.17.0"
    tensors = read_tensors(out)
    assert "model.layers.0.self_attn.q_proj.weight" not in tensors
    assert tensors["model.layers.0.self_attn.q_proj.weight_packed"].dtype == torch.int32
    assert tensors["lm_head.weight"].dtype == torch.float16

    model = load_with_transformers(out)
    assert_generates(model, out, "USER: what is the weather in Paris?\nASSISTANT:")  # the first forward decompresses
    from compressed_tensors.compressors.pack_quantized.base import PackedQuantizationCompressor

    scheme = ct._scheme(ct.parse_variant("w4a16-g128"))
    for name in ("model.layers.0.self_attn.q_proj", "model.layers.1.mlp.down_proj"):
        stored = {key: tensors[f"{name}.{key}"] for key in ("weight_packed", "weight_scale", "weight_shape")}
        ours = PackedQuantizationCompressor.decompress(stored, scheme)["weight"].float()
        module = model.get_submodule(name)
        with torch.inference_mode():
            applied = module(torch.eye(ours.shape[1])).float().T
        torch.testing.assert_close(applied, ours, rtol=1e-3, atol=1e-4)


@pytest.mark.e2e
def test_the_transformers_runtime_serves_it_as_the_ct_format(ct_dir):
    from invoker.runtimes import GenerationParams, detect_format, generate, load_runtime

    out, _ = ct_dir
    assert detect_format(out) == "ct"
    runtime = load_runtime(out)
    assert (runtime.runtime, runtime.format) == ("transformers", "ct")
    generation = generate(runtime, "USER: hello\nASSISTANT:", GenerationParams(max_tokens=6, ignore_eos=True))
    assert (generation.finish_reason, generation.completion_tokens) == ("length", 6)
