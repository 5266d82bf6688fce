"""HF Llama checkpoint -> GPTQ 4-bit (v1 ``qweight/qzeros/scales/g_idx``), calibrated on Invoker conversations.

GPTQ (Frantar et al. 2022, "GPTQ: Accurate Post-Training Quantization for Generative Pre-trained
Transformers") quantizes a linear layer's weight one input column at a time and spreads each
column's rounding error over the columns not yet quantized, weighted by the inverse Hessian
``H = 2 X Xᵀ`` of the layer's calibration inputs — Cholesky-based, in lazy blocks of 128 columns.
Act-order quantizes columns by decreasing ``diag(H)``; groups then follow that order (``g_idx``).

Our own torch implementation (docs/GPTQ-AWQ.md says why: no maintained library streams layer by
layer here), one decoder layer at a time (``convert._int4``), with the sub-layers in sequence
(q/k/v, then o, then gate/up, then down: each group calibrated on the outputs of the already
quantized ones). The files follow the GPTQ v1 layout transformers/optimum, GPTQModel, vLLM,
exllamav2 and TGI read (``convert._packing``); embeddings, norms and ``lm_head`` stay fp16.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch

from convert import _int4
from convert._packing import QuantizedLinear, pack_gptq
from convert.calibration import CalibrationSet
from convert.checkpoint import LayerRunner
from convert.formats import FORMATS, VariantSettings
from invoker.manifest import tool_versions

METHOD = "GPTQ (Frantar et al. 2022), invoker-pack's layer-by-layer torch implementation"
SPEC = FORMATS["gptq"]  # its entry: convert/formats/gptq.py
TOOL_PACKAGES = SPEC.tool_packages
VARIANTS = SPEC.variants
DAMP_PERCENT = 0.01  # of the mean of diag(H), added to the diagonal (the paper's and AutoGPTQ's default)
MAX_DAMP_PERCENT = 1.0  # damping grows tenfold until the Cholesky factorization succeeds, up to this
BLOCK_COLUMNS = 128  # lazy-batch width (rounded up to a whole number of groups)


@dataclass(frozen=True)
class GptqResult:
    quantized: QuantizedLinear  # what is written
    weight: torch.Tensor  # float32 [out, in]: the quantized weight the algorithm chose (and fed forward)
    damp_percent: float  # the damping the Cholesky factorization needed


def variant_settings(variant: str) -> VariantSettings:
    """``4bit-g128``: 4-bit codes in groups of 128 input columns (``-actorder``: columns in act-order); always calibrated."""
    return _int4.variant_settings(_int4.parse_variant(variant, variants=VARIANTS, title=SPEC.title))


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
    """Quantize ``source_dir`` with GPTQ into ``out_dir`` (an empty dir the caller owns); manifest details back.

    ``model_name`` and ``shared_dir`` are part of the converter protocol (``convert.formats.Converter``) and
    unused here: the files have fixed names and each variant is built from the source alone."""
    settings = _int4.parse_variant(variant, variants=VARIANTS, title=SPEC.title)
    return write_checkpoint(source_dir=Path(source_dir), out_dir=Path(out_dir), settings=settings, calibration=calibration,
                            progress=progress, device=device, pack=pack_gptq, quantization=quantization_config(settings),
                            desc=f"GPTQ {variant}", tool_packages=TOOL_PACKAGES, method=METHOD)


def write_checkpoint(*, source_dir: Path, out_dir: Path, settings: _int4.Variant, calibration: CalibrationSet | None,
                     progress: bool, device: str, pack, quantization: dict, desc: str, tool_packages: tuple[str, ...],
                     method: str) -> dict:
    """GPTQ every decoder layer of ``source_dir`` and write each linear as ``pack(QuantizedLinear)`` gives its
    tensors (the GPTQ v1 layout, or another layout of the same solution), with ``quantization`` as config.json's
    ``quantization_config``; returns the manifest's conversion details, ``method`` naming how it was made."""
    source_config = _int4.check_source(source_dir=source_dir, group_size=settings.group_size)
    samples = _int4.check_calibration(calibration)
    torch_device = _int4.pick_device(device)
    damping = {}

    def quantize_and_pack(*, layer, index, hidden, runner):
        results = quantize_layer(layer=layer, hidden=hidden, runner=runner, settings=settings)
        damping.update({runner.architecture.layer_prefix(index) + name: result.damp_percent
                        for name, result in results.items() if result.damp_percent != DAMP_PERCENT})
        hidden = runner.forward(layer, hidden)  # the next layer calibrates on this quantized layer's outputs
        return {name: pack(result.quantized) for name, result in results.items()}, hidden

    started = time.perf_counter()
    _int4.quantize_layers(source_dir=source_dir, out_dir=out_dir, samples=samples, device=torch_device,
                          quantize_layer=quantize_and_pack, desc=desc, progress=progress)
    _int4.write_config(source_config=source_config, out_dir=out_dir, quantization_config=quantization)
    _int4.copy_tokenizer_files(source_dir=source_dir, out_dir=out_dir)
    return {
        "quantization": {**quantization, "method": method},
        "damp_percent_raised": damping,
        "device": str(torch_device),
        "calibration_tokens": sum(len(ids) for ids in samples),
        "tools": tool_versions(tool_packages),
        "timings": {"total_seconds": round(time.perf_counter() - started, 3)},
    }


