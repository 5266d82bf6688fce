"""The gate on hand-made manifests: the verdict, and a reason that says why, either way."""

from __future__ import annotations

from invoker.manifest import Manifest, validate_manifest
from pipelines.gate import gate_variant
from pipelines.recipe import GateSettings

SUITE = "synthetic"
SETTINGS = GateSettings(ratio_8bit=0.98, ratio_4bit=0.90, json_valid_rate=0.90, weak_baseline=0.20)


def manifest(*, call: float | None, name: float, json_valid: float | None, evaluated: bool = True) -> Manifest:
    metrics = {"n": 100, "call_accuracy": call, "name_accuracy": name, "json_valid_rate": json_valid}
    return Manifest.from_dict({"format": "gguf", "variant": "Q4_K_M", "source": {}, "calibration": {}, "tools": {},
                               "files": {}, "eval": {SUITE: metrics} if evaluated else {}, "bench": {},
                               "verified": False, "gate": {}})


def gate(variant: Manifest, baseline: Manifest | None, *, bits: float = 4.5) -> dict:
    return gate_variant(manifest=variant, baseline=baseline, settings=SETTINGS, suite=SUITE, bits_per_weight=bits)


def test_a_variant_within_the_ratio_and_json_floor_is_verified_with_the_figures_in_the_reason():
    verdict = gate(manifest(call=0.82, name=0.9, json_valid=0.97), manifest(call=0.90, name=0.95, json_valid=0.99))
    assert verdict["verified"] is True
    assert verdict["reason"] == ("verified: call_accuracy 0.820 >= 0.90 × fp16's 0.900 = 0.810; "
                                 "json_valid_rate 0.970 >= 0.90")
    assert verdict["thresholds"]["call_accuracy_ratio"] == 0.90


def test_8bit_variants_get_the_stricter_ratio():
    baseline = manifest(call=0.90, name=0.95, json_valid=0.99)
    variant = manifest(call=0.85, name=0.95, json_valid=0.99)
    assert gate(variant, baseline, bits=4.5)["verified"] is True
    verdict = gate(variant, baseline, bits=8.5)
    assert verdict["verified"] is False
    assert "call_accuracy 0.850 < 0.98 × fp16's 0.900 = 0.882" in verdict["reason"]


def test_exactly_at_the_threshold_passes_despite_float_rounding():
    baseline = manifest(call=0.5, name=0.9, json_valid=1.0)
    assert gate(manifest(call=0.45, name=0.9, json_valid=0.9), baseline)["verified"] is True


def test_low_json_validity_fails_even_with_good_accuracy():
    verdict = gate(manifest(call=0.9, name=0.95, json_valid=0.85), manifest(call=0.9, name=0.95, json_valid=0.99))
    assert verdict["verified"] is False
    assert verdict["reason"] == "not verified: json_valid_rate 0.850 < 0.90"


def test_no_eval_means_not_verified():
    verdict = gate(manifest(call=None, name=0.0, json_valid=None, evaluated=False), manifest(call=0.9, name=0.9, json_valid=1.0))
    assert verdict["verified"] is False
    assert "no eval of suite 'synthetic'" in verdict["reason"]
    verdict = gate(manifest(call=0.9, name=0.9, json_valid=1.0), None)
    assert verdict["verified"] is False and "fp16 has no eval" in verdict["reason"]


def test_a_weak_baseline_also_requires_name_accuracy_and_says_so():
    baseline = manifest(call=0.036, name=0.48, json_valid=0.96)  # the bundled tiny model's figures
    passing = gate(manifest(call=0.04, name=0.45, json_valid=0.95), baseline)
    assert passing["verified"] is True
    assert "name_accuracy 0.450 >= 0.90 × fp16's 0.480 = 0.432" in passing["reason"]
    assert "below the weak-baseline 0.20, so name_accuracy is checked too" in passing["reason"]
    failing = gate(manifest(call=0.04, name=0.30, json_valid=0.95), baseline)
    assert failing["verified"] is False
    assert "name_accuracy 0.300 < 0.90 × fp16's 0.480 = 0.432" in failing["reason"]


def test_a_zero_baseline_never_divides_and_says_the_call_check_is_vacuous():
    baseline = manifest(call=0.0, name=0.5, json_valid=0.95)
    verdict = gate(manifest(call=0.0, name=0.5, json_valid=0.95), baseline)
    assert verdict["verified"] is True
    assert "passes vacuously; name_accuracy decides" in verdict["reason"]
    assert gate(manifest(call=0.0, name=0.2, json_valid=0.95), baseline)["verified"] is False


def test_undefined_rates_fail_with_a_reason():
    baseline = manifest(call=0.9, name=0.9, json_valid=1.0)
    verdict = gate(manifest(call=0.9, name=0.9, json_valid=None), baseline)
    assert verdict["verified"] is False and "json_valid_rate is undefined (no call was attempted)" in verdict["reason"]
    verdict = gate(manifest(call=0.9, name=0.9, json_valid=1.0), manifest(call=None, name=0.9, json_valid=1.0))
    assert verdict["verified"] is False and "fp16's call_accuracy is undefined" in verdict["reason"]


