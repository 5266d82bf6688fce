"""AWQ: scale folding, the search, the files it writes, and that the ecosystem's loader reads them as we meant."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from convert import awq
from convert.architectures import LLAMA
from convert.checkpoint import LayerRunner
from convert._packing import unpack_awq
from convert.calibration import CalibrationSet, CalibrationSpec
from quant_support import assert_generates, assert_runtime_serves_4bit, convert_calibrated, load_with_transformers, read_tensors


def _layer_and_inputs(*, seed=0, outlier_channels=(3, 77, 200)):
    """A random float32 Llama decoder layer (hidden 256) and hidden states with a few large channels, as real ones have."""
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaDecoderLayer

    config = LlamaConfig(hidden_size=256, intermediate_size=768, num_attention_heads=4, num_key_value_heads=4,
                         num_hidden_layers=1, max_position_embeddings=512)
    config._attn_implementation = "sdpa"
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        layer = LlamaDecoderLayer(config, layer_idx=0).eval()
    for name in ("input_layernorm", "post_attention_layernorm"):
        layer.get_submodule(name).weight.data = 1 + 0.1 * torch.randn(256, generator=generator)
    hidden = []
    for length in (96, 64, 128):
        states = torch.randn(1, length, 256, generator=generator)
        states[..., list(outlier_channels)] *= 20
        hidden.append(states)
    return layer, hidden, LayerRunner(config=config, device=torch.device("cpu"))


def test_the_written_tensors_dequantize_to_exactly_the_weights_awq_chose():
    weight = torch.randn(64, 256, generator=torch.Generator().manual_seed(0)) * 0.05
    quantized = awq.quantize_asymmetric(weight, group_size=128)
    back = unpack_awq(awq.pack_awq(quantized, group_size=128), group_size=128)
    assert torch.equal(back.dequantize(), awq.fake_quantize(weight, group_size=128))
    assert quantized.scales.dtype == torch.float16 and quantized.scales.shape == (2, 64)
    assert 0 <= int(quantized.zeros.min()) and int(quantized.zeros.max()) <= 15


def test_folding_the_scales_into_the_previous_op_keeps_the_float_layer_unchanged():
    layer, hidden, runner = _layer_and_inputs()
    before = runner.forward(layer, hidden)
    generator = torch.Generator().manual_seed(1)
    for group in LLAMA.scale_groups:
        width = layer.get_submodule(group.linears[0]).in_features
        awq.apply_scale(layer=layer, group=group, scale=torch.exp(0.5 * torch.randn(width, generator=generator)))
    for old, new in zip(before, runner.forward(layer, hidden)):
        torch.testing.assert_close(new, old, rtol=1e-4, atol=1e-4)


def test_awq_layer_is_closer_to_the_float_layer_than_round_to_nearest():
    layer, hidden, runner = _layer_and_inputs()
    reference = runner.forward(layer, hidden)

    rtn_layer, _, _ = _layer_and_inputs()
    for name in LLAMA.linears:
        module = rtn_layer.get_submodule(name)
        module.weight.data = awq.fake_quantize(module.weight.data, group_size=128)

    features = awq.capture_features(layer=layer, hidden=hidden, runner=runner)
    quantized = awq.quantize_layer(layer=layer, features=features, runner=runner, group_size=128)
    for name, linear in quantized.items():
        layer.get_submodule(name).weight.data = linear.dequantize()

    def error(candidate):
        return sum(float((out - ref).pow(2).sum()) for out, ref in zip(runner.forward(candidate, hidden), reference))

    assert error(layer) < 0.9 * error(rtn_layer)


def test_clipping_never_increases_a_group_error():
    layer, hidden, runner = _layer_and_inputs()
    weight = layer.get_submodule("mlp.down_proj").weight.data
    features = awq.capture_features(layer=layer, hidden=hidden, runner=runner)["mlp.down_proj"]
    limit = awq.search_clip(weight=weight, inputs=features, group_size=128)
    largest = weight.reshape(weight.shape[0], -1, 128).abs().amax(dim=2)
    assert limit.shape == largest.shape
    assert torch.all(limit <= largest) and torch.all(limit >= 0.5 * largest - 1e-6)


def test_within_budget_keeps_leading_samples_and_at_least_one():
    samples = [[1] * 40, [1] * 40, [1] * 40]
    assert awq.within_budget(samples, max_tokens=100) == samples[:2]
    assert awq.within_budget(samples, max_tokens=10) == samples[:1]


def _calibration(ids):
    return CalibrationSet(spec=CalibrationSpec(n_samples=1, max_length=16), texts=["x"], input_ids=ids, sha256="0" * 64)


def test_awq_has_no_act_order_variant_and_says_which_exist(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(ValueError, match=re.escape("unknown AWQ variant '4bit-g128-actorder'; valid: 4bit-g128, 4bit-g64, 4bit-g32")):
        awq.convert(source_dir=tmp_path, out_dir=out, variant="4bit-g128-actorder", calibration=_calibration([[1, 2]]), progress=False)
    assert list(out.iterdir()) == []


def test_an_empty_calibration_set_is_a_clear_error_before_work(tiny_random_model, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(ValueError, match="calibration set is empty"):
        awq.convert(source_dir=tiny_random_model, out_dir=out, variant="4bit-g128", calibration=_calibration([]), progress=False)
    assert list(out.iterdir()) == []


# --- end to end: our files through the ecosystem's loader ---------------------------------------


@pytest.fixture(scope="module")
def awq_dir(tiny_random_model, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("awq") / "awq-4bit-g128"
    return out, convert_calibrated(awq, source=tiny_random_model, out=out, variant="4bit-g128")


@pytest.mark.e2e
def test_quantization_config_and_tensors_have_the_awq_gemm_layout(awq_dir):
    out, details = awq_dir
    quantization = json.loads((out / "config.json").read_text())["quantization_config"]
    assert quantization["quant_method"] == "awq" and quantization["version"] == "gemm"
    assert quantization["bits"] == 4 and quantization["group_size"] == 128 and quantization["zero_point"] is True
    assert details["quantization"]["quant_method"] == "awq"
    tensors = read_tensors(out)
    for name, (in_features, out_features) in {"self_attn.k_proj": (256, 256), "mlp.up_proj": (256, 768), "mlp.down_proj": (768, 256)}.items():
        prefix = f"model.layers.0.{name}."
        assert tensors[prefix + "qweight"].dtype == torch.int32 and tensors[prefix + "qweight"].shape == (in_features, out_features // 8)
        assert tensors[prefix + "qzeros"].dtype == torch.int32 and tensors[prefix + "qzeros"].shape == (in_features // 128, out_features // 8)
        assert tensors[prefix + "scales"].dtype == torch.float16 and tensors[prefix + "scales"].shape == (in_features // 128, out_features)
        assert prefix + "g_idx" not in tensors and prefix + "weight" not in tensors
    for name in ("model.embed_tokens.weight", "lm_head.weight", "model.layers.1.post_attention_layernorm.weight"):
        assert tensors[name].dtype == torch.float16


@pytest.mark.e2e
def test_transformers_loads_it_on_cpu_applying_exactly_our_weights_and_generates(awq_dir):
    out, _ = awq_dir
    model = load_with_transformers(out)
    tensors = read_tensors(out)
    for index in range(2):
        for name in ("self_attn.q_proj", "mlp.gate_proj", "mlp.down_proj"):
            prefix = f"model.layers.{index}.{name}."
            ours = unpack_awq({key: tensors[prefix + key] for key in ("qweight", "qzeros", "scales")}, group_size=128).dequantize()
            module = model.get_submodule(f"model.layers.{index}.{name}")
            with torch.inference_mode():
                applied = module(torch.eye(ours.shape[1], dtype=torch.float32)).float().T
            torch.testing.assert_close(applied, ours, rtol=1e-2, atol=1e-3)
    assert_generates(model, out, "USER: book a table for two\nASSISTANT:")


@pytest.mark.e2e
def test_the_transformers_runtime_serves_it_with_the_4bit_kernel(awq_dir):
    out, _ = awq_dir
    assert_runtime_serves_4bit(out, format="awq", module="model.layers.1.mlp.gate_proj",
                               prompt="USER: book a table for two\nASSISTANT:")
