"""HF Llama checkpoint -> AWQ 4-bit GEMM (``qweight/qzeros/scales``, zero point), calibrated on Invoker conversations.

AWQ (Lin et al. 2023, "AWQ: Activation-aware Weight Quantization for LLM Compression and
Acceleration") protects the weights that meet large activations: per input channel it searches a
scale ``s = mean|x|^α / mean|ŵ|^(1-α)`` (``ŵ`` the weight normalised per group) that minimises the
output error of the quantized block, multiplies the weight columns by ``s`` and folds ``1/s`` into
the op before (an RMSNorm or the previous linear), so the float model computes the same function.
It then searches, per output row and group, how far to clip the weight range, and quantizes with
round-to-nearest, asymmetric (zero point), groups of 128 input columns.

Our own torch implementation, following AutoAWQ's published recipe (the scale groups below, a grid
of 20 ratios, clipping searched on 512 evenly spaced tokens for every linear but q/k, next layer fed
by the float layer's outputs), plus the identity scale as a candidate (so the search never picks
something worse than no scaling on its own loss). One decoder layer at a time (``convert._int4``);
the files follow the AWQ GEMM layout transformers and vLLM read (``convert._packing``).
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from convert import _int4
from convert._packing import QuantizedLinear, pack_awq
from convert.calibration import CalibrationSet
from convert.architectures import ScaleGroup
from convert.checkpoint import LayerRunner
from convert.formats import FORMATS, VariantSettings
from invoker.manifest import tool_versions

METHOD = "AWQ (Lin et al. 2023), invoker-pack's layer-by-layer torch implementation of AutoAWQ's recipe"
SPEC = FORMATS["awq"]  # its entry: convert/formats/awq.py
TOOL_PACKAGES = SPEC.tool_packages
VARIANTS = SPEC.variants
GRID = 20  # scale ratios α = 0, 1/20, ..., 19/20 (AutoAWQ's n_grid)
MAX_SHRINK = 0.5  # clipping tries max|w| · (1 - k/20) for k < 0.5 · 20
CLIP_TOKENS = 512  # clipping is scored on about this many evenly spaced calibration tokens
MAX_TOKENS = 65536  # calibration tokens AWQ uses (AutoAWQ's 128 x 512): activations of every linear are kept
# The scale search runs each group's module GRID + 1 times over its inputs; on a CPU that dominates the
# conversion (~45 s per layer of the bundled model over 16k tokens), so it is scored on the leading samples
# up to this many tokens (AutoAWQ scores on all it captured); every sample still flows through every layer.
SEARCH_TOKENS = 4096
# What is scaled together, what is never clipped: the architecture's map (convert.architectures: scale_groups, no_clip).


def variant_settings(variant: str) -> VariantSettings:
    """``4bit-g128``: 4-bit codes in groups of 128 input columns; always calibrated."""
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
    """Quantize ``source_dir`` with AWQ into ``out_dir`` (an empty dir the caller owns); manifest details back.

    ``model_name`` and ``shared_dir`` are part of the converter protocol (``convert.formats.Converter``) and
    unused here: the files have fixed names and each variant is built from the source alone."""
    source_dir, out_dir = Path(source_dir), Path(out_dir)
    settings = _int4.parse_variant(variant, variants=VARIANTS, title=SPEC.title)
    source_config = _int4.check_source(source_dir=source_dir, group_size=settings.group_size)
    samples = within_budget(_int4.check_calibration(calibration), max_tokens=MAX_TOKENS)
    torch_device = _int4.pick_device(device)

    def quantize_and_pack(*, layer, index, hidden, runner):
        features = capture_features(layer=layer, hidden=hidden, runner=runner)
        hidden = runner.forward(layer, hidden)  # as AutoAWQ: the next layer sees this layer's float outputs
        quantized = quantize_layer(layer=layer, features=features, runner=runner, group_size=settings.group_size)
        return {name: pack_awq(linear, group_size=settings.group_size) for name, linear in quantized.items()}, hidden

    started = time.perf_counter()
    _int4.quantize_layers(source_dir=source_dir, out_dir=out_dir, samples=samples, device=torch_device,
                          quantize_layer=quantize_and_pack, desc=f"AWQ {variant}", progress=progress)
    quantization = quantization_config(settings)
    _int4.write_config(source_config=source_config, out_dir=out_dir, quantization_config=quantization)
    _int4.copy_tokenizer_files(source_dir=source_dir, out_dir=out_dir)
    return {
        "quantization": {**quantization, "method": METHOD},
        "device": str(torch_device),
        "calibration_tokens": sum(len(ids) for ids in samples),
        "calibration_samples_used": len(samples),
        "scale_search_tokens": sum(len(ids) for ids in within_budget(samples, max_tokens=SEARCH_TOKENS)),
        "tools": tool_versions(TOOL_PACKAGES),
        "timings": {"total_seconds": round(time.perf_counter() - started, 3)},
    }


def quantization_config(settings: _int4.Variant) -> dict:
    """config.json's ``quantization_config`` for the AWQ GEMM layout (what transformers' AwqConfig reads)."""
    return {
        "quant_method": "awq",
        "bits": settings.bits,
        "group_size": settings.group_size,
        "version": "gemm",
        "zero_point": True,
        "modules_to_not_convert": None,
    }


def within_budget(samples: list, *, max_tokens: int) -> list:
    """The leading samples (token id lists, or ``[tokens, features]`` tensors) whose tokens add up to at most
    ``max_tokens`` (always at least one sample)."""
    kept, total = [], 0
    for ids in samples:
        if kept and total + len(ids) > max_tokens:
            break
        kept.append(ids)
        total += len(ids)
    return kept


def capture_features(*, layer, hidden: list[torch.Tensor], runner: LayerRunner) -> dict[str, list[torch.Tensor]]:
    """Per sample, the inputs (float32 ``[tokens, features]``, CPU) of each scale group's linears."""
    names = tuple(group.linears[0] for group in runner.architecture.scale_groups)  # in execution order
    features: dict[str, list[torch.Tensor]] = {name: [] for name in names}
    runner.capture_inputs(layer, hidden, module_names=names, consume=lambda name, x: features[name].append(x.cpu()))
    return features


