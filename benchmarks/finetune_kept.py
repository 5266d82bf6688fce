"""How much of a fine-tune each quantized GGUF, GPTQ or AWQ checkpoint keeps, tensor by tensor.

    .venv/bin/python benchmarks/finetune_kept.py BASE.gguf FINETUNED-F16.gguf VARIANT.gguf [VARIANT.gguf ...]
    .venv/bin/python benchmarks/finetune_kept.py BASE_DIR FINETUNED_DIR GPTQ_OR_AWQ_DIR [...]   # fp16 checkpoint dirs

(``BASE_DIR``: ``models/tiny-invoker/build.py --base-only --out DIR`` builds the base the same way as the
fine-tuned model, widened and rescaled alike.)

A fine-tune changes each weight matrix by ``delta = W - W_base``. A quantized matrix ``W_q`` keeps
``<W_q - W_base, delta> / <delta, delta>`` of it: 1 when quantization noise is unrelated to the
fine-tune, 0 when quantization puts the weights back where the base had them. The second figure,
``|W_q - W_base| / |delta|``, is the size of what is left of the change: near 1 with ``kept`` near 0
means the quantized weights sit on the base's own values.

Tensors are compared on the base's shape (a widened model's extra rows and columns are left out), in
llama.cpp's layout on both sides (both GGUFs come from its converter), or in Hugging Face's for
checkpoint dirs, where GPTQ and AWQ codes are dequantized (``convert._packing``). AWQ multiplies the
input columns of each linear by a searched scale and divides the op before by it; for the linears
after a norm the scale is read back from the norms (fine-tuned ÷ AWQ) and the comparison is made in
AWQ's frame (base and fine-tune scaled alike); ``o_proj`` and ``down_proj`` follow a quantized
linear, whose scale cannot be read back exactly, so they are left out for AWQ, and so is that linear
(``up_proj``, and ``v_proj`` without grouped-query attention): its rows carry the same unreadable scale. Prints, per variant and per
quantization type, the median over the matrices of that type, and the matrices that keep the least.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path

import numpy as np

UNCHANGED = 1e-3  # a matrix whose change is below this share of its norm was not fine-tuned (fp16 rounding)


def tensors(path: Path) -> dict:
    import gguf

    return {tensor.name: tensor for tensor in gguf.GGUFReader(str(path)).tensors if len(tensor.shape) > 1}


AWQ_NORMS = {"q_proj": "input_layernorm", "k_proj": "input_layernorm", "v_proj": "input_layernorm",
             "gate_proj": "post_attention_layernorm", "up_proj": "post_attention_layernorm"}


def checkpoint_matrices(path: Path) -> tuple[dict[str, np.ndarray], str]:
    """The decoder layers' linear weights of a checkpoint dir ([out, in], float64) and its type: "F16" for a
    dense one, "GPTQ"/"AWQ" (dequantized) for a quantized one; AWQ's are brought back to the source's frame
    where its scale can be read (``checkpoint_matrices`` of the source applies the same scales; see above)."""

    import torch
    from safetensors.torch import load_file

    from convert._packing import unpack_awq, unpack_gptq

    tensors: dict[str, torch.Tensor] = {}
    for shard in sorted(path.glob("*.safetensors")):
        tensors.update(load_file(str(shard)))
    quantization = json.loads((path / "config.json").read_text()).get("quantization_config") or {}
    method = quantization.get("quant_method")
    matrices = {}
    for name, tensor in tensors.items():
        if name.startswith("model.layers.") and name.endswith("_proj.weight"):
            matrices[name] = tensor.double().numpy()
        elif name.endswith(".qweight"):
            prefix = name[: -len(".qweight")]
            parts = {key: tensors[f"{prefix}.{key}"] for key in ("qweight", "qzeros", "scales", "g_idx") if f"{prefix}.{key}" in tensors}
            if method == "gptq":
                linear = unpack_gptq(parts, bits=int(quantization["bits"]))
            elif method == "awq":
                linear = unpack_awq(parts, group_size=int(quantization["group_size"]))
            else:
                raise SystemExit(f"{path}: quant_method {method!r} is not GPTQ or AWQ")
            matrices[f"{prefix}.weight"] = linear.dequantize().double().numpy()
    return matrices, {"gptq": "GPTQ", "awq": "AWQ"}.get(method, "F16")


def awq_scales(*, source: Path, awq: Path) -> dict[str, np.ndarray]:
    """Per linear after a norm, the input-column scale AWQ applied: the source's norm weight ÷ the AWQ checkpoint's."""
    from safetensors.torch import load_file

    def norms(path: Path) -> dict:
        found = {}
        for shard in sorted(path.glob("*.safetensors")):
            found.update({k: v.double().numpy() for k, v in load_file(str(shard)).items() if k.endswith("layernorm.weight")})
        return found

    before, after = norms(source), norms(awq)
    config = json.loads((source / "config.json").read_text())
    # a linear whose rows AWQ divides by the next linear's scale (up -> down; v -> o without GQA): not readable
    heads = config.get("num_attention_heads")
    rows_scaled = {"up_proj"} | ({"v_proj"} if config.get("num_key_value_heads", heads) == heads else set())
    scales = {}
    for norm_name, weight in before.items():
        prefix, norm = norm_name[: -len(".weight")].rsplit(".", 1)
        ratio = np.divide(weight, after[norm_name], out=np.ones_like(weight), where=after[norm_name] != 0)
        for linear, reads in AWQ_NORMS.items():
            if reads == norm and linear not in rows_scaled:
                scales[f"{prefix}.{'self_attn' if linear.endswith(('q_proj', 'k_proj', 'v_proj')) else 'mlp'}.{linear}.weight"] = ratio
    return scales


def checkpoint_report(*, base: Path, finetuned: Path, variants: list[Path], worst: int) -> None:
    base_matrices, _ = checkpoint_matrices(base)
    tuned_matrices, _ = checkpoint_matrices(finetuned)
    print(f"base {base.name}, fine-tuned {finetuned.name} ({len(tuned_matrices)} matrices)")
    for path in variants:
        quantized, kind = checkpoint_matrices(path)
        scales = awq_scales(source=finetuned, awq=path) if kind == "AWQ" else None
        by_type: dict[str, list[tuple[float, float, str]]] = defaultdict(list)
        for name, q in quantized.items():
            b, f = base_matrices[name], tuned_matrices[name]
            if scales is not None:
                if name not in scales:  # o_proj, down_proj, up_proj: AWQ's scale there is not readable (module doc)
                    continue
                b, f = b * scales[name], f * scales[name]
            share, left = kept(base=b, finetuned=f, quantized=q)
            if share == share:
                by_type[f"{kind} {name.rsplit('.', 2)[-2]}"].append((share, left, name))
        print_variant(path.name, by_type, worst=worst)


def print_variant(name: str, by_type: dict[str, list[tuple[float, float, str]]], *, worst: int) -> None:
    print(f"\n{name}")
    print(f"  {'type':16s}{'matrices':>9s}{'kept (median)':>15s}{'|Wq-base|/|delta| (median)':>28s}")
    for kind, rows in sorted(by_type.items()):
        print(f"  {kind:16s}{len(rows):9d}{statistics.median(r[0] for r in rows):15.3f}"
              f"{statistics.median(r[1] for r in rows):28.3f}")
    least = sorted(row for rows in by_type.values() for row in rows)[:worst]
    print("  keep the least: " + ", ".join(f"{name} {share:.3f}" for share, _, name in least))


def values(tensor, shape: tuple[int, ...] | None = None) -> np.ndarray:
    from gguf.quants import dequantize

    array = dequantize(tensor.data, tensor.tensor_type).astype(np.float64)
    return array[tuple(slice(0, n) for n in shape)] if shape else array


def kept(*, base: np.ndarray, finetuned: np.ndarray, quantized: np.ndarray) -> tuple[float, float]:
    """(share of the fine-tune's change the quantized matrix keeps, |W_q - W_base| / |delta|)."""
    delta = finetuned - base
    energy = float((delta * delta).sum())
    if energy <= UNCHANGED ** 2 * float((finetuned * finetuned).sum()):  # not fine-tuned (only converted)
        return float("nan"), float("nan")
    moved = quantized - base
    return float((moved * delta).sum() / energy), float(np.linalg.norm(moved) / np.sqrt(energy))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("base", type=Path, help="the base model's GGUF (any type), or its fp16 checkpoint dir")
    parser.add_argument("finetuned", type=Path, help="the fine-tuned model's F16 (or F32) GGUF, or its fp16 checkpoint dir")
    parser.add_argument("variants", type=Path, nargs="+", help="quantized GGUFs, or GPTQ/AWQ dirs, of the fine-tuned model")
    parser.add_argument("--worst", type=int, default=3, help="matrices listed that keep the least, per variant")
    args = parser.parse_args(argv)
    if args.base.is_dir():
        checkpoint_report(base=args.base, finetuned=args.finetuned, variants=args.variants, worst=args.worst)
        return 0
    base, finetuned = tensors(args.base), tensors(args.finetuned)
    names = [name for name in finetuned if name in base]
    reference = {}
    for name in names:
        b = values(base[name])
        reference[name] = (b, values(finetuned[name], b.shape))
    print(f"base {args.base.name} ({len(names)} matrices compared), fine-tuned {args.finetuned.name}")
    for path in args.variants:
        variant = tensors(path)
        by_type: dict[str, list[tuple[float, float, str]]] = defaultdict(list)
        for name in names:
            b, f = reference[name]
            share, left = kept(base=b, finetuned=f, quantized=values(variant[name], b.shape))
            if share == share:  # a matrix the fine-tune left alone says nothing
                by_type[variant[name].tensor_type.name].append((share, left, name))
        print_variant(path.name, by_type, worst=args.worst)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
