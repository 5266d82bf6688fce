"""benchmarks/finetune_kept.py: the share of a fine-tune that a quantized matrix keeps (docs/GGUF.md)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from finetune_kept import kept  # noqa: E402


def test_rounding_back_to_the_base_keeps_nothing_and_unrelated_noise_keeps_everything():
    rng = np.random.default_rng(0)
    base = np.round(rng.normal(size=(256, 512)) * 8) / 8  # on a grid, as the bundled model's base is
    finetuned = base + rng.normal(scale=0.01, size=base.shape)  # a change smaller than half a step
    assert kept(base=base, finetuned=finetuned, quantized=np.round(finetuned * 8) / 8) == (0.0, 0.0)
    share, left = kept(base=base, finetuned=finetuned, quantized=finetuned + rng.normal(scale=0.05, size=base.shape))
    assert abs(share - 1) < 0.1 and left > 4  # a larger error, unrelated to the fine-tune: the change survives


def test_a_matrix_the_fine_tune_left_alone_is_not_scored():
    base = np.ones((4, 32))
    share, left = kept(base=base, finetuned=base + 1e-6, quantized=base)
    assert share != share and left != left  # NaN: nothing to keep


def _write_checkpoint(path: Path, tensors: dict, quantization: dict | None) -> Path:
    import json

    from safetensors.torch import save_file

    path.mkdir()
    save_file(tensors, str(path / "model.safetensors"))
    (path / "config.json").write_text(json.dumps({"quantization_config": quantization} if quantization else {}))
    return path


def test_gptq_and_awq_checkpoints_are_read_back_as_the_weights_their_codes_stand_for(tmp_path):
    import torch

    from convert._packing import QuantizedLinear, pack_awq, pack_gptq
    from finetune_kept import awq_scales, checkpoint_matrices

    generator = torch.Generator().manual_seed(0)
    linear = QuantizedLinear(codes=torch.randint(0, 16, (16, 256), generator=generator, dtype=torch.uint8),
                             scales=torch.rand(2, 16, generator=generator).half(),
                             zeros=torch.randint(1, 16, (2, 16), generator=generator, dtype=torch.uint8),
                             g_idx=torch.arange(256, dtype=torch.int32) // 128, bits=4)
    name = "model.layers.0.self_attn.q_proj"
    norm = {"model.layers.0.input_layernorm.weight": torch.full((256,), 2.0)}
    gptq = _write_checkpoint(tmp_path / "gptq", {**{f"{name}.{k}": v for k, v in pack_gptq(linear).items()}, **norm},
                             {"quant_method": "gptq", "bits": 4, "group_size": 128})
    matrices, kind = checkpoint_matrices(gptq)
    assert kind == "GPTQ" and np.array_equal(matrices[f"{name}.weight"], linear.dequantize().double().numpy())

    awq = _write_checkpoint(tmp_path / "awq", {**{f"{name}.{k}": v for k, v in pack_awq(linear, group_size=128).items()},
                                               "model.layers.0.input_layernorm.weight": torch.full((256,), 0.5),
                                               "model.layers.0.post_attention_layernorm.weight": torch.full((256,), 0.5)},
                            {"quant_method": "awq", "bits": 4, "group_size": 128})
    source = _write_checkpoint(tmp_path / "source", {f"{name}.weight": torch.zeros(16, 256), **norm,
                                                     "model.layers.0.post_attention_layernorm.weight": torch.full((256,), 2.0)}, None)
    matrices, kind = checkpoint_matrices(awq)
    assert kind == "AWQ" and np.array_equal(matrices[f"{name}.weight"], linear.dequantize().double().numpy())
    assert checkpoint_matrices(source)[1] == "F16"
    scales = awq_scales(source=source, awq=awq)  # the norm went from 2.0 to 0.5: AWQ scaled the columns by 4
    assert np.allclose(scales[f"{name}.weight"], 4.0) and f"{name.replace('q_proj', 'o_proj')}.weight" not in scales
    # gate_proj's columns carry the post-attention norm's scale; up_proj's rows also carry down_proj's: not readable
    assert np.allclose(scales["model.layers.0.mlp.gate_proj.weight"], 4.0) and "model.layers.0.mlp.up_proj.weight" not in scales
