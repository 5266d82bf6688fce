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