def quantize_layer(*, layer, features: dict[str, list[torch.Tensor]], runner: LayerRunner, group_size: int) -> dict[str, QuantizedLinear]:
    """AWQ one decoder layer: search and apply the scales, search and apply the clipping, quantize.

    The layer's norms and weights are changed in place (scaled, clipped); the quantized linears come back.
    """
    architecture = runner.architecture
    groups = [g for g in architecture.scale_groups if _can_scale(layer, g)]
    scales = {g.previous: search_scale(layer=layer, group=g, inputs=within_budget(features[g.linears[0]], max_tokens=SEARCH_TOKENS),
                                       runner=runner, group_size=group_size)
              for g in groups}
    for g in groups:
        apply_scale(layer=layer, group=g, scale=scales[g.previous])
        features[g.linears[0]] = [x / scales[g.previous].to(x.device) for x in features[g.linears[0]]]
    quantized = {}
    inputs_of = {name: features[g.linears[0]] for g in architecture.scale_groups for name in g.linears}
    for name in architecture.linears:
        module = layer.get_submodule(name)
        if name not in architecture.no_clip:
            limit = search_clip(weight=module.weight.data, inputs=inputs_of[name], group_size=group_size)
            module.weight.data = clip(module.weight.data, limit=limit, group_size=group_size)
        quantized[name] = quantize_asymmetric(module.weight.data, group_size=group_size)
    return quantized


