"""HF Llama checkpoint -> compressed-tensors W4A16 (``pack-quantized``), from our own GPTQ solution.

compressed-tensors is the checkpoint format llm-compressor (the maintained successor of AutoGPTQ and
AutoAWQ) writes and vLLM prefers for 4-bit weights; transformers loads it with the
``compressed-tensors`` package and no code of ours. The weights are GPTQ's (``convert.gptq``: the same
layer-by-layer solver, calibration and symmetric 4-bit codes in groups along the input dimension);
only the layout differs. Each linear is handed to the library's own ``PackedQuantizationCompressor``
as its dequantized weight and fp16 scales, and the library chooses the signed codes
(``code - 8`` of our unsigned ones: the same numbers) and packs them eight per int32 word:

    weight_packed int32 [out, in / 8], weight_scale fp16 [out, groups], weight_shape int64 [2]

config.json's ``quantization_config`` is the library's ``QuantizationConfig`` (one group targeting
``Linear``, ``lm_head`` ignored, status ``compressed``), as its ``ModelCompressor`` writes it.
Embeddings, norms and ``lm_head`` stay fp16.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from convert import _int4
from convert._packing import QuantizedLinear
from convert.calibration import CalibrationSet
from convert.formats import FORMATS, VariantSettings
from convert.gptq import write_checkpoint

SPEC = FORMATS["ct"]  # its entry: convert/formats/ct.py
METHOD = "GPTQ (Frantar et al. 2022), invoker-pack's solver; packed by compressed-tensors"
TOOL_PACKAGES = SPEC.tool_packages
VARIANTS = SPEC.variants
_VARIANT_PATTERN = re.compile(r"^w4a16-g(?P<group>\d+)$")  # 4-bit weights, 16-bit activations, groups of N


def parse_variant(variant: str) -> _int4.Variant:
    """``w4a16-g128`` -> 4-bit symmetric codes in groups of 128 input columns (no act-order: vLLM's CPU kernels
    and transformers read groups in order)."""
    match = _VARIANT_PATTERN.match(variant) if variant in VARIANTS else None
    if match is None:
        raise ValueError(f"unknown {SPEC.title} variant {variant!r}; valid: {', '.join(VARIANTS)}")
    return _int4.Variant(name=variant, bits=4, group_size=int(match["group"]), act_order=False)


def variant_settings(variant: str) -> VariantSettings:
    """Always calibrated (GPTQ); 4 bits plus an fp16 scale per group (symmetric: no zero point is stored)."""
    settings = parse_variant(variant)
    return VariantSettings(bits_per_weight=settings.bits + 16 / settings.group_size, calibrates=True)


def convert(
    *,
    source_dir: Path,
    out_dir: Path,
    variant: str,
    calibration: CalibrationSet | None,
    progress: bool = True,
    model_name: str | None = None,
    shared_dir: Path | None = None,
    device: str = "auto",
) -> dict:
    """GPTQ ``source_dir`` and write it as compressed-tensors into ``out_dir`` (an empty dir the caller owns)."""
    settings = parse_variant(variant)
    scheme = _scheme(settings)
    return write_checkpoint(source_dir=Path(source_dir), out_dir=Path(out_dir), settings=settings,
                               calibration=calibration, progress=progress, device=device,
                               pack=lambda quantized: pack(quantized, scheme=scheme),
                               quantization=quantization_config(scheme), desc=f"{SPEC.title} {variant}",
                               tool_packages=TOOL_PACKAGES, method=METHOD)


def _scheme(settings: _int4.Variant):
    from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme

    weights = QuantizationArgs(num_bits=settings.bits, type="int", symmetric=True, strategy="group",
                               group_size=settings.group_size, actorder=None)
    return QuantizationScheme(targets=["Linear"], weights=weights)


def quantization_config(scheme) -> dict:
    """config.json's ``quantization_config``, the way compressed-tensors' ``ModelCompressor.update_config`` writes it."""
    import compressed_tensors
    from compressed_tensors.quantization import QuantizationConfig, QuantizationStatus

    config = QuantizationConfig(config_groups={"group_0": scheme}, format="pack-quantized", ignore=["lm_head"],
                                quantization_status=QuantizationStatus.COMPRESSED)
    return {"version": compressed_tensors.__version__, "quant_method": "compressed-tensors", "sparsity_config": {},
            "transform_config": {}, **config.model_dump(mode="json", exclude={"quant_method"})}


def pack(quantized: QuantizedLinear, *, scheme) -> dict[str, torch.Tensor]:
    """One linear's ``weight_packed``, ``weight_scale``, ``weight_shape``, packed by the library from the weight
    our codes stand for; checked to unpack to exactly those codes."""
    from compressed_tensors.compressors.pack_quantized.base import PackedQuantizationCompressor
    from compressed_tensors.compressors.pack_quantized.helpers import unpack_from_int32

    if bool((quantized.g_idx.diff() < 0).any()):
        raise ValueError("compressed-tensors W4A16 here stores groups in column order (no act-order g_idx)")
    if bool((quantized.zeros != 2 ** (quantized.bits - 1)).any()):
        raise ValueError("compressed-tensors W4A16 here is symmetric: every zero point must be 2**(bits-1)")
    scale = quantized.scales.T.contiguous()  # fp16 [out, groups]
    state = {"weight": quantized.dequantize(), "weight_scale": scale}
    packed = PackedQuantizationCompressor.compress(state, scheme)
    signed = unpack_from_int32(packed["weight_packed"], quantized.bits, packed["weight_shape"])
    if not torch.equal(signed.to(torch.int16), quantized.codes.to(torch.int16) - 2 ** (quantized.bits - 1)):
        raise AssertionError("compressed-tensors packed other codes than GPTQ chose")
    return {"weight_packed": packed["weight_packed"], "weight_scale": scale, "weight_shape": packed["weight_shape"]}
