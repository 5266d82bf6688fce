"""GPTQ: the algorithm, the files it writes, and that the ecosystem's loader reads them as we meant."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from convert import gptq
from convert._packing import unpack_gptq
from convert.calibration import CalibrationSet, CalibrationSpec
from quant_support import assert_generates, assert_runtime_serves_4bit, convert_calibrated, load_with_transformers, read_tensors


def _problem(*, out_features=32, in_features=256, tokens=2048, seed=0):
    """A weight and the Hessian of correlated inputs with uneven channel scales (as real activations have)."""
    generator = torch.Generator().manual_seed(seed)
    mixing = torch.randn(in_features, in_features, generator=generator) / in_features**0.5
    channel_scale = torch.exp(torch.randn(in_features, generator=generator))
    x = (torch.randn(tokens, in_features, generator=generator) @ mixing + 0.3 * torch.randn(tokens, in_features, generator=generator)) * channel_scale
    weight = torch.randn(out_features, in_features, generator=generator) * 0.05
    return weight, 2 * x.T @ x / tokens


def _proxy_error(weight, quantized, hessian) -> float:
    """GPTQ's objective: ||(W - Q) X||² = tr((W - Q) H (W - Q)ᵀ) / 2."""
    delta = weight - quantized
    return float(torch.trace(delta @ hessian @ delta.T))


def _round_to_nearest(weight, *, group_size=128):
    grouped = weight.reshape(weight.shape[0], -1, group_size)
    largest = torch.maximum(grouped.min(dim=2, keepdim=True).values.abs(), grouped.max(dim=2, keepdim=True).values)
    scale = (2 * largest / 15).to(torch.float16).float()
    return ((torch.clamp(torch.round(grouped / scale) + 8, 0, 15) - 8) * scale).reshape(weight.shape)


@pytest.mark.parametrize("act_order", [False, True])
def test_the_written_tensors_dequantize_to_exactly_the_weights_gptq_chose(act_order):
    weight, hessian = _problem()
    result = gptq.gptq_quantize(weight=weight, hessian=hessian, bits=4, group_size=128, act_order=act_order)
    back = unpack_gptq(gptq.pack_gptq(result.quantized), bits=4)
    assert torch.equal(back.dequantize(), result.weight)
    assert torch.equal(back.g_idx, result.quantized.g_idx)


@pytest.mark.parametrize("act_order", [False, True])
def test_gptq_beats_round_to_nearest_on_its_objective(act_order):
    weight, hessian = _problem()
    result = gptq.gptq_quantize(weight=weight, hessian=hessian, bits=4, group_size=128, act_order=act_order)
    gptq_error = _proxy_error(weight, result.weight, hessian)
    rtn_error = _proxy_error(weight, _round_to_nearest(weight), hessian)
    assert gptq_error < 0.8 * rtn_error