def _can_scale(layer, group: ScaleGroup) -> bool:
    """v_proj -> o_proj only when their shapes match (no grouped-query attention), as AutoAWQ does."""
    if not group.same_shape:
        return True
    return layer.get_submodule(group.previous).weight.shape == layer.get_submodule(group.linears[0]).weight.shape


def search_scale(*, layer, group: ScaleGroup, inputs: list[torch.Tensor], runner: LayerRunner, group_size: int) -> torch.Tensor:
    """The per-input-channel scale (float32 ``[in]``) minimising the MSE of ``group.inspect``'s output when
    ``group.linears`` are quantized — over AutoAWQ's grid of ratios, plus no scaling at all."""
    linears = [layer.get_submodule(name) for name in group.linears]
    originals = [m.weight.data.clone() for m in linears]
    x_mean = (sum(x.abs().sum(0) for x in inputs) / sum(x.shape[0] for x in inputs)).to(originals[0].device)
    w_mean = _normalised_weight_mean(torch.cat(originals, dim=0), group_size=group_size)
    reference = _inspect_outputs(layer=layer, group=group, inputs=inputs, runner=runner)
    candidates = [torch.ones_like(x_mean)]
    for step in range(GRID):
        ratio = step / GRID
        scale = (x_mean.pow(ratio) / (w_mean.pow(1 - ratio) + 1e-4)).clamp(min=1e-4)
        candidates.append(scale / (scale.max() * scale.min()).sqrt())
    best, best_error = candidates[0], float("inf")
    for scale in candidates:
        for module, original in zip(linears, originals):
            scaled = original * scale
            module.weight.data = fake_quantize(scaled, group_size=group_size) / scale
        error = _squared_error(_inspect_outputs(layer=layer, group=group, inputs=inputs, runner=runner), reference)
        if error < best_error:
            best, best_error = scale, error
    for module, original in zip(linears, originals):
        module.weight.data = original
    return best


def _normalised_weight_mean(weight: torch.Tensor, *, group_size: int) -> torch.Tensor:
    """Per input channel, the mean over output rows of ``|w| / max|w| of its group``."""
    grouped = weight.abs().reshape(-1, group_size)
    normalised = grouped / (grouped.amax(dim=1, keepdim=True) + 1e-6)
    return normalised.reshape(weight.shape).mean(dim=0)


def _inspect_outputs(*, layer, group: ScaleGroup, inputs: list[torch.Tensor], runner: LayerRunner) -> list[torch.Tensor]:
    """``group.inspect``'s output for every sample's input (attention gets its mask and rotary embeddings)."""
    module = layer.get_submodule(group.inspect)
    outputs = []
    with torch.inference_mode():
        for x in inputs:
            x = x.to(runner.device).unsqueeze(0)
            if group.inspect == runner.architecture.attention:
                outputs.append(module(hidden_states=x, **runner.attention_inputs(x))[0])
            else:
                outputs.append(module(x))
    return outputs


def _squared_error(outputs: list[torch.Tensor], reference: list[torch.Tensor]) -> float:
    total = sum(float((a.float() - b.float()).pow(2).sum()) for a, b in zip(outputs, reference))
    return total / sum(r.numel() for r in reference)


def apply_scale(*, layer, group: ScaleGroup, scale: torch.Tensor) -> None:
    """Multiply the linears' input columns by ``scale`` and divide the previous op's output by it."""
    previous = layer.get_submodule(group.previous)
    if isinstance(previous, torch.nn.Linear):
        previous.weight.data = previous.weight.data / scale.unsqueeze(1)
    else:  # an RMSNorm: its weight scales each output channel
        previous.weight.data = previous.weight.data / scale
    for name in group.linears:
        module = layer.get_submodule(name)
        module.weight.data = module.weight.data * scale.unsqueeze(0)