def test_the_verdict_fits_the_manifest_contract():
    baseline = manifest(call=0.9, name=0.95, json_valid=0.99)
    variant = manifest(call=0.9, name=0.95, json_valid=0.99)
    verdict = gate(variant, baseline)
    gated = {**variant.to_dict(), "verified": verdict.pop("verified"), "gate": verdict}
    assert validate_manifest(gated) == []
    assert gated["gate"]["reason"].startswith("verified: ")


def outcomes_manifest(outcomes: str, *, answer_kl: float | None = None) -> Manifest:
    """A manifest whose call accuracy comes from per-case outcomes (``1`` right, ``0`` wrong), as the eval writes them."""
    from pipelines.metrics import CaseScore, summarize

    scores = [CaseScore(id=f"case-{i}", kind="call", expected="function_call", expected_name="f", predicted="function_call",
                        predicted_name="f", name_correct=True, call_correct=o == "1", json_valid=True, schema_valid=True,
                        relevance_correct=None, output_valid=True) for i, o in enumerate(outcomes)]
    data = manifest(call=None, name=1.0, json_valid=1.0).to_dict()
    data["eval"] = {SUITE: summarize(scores)}
    if answer_kl is not None:
        data["fidelity"] = {"answer": {"mean_kl": answer_kl}}
    return Manifest.from_dict(data)


def test_a_significant_paired_drop_fails_even_above_the_ratio():
    baseline = outcomes_manifest("1" * 200)
    verdict = gate(outcomes_manifest("0" * 16 + "1" * 184), baseline)  # 0.92 >= 0.90 × 1.0, but 16 to 0 on the same cases
    assert verdict["verified"] is False
    assert "call_accuracy 0.920 [0.874, 0.950] >= 0.90 × fp16's 1.000 [0.981, 1.000] = 0.900" in verdict["reason"]
    assert "paired on 200 cases -0.080 (fp16 only 16, variant only 0, McNemar p=3.05e-05): a significant drop" in verdict["reason"]
    assert verdict["checks"][0]["decided_by"] == "paired test"


def test_a_shortfall_the_sample_cannot_resolve_is_decided_by_the_answer_kld():
    baseline = outcomes_manifest("1" * 10)
    close, far = outcomes_manifest("0011111111", answer_kl=0.04), outcomes_manifest("0011111111", answer_kl=0.3)
    verdict = gate(close, baseline)
    assert verdict["verified"] is True and verdict["checks"][0]["decided_by"] == "kld"
    assert ("fp16 only 2, variant only 0, McNemar p=0.5): not resolved by the sample, so the answer KLD decides: "
            "0.0400 <= 0.1") in verdict["reason"]
    assert gate(far, baseline)["verified"] is False
    assert "0.3000 > 0.1" in gate(far, baseline)["reason"]
    unmeasured = gate(outcomes_manifest("0011111111"), baseline)
    assert unmeasured["verified"] is False and "no fidelity figures to decide" in unmeasured["reason"]


def test_outcomes_of_other_cases_are_never_paired():
    baseline = outcomes_manifest("1" * 200)
    data = outcomes_manifest("0" * 16 + "1" * 184).to_dict()
    data["eval"][SUITE]["outcomes"]["cases_sha256"] = "0" * 64  # evaluated on other cases
    verdict = gate(Manifest.from_dict(data), baseline)
    assert verdict["verified"] is True and "paired" not in verdict["reason"]


def test_a_variant_whose_stage_process_died_is_refused_with_the_cause_and_cleared_when_it_succeeds(tmp_path):
    """What the pipeline records when a runtime's worker dies on a variant (pipelines.workspace.note_failure):
    the gate refuses it naming the stage and the signal, the manifest round-trips it, a later success clears it."""
    from dataclasses import replace

    from invoker.manifest import load_manifest, write_manifest
    from pipelines.workspace import note_failure

    variant_dir = tmp_path / "gguf-Q4_K_M"
    variant_dir.mkdir()
    write_manifest(variant_dir, replace(manifest(call=0.9, name=1.0, json_valid=1.0), files={}))
    note_failure(variant_dir, stage="bench", cause="the llama.cpp runtime's process died with SIGSEGV (signal 11)")
    crashed = load_manifest(variant_dir)
    assert crashed.failures == {"bench": "the llama.cpp runtime's process died with SIGSEGV (signal 11)"}
    verdict = gate(crashed, manifest(call=0.9, name=1.0, json_valid=1.0))
    assert verdict["verified"] is False
    assert verdict["reason"] == "not verified: bench failed: the llama.cpp runtime's process died with SIGSEGV (signal 11)"
    note_failure(variant_dir, stage="bench", cause=None)
    assert load_manifest(variant_dir).failures == {} and "failures" not in load_manifest(variant_dir).to_dict()
    assert gate(load_manifest(variant_dir), manifest(call=0.9, name=1.0, json_valid=1.0))["verified"] is True
