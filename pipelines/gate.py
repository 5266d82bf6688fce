"""The verification gate: may a variant be published? A pure function of its manifest and fp16's.

A variant is verified only if it was loaded through its runtime and its eval ran (its manifest has
metrics for the gated suite), ``call_accuracy >= ratio × fp16's`` and ``json_valid_rate >= floor``.
When fp16's call accuracy is weak (below ``weak_baseline``), a ratio of it says little, so
``name_accuracy >= ratio × fp16's`` is required as well and the reason says so; when fp16's call
accuracy is 0 the call check passes vacuously and the reason says that too.

A rate on a few hundred cases moves one case at a time, so where both evals kept per-case outcomes
(``pipelines.metrics``), each accuracy check also compares the variant with fp16 on the same cases
(exact McNemar test, ``pipelines.stats``):

- a drop the test calls significant (p < ``alpha``) fails, even above the ratio;
- a shortfall below the ratio that the sample cannot resolve (p >= ``alpha``) is not decided by the
  one or two cases behind it: the variant's mean KL divergence from fp16 on answer tokens (the
  fidelity stage) decides, against the recipe's ``kld_8bit`` / ``kld_4bit``; without fidelity figures
  it fails, saying so.

Every accuracy in the reason carries its 95 % Wilson interval. The verdict and its reason are returned
either way (written to the manifest's ``gate``).
"""

from __future__ import annotations

from dataclasses import dataclass

from invoker.manifest import Manifest
from pipelines.metrics import paired_outcomes
from pipelines.recipe import GateSettings
from pipelines.stats import paired_comparison

EPSILON = 1e-9  # rates are ratios of small integers; compare with a tolerance, not exactly


def gate_variant(*, manifest: Manifest, baseline: Manifest | None, settings: GateSettings, suite: str,
                 bits_per_weight: float) -> dict:
    """``{"verified", "reason", "checks", "thresholds", "suite", "baseline"}`` for one variant's manifest.

    ``baseline`` is fp16's manifest (None when fp16 has none yet); gating fp16 itself compares it with itself.
    ``bits_per_weight`` (the variant's nominal figure, ``convert.formats``) picks the ratio.
    """
    ratio = settings.ratio_for(bits_per_weight)
    thresholds = {"call_accuracy_ratio": ratio, "json_valid_rate": settings.json_valid_rate,
                  "weak_baseline": settings.weak_baseline, "alpha": settings.alpha,
                  "answer_mean_kl": settings.kld_for(bits_per_weight), "bits_per_weight": bits_per_weight}
    verdict = {"suite": suite, "thresholds": thresholds, "baseline": None, "checks": []}
    if manifest.failures:  # a stage's process died on this variant: nothing it would have measured can be judged
        failed = "; ".join(f"{stage} failed: {why}" for stage, why in manifest.failures.items())
        return {**verdict, "verified": False, "reason": f"not verified: {failed}"}
    metrics = manifest.metrics(suite)
    if not metrics.get("n"):
        return {**verdict, "verified": False, "reason": f"not verified: no eval of suite {suite!r} in the manifest "
                                                          "(the variant did not load or its eval did not run)"}
    base = baseline.metrics(suite) if baseline is not None else {}
    if not base.get("n"):
        return {**verdict, "verified": False, "reason": f"not verified: fp16 has no eval of suite {suite!r} to compare with"}
    verdict["baseline"] = {key: base.get(key) for key in ("call_accuracy", "name_accuracy", "json_valid_rate")}
    judge = Judge(ratio=ratio, alpha=settings.alpha, kld_limit=settings.kld_for(bits_per_weight),
                  answer_kl=(manifest.fidelity.get("answer") or {}).get("mean_kl"))
    checks = [
        *accuracy_checks(metrics=metrics, base=base, judge=judge, weak_baseline=settings.weak_baseline),
        json_check(metrics=metrics, floor=settings.json_valid_rate),
    ]
    failed = [check for check in checks if not check["passed"]]
    notes = [check["note"] for check in checks if check.get("note")]
    if failed:
        reason = "not verified: " + "; ".join(check["detail"] for check in failed)
    else:
        reason = "verified: " + "; ".join(check["detail"] for check in checks)
    if notes:
        reason += " (" + "; ".join(notes) + ")"
    return {**verdict, "checks": checks, "verified": not failed, "reason": reason}