def quantization_config(settings: _int4.Variant) -> dict:
    """config.json's ``quantization_config`` for the GPTQ v1 layout (what transformers' GPTQConfig reads)."""
    return {
        "quant_method": "gptq",
        "bits": settings.bits,
        "group_size": settings.group_size,
        "desc_act": settings.act_order,
        "sym": True,
        "true_sequential": True,
        "damp_percent": DAMP_PERCENT,
        "static_groups": False,
        "checkpoint_format": "gptq",
        "lm_head": False,
        "pack_dtype": "int32",
    }


def quantize_layer(*, layer, hidden: list[torch.Tensor], runner: LayerRunner, settings: _int4.Variant) -> dict[str, GptqResult]:
    """GPTQ every linear of one decoder layer, group by group (sub-layers that read the same input, as the
    architecture's map lists them: each group sees the quantized ones before it); the layer's weights become the
    quantized ones."""
    results = {}
    for group in runner.architecture.sequential:
        hessian = collect_hessian(layer=layer, hidden=hidden, runner=runner, module_name=group[0])
        for name in group:
            module = layer.get_submodule(name)
            result = gptq_quantize(
                weight=module.weight.data,
                hessian=hessian,
                bits=settings.bits,
                group_size=settings.group_size,
                act_order=settings.act_order,
            )
            module.weight.data = result.weight.to(module.weight.device, module.weight.dtype)
            results[name] = result
        del hessian
    return results


def collect_hessian(*, layer, hidden: list[torch.Tensor], runner: LayerRunner, module_name: str) -> torch.Tensor:
    """``H = 2/N · Σ x xᵀ`` (float32 ``[in, in]``) over the N calibration tokens entering ``layer.<module_name>``."""
    columns = layer.get_submodule(module_name).in_features
    hessian = torch.zeros(columns, columns, dtype=torch.float32, device=runner.device)
    seen = 0

    def accumulate(_name: str, inputs: torch.Tensor) -> None:
        nonlocal hessian, seen
        tokens = inputs.shape[0]
        hessian *= seen / (seen + tokens)
        seen += tokens
        scaled = inputs * (2.0 / seen) ** 0.5
        hessian += scaled.T @ scaled

    runner.capture_inputs(layer, hidden, module_names=(module_name,), consume=accumulate)
    return hessian


