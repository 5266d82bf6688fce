"""How much of a fine-tune each quantized GGUF keeps, tensor by tensor.

    .venv/bin/python benchmarks/finetune_kept.py BASE.gguf FINETUNED-F16.gguf VARIANT.gguf [VARIANT.gguf ...]

A fine-tune changes each weight matrix by ``delta = W - W_base``. A quantized matrix ``W_q`` keeps
``<W_q - W_base, delta> / <delta, delta>`` of it: 1 when quantization noise is unrelated to the
fine-tune, 0 when quantization puts the weights back where the base had them. The second figure,
``|W_q - W_base| / |delta|``, is the size of what is left of the change: near 1 with ``kept`` near 0
means the quantized weights sit on the base's own values.

Tensors are compared on the base's shape (a widened model's extra rows and columns are left out), in
llama.cpp's layout on both sides (both GGUFs come from its converter). Prints, per variant and per
quantization type, the median over the matrices of that type, and the matrices that keep the least.
"""

from __future__ import annotations

import argparse
import statistics
from collections import defaultdict
from pathlib import Path

import numpy as np

UNCHANGED = 1e-3  # a matrix whose change is below this share of its norm was not fine-tuned (fp16 rounding)


def tensors(path: Path) -> dict:
    import gguf

    return {tensor.name: tensor for tensor in gguf.GGUFReader(str(path)).tensors if len(tensor.shape) > 1}


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
    parser.add_argument("base", type=Path, help="the base model's GGUF (any type)")
    parser.add_argument("finetuned", type=Path, help="the fine-tuned model's F16 (or F32) GGUF")
    parser.add_argument("variants", type=Path, nargs="+", help="quantized GGUFs of the fine-tuned model")
    parser.add_argument("--worst", type=int, default=3, help="matrices listed that keep the least, per variant")
    args = parser.parse_args(argv)
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
        print(f"\n{path.name}")
        print(f"  {'type':8s}{'matrices':>9s}{'kept (median)':>15s}{'|Wq-base|/|delta| (median)':>28s}")
        for kind, rows in sorted(by_type.items()):
            print(f"  {kind:8s}{len(rows):9d}{statistics.median(r[0] for r in rows):15.3f}"
                  f"{statistics.median(r[1] for r in rows):28.3f}")
        worst = sorted(row for rows in by_type.values() for row in rows)[: args.worst]
        print("  keep the least: " + ", ".join(f"{name} {share:.3f}" for share, _, name in worst))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
