"""The classic 4-bit checkpoint layouts, exactly as the ecosystem's loaders read them.

A quantized linear layer is, whatever algorithm chose it, integer codes plus one scale and one zero
point per (group of input columns, output row): ``weight[o, i] = scales[g, o] * (codes[o, i] - zeros[g, o])``
with ``g = g_idx[i]``. ``QuantizedLinear`` holds that; the functions below write it in two layouts:

GPTQ v1 (AutoGPTQ's ``format: gptq``; transformers/optimum, GPTQModel, vLLM, exllamav2, TGI read it)
    ``qweight`` int32 ``[in / 8, out]``: eight 4-bit codes of consecutive input rows per word, row
    ``8k + j`` in bits ``4j..4j+3``; ``qzeros`` int32 ``[groups, out / 8]``: ``zero - 1`` packed the same
    way along the output axis (the "v1" off-by-one loaders undo); ``scales`` fp16 ``[groups, out]``;
    ``g_idx`` int32 ``[in]``: each input row's group (not monotone when act-order permuted the columns).
AWQ GEMM (AutoAWQ's ``version: gemm``; transformers via GPTQModel, vLLM read it)
    ``qweight`` int32 ``[in, out / 8]`` and ``qzeros`` int32 ``[groups, out / 8]``: eight codes of
    consecutive output columns per word, interleaved — bit field ``j`` holds column ``AWQ_ORDER[j]`` of
    the eight; ``scales`` fp16 ``[groups, out]``; zeros stored as they are; groups are contiguous rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

AWQ_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)  # bit field j of an AWQ word holds column AWQ_ORDER[j] of its 8
_WORD_BITS = 32


@dataclass(frozen=True)
class QuantizedLinear:
    """One linear layer's weight as codes, per-group scales and zero points (see the module docstring)."""

    codes: torch.Tensor  # uint8 [out, in], 0 .. 2**bits - 1
    scales: torch.Tensor  # float16 [groups, out]
    zeros: torch.Tensor  # uint8 [groups, out], 0 .. 2**bits - 1
    g_idx: torch.Tensor  # int32 [in], the group of each input column
    bits: int

    def dequantize(self) -> torch.Tensor:
        """The float32 ``[out, in]`` weight these codes stand for."""
        groups = self.g_idx.long()
        scales = self.scales.float()[groups].T
        zeros = self.zeros.float()[groups].T
        return (self.codes.float() - zeros) * scales


def pack_gptq(quantized: QuantizedLinear) -> dict[str, torch.Tensor]:
    """``qweight``, ``qzeros``, ``scales``, ``g_idx`` of the GPTQ v1 layout."""
    if int(quantized.zeros.min()) == 0:
        raise ValueError("GPTQ v1 stores zero - 1: a zero point of 0 cannot be written (use symmetric quantization)")
    return {
        "qweight": _pack_last_axis(quantized.codes, bits=quantized.bits).T.contiguous(),
        "qzeros": _pack_last_axis(quantized.zeros.to(torch.int64) - 1, bits=quantized.bits),
        "scales": quantized.scales.to(torch.float16).contiguous(),
        "g_idx": quantized.g_idx.to(torch.int32).contiguous(),
    }


def unpack_gptq(tensors: dict[str, torch.Tensor], *, bits: int) -> QuantizedLinear:
    """Read a GPTQ v1 layer back (the inverse of ``pack_gptq``)."""
    codes = _unpack_last_axis(tensors["qweight"].T, bits=bits)
    zeros = (_unpack_last_axis(tensors["qzeros"], bits=bits).to(torch.int64) + 1) & (2**bits - 1)
    return QuantizedLinear(
        codes=codes,
        scales=tensors["scales"],
        zeros=zeros.to(torch.uint8),
        g_idx=tensors["g_idx"].to(torch.int32),
        bits=bits,
    )


def pack_awq(quantized: QuantizedLinear, *, group_size: int) -> dict[str, torch.Tensor]:
    """``qweight``, ``qzeros``, ``scales`` of the AWQ GEMM layout (4-bit, contiguous groups only)."""
    if quantized.bits != 4:
        raise ValueError(f"the AWQ GEMM layout is 4-bit only, got {quantized.bits} bits")
    contiguous = torch.arange(quantized.codes.shape[1], dtype=torch.int32) // group_size
    if not torch.equal(quantized.g_idx.to(torch.int32), contiguous):
        raise ValueError("the AWQ GEMM layout has no g_idx: groups must be contiguous runs of group_size input rows")
    order = list(AWQ_ORDER)
    return {
        "qweight": _pack_last_axis(quantized.codes.T, bits=4, order=order),
        "qzeros": _pack_last_axis(quantized.zeros, bits=4, order=order),
        "scales": quantized.scales.to(torch.float16).contiguous(),
    }


def unpack_awq(tensors: dict[str, torch.Tensor], *, group_size: int) -> QuantizedLinear:
    """Read an AWQ GEMM layer back (the inverse of ``pack_awq``)."""
    order = list(AWQ_ORDER)
    codes = _unpack_last_axis(tensors["qweight"], bits=4, order=order).T.contiguous()
    zeros = _unpack_last_axis(tensors["qzeros"], bits=4, order=order)
    return QuantizedLinear(
        codes=codes,
        scales=tensors["scales"],
        zeros=zeros,
        g_idx=torch.arange(codes.shape[1], dtype=torch.int32) // group_size,
        bits=4,
    )


def _pack_last_axis(values: torch.Tensor, *, bits: int, order: list[int] | None = None) -> torch.Tensor:
    """Pack ``32 // bits`` consecutive values of the last axis into one int32 word; bit field ``j``
    holds value ``order[j]`` of the run (``j`` itself without an order)."""
    per_word = _WORD_BITS // bits
    if values.shape[-1] % per_word:
        raise ValueError(f"cannot pack an axis of {values.shape[-1]} values into words of {per_word}")
    fields = (values.to(torch.int64) & (2**bits - 1)).reshape(*values.shape[:-1], -1, per_word)
    if order is not None:
        fields = fields[..., order]
    shifts = torch.arange(per_word, dtype=torch.int64) * bits
    words = (fields << shifts).sum(dim=-1)  # disjoint bit fields: the sum is the bitwise or, < 2**32
    words = torch.where(words >= 2**31, words - 2**32, words)  # the same 32 bits, as a signed int32
    return words.to(torch.int32).contiguous()


def _unpack_last_axis(words: torch.Tensor, *, bits: int, order: list[int] | None = None) -> torch.Tensor:
    """The inverse of ``_pack_last_axis``: uint8 values, ``32 // bits`` per word of the last axis."""
    per_word = _WORD_BITS // bits
    shifts = torch.arange(per_word, dtype=torch.int64) * bits
    fields = ((words.to(torch.int64).unsqueeze(-1) & 0xFFFFFFFF) >> shifts) & (2**bits - 1)
    if order is not None:
        fields = fields[..., torch.argsort(torch.tensor(order))]
    return fields.reshape(*words.shape[:-1], -1).to(torch.uint8)