@dataclass(frozen=True)
class Judge:
    """How an accuracy check decides: the ratio, the paired test's level, and the KLD that settles what the
    sample cannot (``answer_kl``: the variant's mean answer-token KL divergence, None if not measured)."""

    ratio: float
    alpha: float
    kld_limit: float
    answer_kl: float | None


def accuracy_checks(*, metrics: dict, base: dict, judge: Judge, weak_baseline: float) -> list[dict]:
    """call_accuracy against ratio × fp16's; plus name_accuracy when fp16's call accuracy is weak."""
    base_call = base.get("call_accuracy")
    if base_call is None:
        call = {"metric": "call_accuracy", "passed": False, "value": metrics.get("call_accuracy"), "required": None,
                "detail": "fp16's call_accuracy is undefined (the suite expects no calls)"}
        return [call, ratio_check(metric="name_accuracy", metrics=metrics, base=base, judge=judge)]
    call = ratio_check(metric="call_accuracy", metrics=metrics, base=base, judge=judge)
    if base_call >= weak_baseline:
        return [call]
    if base_call == 0:
        call["note"] = "fp16's call_accuracy is 0, so the call check passes vacuously; name_accuracy decides"
    else:
        call["note"] = (f"fp16's call_accuracy {base_call:.3f} is below the weak-baseline {weak_baseline:.2f}, "
                        "so name_accuracy is checked too")
    return [call, ratio_check(metric="name_accuracy", metrics=metrics, base=base, judge=judge)]


def ratio_check(*, metric: str, metrics: dict, base: dict, judge: Judge) -> dict:
    """``metric`` against ratio × fp16's, then the paired test on the same cases when both kept outcomes."""
    value, reference = metrics.get(metric), base.get(metric)
    if value is None or reference is None:
        return {"metric": metric, "passed": False, "value": value, "required": None,
                "detail": f"{metric} is undefined (variant {value}, fp16 {reference})"}
    required = judge.ratio * reference
    above = value + EPSILON >= required
    detail = (f"{metric} {value:.3f}{interval_text(metrics, metric)} {'>=' if above else '<'} {judge.ratio:.2f} × "
              f"fp16's {reference:.3f}{interval_text(base, metric)} = {required:.3f}")
    check = {"metric": metric, "passed": above, "value": value, "required": required, "decided_by": "ratio"}
    pairs = paired_outcomes(metrics, base, metric)
    if not pairs or not pairs[0]:
        return {**check, "detail": detail}
    paired = paired_comparison(*pairs)
    check["paired"] = paired.to_dict()
    detail += (f"; paired on {paired.n} cases {paired.difference:+.3f} (fp16 only {paired.reference_only}, "
               f"variant only {paired.variant_only}, McNemar p={paired.p_value:.3g})")
    if paired.difference < 0 and paired.significant(judge.alpha):
        return {**check, "passed": False, "decided_by": "paired test",
                "detail": detail + f": a significant drop (p < {judge.alpha:g})"}
    if above:
        return {**check, "detail": detail}
    # Below the ratio, but the sample cannot tell the two apart: fidelity decides, not one or two cases.
    if judge.answer_kl is None:
        return {**check, "decided_by": "kld",
                "detail": detail + ": not resolved by the sample, and no fidelity figures to decide"}
    close = judge.answer_kl <= judge.kld_limit + EPSILON
    return {**check, "passed": close, "decided_by": "kld",
            "detail": detail + f": not resolved by the sample, so the answer KLD decides: {judge.answer_kl:.4f} "
                               f"{'<=' if close else '>'} {judge.kld_limit:g}"}


def interval_text(metrics: dict, metric: str) -> str:
    interval = (metrics.get("intervals") or {}).get(metric)
    return f" [{interval[0]:.3f}, {interval[1]:.3f}]" if interval else ""


def json_check(*, metrics: dict, floor: float) -> dict:
    value = metrics.get("json_valid_rate")
    if value is None:
        return {"metric": "json_valid_rate", "passed": False, "value": None, "required": floor,
                "detail": "json_valid_rate is undefined (no call was attempted)"}
    passed = value + EPSILON >= floor
    return {"metric": "json_valid_rate", "passed": passed, "value": value, "required": floor,
            "detail": f"json_valid_rate {value:.3f} {'>=' if passed else '<'} {floor:.2f}"}