def test_act_order_groups_follow_decreasing_hessian_diagonal():
    weight, hessian = _problem()
    result = gptq.gptq_quantize(weight=weight, hessian=hessian, bits=4, group_size=128, act_order=True)
    g_idx = result.quantized.g_idx
    assert torch.bincount(g_idx.long()).tolist() == [128, 128]
    first = torch.argsort(torch.diag(hessian), descending=True)[:128]
    assert set(first.tolist()) == set(torch.nonzero(g_idx == 0).flatten().tolist())
    plain = gptq.gptq_quantize(weight=weight, hessian=hessian, bits=4, group_size=128, act_order=False)
    assert torch.equal(plain.quantized.g_idx, (torch.arange(256) // 128).to(torch.int32))


def test_symmetric_codes_use_zero_point_eight_and_fp16_scales():
    weight, hessian = _problem()
    quantized = gptq.gptq_quantize(weight=weight, hessian=hessian, bits=4, group_size=64, act_order=False).quantized
    assert set(quantized.zeros.flatten().tolist()) == {8}
    assert quantized.scales.dtype == torch.float16 and quantized.scales.shape == (4, 32)
    assert int(quantized.codes.max()) <= 15


def test_an_input_that_never_fires_gets_zero_weight_and_the_rest_still_quantizes():
    weight, hessian = _problem()
    hessian[5, :] = 0
    hessian[:, 5] = 0
    result = gptq.gptq_quantize(weight=weight, hessian=hessian, bits=4, group_size=128, act_order=True)
    assert torch.all(result.weight[:, 5] == 0)
    assert torch.isfinite(result.weight).all()


# --- bad input fails before any work ------------------------------------------------------------


def _calibration(ids):
    return CalibrationSet(spec=CalibrationSpec(n_samples=1, max_length=16), texts=["x"], input_ids=ids, sha256="0" * 64)


def _fake_source(tmp_path: Path, **overrides) -> Path:
    """A dir that passes the file checks: config.json (Llama-shaped unless overridden), a weights file, a tokenizer file."""
    source = tmp_path / "source"
    source.mkdir()
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": 256,
        "intermediate_size": 768,
        "num_attention_heads": 4,
        "num_key_value_heads": 4,
        "num_hidden_layers": 2,
    }
    config.update(overrides)
    (source / "config.json").write_text(json.dumps(config))
    (source / "model.safetensors").write_bytes(b"not read before the checks")
    (source / "tokenizer.json").write_text("{}")
    return source


@pytest.mark.parametrize(
    ("overrides", "variant", "ids", "message"),
    [
        ({}, "4bit-g100", [[1, 2, 3]], "unknown GPTQ variant '4bit-g100'; valid: 4bit-g128"),
        ({"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2"}, "4bit-g128", [[1, 2, 3]], "not a Llama decoder"),
        ({"hidden_size": 320}, "4bit-g128", [[1, 2, 3]], "hidden_size = 320 is not a multiple of the group size 128"),
        ({"intermediate_size": 800}, "4bit-g64", [[1, 2, 3]], "intermediate_size = 800 is not a multiple of the group size 64"),
        ({}, "4bit-g128", [], "calibration set is empty"),
        ({"quantization_config": {"quant_method": "awq"}}, "4bit-g128", [[1, 2, 3]], "already quantized"),
    ],
)
def test_bad_input_is_a_clear_error_before_anything_is_written(tmp_path, overrides, variant, ids, message):
    source = _fake_source(tmp_path, **overrides)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(ValueError, match=re.escape(message)):
        gptq.convert(source_dir=source, out_dir=out, variant=variant, calibration=_calibration(ids), progress=False)
    assert list(out.iterdir()) == []


def test_no_calibration_set_is_a_clear_error(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(ValueError, match="need a calibration set"):
        gptq.convert(source_dir=_fake_source(tmp_path), out_dir=out, variant="4bit-g128", calibration=None, progress=False)


# --- end to end: our files through the ecosystem's loader ---------------------------------------


def _loader_weight(module, in_features: int) -> torch.Tensor:
    """The weight the loaded (kernel-backed) module really applies: its outputs for the identity matrix."""
    with torch.inference_mode():
        return module(torch.eye(in_features, dtype=torch.float32)).float().T


@pytest.fixture(scope="module", params=["4bit-g128", "4bit-g128-actorder"])
def gptq_dir(request, tiny_random_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("gptq") / request.param
    details = convert_calibrated(gptq, source=tiny_random_model, out=out, variant=request.param)
    return out, details


@pytest.mark.e2e
def test_quantization_config_and_tensors_have_the_gptq_v1_layout(gptq_dir, tiny_random_model):
    from safetensors import safe_open

    out, details = gptq_dir
    config = json.loads((out / "config.json").read_text())
    quantization = config["quantization_config"]
    assert quantization["quant_method"] == "gptq"
    assert quantization["bits"] == 4 and quantization["group_size"] == 128 and quantization["sym"] is True
    assert quantization["desc_act"] is out.name.endswith("actorder")
    assert quantization["checkpoint_format"] == "gptq"
    assert details["quantization"]["desc_act"] is quantization["desc_act"]
    tensors = {}
    for shard in out.glob("*.safetensors"):
        with safe_open(str(shard), framework="pt") as handle:
            tensors.update({name: handle.get_tensor(name) for name in handle.keys()})
    hidden, intermediate = 256, 768
    shapes = {
        "self_attn.q_proj": (hidden, hidden),
        "self_attn.o_proj": (hidden, hidden),
        "mlp.gate_proj": (hidden, intermediate),
        "mlp.down_proj": (intermediate, hidden),
    }
    for name, (in_features, out_features) in shapes.items():
        prefix = f"model.layers.1.{name}."
        assert tensors[prefix + "qweight"].dtype == torch.int32 and tensors[prefix + "qweight"].shape == (in_features // 8, out_features)
        assert tensors[prefix + "qzeros"].dtype == torch.int32 and tensors[prefix + "qzeros"].shape == (in_features // 128, out_features // 8)
        assert tensors[prefix + "scales"].dtype == torch.float16 and tensors[prefix + "scales"].shape == (in_features // 128, out_features)
        assert tensors[prefix + "g_idx"].dtype == torch.int32 and tensors[prefix + "g_idx"].shape == (in_features,)
        assert prefix + "weight" not in tensors
    for name in ("model.embed_tokens.weight", "lm_head.weight", "model.norm.weight", "model.layers.0.input_layernorm.weight"):
        assert tensors[name].dtype == torch.float16
    assert (out / "tokenizer.model").is_file() and (out / "tokenizer_config.json").is_file()


@pytest.mark.e2e
def test_transformers_loads_it_on_cpu_applying_exactly_our_weights_and_generates(gptq_dir):
    out, _ = gptq_dir
    model = load_with_transformers(out)
    tensors = read_tensors(out)
    for index in range(2):
        for name in ("self_attn.q_proj", "self_attn.v_proj", "mlp.down_proj"):
            prefix = f"model.layers.{index}.{name}."
            ours = unpack_gptq({key: tensors[prefix + key] for key in ("qweight", "qzeros", "scales", "g_idx")}, bits=4).dequantize()
            module = model.get_submodule(f"model.layers.{index}.{name}")
            torch.testing.assert_close(_loader_weight(module, ours.shape[1]), ours, rtol=1e-2, atol=1e-3)
    assert_generates(model, out, "USER: what is the weather in Paris?\nASSISTANT:")


@pytest.mark.e2e
def test_the_transformers_runtime_serves_it_with_the_4bit_kernel(gptq_dir):
    out, _ = gptq_dir
    assert_runtime_serves_4bit(out, format="gptq", module="model.layers.0.self_attn.q_proj",
                               prompt="USER: what is the weather in Paris?\nASSISTANT:")
