"""Model cards for the published repos, generated from the variants' manifests (``pipelines/templates``).

``render_card`` fills ``templates/model_card.md.jinja`` through ``huggingface_hub.ModelCard.from_template``
with the YAML metadata (``ModelCardData``; tags and library from the format's registry entry), the
prompt format with an example (``render_prompt``), the results table on the gated suite, the plot, the
calibration recipe, the provided files and the usage snippets (``pipelines.snippets``);
``validate_card`` checks the written card the way publish relies on. Reads the release model
(``pipelines.release``) only.
"""

from __future__ import annotations

import json
from pathlib import Path

from convert.formats import BASELINE
from invoker.examples import GET_TIME, GET_TIME_QUESTION
from invoker.formats import file_format
from invoker.manifest import Manifest
from invoker.prompt import render_assistant_turn, render_prompt
from pipelines.release import Release, ReleaseVariant, RepoPlan, pipeline_version
from pipelines.report import paired_text, rate_text, report_entry, suite_cell
from pipelines.snippets import usage_snippets

TEMPLATE = Path(__file__).parent / "templates" / "model_card.md.jinja"
EXAMPLE_CALL = {"name": "get_time", "arguments": json.dumps({"location": "Singapore", "format": "12-hour"})}
RELATIONS = ("adapter", "merge", "quantized", "finetune")


def render_card(*, release: Release, plan: RepoPlan, plans: list[RepoPlan], base_model: str, license_id: str) -> str:
    """The README.md of ``plan``'s repo; raises ``ValueError`` if the result would not validate."""
    from huggingface_hub import ModelCard

    bos, eos = special_tokens(plan.recommended)  # the artifact's own, never assumed
    card = ModelCard.from_template(
        card_data(plan=plan, base_model=base_model, license_id=license_id, namespace=plan.repo_id.split("/")[0]),
        template_path=str(TEMPLATE),
        title=plan.repo_id.split("/")[1],
        repo_id=plan.repo_id,
        format_name=plan.spec.title,
        base_model=base_model,
        pipeline=f"invoker-pack {pipeline_version()}",
        siblings=[p.repo_id for p in plans if p.repo_id != plan.repo_id],
        results=results_rows(release=release, plan=plan),
        other_suites=other_suites(release=release, plan=plan),
        suite=release.gated_suite,
        plot=release.plot is not None,
        prompt_example=render_prompt(GET_TIME_QUESTION, functions=[GET_TIME]),
        output_example=" " + render_assistant_turn(content=None, function_call=EXAMPLE_CALL) + (eos or ""),
        bos=bos,
        eos=eos,
        calibrations=calibration_sections(plan=plan),
        provenance=provenance(plan=plan),
        files=[{"name": f.path_in_repo, "size": human_bytes(f.bytes), "sha256": f.sha256} for f in plan.files],
        snippets=usage_snippets(plan=plan, model=release.model),
    )
    text = str(card)
    problems = validate_card(text)
    if problems:
        raise ValueError(f"model card of {plan.repo_id} does not validate: {'; '.join(problems)}")
    return text


def card_data(*, plan: RepoPlan, base_model: str, license_id: str, namespace: str):
    from huggingface_hub import ModelCardData

    return ModelCardData(
        base_model=base_model,
        base_model_relation="quantized",
        license=license_id,
        library_name=plan.spec.card_library,
        pipeline_tag="text-generation",
        tags=[*plan.spec.card_tags, "function-calling", "invoker", "invoker-pack"],
        quantized_by=namespace,
    )


def validate_card(text: str) -> list[str]:
    """Problems of a card's metadata, as ``"<key>: <problem>"`` ([] when it parses and every field is sound)."""
    from huggingface_hub import ModelCard

    try:
        data = ModelCard(text).data.to_dict()
    except (ValueError, TypeError) as err:
        return [f"metadata: {err}"]
    problems = []
    base = data.get("base_model")
    if not isinstance(base, str) or "/" not in base:
        problems.append(f"base_model: {base!r} is not a Hub model id")
    if data.get("base_model_relation") not in RELATIONS:
        problems.append(f"base_model_relation: {data.get('base_model_relation')!r} is not one of {', '.join(RELATIONS)}")
    for key in ("license", "library_name", "pipeline_tag", "quantized_by"):
        if not isinstance(data.get(key), str) or not data[key]:
            problems.append(f"{key}: missing")
    tags = data.get("tags")
    if not isinstance(tags, list) or not tags or not all(isinstance(t, str) for t in tags):
        problems.append("tags: must be a non-empty list of strings")
    return problems


def special_tokens(variant: ReleaseVariant) -> tuple[str | None, str | None]:
    """(BOS, EOS) of the artifact the card describes: its ``tokenizer_config.json`` (``bos_token``, ``eos_token``,
    ``add_bos_token``), else its GGUF's tokenizer metadata; None for what it does not say (the card then names the
    token by its role only)."""
    config = variant.path / "tokenizer_config.json"
    if config.is_file():
        data = json.loads(config.read_text(encoding="utf-8"))
        bos = None if data.get("add_bos_token") is False else token_text(data.get("bos_token"))
        return bos, token_text(data.get("eos_token"))
    gguf = next((variant.path / name for name in variant.manifest.weight_files if file_format(Path(name)) is not None
                 and (variant.path / name).is_file()), None)
    if gguf is not None:
        from invoker.runtimes.llamacpp_runtime import gguf_special_tokens

        try:
            return gguf_special_tokens(gguf)
        except ValueError:
            return None, None
    return None, None


