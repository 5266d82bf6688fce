"""Intervals, the paired test and the top-k KL divergence against values worked out by hand."""

from __future__ import annotations

import math

import pytest

from pipelines.stats import mcnemar_exact, paired_comparison, percentile, topk_kl, wilson_interval


def test_wilson_interval_matches_hand_computed_values():
    # 8 of 10, z = 1.96: centre (0.8 + 0.19208) / 1.38416 = 0.716737, half 0.252 / ... (worked out below)
    z = 1.959963984540054
    p, n = 0.8, 10
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    assert wilson_interval(8, 10) == pytest.approx((centre - half, centre + half))
    assert wilson_interval(8, 10) == pytest.approx((0.4902, 0.9433), abs=1e-4)  # published tables
    assert wilson_interval(0, 20) == pytest.approx((0.0, 0.1611), abs=1e-4)
    assert wilson_interval(20, 20)[1] == 1.0
    assert wilson_interval(0, 0) is None
    with pytest.raises(ValueError):
        wilson_interval(5, 3)


def test_mcnemar_exact_is_a_two_sided_binomial_test_on_discordant_pairs():
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(1, 0) == 1.0  # 2 * 0.5
    assert mcnemar_exact(5, 0) == pytest.approx(2 / 32)  # 2 * (1/2)^5 = 0.0625
    assert mcnemar_exact(6, 0) == pytest.approx(2 / 64)
    assert mcnemar_exact(7, 2) == pytest.approx(2 * (1 + 9 + 36) / 512)  # 0.1797
    assert mcnemar_exact(2, 7) == mcnemar_exact(7, 2)


def test_a_one_case_difference_is_not_significant_and_a_large_one_is():
    reference = [True] * 6 + [False] * 159
    one_less = [True] * 5 + [False] * 160
    assert paired_comparison(reference, one_less).p_value == 1.0
    much_worse = [True] * 100 + [False] * 65
    strong = [True] * 120 + [False] * 45
    comparison = paired_comparison(strong, much_worse)
    assert (comparison.reference_only, comparison.variant_only) == (20, 0)
    assert comparison.significant() and comparison.difference == pytest.approx(-20 / 165)
    with pytest.raises(ValueError, match="same cases"):
        paired_comparison([True], [True, False])


def test_topk_kl_is_exact_when_the_top_k_hold_all_the_mass():
    p = [0.7, 0.2, 0.1]
    q = [0.5, 0.3, 0.2]
    exact = sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))
    assert topk_kl([0, 1, 2], [math.log(x) for x in p], [math.log(x) for x in q]) == pytest.approx(exact)
    assert topk_kl([0, 1, 2], [math.log(x) for x in p], [math.log(x) for x in p]) == pytest.approx(0.0)


def test_topk_kl_merges_the_rest_into_one_bucket_and_bounds_the_full_kl_from_below():
    p = [0.6, 0.2, 0.1, 0.1]
    q = [0.4, 0.2, 0.3, 0.1]
    full = sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))
    # top-2 of p: buckets (0.6, 0.2, rest 0.2) vs (0.4, 0.2, rest 0.4)
    bucketed = 0.6 * math.log(0.6 / 0.4) + 0.2 * math.log(0.2 / 0.4)
    got = topk_kl([0, 1], [math.log(0.6), math.log(0.2)], [math.log(x) for x in q])
    assert got == pytest.approx(bucketed) and got <= full


def test_percentile_interpolates_like_numpy():
    values = [1.0, 2.0, 3.0, 4.0]
    assert percentile(values, 50) == 2.5 and percentile(values, 99) == pytest.approx(3.97)
    assert percentile([5.0], 99) == 5.0


def test_topk_kl_rows_equals_the_scalar_definition_row_by_row():
    import numpy as np

    from pipelines.stats import topk_kl_rows

    rng = np.random.default_rng(0)
    logits_p, logits_q = rng.normal(size=(20, 50)) * 3, rng.normal(size=(20, 50)) * 3
    logp = logits_p - np.log(np.exp(logits_p).sum(1, keepdims=True))
    logq = logits_q - np.log(np.exp(logits_q).sum(1, keepdims=True))
    top = np.argsort(-logp, axis=1)[:, :8]
    rows = topk_kl_rows(top, np.take_along_axis(logp, top, 1), logq)
    for i in range(20):
        assert rows[i] == pytest.approx(topk_kl(top[i].tolist(), logp[i, top[i]].tolist(), logq[i].tolist()))
    full = (np.exp(logp) * (logp - logq)).sum(1)
    assert (rows <= full + 1e-12).all()
