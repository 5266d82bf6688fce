"""How sure a figure is: Wilson intervals, the exact McNemar test, and KL divergence from stored top-k log-probs.

Rates on a few hundred cases move by one case at a time, so every rate the pipeline reports comes with
a 95 % Wilson score interval, and a variant is compared with fp16 *on the same cases*: the cases
where exactly one of the two is right (``b``: fp16 only, ``c``: the variant only) decide, and the
exact McNemar test says how likely a split at least that uneven is if both were equally good.

Distance from fp16 is the Kullback–Leibler divergence of the variant's next-token distribution from
fp16's, per position, as llama.cpp's ``llama-perplexity --kl-divergence`` reports it. fp16's full
distributions are too large to keep (49k floats per position), so its top ``k`` log-probs are stored
and everything outside them is one "rest" bucket; the divergence of those (k+1)-bucket distributions
is a lower bound on the full one (merging outcomes never increases KL), exact when fp16's rest
mass is 0, and its gap is at most the rest's own contribution.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

Z95 = 1.959963984540054  # two-sided 95 % normal quantile


def wilson_interval(successes: int, n: int, *, z: float = Z95) -> tuple[float, float] | None:
    """The Wilson score interval of ``successes / n`` (``None`` when ``n`` is 0)."""
    if n < 0 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n, got {successes} of {n}")
    if n == 0:
        return None
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value for ``b`` and ``c`` discordant pairs (a binomial test at 1/2)."""
    if b < 0 or c < 0:
        raise ValueError(f"discordant counts must be >= 0, got {b}, {c}")
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(b, c) + 1)) / 2**n
    return min(1.0, 2 * tail)


@dataclass(frozen=True)
class PairedComparison:
    """A variant against the reference on the same cases."""

    n: int  # cases both were scored on
    reference_rate: float
    variant_rate: float
    reference_only: int  # b: right in the reference, wrong in the variant
    variant_only: int  # c: wrong in the reference, right in the variant
    p_value: float  # exact McNemar

    @property
    def difference(self) -> float:
        return self.variant_rate - self.reference_rate

    def significant(self, alpha: float = 0.05) -> bool:
        return self.p_value < alpha

    def to_dict(self) -> dict:
        return {"n": self.n, "reference_rate": self.reference_rate, "variant_rate": self.variant_rate,
                "difference": self.difference, "reference_only": self.reference_only,
                "variant_only": self.variant_only, "p_value": self.p_value}


def paired_comparison(reference: Sequence[bool], variant: Sequence[bool]) -> PairedComparison:
    """Compare per-case outcomes (same cases, same order)."""
    if len(reference) != len(variant):
        raise ValueError(f"paired outcomes need the same cases: {len(reference)} vs {len(variant)}")
    if not reference:
        raise ValueError("no cases to compare")
    b = sum(1 for r, v in zip(reference, variant) if r and not v)
    c = sum(1 for r, v in zip(reference, variant) if v and not r)
    n = len(reference)
    return PairedComparison(n=n, reference_rate=sum(map(bool, reference)) / n, variant_rate=sum(map(bool, variant)) / n,
                            reference_only=b, variant_only=c, p_value=mcnemar_exact(b, c))


def topk_kl(reference_ids: Sequence[int], reference_logprobs: Sequence[float], variant_logprobs: Sequence[float]) -> float:
    """KL(reference ‖ variant) over ``k`` reference tokens plus one bucket for the rest (natural log).

    ``variant_logprobs`` is the variant's full log-softmax at the same position (indexable by token id).
    """
    inside_p = inside_q = 0.0
    kl = 0.0
    for token, logp in zip(reference_ids, reference_logprobs):
        p = math.exp(logp)
        logq = variant_logprobs[token]
        inside_p += p
        inside_q += math.exp(logq)
        kl += p * (logp - logq)
    rest_p, rest_q = max(0.0, 1.0 - inside_p), max(0.0, 1.0 - inside_q)
    if rest_p > 1e-12:
        kl += rest_p * (math.log(rest_p) - math.log(max(rest_q, 1e-30)))
    return kl


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0–100) by linear interpolation between order statistics (numpy's default)."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def topk_kl_rows(reference_ids, reference_logprobs, variant_logprobs):
    """``topk_kl`` for every row at once (numpy): ``reference_ids``/``reference_logprobs`` are [n, k],
    ``variant_logprobs`` is [n, vocab]; returns [n] float64."""
    import numpy as np

    logp = reference_logprobs.astype(np.float64)
    logq = np.take_along_axis(variant_logprobs, reference_ids.astype(np.int64), axis=1).astype(np.float64)
    p = np.exp(logp)
    kl = (p * (logp - logq)).sum(axis=1)
    rest_p = np.clip(1.0 - p.sum(axis=1), 0.0, None)
    rest_q = np.clip(1.0 - np.exp(logq).sum(axis=1), 1e-30, None)
    tail = np.where(rest_p > 1e-12, rest_p * (np.log(np.maximum(rest_p, 1e-300)) - np.log(rest_q)), 0.0)
    return kl + tail