def token_text(token) -> str | None:
    """A special token as tokenizer_config.json writes it: a string, or ``{"content": …}``."""
    if isinstance(token, dict):
        token = token.get("content")
    return token if isinstance(token, str) and token else None


# --- results ------------------------------------------------------------------------------------


def card_variants(*, release: Release, plan: RepoPlan) -> list[ReleaseVariant]:
    """The repo's variants, then the fp16 baseline: the rows of the card's tables."""
    return [*plan.variants, *([release.fp16] if release.fp16 is not None else [])]


def results_rows(*, release: Release, plan: RepoPlan) -> list[dict]:
    """One row per variant of the repo, then the fp16 baseline, on the gated suite, as formatted strings.

    Size: the weight files (``Manifest.weight_bytes``); bits/weight: ``Manifest.bits_per_weight``; the accuracy
    with its 95 % interval and the paired difference from fp16, and the answer KLD, as in the report.
    """
    suite = release.gated_suite
    base = release.fp16.manifest.metrics(suite) if release.fp16 and suite else {}
    return [result_row(variant=v, suite=suite, base=base) for v in card_variants(release=release, plan=plan)]


def result_row(*, variant: ReleaseVariant, suite: str | None, base: dict) -> dict:
    manifest = variant.manifest
    is_baseline = manifest.format == BASELINE.name
    entry = report_entry(manifest=manifest, suite=suite, base_metrics=base)
    cell = rate_text(entry["call_accuracy"], entry["intervals"]["call_accuracy"])
    if not is_baseline and entry["delta_call_accuracy"] is not None:
        cell += f" ({paired_text(entry['paired_call_accuracy'], entry['delta_call_accuracy'])})"
    size, bits = manifest.weight_bytes, manifest.bits_per_weight
    kld = entry["fidelity"]["mean_kl"]
    return {
        "variant": variant_label(manifest),
        "size": human_bytes(size) if size else "—",
        "bits": "—" if bits is None else f"{bits:.2f}",
        "accuracy": cell,
        "json_valid": fmt(manifest.metric("json_valid_rate", suite)),
        "kld": "0 (reference)" if is_baseline else "—" if kld is None else f"{kld:.4f}",
        "speed": speed(manifest.bench),
        "verified": "baseline" if is_baseline else ("yes" if manifest.verified else "no"),
    }


def variant_label(manifest: Manifest) -> str:
    return f"{manifest.format} (reference)" if manifest.format == BASELINE.name else f"{manifest.format} {manifest.variant}"


def other_suites(*, release: Release, plan: RepoPlan) -> dict | None:
    """The suites evaluated besides the gated one (public benchmarks such as BFCL): names and one row per variant."""
    variants = card_variants(release=release, plan=plan)
    names = [s for s in dict.fromkeys(s for v in variants for s in v.manifest.eval) if s != release.gated_suite]
    if not names:
        return None
    rows = [{"variant": variant_label(v.manifest),
             "cells": [suite_cell(v.manifest.metrics(name)) for name in names]} for v in variants]
    return {"names": names, "rows": rows}


def speed(bench: dict) -> str:
    """Decode tokens/sec per device with the hardware named, e.g. ``41.2 (cpu: AMD EPYC 7B13, 2 threads)``."""
    parts = []
    for device, result in sorted(bench.items()):
        decode = result.get("decode_tok_s")
        if not isinstance(decode, (int, float)):
            continue
        hardware = result.get("hardware") or {}
        name = hardware.get("gpu") or hardware.get("cpu") or "unknown hardware"
        threads = f", {result['threads']} threads" if result.get("threads") else ""
        parts.append(f"{decode:.1f} ({device}: {name}{threads})".replace("|", "/"))
    return "; ".join(parts) or "—"


def fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


def human_bytes(size: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.2f} {unit}"
        size /= 1000
    return f"{size:.2f} GB"


# --- how it was made ----------------------------------------------------------------------------


def calibration_sections(*, plan: RepoPlan) -> list[dict]:
    """Each distinct calibration recipe of the repo's variants, with the variants that used it."""
    sections: dict[str, dict] = {}
    for variant in plan.variants:
        calibration = variant.manifest.calibration
        section = sections.setdefault(calibration.get("sha256") or "", {
            "variants": [], "spec": calibration.get("spec") or {}, "sha256": calibration.get("sha256"),
            "counts": {k: calibration[k] for k in ("n_samples", "n_tokens", "n_documents") if k in calibration}})
        section["variants"].append(variant.manifest.variant)
    return list(sections.values())


def provenance(*, plan: RepoPlan) -> dict:
    manifest = plan.variants[0].manifest
    return {
        "source_model": manifest.source.get("model"),
        "source_revision": manifest.source.get("revision") or "not pinned (local dir)",
        "source_sha256": manifest.source.get("sha256"),
        "tools": ", ".join(f"{name} {version}" for name, version in sorted(manifest.tools.items()) if version),
        "quantization": [{"variant": v.manifest.variant, "settings": quantization_settings(v.manifest)}
                         for v in plan.variants if quantization_settings(v.manifest)],
        "gates": [{"variant": v.manifest.variant, "reason": v.manifest.gate_reason,
                   "thresholds": json.dumps(v.manifest.gate.get("thresholds", {}))}
                  for v in plan.variants],
    }


def quantization_settings(manifest: Manifest) -> str:
    """The converter's quantization settings (``conversion.quantization``), scalars only, e.g. ``bits=4, group_size=128``."""
    settings = manifest.conversion.get("quantization") or {}
    return ", ".join(f"{key}={json.dumps(value)}" for key, value in settings.items()
                     if isinstance(value, (str, int, float, bool)) or value is None)