def search_clip(*, weight: torch.Tensor, inputs: list[torch.Tensor], group_size: int) -> torch.Tensor:
    """Per (output row, group), the largest |w| to keep (float32 ``[out, groups]``): the shrink of the
    group's own max|w| that minimises the group's output error on sampled calibration tokens."""
    x = torch.cat(inputs, dim=0)
    x = x[:: max(1, x.shape[0] // CLIP_TOKENS)].to(weight.device)
    out_features, columns = weight.shape
    n_groups = columns // group_size
    x_groups = x.reshape(-1, n_groups, group_size).transpose(0, 1)  # [groups, tokens, group_size]
    limits = []
    for rows in torch.split(weight, 256, dim=0):
        w_groups = rows.reshape(rows.shape[0], n_groups, group_size)
        largest = w_groups.abs().amax(dim=2)  # [rows, groups]
        reference = torch.bmm(x_groups, w_groups.permute(1, 2, 0))  # [groups, tokens, rows]
        best_limit, best_error = largest.clone(), torch.full_like(largest, float("inf"))
        for step in range(int(MAX_SHRINK * GRID)):
            limit = largest * (1 - step / GRID)
            clipped = clip(rows, limit=limit, group_size=group_size)
            quantized = fake_quantize(clipped, group_size=group_size)
            output = torch.bmm(x_groups, quantized.reshape(rows.shape[0], n_groups, group_size).permute(1, 2, 0))
            error = (output - reference).pow(2).mean(dim=1).T  # [rows, groups]
            better = error < best_error
            best_error = torch.where(better, error, best_error)
            best_limit = torch.where(better, limit, best_limit)
        limits.append(best_limit)
    return torch.cat(limits, dim=0)


def clip(weight: torch.Tensor, *, limit: torch.Tensor, group_size: int) -> torch.Tensor:
    """``weight`` clamped to ``[-limit, limit]`` per (output row, group)."""
    grouped = weight.reshape(weight.shape[0], -1, group_size)
    bound = limit.unsqueeze(2)
    return torch.clamp(grouped, -bound, bound).reshape(weight.shape)


def quantize_asymmetric(weight: torch.Tensor, *, group_size: int, bits: int = 4) -> QuantizedLinear:
    """Round-to-nearest with a zero point per (output row, group), as written to the checkpoint."""
    out_features, columns = weight.shape
    codes, scale, zero = _asymmetric_codes(weight, group_size=group_size, bits=bits)
    return QuantizedLinear(
        codes=codes.reshape(out_features, columns).to(torch.uint8).cpu(),
        scales=scale.squeeze(2).T.to(torch.float16).cpu(),
        zeros=zero.squeeze(2).T.to(torch.uint8).cpu(),
        g_idx=torch.arange(columns, dtype=torch.int32) // group_size,
        bits=bits,
    )


def fake_quantize(weight: torch.Tensor, *, group_size: int, bits: int = 4) -> torch.Tensor:
    """``quantize_asymmetric(weight).dequantize()``, computed where ``weight`` lives (for the searches)."""
    codes, scale, zero = _asymmetric_codes(weight, group_size=group_size, bits=bits)
    return ((codes - zero) * scale).reshape(weight.shape)


def _asymmetric_codes(weight: torch.Tensor, *, group_size: int, bits: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Codes ``[out, groups, group_size]``, scales and zeros ``[out, groups, 1]`` (float32): scale =
    (max - min) / 15 rounded to fp16 first, so the written checkpoint dequantizes to exactly what was chosen."""
    maxq = 2**bits - 1
    grouped = weight.detach().float().reshape(weight.shape[0], -1, group_size)
    high = grouped.amax(dim=2, keepdim=True)
    low = grouped.amin(dim=2, keepdim=True)
    scale = ((high - low).clamp(min=1e-5) / maxq).clamp(min=torch.finfo(torch.float16).tiny).to(torch.float16).float()
    zero = torch.clamp(torch.round(-low / scale), 0, maxq)
    codes = torch.clamp(torch.round(grouped / scale) + zero, 0, maxq)
    return codes, scale, zero
