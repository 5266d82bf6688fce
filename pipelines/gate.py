"""The verification gate: may a variant be published? A pure function of its manifest and fp16's.

A variant is verified only if it was loaded through its runtime and its eval ran (its manifest has
metrics for the gated suite), ``call_accuracy >= ratio × fp16's`` and ``json_valid_rate >= floor``.
When fp16's own call accuracy is weak (below ``weak_baseline``, e.g. the bundled tiny model's
~0.04), a ratio of it says little, so ``name_accuracy >= ratio × fp16's`` is required as well and the
reason says so; when fp16's call accuracy is 0 the call check passes vacuously and the reason says
that too. The verdict and its reason are returned either way (written to the manifest's ``gate``).
"""

from __future__ import annotations

from invoker.manifest import Manifest
from pipelines.recipe import GateSettings

EPSILON = 1e-9  # rates are ratios of small integers; compare with a tolerance, not exactly


def gate_variant(*, manifest: Manifest, baseline: Manifest | None, settings: GateSettings, suite: str,
                 bits_per_weight: float) -> dict:
    """``{"verified", "reason", "checks", "thresholds", "suite", "baseline"}`` for one variant's manifest.

    ``baseline`` is fp16's manifest (None when fp16 has none yet); gating fp16 itself compares it with itself.
    ``bits_per_weight`` (the variant's nominal figure, ``convert.formats``) picks the ratio.
    """
    ratio = settings.ratio_for(bits_per_weight)
    thresholds = {"call_accuracy_ratio": ratio, "json_valid_rate": settings.json_valid_rate,
                  "weak_baseline": settings.weak_baseline, "bits_per_weight": bits_per_weight}
    verdict = {"suite": suite, "thresholds": thresholds, "baseline": None, "checks": []}
    metrics = manifest.metrics(suite)
    if not metrics.get("n"):
        return {**verdict, "verified": False, "reason": f"not verified: no eval of suite {suite!r} in the manifest "
                                                          "(the variant did not load or its eval did not run)"}
    base = baseline.metrics(suite) if baseline is not None else {}
    if not base.get("n"):
        return {**verdict, "verified": False, "reason": f"not verified: fp16 has no eval of suite {suite!r} to compare with"}
    verdict["baseline"] = {key: base.get(key) for key in ("call_accuracy", "name_accuracy", "json_valid_rate")}
    checks = [
        *accuracy_checks(metrics=metrics, base=base, ratio=ratio, weak_baseline=settings.weak_baseline),
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


def accuracy_checks(*, metrics: dict, base: dict, ratio: float, weak_baseline: float) -> list[dict]:
    """call_accuracy against ratio × fp16's; plus name_accuracy when fp16's call accuracy is weak."""
    base_call = base.get("call_accuracy")
    if base_call is None:
        call = {"metric": "call_accuracy", "passed": False, "value": metrics.get("call_accuracy"), "required": None,
                "detail": "fp16's call_accuracy is undefined (the suite expects no calls)"}
        return [call, ratio_check(metric="name_accuracy", metrics=metrics, base=base, ratio=ratio)]
    call = ratio_check(metric="call_accuracy", metrics=metrics, base=base, ratio=ratio)
    if base_call >= weak_baseline:
        return [call]
    if base_call == 0:
        call["note"] = "fp16's call_accuracy is 0, so the call check passes vacuously; name_accuracy decides"
    else:
        call["note"] = (f"fp16's call_accuracy {base_call:.3f} is below the weak-baseline {weak_baseline:.2f}, "
                        "so name_accuracy is checked too")
    return [call, ratio_check(metric="name_accuracy", metrics=metrics, base=base, ratio=ratio)]


def ratio_check(*, metric: str, metrics: dict, base: dict, ratio: float) -> dict:
    value, reference = metrics.get(metric), base.get(metric)
    if value is None or reference is None:
        return {"metric": metric, "passed": False, "value": value, "required": None,
                "detail": f"{metric} is undefined (variant {value}, fp16 {reference})"}
    required = ratio * reference
    passed = value + EPSILON >= required
    sign = ">=" if passed else "<"
    return {"metric": metric, "passed": passed, "value": value, "required": required,
            "detail": f"{metric} {value:.3f} {sign} {ratio:.2f} × fp16's {reference:.3f} = {required:.3f}"}


def json_check(*, metrics: dict, floor: float) -> dict:
    value = metrics.get("json_valid_rate")
    if value is None:
        return {"metric": "json_valid_rate", "passed": False, "value": None, "required": floor,
                "detail": "json_valid_rate is undefined (no call was attempted)"}
    passed = value + EPSILON >= floor
    return {"metric": "json_valid_rate", "passed": passed, "value": value, "required": floor,
            "detail": f"json_valid_rate {value:.3f} {'>=' if passed else '<'} {floor:.2f}"}