def gptq_quantize(
    *,
    weight: torch.Tensor,
    hessian: torch.Tensor,
    bits: int,
    group_size: int,
    act_order: bool,
    damp_percent: float = DAMP_PERCENT,
) -> GptqResult:
    """Quantize one ``[out, in]`` weight with GPTQ, symmetric, ``group_size`` columns per scale.

    Scales are rounded to fp16 *before* the codes are chosen, so the written checkpoint dequantizes
    to exactly ``GptqResult.weight`` — the weight whose error the algorithm compensated.
    """
    out_features, columns = weight.shape
    if columns % group_size:
        raise ValueError(f"{columns} input columns are not a multiple of the group size {group_size}")
    W = weight.detach().to(hessian.device, torch.float32).clone()
    H = hessian.clone()
    dead = torch.diag(H) == 0  # inputs that were always zero: their weights cannot matter
    H[dead, dead] = 1
    W[:, dead] = 0
    order = torch.argsort(torch.diag(H), descending=True) if act_order else torch.arange(columns, device=H.device)
    W, H = W[:, order], H[order][:, order]
    inverse, damp_percent = _inverse_hessian_factor(H, damp_percent=damp_percent)
    del H

    maxq = 2**bits - 1
    codes = torch.zeros_like(W, dtype=torch.uint8)
    Q = torch.zeros_like(W)
    n_groups = columns // group_size
    scales = torch.zeros(n_groups, out_features, dtype=torch.float32, device=W.device)
    zeros = torch.zeros(n_groups, out_features, dtype=torch.uint8, device=W.device)
    block = group_size * max(1, BLOCK_COLUMNS // group_size)  # whole groups per block
    for start in range(0, columns, block):
        end = min(start + block, columns)
        W1 = W[:, start:end].clone()
        errors = torch.zeros_like(W1)
        inverse1 = inverse[start:end, start:end]
        for i in range(end - start):
            column = start + i
            if column % group_size == 0:  # a new group: its scale from the weights as updated so far
                scale, zero = _symmetric_params(W1[:, i : i + group_size], bits=bits)
                scales[column // group_size], zeros[column // group_size] = scale, zero
            w = W1[:, i]
            code = torch.clamp(torch.round(w / scale) + zero, 0, maxq)
            q = scale * (code - zero)
            codes[:, column], Q[:, column] = code.to(torch.uint8), q
            error = (w - q) / inverse1[i, i]
            W1[:, i:] -= error.unsqueeze(1) @ inverse1[i, i:].unsqueeze(0)
            errors[:, i] = error
        W[:, end:] -= errors @ inverse[start:end, end:]

    restore = torch.argsort(order)
    g_idx = (torch.arange(columns, device=W.device) // group_size)[restore]
    quantized = QuantizedLinear(
        codes=codes[:, restore].cpu(),
        scales=scales.to(torch.float16).cpu(),
        zeros=zeros.cpu(),
        g_idx=g_idx.to(torch.int32).cpu(),
        bits=bits,
    )
    return GptqResult(quantized=quantized, weight=Q[:, restore].cpu(), damp_percent=damp_percent)


def _inverse_hessian_factor(H: torch.Tensor, *, damp_percent: float) -> tuple[torch.Tensor, float]:
    """The upper Cholesky factor of ``(H + λI)⁻¹``, λ = ``damp_percent`` · mean diag(H); λ grows tenfold
    while ``H + λI`` is not positive definite (numerically)."""
    mean_diagonal = torch.mean(torch.diag(H))
    identity = torch.eye(H.shape[0], dtype=H.dtype, device=H.device)
    while True:
        lower, info = torch.linalg.cholesky_ex(H + damp_percent * mean_diagonal * identity)
        if int(info) == 0:
            inverse = torch.cholesky_inverse(lower)
            del lower
            factor, info = torch.linalg.cholesky_ex(inverse, upper=True)
            if int(info) == 0:
                return factor, damp_percent
        if damp_percent * 10 > MAX_DAMP_PERCENT:
            raise ValueError(
                f"the calibration Hessian is not positive definite even with damping {damp_percent:g}: "
                "calibrate on more (or more varied) tokens"
            )
        damp_percent *= 10


def _symmetric_params(group: torch.Tensor, *, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row scale (fp16-representable, float32) and zero point (``2**(bits-1)``) of a ``[out, group]`` block."""
    maxq = 2**bits - 1
    largest = torch.maximum(group.min(dim=1).values.abs(), group.max(dim=1).values)
    largest = torch.where(largest == 0, torch.ones_like(largest), largest)
    scale = (2 * largest / maxq).clamp(min=torch.finfo(torch.float16).tiny).to(torch.float16).float()
    zero = torch.full_like(scale, (maxq + 1) // 2)
    return scale, zero
